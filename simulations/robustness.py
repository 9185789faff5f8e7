"""Robustness tables, resumable: each cell is a run directory; a finished cell is read back, a killed one
continues from its checkpoint, so rerunning the command after an interruption finishes the table.

Poisoned updates (MNIST, Dirichlet(0.3), 100 clients, 10 a round, compressed both ways, 20% attackers):

    python -m simulations.robustness attacks --rounds 35 --out runs/robust-attacks

Failing and slow clients (FEMNIST by writer, 30% of sampled clients fail, 20% straggle past the round timeout):

    python -m simulations.robustness faults --rounds 250 --out runs/robust-faults

Each writes a markdown table and a JSON file beside it (`--results docs/results`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedcompress.launch.resume import can_resume
from fedcompress.launch.simulation import SimulationError, simulate
from fedcompress.ledger.recorder import rounds_to_target

UPLINK = "topk(0.01) > ef > uniform(4) > entropy"
DOWNLINK = "topk(0.1) > uniform(4) > entropy"
MNIST = {
    "dataset": "mnist", "partitioning": "dirichlet", "dirichlet-alpha": 0.3, "num-partitions": 100,
    "clients-per-round": 10, "learning-rate": 0.05, "batch-size": 32, "local-epochs": 1, "seed": 0,
    "uplink": UPLINK, "downlink": DOWNLINK,
}  # fmt: skip
FEMNIST = {
    "dataset": "femnist", "partitioning": "natural", "num-partitions": 105, "clients-per-round": 10,
    "local-epochs": 1, "learning-rate": 0.05, "batch-size": 32, "seed": 0, "uplink": UPLINK, "downlink": DOWNLINK,
    "target-accuracy": 0.8,
}  # fmt: skip
ATTACK = {"attack": "sign-flip", "attack-fraction": 0.2, "attack-scale": 10.0, "num-malicious": 2}
FAULTS = {"fail-prob": 0.3, "straggler-prob": 0.2, "straggler-delay": 20.0, "round-timeout": 15.0,
          "min-reply-fraction": 0.3}  # fmt: skip
# a straggler sleeps in its ClientApp actor: with one actor per core, two stragglers hold both actors and every
# other client of the round times out too; ten actors (0.2 CPU each) let the others run while stragglers sleep
FAULT_CPUS_PER_CLIENT = 0.2


def attack_cells(rounds: int) -> dict[str, dict[str, Any]]:
    base = {**MNIST, "num-server-rounds": rounds}
    cells = {"no attackers, fedavg": base, "20% attackers, fedavg": {**base, **ATTACK}}
    cells["20% attackers, fedavg + norm bound"] = {**base, **ATTACK, "norm-bound": 5.0}
    for s in ("krum", "multikrum", "fedtrimmedavg", "fedmedian", "bulyan"):
        cells[f"20% attackers, {s}"] = {**base, **ATTACK, "strategy": s}
    return cells


def fault_cells(rounds: int) -> dict[str, dict[str, Any]]:
    base = {**FEMNIST, "num-server-rounds": rounds}
    return {"no faults": base, "30% fail, 20% straggle": {**base, **FAULTS}}


def run_cell(name: str, overrides: dict[str, Any], out: Path, cpus_per_client: float = 1.0) -> dict[str, Any]:
    run_dir = (
        out / name.replace(" ", "_").replace(",", "").replace("%", "pct").replace("+", "and")
    ).resolve()
    overrides = {**overrides, "run-dir": str(run_dir)}
    if can_resume(run_dir, overrides):
        overrides["resume-run"] = True
    try:
        summary = simulate(overrides, echo=print, cpus_per_client=cpus_per_client)
        status = "complete"
    except (
        SimulationError
    ) as err:  # e.g. an attack that destroyed the model: a result of the table, not a crash
        summary = (
            json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        )
        status = f"failed: {str(err).splitlines()[0][:160]}"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    failed = {k: sum(int(r.get(k, 0)) for r in rows) for k in
              ("failed_exception", "failed_rejected", "failed_norm_bound", "failed_timeout")}  # fmt: skip
    reached = rounds_to_target(rows, 0.8)
    return {
        "cell": name, "run_dir": str(run_dir), "status": status, "rounds": summary.get("rounds", len(rows) - 1),
        "final_accuracy": summary.get("final_accuracy"), "best_accuracy": summary.get("best_accuracy"),
        "round_to_80": reached["round"] if reached else None,
        "kept_previous_rounds": sum(1 for r in rows if r.get("kept_previous_model")), **failed,
        "uplink_mb": summary.get("uplink_mb"),
    }  # fmt: skip


def table(results: list[dict[str, Any]], title: str, command: str) -> str:
    cols = ["cell", "status", "rounds", "final_accuracy", "best_accuracy", "round_to_80", "failed_exception", "failed_timeout",
            "failed_rejected", "failed_norm_bound", "kept_previous_rounds", "uplink_mb"]  # fmt: skip
    lines = [f"# {title}", "", f"```\n{command}\n```", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]  # fmt: skip
    for r in results:
        cells = [f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["attacks", "faults"])
    ap.add_argument("--rounds", type=int, default=None, help="rounds per cell (attacks 35, faults 250)")
    ap.add_argument("--out", default=None, help="folder of the cells' run directories")
    ap.add_argument("--results", default="docs/results", help="where the table goes")
    ap.add_argument("--only", default=None, help="run only cells whose name contains this")
    args = ap.parse_args(argv)
    rounds = args.rounds or (35 if args.which == "attacks" else 250)
    out = Path(args.out or f"runs/robust-{args.which}")
    cells = attack_cells(rounds) if args.which == "attacks" else fault_cells(rounds)
    results = []
    for name, overrides in cells.items():
        if args.only and args.only not in name:
            continue
        cpus = FAULT_CPUS_PER_CLIENT if args.which == "faults" else 1.0
        results.append(run_cell(name, overrides, out, cpus_per_client=cpus))
        Path(args.results).mkdir(parents=True, exist_ok=True)
        stem = Path(args.results) / f"robustness_{args.which}"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
        cmd = f"python -m simulations.robustness {args.which} --rounds {rounds}"
        stem.with_suffix(".md").write_text(table(results, f"Robustness: {args.which}", cmd))
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
