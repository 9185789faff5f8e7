"""Scale benchmark: peak memory, seconds and bytes per round against the number of clients.

Each run is a real `fedcompress simulate` (Flower's simulation engine on Ray). Every process the launch starts
carries a tag in its environment (`FEDCOMPRESS_LAUNCH_TAG`); a sampler thread sums the RSS of those processes and
their descendants (SuperLink, simulation process, Ray's GCS, raylet and workers, the ClientApp actors) twice a
second, and the peak is reported. Seconds per round and bytes per round come from the run's own ledger.

    fedcompress bench scale --clients 100 1000 10000 --clients-per-round 10 --rounds 4 --out runs/scale

Prints one table row per (clients, pipeline), writes `scale.json` and `scale_memory.png` (peak memory against
the number of clients, one line per pipeline) in `--out`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

PIPELINES = {
    "identity": ("identity", "identity"),
    "compressed": ("topk(0.01) > ef > uniform(4) > entropy", "topk(0.1) > uniform(4) > entropy"),
}


class PeakRSS:
    """Samples the summed RSS of every process carrying `tag` (and their children) in a background thread."""

    def __init__(self, tag: str, interval: float = 0.5) -> None:
        self.tag = tag
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        import psutil

        from fedcompress.launch.process import family, tagged

        total = 0
        for pid in family(tagged(self.tag)):
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)


def run_one(overrides: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """One simulation with its peak memory; returns the summary plus `peak_rss_mb` and bytes per round."""
    from fedcompress.launch.process import TAG_ENV
    from fedcompress.launch.simulation import simulate

    tag = f"scale-{uuid.uuid4().hex[:12]}"
    old = os.environ.get(TAG_ENV)
    os.environ[TAG_ENV] = tag  # launch_env copies os.environ: every process of the run carries it
    try:
        with PeakRSS(tag) as meter:
            t0 = time.perf_counter()
            summary = simulate(overrides, echo=None, timeout=timeout)
            wall = time.perf_counter() - t0
    finally:
        if old is None:
            os.environ.pop(TAG_ENV, None)
        else:
            os.environ[TAG_ENV] = old
    rounds = max(1, int(summary["rounds"]))
    return {
        **summary,
        "peak_rss_mb": round(meter.peak / 1e6, 1),
        "wall_s": round(wall, 1),
        "up_bytes_per_round": int(summary["uplink_mb"] * 1e6 / rounds),
        "down_bytes_per_round": int(summary["downlink_mb"] * 1e6 / rounds),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["pipeline"] for r in rows):
        pts = sorted((r["clients"], r["peak_rss_mb"]) for r in rows if r["pipeline"] == name)
        ax.plot([p[0] for p in pts], [p[1] / 1000 for p in pts], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("clients in the federation")
    ax.set_ylabel("peak memory, summed RSS (GB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("fedcompress simulate: memory against clients")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(prog="fedcompress bench scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--partitioning", default="iid")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    ap.add_argument(
        "--eval-every", type=int, default=0, help="central evaluation every N rounds (0: last only)"
    )
    ap.add_argument(
        "--discovery", default="query", choices=("query", "node-order"), help="run-config key `discovery`"
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run")
    ap.add_argument("--out", type=Path, default=Path("runs/scale"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    print(
        f"{'clients':>8} {'pipeline':>11} {'peak MB':>9} {'s/round':>8} {'up B/round':>12} {'down B/round':>13} {'acc':>6}"
    )
    for n in args.clients:
        for name in args.pipelines:
            up, down = PIPELINES[name]
            overrides = {
                "dataset": args.dataset, "partitioning": args.partitioning, "num-partitions": n,
                "clients-per-round": min(args.clients_per_round, n), "num-server-rounds": args.rounds,
                "local-epochs": 1, "learning-rate": args.lr, "batch-size": args.batch_size, "seed": 0,
                "uplink": up, "downlink": down, "eval-every": args.eval_every,
                "run-dir": str((args.out / f"{name}_{n}").resolve()),
            }  # fmt: skip
            if args.discovery != "query":  # only then: the key is new, older checkouts lack it
                overrides["discovery"] = args.discovery
            r = run_one(overrides, timeout=args.timeout)
            row = {"clients": n, "pipeline": name, "uplink": up, "downlink": down, **r}
            rows.append(row)
            acc = row.get("final_accuracy")
            print(
                f"{n:>8} {name:>11} {row['peak_rss_mb']:>9.0f} {row['seconds_per_round']:>8.2f} "
                f"{row['up_bytes_per_round']:>12,} {row['down_bytes_per_round']:>13,} "
                f"{'' if acc is None else f'{acc:.3f}':>6}",
                flush=True,
            )
            (args.out / "scale.json").write_text(json.dumps(rows, indent=2))
    plot(rows, args.out / "scale_memory.png")
    print(f"wrote {args.out / 'scale.json'} and {args.out / 'scale_memory.png'}")
    return rows


if __name__ == "__main__":
    main()
