"""The archive on disk: where each Parquet file goes, and how a set of them is committed atomically.

    <dir>/<kind>/venue=<venue>/symbol=<symbol>/date=<YYYY-MM-DD>/part-<instance>-<n>.parquet

kind is `trades`, `books`, `tickers` or `candles_<interval>` (one directory per candle
interval, e.g. `candles_1m`); venue is the ring segment's `exchange` header field; the date
is the UTC day of the records' `ts` (exchange time; a candle's interval start). A flush commits many files at once (one per kind,
venue, symbol and day it touched) together with the archiver's ring cursors, in three steps:

1. every file is written under a hidden temporary name in its final directory and fsynced;
2. the journal `<dir>/_archiver/<instance>.json` (cursors, the flush number, the files of the
   flush) is replaced atomically (temporary file, fsync, rename, fsync of the directory):
   this is the commit point;
3. the temporary files are renamed to their final names.

Recovery (`Journal.recover`) rolls the last committed flush forward (renames what step 3 did
not reach) and deletes every other temporary file of the instance (a flush that never reached
its commit point). So the finalized files and the saved cursors always agree: a crash at any
point neither duplicates nor loses a record.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from mdpipe.history.schema import LEVEL_COLUMNS
from mdpipe.record.tapes import day_of  # noqa: F401  (one definition of a UTC day)

KINDS = ("trades", "books", "tickers", "candles")  # what a query asks for
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-:]")
_CANDLE_DIR = re.compile(r"candles_[1-9][0-9]*[smh]")


def kind_dir(kind: str, interval: str | None = None) -> str:
    """The directory of a kind's files: the kind itself, `candles_<interval>` for candles."""
    return f"candles_{interval}" if kind == "candles" else kind


def is_kind_dir(name: str) -> bool:
    """Whether a directory name under the archive root holds archived records."""
    return name in KINDS[:3] or _CANDLE_DIR.fullmatch(name) is not None


def kind_dirs(root: Path) -> list[str]:
    """The kind directories present in the archive, sorted."""
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and is_kind_dir(p.name))
    except FileNotFoundError:
        return []


def safe_part(text: str) -> str:
    """A venue or symbol as a directory name (anything outside [A-Za-z0-9_.-:] becomes '_')."""
    return _UNSAFE.sub("_", text) or "_"


def partition_dir(root: Path, kind: str, venue: str, symbol: str, day: str) -> Path:
    return root / kind / f"venue={safe_part(venue)}" / f"symbol={safe_part(symbol)}" / f"date={day}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


SORTED_KEY = b"mdpipe.sorted_by_ts"  # file metadata: "1" when rows are in ts order


def _dictionary_columns(table: pa.Table) -> list[str] | bool:
    """Dictionary-encode only the columns whose values repeat from record to record: book
    levels and a trade's price, size and side. On ids and times a dictionary costs write CPU
    and grows the file (zstd alone does better). Measured with bench/history.py's data against
    dictionaries on every column: books 28% and trades half smaller from the archiver's rings,
    writes 20% faster, the day-of-trades query as fast."""
    names = [f"{c}.list.element" for c in LEVEL_COLUMNS if c in table.column_names]
    names += [c for c in ("price", "qty", "side") if c in table.column_names]
    return names or False


def write_temp(table: pa.Table, final: Path) -> int:
    """Write table as Parquet under final's temporary name, fsynced; returns its size in bytes.

    A file whose rows are in `ts` order says so in its metadata, so a query of files that do
    not overlap in time can skip sorting."""
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    in_order = bool(len(ts) < 2 or (ts[1:] >= ts[:-1]).all())
    table = table.replace_schema_metadata({SORTED_KEY: b"1" if in_order else b"0"})
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(final)
    with open(tmp, "wb") as fh:
        pq.write_table(
            table,
            fh,
            compression="zstd",
            use_dictionary=_dictionary_columns(table),
            row_group_size=1 << 20,
        )
        fh.flush()
        os.fsync(fh.fileno())
    return tmp.stat().st_size


def discard_temp(finals: list[Path]) -> None:
    """Remove the temporary files of a flush that failed before its commit point."""
    for final in finals:
        with contextlib.suppress(FileNotFoundError):
            _tmp_name(final).unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace path with text: temporary file, fsync, rename, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass
class Journal:
    """The archiver's committed state: ring cursors, per-symbol book cadence, the last flush."""

    root: Path
    instance: str
    flush_no: int = 0
    rings: dict[str, dict[str, int]] = field(default_factory=dict)  # ring -> cursor, identity
    book_slots: dict[str, int] = field(default_factory=dict)  # venue/symbol -> last interval
    files: list[str] = field(default_factory=list)  # the last flush's files, relative to root
    replaces: list[str] = field(default_factory=list)  # files a compaction's file replaced
    totals: dict[str, int] = field(default_factory=dict)  # counters carried across restarts

    @property
    def path(self) -> Path:
        return self.root / "_archiver" / f"{self.instance}.json"

    @classmethod
    def load(cls, root: Path, instance: str) -> Journal:
        """The committed state of the instance's archiver (empty if it never flushed)."""
        j = cls(root, instance)
        try:
            data = json.loads(j.path.read_text())
        except FileNotFoundError:
            return j
        except (OSError, ValueError) as exc:
            raise ValueError(f"{j.path}: unreadable archiver journal ({exc})") from exc
        j.flush_no = int(data.get("flush_no", 0))
        j.rings = data.get("rings", {})
        j.book_slots = data.get("book_slots", {})
        j.files = data.get("files", [])
        j.replaces = data.get("replaces", [])
        j.totals = data.get("totals", {})
        return j

    def file_name(self, kind: str, venue: str, symbol: str, day: str, flush_no: int) -> Path:
        """The final path of one file of flush flush_no."""
        part = partition_dir(self.root, kind, venue, symbol, day)
        return part / f"part-{self.instance}-{flush_no:010d}.parquet"

    def compact(self, day_dir: Path) -> tuple[Path, int] | None:
        """Merge the files of one finished day partition into one, in ts order, committed like
        a flush (the journal names the new file and the ones it replaces); (file, bytes)."""
        parts = sorted(day_dir.glob(f"*-{self.instance}-*.parquet"))  # ours only
        if len(parts) < 2:
            return None
        table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
        table = table.replace_schema_metadata(None)
        order = pa.compute.sort_indices(table, [("ts", "ascending"), ("symbol_seq", "ascending")])
        self.flush_no += 1
        merged = day_dir / f"day-{self.instance}-{self.flush_no:010d}.parquet"
        nbytes = write_temp(table.take(order), merged)
        self.commit([merged], replaces=parts)
        return merged, nbytes

    def commit(self, files: list[Path], replaces: list[Path] = ()) -> None:
        """Steps 2 and 3: the journal (the commit point), then the renames (and the removal
        of the files a compacted file replaces)."""
        self.files = [str(f.relative_to(self.root)) for f in files]
        self.replaces = [str(f.relative_to(self.root)) for f in replaces]
        data = {
            "instance": self.instance,
            "flush_no": self.flush_no,
            "rings": self.rings,
            "book_slots": self.book_slots,
            "files": self.files,
            "replaces": self.replaces,
            "totals": self.totals,
        }
        atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))
        self._finish_renames()

    def _finish_renames(self) -> None:
        dirs = set()
        for rel in self.files:
            final = self.root / rel
            tmp = _tmp_name(final)
            if tmp.exists():
                os.replace(tmp, final)
                dirs.add(final.parent)
        for rel in self.replaces:
            with contextlib.suppress(FileNotFoundError):
                (self.root / rel).unlink()
                dirs.add((self.root / rel).parent)
        for d in dirs:
            _fsync_dir(d)

    def recover(self) -> list[Path]:
        """Roll the committed flush forward and delete uncommitted temporary files; returns those."""
        self._finish_renames()
        removed = []
        pattern = re.compile(rf"^\.(part|day)-{re.escape(self.instance)}-\d+\.parquet\.tmp$")
        for kind in kind_dirs(self.root):
            base = self.root / kind
            for dirpath, _dirs, names in os.walk(base):
                for name in names:
                    if pattern.match(name):
                        path = Path(dirpath) / name
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                            removed.append(path)
        return removed


def day_partitions(root: Path) -> list[tuple[Path, date]]:
    """Every `<kind>/venue=*/symbol=*/date=<day>` directory of the archive with its day (a
    directory whose name is not a date is passed over)."""
    out = []
    for kind in kind_dirs(root):
        for day_dir in (root / kind).glob("venue=*/symbol=*/date=*"):
            try:
                out.append((day_dir, date.fromisoformat(day_dir.name[len("date=") :])))
            except ValueError:
                continue
    return out


def finished_days(root: Path, instance: str, today: date | None = None) -> list[Path]:
    """Day partitions before today (UTC) holding more than one file of the instance."""
    today = today or datetime.now(UTC).date()
    out = []
    for day_dir, day in day_partitions(root):
        if day < today and len(list(day_dir.glob(f"*-{instance}-*.parquet"))) > 1:
            out.append(day_dir)
    return sorted(out)


def expire(root: Path, keep_days: int, today: date | None = None) -> list[Path]:
    """Delete the date partitions older than keep_days (0 keeps everything); returns them."""
    if keep_days <= 0:
        return []
    today = today or datetime.now(UTC).date()
    removed = []
    for day_dir, day in day_partitions(root):
        if (today - day).days >= keep_days:
            shutil.rmtree(day_dir, ignore_errors=True)
            removed.append(day_dir)
            for empty in (day_dir.parent, day_dir.parent.parent):  # symbol, venue
                with contextlib.suppress(OSError):
                    empty.rmdir()
    return removed
