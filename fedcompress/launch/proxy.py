"""A byte-counting TCP relay: SuperNodes connect to it, it forwards to the SuperLink and counts every byte.

It sits below TLS (it forwards ciphertext untouched, so certificates and node authentication work as without
it), so its counts are what really crossed the network: message objects plus TLS records, HTTP/1.1 framing,
protobuf envelopes, polling and heartbeats. `fedcompress deploy local --wire-proxy` compares them with the
ledger, which counts the serialized message objects only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

CHUNK = 1 << 16


@dataclass
class WireCount:
    """Bytes relayed so far: `up` SuperNode -> SuperLink, `down` SuperLink -> SuperNode."""

    up: int = 0
    down: int = 0
    connections: int = 0
    timeline: list[tuple[float, str, int]] = field(default_factory=list)  # (monotonic s, "up"|"down", bytes)

    def between(self, start: float, end: float) -> tuple[int, int]:
        """Bytes (up, down) relayed in the time window [start, end)."""
        up = sum(n for t, d, n in self.timeline if start <= t < end and d == "up")
        down = sum(n for t, d, n in self.timeline if start <= t < end and d == "down")
        return up, down


class ByteCountingProxy:
    """Listen on `host:0` (a free port), relay each connection to `target`, count both directions.

    Runs its own asyncio loop in a daemon thread so the launcher stays synchronous; `stop()` closes everything.
    """

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.count = WireCount()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wire-proxy", daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ByteCountingProxy:
        self._thread.start()
        if not self._ready.wait(timeout) or self._server is None:
            raise RuntimeError(f"the wire proxy could not listen on {self.host}")
        return self

    def snapshot(self) -> WireCount:
        """A copy of the counts (safe to read while traffic flows)."""
        with self._lock:
            c = self.count
            return WireCount(c.up, c.down, c.connections, list(c.timeline))

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
            self.port = self._server.sockets[0].getsockname()[1]
        finally:
            self._ready.set()
        self._loop.run_forever()
        self._server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        with self._lock:
            self.count.connections += 1
        await asyncio.gather(
            self._pump(client_r, server_w, "up"),
            self._pump(server_r, client_w, "down"),
            return_exceptions=True,
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        try:
            while data := await reader.read(CHUNK):
                with self._lock:
                    setattr(self.count, direction, getattr(self.count, direction) + len(data))
                    self.count.timeline.append((time.monotonic(), direction, len(data)))
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()
