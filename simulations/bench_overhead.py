"""Framework overhead: seconds per round of fedcompress (identity codecs, ledger and checkpoints on) against a lean
stock Flower app (`baselines/plain_fedavg`: Flower's quickstart-pytorch shape, stock FedAvg, central evaluation).

Both run on Flower's simulation engine with the same data, model, clients per round and the same training
examples (each client's train split; `val-fraction` 0.1 held out in both), alternating plain / ours [/ before]
in each repeat so a noisy machine's drift hits every arm. `--before PATH` adds a third arm: fedcompress from
another checkout (e.g. main's), run with PYTHONPATH=PATH. A round is timed from one central evaluation to the
next in both apps. Prints per-run figures and, last, one JSON line with medians and ratios.

    python -m simulations.bench_overhead --rounds 30 --repeats 2 [--before /path/to/main]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcompress.launch.simulation import run_flower_app, simulate

PLAIN_APP = Path(__file__).resolve().parent / "baselines" / "plain_fedavg"


def common_config(args: argparse.Namespace) -> dict[str, Any]:
    from fedcompress.data import default_data_dir

    return {
        "dataset": args.dataset, "data-dir": str(default_data_dir().resolve()), "partitioning": "natural",
        "num-partitions": args.num_clients, "clients-per-round": args.clients_per_round,
        "num-server-rounds": args.rounds, "learning-rate": 0.05, "batch-size": 32, "local-epochs": 1,
        "seed": 0, "val-fraction": 0.1,
    }  # fmt: skip


def run_plain(common: dict[str, Any], tmp: Path, tag: str) -> list[float]:
    timing = tmp / f"{tag}.json"
    run_flower_app(PLAIN_APP, {**common, "timing-file": str(timing)}, common["num-partitions"], echo=None)
    return json.loads(timing.read_text())["round_seconds"]  # gaps between evaluations: rounds 1..N


def run_ours(common: dict[str, Any], tmp: Path, tag: str, pythonpath: str | None = None) -> list[float]:
    run_dir = tmp / tag
    old = os.environ.get("PYTHONPATH")
    if pythonpath is not None:  # Flower's processes import fedcompress from there
        os.environ["PYTHONPATH"] = pythonpath
    try:
        overrides = {**common, "uplink": "identity", "downlink": "identity", "eval-every": 1}
        simulate({**overrides, "run-dir": str(run_dir)}, echo=None)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["seconds"] for r in rows if r["round"] > 0]


def summarize(runs: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    mine = [r for r in runs if r["arm"] == arm]
    pooled = [s for r in mine for s in r["rounds"]]
    return {
        "median_s_per_round": round(statistics.median(pooled), 4),
        "run_medians": [round(r["median"], 4) for r in mine],
        "wall_s": [round(r["wall"], 1) for r in mine],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="femnist")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-clients", type=int, default=105)
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--skip", type=int, default=3, help="first rounds left out (actor start-up)")
    ap.add_argument("--before", default="", help="also time fedcompress from this checkout (PYTHONPATH)")
    ap.add_argument("--out", default="", help="also write the JSON result (and every run's rounds) here")
    args = ap.parse_args(argv)
    common = common_config(args)
    arms: dict[str, Callable[[Path, str], list[float]]] = {
        "plain": lambda tmp, tag: run_plain(common, tmp, tag),
        "ours": lambda tmp, tag: run_ours(common, tmp, tag, os.environ.get("PYTHONPATH")),
    }
    if args.before:
        arms["before"] = lambda tmp, tag: run_ours(common, tmp, tag, str(Path(args.before).resolve()))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for arm, run in arms.items():
                t0 = time.perf_counter()
                secs = run(Path(tmp), f"{arm}{rep}")[args.skip :]
                wall = time.perf_counter() - t0
                runs.append({"arm": arm, "repeat": rep, "rounds": secs, "median": statistics.median(secs),
                             "wall": wall, "load": os.getloadavg()[0]})  # fmt: skip
                print(f"repeat {rep} {arm:6s}: median {statistics.median(secs):.3f} s/round, "
                      f"mean {statistics.mean(secs):.3f}, wall {wall:.0f} s, load {os.getloadavg()[0]:.1f}",
                      flush=True)  # fmt: skip
    result: dict[str, Any] = {arm: summarize(runs, arm) for arm in arms}
    base = result["plain"]["median_s_per_round"]
    for arm in arms:
        if arm != "plain":
            result[f"ratio_{arm}"] = round(result[arm]["median_s_per_round"] / base, 4)
    result.update(rounds=args.rounds, skip=args.skip, repeats=args.repeats)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps({**result, "runs": runs}, indent=1))
    return result


if __name__ == "__main__":
    main()
