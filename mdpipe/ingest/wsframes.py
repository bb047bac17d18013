"""WebSocket frames (RFC 6455, server to client) cut from one reusable receive buffer.

websocket-client reads a frame with three socket reads (header, length, payload), each a
poll() and a recv() on a socket with a timeout, and builds several objects per frame: at
10,000 frames/s that was more than the parsing, books and commits together. Here one
non-blocking `recv_into` takes whatever the socket holds (often several frames) and each
whole frame is cut from the buffer: one bytes object per message, nothing else.
"""

from __future__ import annotations

import socket
import ssl

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_FIN_TEXT = 0x80 | OP_TEXT
_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
MAX_MESSAGE = 64 << 20  # bytes: a frame or message announcing more is refused, not allocated
_INITIAL = 1 << 16
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class ProtocolError(Exception):
    """The peer broke the WebSocket framing rules."""


class FrameReader:
    """Reads a non-blocking socket's bytes and yields its frames: `fill()`, then `next()`
    until None. The socket must be set non-blocking by its owner."""

    __slots__ = ("sock", "buf", "view", "start", "end", "eof", "_tls", "_op", "_parts", "_size")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(_INITIAL)
        self.view = memoryview(self.buf)
        self.start = 0  # first byte not yet cut into a frame
        self.end = 0  # end of the bytes received
        self.eof = False  # the peer closed its side: no bytes will follow `end`
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._op = -1  # opcode of a fragmented message under way, else -1
        self._parts: list[bytes] = []
        self._size = 0

    def pending(self) -> bool:
        """True when TLS already decrypted bytes the selector cannot see."""
        return self._tls and self.sock.pending() > 0

    def fill(self) -> int:
        """Read what the socket holds now, without waiting; returns the bytes read (0 when it
        had none yet, e.g. half a TLS record). Sets `eof` when the peer closed; OSError when
        the socket failed."""
        start, end = self.start, self.end
        if start == end:
            self.start = self.end = end = 0
        elif len(self.buf) - end < 4096:
            # Little room left: move the unfinished frame to the front.
            n = end - start
            self.buf[:n] = bytes(self.view[start:end])  # a copy: the ranges may overlap
            self.start, self.end, end = 0, n, n
        if end == len(self.buf):
            self._make_room(2 * len(self.buf), 0)
            end = self.end
        try:
            n = self.sock.recv_into(self.view[end:])
        except _WOULD_BLOCK:
            return 0
        if n == 0:
            self.eof = True
        self.end = end + n
        return n

    def next(self) -> tuple[int, bytes] | None:
        """The next whole message (opcode of its first frame, payload) or control frame;
        None when the buffer holds no whole frame. ProtocolError on broken framing."""
        while True:
            buf, start = self.buf, self.start
            avail = self.end - start
            if avail < 2:
                return None
            b1, b2 = buf[start], buf[start + 1]
            if b1 == _FIN_TEXT and b2 == 126 and avail >= 4:
                # The usual frame (a whole unmasked text message of 126 bytes to 64 KiB)
                # without the general path's steps.
                stop = start + 4 + ((buf[start + 2] << 8) | buf[start + 3])
                if stop <= self.end and self._op < 0:
                    self.start = stop
                    return OP_TEXT, bytes(self.view[start + 4 : stop])
            n = b2 & 0x7F
            at = start + 2
            if n == 126:
                if avail < 4:
                    return None
                n = (buf[at] << 8) | buf[at + 1]
                at += 2
            elif n == 127:
                if avail < 10:
                    return None
                n = int.from_bytes(self.view[at : at + 8], "big")
                at += 8
            masked = b2 & 0x80
            if masked:
                at += 4
            stop = at + n
            if stop > self.end:
                self._make_room(stop - start, n)
                return None
            if b1 & 0x70:
                raise ProtocolError("reserved bits set (no extension was negotiated)")
            op = b1 & 0x0F
            payload = bytes(self.view[at:stop])
            self.start = stop
            if masked:
                payload = _unmask(buf[at - 4 : at], payload)
            fin = b1 & 0x80
            if op in (OP_TEXT, OP_BINARY):
                if self._op >= 0:
                    raise ProtocolError("a new message began inside a fragmented one")
                if fin:
                    return op, payload
                self._op, self._parts, self._size = op, [payload], n
            elif op == OP_CONT:
                if self._op < 0:
                    raise ProtocolError("a continuation frame outside any message")
                self._parts.append(payload)
                self._size += n
                if self._size > MAX_MESSAGE:
                    raise ProtocolError(f"a fragmented message past {MAX_MESSAGE} bytes")
                if fin:
                    op, whole = self._op, b"".join(self._parts)
                    self._op, self._parts, self._size = -1, [], 0
                    return op, whole
            elif op in _OPCODES:
                if not fin or n > 125:
                    raise ProtocolError(f"control frame {op:#x} fragmented or over 125 bytes")
                return op, payload
            else:
                raise ProtocolError(f"invalid opcode {op:#x}")

    def _make_room(self, frame_bytes: int, payload: int) -> None:
        """Grow the buffer when a frame cannot fit in it (refusing absurd lengths)."""
        if payload > MAX_MESSAGE:
            raise ProtocolError(f"a frame of {payload} bytes (more than {MAX_MESSAGE})")
        if frame_bytes > len(self.buf):
            size = len(self.buf)
            while size < frame_bytes:
                size *= 2
            kept = self.view[self.start : self.end].tobytes()
            self.view.release()
            self.buf = bytearray(size)
            self.view = memoryview(self.buf)
            self.buf[: len(kept)] = kept
            self.start, self.end = 0, len(kept)


def _unmask(key: bytes | bytearray, payload: bytes) -> bytes:
    """A masked frame's payload (servers must not mask, but some do)."""
    n = len(payload)
    repeated = (bytes(key) * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )
