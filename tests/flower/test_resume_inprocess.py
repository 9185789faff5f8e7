"""Exact resume through the real server loop and ClientApp in-process (fast): a run stopped right after its
checkpoint of round k, resumed with fresh client nodes (their context.state lost, as in simulation), ends with the
uninterrupted run's model, bit for bit, for several inner strategies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedcompress.config import RunConfig, defaults
from fedcompress.flower import serverapp
from fedcompress.flower.checkpoint import Checkpointer
from fedcompress.flower.clientapp import app as client_app
from fedcompress.ledger import RunRecorder
from tests.flower.loopback import LoopbackGrid


class Killed(Exception):
    pass


def _run(run_dir: Path, cfg: RunConfig, stop_after: int | None = None, resume: bool = False) -> LoopbackGrid:
    cfg = RunConfig.from_run_config({**cfg.as_run_config(), "run-dir": str(run_dir), "resume-run": resume})
    ckpt, resumed = serverapp.open_checkpoint(cfg, run_dir)
    if stop_after is not None:
        save = ckpt.save

        def save_then_die(rnd, arrays, fc):  # noqa: ANN001, ANN202
            save(rnd, arrays, fc)
            if rnd == stop_after:
                raise Killed

        ckpt.save = save_then_die  # type: ignore[method-assign]
    rec = RunRecorder(
        run_dir, cfg.as_run_config(), cfg.digest(), resume_at=resumed.offsets if resumed else None
    )
    grid = LoopbackGrid(client_app, cfg.as_run_config(), cfg.num_partitions)
    try:
        serverapp._run(grid, cfg, rec, ckpt, resumed)  # type: ignore[arg-type]
    except Killed:
        return grid
    rec.finish()
    return grid


CFG = {
    "num-partitions": 5, "clients-per-round": 3, "partitioning": "dirichlet", "local-epochs": 1, "seed": 4,
    "num-server-rounds": 5, "server-learning-rate": 0.05, "uplink": "topk(0.1) > ef > uniform(4) > entropy",
    "downlink": "topk(0.5) > uniform(8) > entropy",
}  # fmt: skip


def test_client_state_lives_on_disk_not_in_the_simulation_memory(tmp_path: Path) -> None:
    """Between rounds no node keeps its residual or held model in context.state (it would grow with every client
    that ever trained); the store under the run directory has them, and the residuals are not all zero."""
    from fedcompress.flower.client_state import KEYS
    from fedcompress.flower.protocol import RESIDUAL
    from fedcompress.flower.statefile import load_state

    cfg = RunConfig.from_run_config({**defaults(), **CFG, "num-server-rounds": 3})
    grid = _run(tmp_path / "run", cfg, stop_after=3)  # stopped after its last checkpoint: the store is kept
    for ctx in grid.contexts.values():
        assert not any(k in ctx.state for k in KEYS), list(ctx.state)
    files = sorted((tmp_path / "run" / "client-state").glob("p*/r*.npz"))
    assert files
    prefix = f"r{KEYS.index(RESIDUAL)}"  # statefile.py names a key's arrays by its index in KEYS
    residual_norms = [
        sum(float(np.abs(v).sum()) for k, v in load_state(f)[0].items() if k.startswith(prefix))
        for f in files
    ]
    assert max(residual_norms) > 0


@pytest.mark.parametrize("strategy", ["fedadam", "fedavgm"])
def test_stopped_and_resumed_run_is_bit_identical(tmp_path: Path, strategy: str) -> None:
    cfg = RunConfig.from_run_config({**defaults(), **CFG, "strategy": strategy})
    _run(tmp_path / "whole", cfg)
    _run(tmp_path / "cut", cfg, stop_after=2)
    assert Checkpointer(tmp_path / "cut", {}).folder.joinpath("state.npz").exists()
    _run(tmp_path / "cut", cfg, resume=True)
    a = torch.load(tmp_path / "whole" / "models" / "global.pt")
    b = torch.load(tmp_path / "cut" / "models" / "global.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    whole = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == list(range(6))
    assert [r["accuracy"] for r in rows] == [r["accuracy"] for r in whole]
    assert np.isfinite([r["accuracy"] for r in rows]).all()
