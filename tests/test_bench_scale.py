"""The scale benchmark's memory probe and plot, and node-order discovery (the full benchmark runs simulations)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedcompress.bench.scale import PeakRSS, plot
from fedcompress.errors import RunError
from fedcompress.flower.serverapp import node_order_partitions
from fedcompress.launch.process import TAG_ENV


def test_peak_rss_sums_the_tagged_process_tree() -> None:
    tag = "scale-test-probe"
    env = {**os.environ, TAG_ENV: tag}
    code = "import time; b = bytearray(80_000_000); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        with PeakRSS(tag, interval=0.1) as meter:
            proc.wait(timeout=30)
        assert meter.peak > 80_000_000  # the 80 MB it touched, and nothing of this test process
    finally:
        proc.kill()
    with PeakRSS("no-such-tag", interval=0.1) as idle:
        pass
    assert idle.peak == 0


def test_plot_writes_memory_against_clients(tmp_path: Path) -> None:
    rows = [
        {"clients": n, "pipeline": p, "peak_rss_mb": m}
        for n, p, m in [(100, "identity", 3000), (1000, "identity", 3100), (100, "compressed", 3050)]
    ]
    plot(rows, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 1000


class _Grid:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def get_node_ids(self) -> list[int]:
        return self.ids


def test_node_order_partitions_are_slots_in_node_id_order() -> None:
    assert node_order_partitions(_Grid([30, 10, 20]), 3) == {0: 10, 1: 20, 2: 30}
    with pytest.raises(RunError, match="only 1 of 2 nodes"):
        node_order_partitions(_Grid([5]), 2, timeout=0.0)
