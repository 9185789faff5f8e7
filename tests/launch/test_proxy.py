"""The wire proxy relays bytes unchanged and counts each direction exactly (fast: no Flower process)."""

from __future__ import annotations

import socket
import threading

from fedcompress.launch.progress import wire_agrees
from fedcompress.launch.proxy import ByteCountingProxy


def test_proxy_relays_and_counts_both_directions() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def echo_twice() -> None:
            conn, _ = server.accept()
            with conn:
                data = b""
                while len(data) < 100_000:
                    data += conn.recv(65536)
                conn.sendall(data + data)

        t = threading.Thread(target=echo_twice, daemon=True)
        t.start()
        proxy = ByteCountingProxy("127.0.0.1", port).start()
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as c:
                c.sendall(b"x" * 100_000)
                got = b""
                while len(got) < 200_000:
                    got += c.recv(65536)
            t.join(timeout=10)
            assert got == b"x" * 200_000
            snap = proxy.snapshot()
            assert (snap.up, snap.down, snap.connections) == (100_000, 200_000, 1)
        finally:
            proxy.stop()


def test_wire_tolerance_rejects_missing_and_excess_bytes() -> None:
    ok = {
        "overhead_up": 5_000,
        "overhead_down": 9_000,
        "messages_up": 3,
        "messages_down": 3,
        "node_seconds": 30,
    }
    assert wire_agrees(ok)
    assert not wire_agrees({**ok, "overhead_up": -1})  # fewer bytes crossed than the ledger says were sent
    assert not wire_agrees({**ok, "overhead_down": 10**9})
