"""The ingest's WebSocket frame reader over real sockets: frames split and joined by the
network any way, fragmented messages, control frames, broken framing, a close."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading

import pytest
import websocket

from mdpipe.ingest.backoff import Backoff
from mdpipe.ingest.connection import CONTROL, NOTHING, Connection, ConnectionLost
from mdpipe.ingest.wsframes import (
    MAX_MESSAGE,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    ProtocolError,
)


def frame(op: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One server-to-client frame (masked only to test a server that masks)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | op])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def read_all(reader: FrameReader, peer: socket.socket, data: bytes, chunk: int):
    """Send data in chunks of `chunk` bytes, reading after each: every frame that came out."""
    out = []
    for i in range(0, len(data), chunk):
        peer.sendall(data[i : i + chunk])
        while reader.fill():  # until the socket holds no more of what was sent
            while (got := reader.next()) is not None:
                out.append(got)
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 130, 1 << 20])
def test_frames_come_out_whole_however_the_bytes_arrive(pair, chunk: int) -> None:
    sock, peer = pair
    big = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length, past the first buffer
    mid = b"x" * 300  # a 16-bit length
    data = (
        frame(OP_TEXT, b'{"a":1}')
        + frame(OP_TEXT, b"")
        + frame(OP_BINARY, mid)
        + frame(OP_TEXT, mid)
        + frame(OP_PING, b"hi")
        + frame(OP_TEXT, big)
        + frame(OP_TEXT, b"part1-", fin=False)
        + frame(OP_PONG, b"")  # control frames may come between fragments
        + frame(OP_CONT, b"part2-", fin=False)
        + frame(OP_CONT, b"end")
        + frame(OP_TEXT, b"masked", mask=b"\x01\x02\x03\x04")
    )
    got = read_all(FrameReader(sock), peer, data, chunk)
    assert got == [
        (OP_TEXT, b'{"a":1}'),
        (OP_TEXT, b""),
        (OP_BINARY, mid),
        (OP_TEXT, mid),
        (OP_PING, b"hi"),
        (OP_TEXT, big),
        (OP_PONG, b""),
        (OP_TEXT, b"part1-part2-end"),
        (OP_TEXT, b"masked"),
    ]


@pytest.mark.parametrize("chunk", [4099, 60_000])  # within the socket pair's buffer
def test_a_stream_longer_than_the_buffer_keeps_every_frame(pair, chunk: int) -> None:
    """Frames that straddle the buffer's end are moved to its front, none lost or reordered."""
    sock, peer = pair
    payloads = [f"{i:05d}".encode() * (100 + i % 300) for i in range(400)]  # 500 B to 2 KB
    data = b"".join(frame(OP_TEXT, p) for p in payloads)
    assert read_all(FrameReader(sock), peer, data, chunk) == [(OP_TEXT, p) for p in payloads]


def test_nothing_to_read_is_not_an_end(pair) -> None:
    sock, peer = pair
    reader = FrameReader(sock)
    assert reader.fill() == 0 and not reader.eof and reader.next() is None
    peer.sendall(frame(OP_TEXT, b"abc")[:3])  # half a frame
    assert reader.fill() == 3 and reader.next() is None
    peer.sendall(frame(OP_TEXT, b"abc")[3:])
    assert reader.fill() == 2 and reader.next() == (OP_TEXT, b"abc")


def test_end_of_stream_after_the_frames_before_it(pair) -> None:
    sock, peer = pair
    reader = FrameReader(sock)
    peer.sendall(frame(OP_TEXT, b"1") + frame(OP_TEXT, b"2"))
    peer.close()
    while not reader.eof:
        reader.fill()
    assert [reader.next(), reader.next(), reader.next()] == [(OP_TEXT, b"1"), (OP_TEXT, b"2"), None]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (bytes([0x80 | 0x40 | OP_TEXT, 1]) + b"x", "reserved bits"),
        (bytes([0x80 | 0x3, 1]) + b"x", "invalid opcode 0x3"),
        (frame(OP_CONT, b"x"), "continuation frame outside"),
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), "new message began"),
        (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b" * 200), "new message began"),
        (frame(OP_PING, b"p", fin=False), "fragmented or over 125"),
        (frame(OP_PING, b"p" * 126), "fragmented or over 125"),
        (bytes([0x80 | OP_TEXT, 127]) + struct.pack("!Q", MAX_MESSAGE + 1), "more than"),
    ],
)
def test_broken_framing_is_refused(pair, data: bytes, says: str) -> None:
    sock, peer = pair
    reader = FrameReader(sock)
    peer.sendall(data)
    while not reader.fill():
        pass
    with pytest.raises(ProtocolError, match=says):
        while reader.next() is not None:
            pass


def _server(listener: socket.socket, script: list[bytes], seen: list[bytes]) -> None:
    """Accept one WebSocket client, send the script, then record what the client sends."""
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        for chunk in script:
            conn.sendall(chunk)
        conn.settimeout(10)
        try:
            while data := conn.recv(4096):
                seen.append(data)
        except OSError:
            pass


def test_connection_answers_pings_and_reports_the_close_reason() -> None:
    """Connection.read over a real handshake: data, a ping answered with its payload, then
    the server's close frame (answered) ends the connection with its code and reason."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    script = [
        frame(OP_TEXT, b'{"n":1}')
        + frame(OP_PING, b"are you there")
        + frame(OP_TEXT, b'{"n":2}')
        + frame(OP_CLOSE, struct.pack("!H", 1001) + b"going away")
    ]
    seen: list[bytes] = []
    t = threading.Thread(target=_server, args=(listener, script, seen), daemon=True)
    t.start()
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=10)
    conn = Connection("public#0", f"ws://127.0.0.1:{port}/", {}, Backoff(0.1, 1))
    conn.attach(ws, 0.0)
    got: list[object] = []
    with pytest.raises(ConnectionLost, match=r"closed by the server \(code 1001: going away\)"):
        while True:
            conn.fill()
            while (raw := conn.read()) is not NOTHING:
                got.append(raw)
    assert got == [b'{"n":1}', CONTROL, b'{"n":2}']
    conn.drop()
    t.join(10)
    listener.close()
    sent = b"".join(seen)
    # Client frames are masked: the pong and the close are there, with their payloads.
    pong, close = _client_frames(sent)
    assert pong == (OP_PONG, b"are you there")
    assert close == (OP_CLOSE, struct.pack("!H", 1000))


def _client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Decode masked client frames."""
    out, i = [], 0
    while i < len(data):
        op, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack("!H", data[i : i + 2])[0], i + 2
        key, i = data[i : i + 4], i + 4
        out.append((op, bytes(b ^ key[j % 4] for j, b in enumerate(data[i : i + n]))))
        i += n
    return out
