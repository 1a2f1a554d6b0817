"""Realtime subscribers for bench/realtime.py: many connections in one asyncio process.

Each connection is a small asyncio Protocol that speaks just enough of its wire format to
read events cheaply, so the client side costs far less CPU than a full library would:

- `ws`: Backpack's WebSocket (`GET /api/realtime`, RFC 6455: handshake, unmasked server
  frames, masked client frames, pings answered), subscribed with a filter that matches.
- `sse`: PocketBase's Server-Sent Events (`GET /api/realtime`, chunked HTTP/1.1), the
  `PB_CONNECT` client id, then `POST /api/realtime {clientId, subscriptions}`.

Every event's record carries `t` (the writer's time.time() before it sent the create);
receive time - t is its delivery latency (same machine, same clock).

Run as a worker: `python -m bench.realtime_client --kind ws|sse --port P --count N
--collection C`. It prints one JSON line when its connections are subscribed, then answers
commands read from stdin, one a line: `count` (events received so far) and `stop` (the
results, then it exits).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import struct
import sys
import time
from abc import ABC, abstractmethod
from typing import Any, cast

import orjson

HOST = "127.0.0.1"
CONNECT_PARALLEL = 50  # connection attempts in flight per worker (the server's backlog)
CONNECT_TIMEOUT_S = 60.0


def raise_nofile() -> tuple[int, int]:
    """Raise this process's open-file soft limit to its hard limit; returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Sink:
    """What every connection of a process records."""

    def __init__(self, keep_latencies: bool = True) -> None:
        self.latencies_ms: list[float] = []
        self.keep = keep_latencies
        self.received = 0
        self.first_rx = 0.0
        self.last_rx = 0.0
        self.closed = 0
        self.close_reasons: dict[str, int] = {}
        self.on_event: list[Any] = []  # callbacks (probe): called with the record

    def event(self, record: dict[str, Any], now: float) -> None:
        self.received += 1
        if not self.first_rx:
            self.first_rx = now
        self.last_rx = now
        t = record.get("t")
        if self.keep and isinstance(t, int | float):
            self.latencies_ms.append(round((now - t) * 1000.0, 3))
        for callback in self.on_event:
            callback(record)

    def lost(self, reason: str) -> None:
        self.closed += 1
        self.close_reasons[reason] = self.close_reasons.get(reason, 0) + 1


class Conn(asyncio.Protocol, ABC):
    """Shared parts: the handshake, a per-connection count, the sink."""

    def __init__(self, sink: Sink, ready: asyncio.Future[None]) -> None:
        self.sink = sink
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.headers_done = False
        self.count = 0
        self.done = False
        self.local_port = 0
        self.own: Sink | None = None  # this connection's events alone (--per-connection)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local_port = int(sockname[1]) if sockname else 0
        self.transport.write(self.request())

    @abstractmethod
    def request(self) -> bytes:
        """The HTTP request that opens this kind of stream."""

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        elif not self.done:
            self.sink.lost(reason)
        self.done = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self.fail(f"connection lost: {exc or 'closed by the server'}")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.headers_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            self.headers_done = True
            if not self.accept(head):
                return
        self.feed(time.time())

    @abstractmethod
    def accept(self, head: str) -> bool:
        """Whether the response head opens the stream (else fail)."""

    @abstractmethod
    def feed(self, now: float) -> None:
        """Consume `self.buf`: frames or events received at `now`."""


class WsConn(Conn):
    """One Backpack WebSocket, anonymous, one subscription with a filter that matches."""

    def __init__(
        self, sink: Sink, ready: asyncio.Future[None], port: int, collection: str, filt: Any
    ) -> None:
        super().__init__(sink, ready)
        self.port = port
        self.subscribe = json.dumps(
            {"type": "subscribe", "id": "s1", "collection": collection, "filter": filt}
        ).encode()

    def request(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET /api/realtime HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def send(self, opcode: int, payload: bytes) -> None:
        # Client frames must be masked; a zero mask leaves the payload as it is.
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        assert self.transport is not None
        self.transport.write(head + b"\x00\x00\x00\x00" + payload)

    def accept(self, head: str) -> bool:
        if not head.startswith("HTTP/1.1 101"):
            self.fail(f"handshake refused: {head.splitlines()[0] if head else '?'}")
            return False
        self.send(0x1, self.subscribe)
        return True

    def feed(self, now: float) -> None:
        buf = self.buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self.message(payload, now)
            elif opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.fail(f"closed by the server with {code}")
                break
        del buf[:pos]

    def message(self, payload: bytes, now: float) -> None:
        msg = orjson.loads(payload)
        kind = msg.get("type")
        if kind == "change":
            self.count += 1
            self.sink.event(msg["record"], now)
            if self.own is not None:
                self.own.event(msg["record"], now)
        elif kind == "ack":
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "error":
            self.fail(f"error message: {msg.get('error')}")


class SseConn(Conn):
    """One PocketBase SSE connection; `client_id` is set by PB_CONNECT."""

    def __init__(self, sink: Sink, ready: asyncio.Future[None], port: int) -> None:
        super().__init__(sink, ready)
        self.port = port
        self.chunked = False
        self.text = bytearray()  # the de-chunked stream
        self.client_id: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def request(self) -> bytes:
        return (
            f"GET /api/realtime HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-store\r\n\r\n"
        ).encode()

    def accept(self, head: str) -> bool:
        if not head.startswith("HTTP/1.1 200"):
            self.fail(f"SSE refused: {head.splitlines()[0] if head else '?'}")
            return False
        self.chunked = "transfer-encoding: chunked" in head.lower()
        return True

    def feed(self, now: float) -> None:
        if self.chunked:
            buf = self.buf
            pos = 0
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                n = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                if len(buf) < eol + 2 + n + 2:
                    break
                self.text += buf[eol + 2 : eol + 2 + n]
                pos = eol + 2 + n + 2
                if n == 0:
                    self.fail("stream ended")
                    break
            del buf[:pos]
        else:
            self.text += self.buf
            self.buf.clear()
        text = self.text
        start = 0
        while True:
            end = text.find(b"\n\n", start)
            if end < 0:
                break
            self.event_block(bytes(text[start:end]), now)
            start = end + 2
        del text[:start]

    def event_block(self, block: bytes, now: float) -> None:
        name = b""
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        if not data:
            return
        payload = orjson.loads(b"\n".join(data))
        if name == b"PB_CONNECT":
            if not self.client_id.done():
                self.client_id.set_result(str(payload["clientId"]))
            return
        record = payload.get("record") if isinstance(payload, dict) else None
        if isinstance(record, dict):
            self.count += 1
            self.sink.event(record, now)


async def _post_json(port: int, path: str, body: Any) -> int:
    """One small POST on its own connection (PocketBase's subscription request)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        raw = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode()
            + raw
        )
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
        return int(status_line.split()[1])
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def open_one(
    kind: str, port: int, collection: str, filt: Any, sink: Sink
) -> tuple[Conn, asyncio.Transport]:
    """Connect and subscribe one client; returns once its subscription is confirmed."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    conn: Conn
    if kind == "ws":
        transport, conn = await loop.create_connection(
            lambda: WsConn(sink, ready, port, collection, filt), HOST, port
        )
        await asyncio.wait_for(ready, CONNECT_TIMEOUT_S)
    else:
        transport, conn = await loop.create_connection(
            lambda: SseConn(sink, ready, port), HOST, port
        )
        assert isinstance(conn, SseConn)
        client_id = await asyncio.wait_for(conn.client_id, CONNECT_TIMEOUT_S)
        status = await _post_json(
            port, "/api/realtime", {"clientId": client_id, "subscriptions": [f"{collection}/*"]}
        )
        if status not in (200, 204):
            transport.close()
            raise ConnectionError(f"PocketBase subscription answered HTTP {status}")
        ready.set_result(None)
    return conn, transport


async def open_many(
    kind: str, port: int, collection: str, filt: Any, count: int, sink: Sink
) -> tuple[list[Conn], list[str]]:
    """Open `count` subscribed connections, CONNECT_PARALLEL at a time."""
    gate = asyncio.Semaphore(CONNECT_PARALLEL)
    conns: list[Conn] = []
    errors: list[str] = []

    async def one() -> None:
        async with gate:
            try:
                conn, _ = await open_one(kind, port, collection, filt, sink)
                conns.append(conn)
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one() for _ in range(count)))
    return conns, errors


def results(conns: list[Conn], sink: Sink, errors: list[str]) -> dict[str, Any]:
    counts = [c.count for c in conns]
    out = {
        "connections": len(conns),
        "connect_errors": len(errors),
        "first_error": errors[0] if errors else "",
        "received": sink.received,
        "counts": counts,
        "first_rx": sink.first_rx,
        "last_rx": sink.last_rx,
        "closed": sink.closed,
        "close_reasons": sink.close_reasons,
        "latencies_ms": sink.latencies_ms,
    }
    if any(c.own is not None for c in conns):  # --per-connection
        out["ports"] = [c.local_port for c in conns]  # each connection's client port
        out["conn_latencies_ms"] = [c.own.latencies_ms if c.own else [] for c in conns]
    return out


async def worker(args: argparse.Namespace) -> None:
    limits = raise_nofile()
    sink = Sink()
    filt = json.loads(args.filter)
    conns, errors = await open_many(args.kind, args.port, args.collection, filt, args.count, sink)
    if args.per_connection:
        for conn in conns:
            conn.own = Sink()
    out = sys.stdout
    out.write(
        json.dumps(
            {
                "ready": len(conns),
                "connect_errors": len(errors),
                "first_error": errors[0] if errors else "",
                "nofile": limits,
            }
        )
        + "\n"
    )
    out.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "count":
            out.write(json.dumps({"received": sink.received, "closed": sink.closed}) + "\n")
            out.flush()
        elif line in ("stop", ""):
            out.write(json.dumps(results(conns, sink, errors)) + "\n")
            out.flush()
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("ws", "sse"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--filter", default='{"score": {"$gte": 0}}')
    parser.add_argument(
        "--per-connection",
        action="store_true",
        help="also report each connection's client port and its own latencies (WebSocket)",
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker(args))
    else:
        uvloop.run(worker(args))


if __name__ == "__main__":
    main()
