"""WebSocket frames read per CPU second: the ingest's frame reader against websocket-client.

The recorded Binance futures tape (depth diffs, trades and bookTicker, as the exchange
frames them: unmasked text frames) is sent over a real loopback TCP connection by a
separate process, in batches of k frames: each batch waits until the reader has taken the
one before (one byte back), so each wakeup finds k frames; "all" sends the tape at once, as
fast as the reader takes it. The reader is the ingest's loop shape: a selector waits for
the socket, then either
- mdpipe (mdpipe.ingest.wsframes): one non-blocking recv_into per readiness, every whole
  frame cut from the buffer, or
- websocket-client 1.x (`recv_data_frame`, what the ingest used before, and what most
  Python feed handlers use): one frame per call, read with a timeout set on the socket.
Each reader takes every frame (payloads checked against the tape, byte for byte); the
figure is frames per CPU second of the reading process, the best of N runs, alternated.

Against the simulator at 10,400 frames/s an ingest process found 22 frames a wakeup on
average (counted once, outside this bench); k = 1 is the worst case for a reader that
takes whatever is there.

Run: .venv/bin/python bench/ws_read.py [--runs N] [--frames N] [--batches 1,20,all]
"""

from __future__ import annotations

import argparse
import os
import platform
import selectors
import signal
import socket
import struct
import time
import zlib
from collections.abc import Callable

import websocket

from mdpipe.ingest.wsframes import OP_TEXT, FrameReader
from mdpipe.venues.tapes import load_tape, tape_path


def frame(payload: bytes) -> bytes:
    """One server-to-client text frame, as an exchange sends it (unmasked)."""
    n = len(payload)
    if n < 126:
        return bytes([0x81, n]) + payload
    if n < 1 << 16:
        return bytes([0x81, 126]) + struct.pack("!H", n) + payload
    return bytes([0x81, 127]) + struct.pack("!Q", n) + payload


def serve(batches: list[bytes], acked: bool) -> tuple[int, int]:
    """A child process that sends the batches to the first client, each after the reader
    took the one before when `acked`; returns (pid, port)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            conn, _ = listener.accept()
            for batch in batches:
                conn.sendall(batch)
                if acked:
                    conn.recv(1)
            conn.recv(1)  # until the reader closes
        finally:
            os._exit(0)
    listener.close()
    return pid, port


def read_mdpipe(sock: socket.socket, n: int, k: int) -> tuple[int, int]:
    """(frames, crc of payloads) through FrameReader, the ingest's loop shape."""
    sock.setblocking(False)
    reader = FrameReader(sock)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    got, crc = 0, 0
    while got < n:
        sel.select(5)
        reader.fill()
        while (found := reader.next()) is not None:
            op, payload = found
            if op == OP_TEXT:
                crc = zlib.crc32(payload, crc)
                got += 1
                if got % k == 0:
                    sock.send(b"k")
    sel.close()
    return got, crc


def read_websocket_client(sock: socket.socket, n: int, k: int) -> tuple[int, int]:
    """(frames, crc of payloads) through websocket-client's recv_data_frame."""
    ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
    ws.sock, ws.connected = sock, True
    sock.settimeout(5.0)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    got, crc = 0, 0
    while got < n:
        sel.select(5)
        op, fr = ws.recv_data_frame(True)
        if op == websocket.ABNF.OPCODE_TEXT:
            crc = zlib.crc32(fr.data, crc)
            got += 1
            if got % k == 0:
                sock.send(b"k")
    sel.close()
    return got, crc


Reader = Callable[[socket.socket, int, int], tuple[int, int]]


def run(frames: list[bytes], k: int, read: Reader) -> tuple[float, int, int]:
    """One run, k frames a batch (0: all at once): (CPU seconds of this process, frames, crc)."""
    acked = k > 0
    step = k if acked else len(frames)
    batches = [b"".join(frames[i : i + step]) for i in range(0, len(frames), step)]
    pid, port = serve(batches, acked)
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        cpu0 = time.process_time()
        got, crc = read(sock, len(frames), step if acked else len(frames) + 1)
        cpu = time.process_time() - cpu0
    finally:
        sock.close()
        os.waitpid(pid, 0)
    return cpu, got, crc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--batches", default="1,20,all", help="frames a wakeup; all: the tape at once")
    args = ap.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    payloads = [raw for _, raw in load_tape(tape_path("usdm_btcusdt_20240808.gz"))]
    payloads = (payloads * (args.frames // len(payloads) + 1))[: args.frames]
    frames = [frame(p) for p in payloads]
    want = 0
    for p in payloads:
        want = zlib.crc32(p, want)
    readers: dict[str, Reader] = {
        "mdpipe FrameReader": read_mdpipe,
        "websocket-client": read_websocket_client,
    }
    ks = [0 if b == "all" else int(b) for b in args.batches.split(",")]
    best: dict[tuple[int, str], float] = {}
    for _ in range(args.runs):
        for k in ks:
            for name, read in readers.items():
                cpu, got, crc = run(frames, k, read)
                if (got, crc) != (len(payloads), want):
                    raise SystemExit(f"{name}: {got} frames, payloads differ from the tape")
                best[k, name] = min(best.get((k, name), cpu), cpu)
    mean = sum(map(len, payloads)) / len(payloads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, websocket-client "
        f"{websocket.__version__}, load average {load}"
    )
    print(
        f"# {len(payloads):,} frames of the futures tape (mean {mean:,.0f} B), best of {args.runs}"
    )
    print(
        f"{'frames a wakeup':<16} {'reader':<20} {'frames/CPU s':>13} {'us/frame':>9} "
        f"{'vs websocket-client':>20}"
    )
    for k in ks:
        base = best[k, "websocket-client"]
        for name in readers:
            cpu = best[k, name]
            print(
                f"{k or 'all':<16} {name:<20} {len(payloads) / cpu:>13,.0f} "
                f"{1e6 * cpu / len(payloads):>9.2f} {base / cpu:>19.1f}x"
            )


if __name__ == "__main__":
    main()
