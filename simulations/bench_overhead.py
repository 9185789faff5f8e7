"""Framework overhead: seconds per round of fedcompress (identity codecs, ledger on) against stock Flower FedAvg.

Both run on Flower's simulation engine with the same data, model, partitioning and clients per round, alternating
A/B/A/B so drift on a noisy machine hits both. Prints per-run figures and, last, one JSON line with the ratio.

    python -m simulations.bench_overhead --rounds 40 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from fedcompress.launch.simulation import run_flower_app, simulate

PLAIN_APP = Path(__file__).resolve().parent / "baselines" / "plain_fedavg"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="femnist")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-clients", type=int, default=105)
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--skip", type=int, default=3, help="first rounds left out (actor start-up)")
    args = ap.parse_args(argv)
    from fedcompress.data import default_data_dir

    common = {
        "dataset": args.dataset,
        "data-dir": str(default_data_dir().resolve()),
        "partitioning": "natural",
        "num-partitions": args.num_clients,
        "clients-per-round": args.clients_per_round,
        "num-server-rounds": args.rounds,
        "learning-rate": 0.05,
        "batch-size": 32,
        "local-epochs": 1,
        "seed": 0,
    }
    ours_only = {"uplink": "identity", "downlink": "identity"}  # overhead of the framework, not of a codec
    plain, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            timing = Path(tmp) / f"plain{rep}.json"
            run_flower_app(PLAIN_APP, {**common, "timing-file": str(timing)}, args.num_clients, echo=None)
            gaps = json.loads(timing.read_text())["round_seconds"][args.skip :]
            plain.append(statistics.mean(gaps))
            run_dir = Path(tmp) / f"ours{rep}"
            simulate({**common, **ours_only, "eval-every": 1, "run-dir": str(run_dir)}, echo=None)
            rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            ours.append(statistics.mean(r["seconds"] for r in rows if r["round"] > args.skip))
            print(f"repeat {rep}: plain Flower {plain[-1]:.3f} s/round, fedcompress {ours[-1]:.3f} s/round")
    result = {
        "plain_s_per_round": round(statistics.mean(plain), 4),
        "fedcompress_s_per_round": round(statistics.mean(ours), 4),
        "ratio": round(statistics.mean(ours) / statistics.mean(plain), 4),
        "rounds": args.rounds,
        "repeats": args.repeats,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
