"""One ring segment mapped read-only, validated, with its geometry and tables."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from mdpipe.instrument import Instrument
from mdpipe.shm import layout as L
from mdpipe.shm.segment import HeaderView, LayoutError, open_segment, shm_path


class MappedRing:
    """A reader's read-only mapping of one ring: never written, so readers cannot slow or
    corrupt the writer. `remap()` follows a writer that replaced the segment."""

    def __init__(self, instance: str, ring: str, kind: int | None, owner: int | str | None) -> None:
        self.instance, self.ring, self.expected_kind, self.owner = instance, ring, kind, owner
        self.path = shm_path(instance, ring)
        self._map()

    def _map(self) -> None:
        try:
            mm, st = open_segment(self.instance, self.ring, writable=False, owner=self.owner)
        except PermissionError:
            raise PermissionError(
                f"no read access to {self.path}: run as the user that started mdpipe, or set "
                "its `shm.group` so your user's group may read it"
            ) from None
        h = HeaderView(mm)
        try:
            h.validate(self.path, self.expected_kind)
            if h.kind == L.KIND_STATUS:
                raise LayoutError(
                    f"{self.path} is a status segment (counters only, no records): read it with "
                    "`mdpipe stats` or mdpipe.shm.status.read_status_segment"
                )
        except LayoutError:
            h.release()
            mm.close()
            raise
        self.mm, self.inode, self.h = mm, st.st_ino, h
        self.kind = h.kind
        self.exchange = h.exchange
        self.dtype: np.dtype = h.dtype()
        self.generation = h.generation
        self.capacity = h.capacity
        self.depth = h.depth
        self.stride = h.u32_at(L.H_SLOT_SIZE)
        self.rsize = h.u32_at(L.H_RECORD_SIZE)
        self.slots_off = h.u64(L.H_SLOTS_OFFSET)
        self.latest_off = h.u64(L.H_LATEST_OFFSET)
        self.refresh_symbols()
        # Strided read-only view of every slot, for batch reads.
        full = np.ndarray(
            (self.capacity,),
            dtype=np.dtype({"names": ["rec"], "formats": [self.dtype], "itemsize": self.stride}),
            buffer=mm,
            offset=self.slots_off,
        )
        self.slots = full["rec"]
        self.slot_seqs = self.slots["seq"]

    def refresh_symbols(self) -> None:
        """Re-read the symbol table (a writer may add symbols while running)."""
        entries = self.h.symbol_entries()
        self.symbols = [e[0] for e in entries]
        self.instruments = [
            Instrument(b, q, k) if b and q and k else None for _, b, q, k in entries
        ]
        self.symbol_ids = {s: i for i, s in enumerate(self.symbols)}

    def cursor_now(self) -> int:
        """The writer's cursor: messages committed so far."""
        return self.h.write_cursor

    def oldest(self) -> int:
        """The oldest message still safe to read (w - capacity may be under rewrite by w)."""
        return max(0, self.cursor_now() - self.capacity + 1)

    def replaced(self) -> bool:
        """True when the name now points at a different file (the writer recreated it)."""
        try:
            return os.stat(self.path, follow_symlinks=False).st_ino != self.inode
        except FileNotFoundError:
            return False

    def unmap(self) -> None:
        for attr in ("slots", "slot_seqs"):
            self.__dict__.pop(attr, None)
        self.h.release()
        with contextlib.suppress(BufferError):
            self.mm.close()

    def remap(self) -> None:
        """Map the segment that now carries this name."""
        self.unmap()
        self._map()
