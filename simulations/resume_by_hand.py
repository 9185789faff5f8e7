"""Exact resume by hand on a real dataset: run a config once uninterrupted, run it again and SIGKILL the whole
process tree (launcher, detached SuperLink, simulation process, Ray) at a random round, resume it with
`simulate(resume=...)`, and compare the two final models tensor by tensor.

    python -m simulations.resume_by_hand --rounds 30 --out runs/resume-femnist

Prints the round it killed at, whether every tensor is bit-identical, and the rounds in the resumed metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fedcompress.launch.process import TAG_ENV, family, tagged
from fedcompress.launch.simulation import simulate

FEMNIST = {
    "dataset": "femnist", "partitioning": "natural", "num-partitions": 105, "clients-per-round": 10,
    "local-epochs": 1, "learning-rate": 0.05, "batch-size": 32, "seed": 3, "strategy": "fedadam",
    "server-learning-rate": 0.01, "uplink": "topk(0.01) > ef > uniform(4) > entropy",
    "downlink": "topk(0.1) > uniform(4) > entropy",
}  # fmt: skip


def kill_at_round(
    overrides: dict[str, Any], run_dir: Path, kill_round: int, tag: str, limit: float = 1800
) -> None:
    """Start a launcher in its own process; SIGKILL everything it started once round `kill_round` is logged."""
    code = "import json,sys; from fedcompress.launch.simulation import simulate; simulate(json.loads(sys.argv[1]), echo=None)"
    cfg = json.dumps({**overrides, "run-dir": str(run_dir)})
    proc = subprocess.Popen(
        [sys.executable, "-c", code, cfg], env={**os.environ, TAG_ENV: tag}, cwd=os.getcwd()
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if metrics.exists() and any(
            json.loads(line)["round"] >= kill_round
            for line in metrics.read_text().splitlines()
            if line.strip()
        ):
            break
        if proc.poll() is not None:
            raise RuntimeError("the run ended before it could be killed")
        time.sleep(0.05)
    else:
        raise TimeoutError(f"the run never reached round {kill_round}")
    for _ in range(3):  # SIGKILL, all at once, to the tree and to whatever carries the launch tag
        for pid in family([proc.pid]) | tagged(tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.5)
    proc.wait(timeout=30)
    if (run_dir / "summary.json").exists():
        raise RuntimeError("the killed run looks finished")


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("runs/resume-femnist"))
    ap.add_argument("--kill-seed", default=None, help="seed of the random kill round")
    args = ap.parse_args(argv)
    cfg = {**FEMNIST, "num-server-rounds": args.rounds}
    whole, cut = (args.out / "whole").resolve(), (args.out / "killed").resolve()
    simulate(
        {**cfg, "run-dir": str(whole)}, echo=None, resume=whole if (whole / "summary.json").exists() else None
    )
    kill_round = random.Random(args.kill_seed).randint(1, args.rounds - 1)
    print(f"killing at round {kill_round}", flush=True)
    kill_at_round(cfg, cut, kill_round, f"resume-by-hand-{os.getpid()}")
    simulate({}, echo=None, resume=cut)
    a, b = torch.load(whole / "models" / "global.pt"), torch.load(cut / "models" / "global.pt")
    same = [k for k in a if a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])]
    rounds = [json.loads(x)["round"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    result = {"killed_at_round": kill_round, "tensors": len(a), "bit_identical": len(same),
              "metrics_rounds_once": rounds == list(range(args.rounds + 1))}  # fmt: skip
    print(json.dumps(result), flush=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
