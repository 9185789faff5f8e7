"""GPU check: short compressed FEMNIST and CIFAR-10 simulations on the CPU and on the GPU, side by side, and the
uplink codec on a model-sized update as numpy vs torch (CPU and CUDA), with a byte-identity check.

    python simulations/gpu_check.py                 # sized for < 10 minutes on one GPU machine
    python simulations/gpu_check.py --tiny          # a smoke test: 1 round, 4 clients, 100k-parameter update

Without CUDA it runs the CPU half and says that no GPU was found. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedcompress.codecs import Pipeline
from fedcompress.launch.simulation import simulate

UPLINK = "topk(0.01) > ef > uniform(4) > entropy"
DOWNLINK = "topk(0.1) > uniform(4) > entropy"
RUNS = {  # dataset -> overrides (batch 32 SGD, the project's model shapes)
    "femnist": {
        "dataset": "femnist",
        "partitioning": "natural",
        "num-partitions": 105,
        "learning-rate": 0.05,
    },
    "cifar10": {
        "dataset": "cifar10",
        "partitioning": "dirichlet",
        "num-partitions": 50,
        "learning-rate": 0.05,
    },
}


def sim_seconds_per_round(name: str, device: str, args: argparse.Namespace, out: Path) -> dict:
    """One short run; seconds per round as the run directory reports it (start-up excluded)."""
    gpus = args.gpu_share if device == "cuda" else 0.0
    overrides = {
        **RUNS[name],
        "num-server-rounds": args.rounds,
        "clients-per-round": args.clients,
        "local-epochs": 1,
        "batch-size": 32,
        "eval-every": 0,
        "uplink": UPLINK,
        "downlink": DOWNLINK,
        "device": device,
        "client-num-gpus": gpus,
        "run-dir": str(out / f"{name}-{device}"),
    }
    if args.tiny:
        overrides["num-partitions"] = min(overrides["num-partitions"], 8)
    start = time.perf_counter()
    summary = simulate(overrides, cpus_per_client=args.cpus_per_client, echo=None)
    return {
        "seconds_per_round": round(float(summary["seconds_per_round"]), 3),
        "wall_s": round(time.perf_counter() - start, 1),
        "final_accuracy": summary.get("final_accuracy"),
    }


def codec_times(params: int, repeat: int, kinds: list[str]) -> dict:
    """Best-of-`repeat` encode time of the uplink pipeline (with a residual) on one update, per input kind."""
    rng = np.random.default_rng(0)
    rows = max(1, params // 1000)
    update = {"w": (rng.standard_t(3, (rows, 1000)) * 1e-3).astype(np.float32)}
    state = {"w": (rng.standard_t(3, (rows, 1000)) * 1e-4).astype(np.float32)}
    pipe = Pipeline.parse(UPLINK)
    ref = pipe.encode(update, state, seed=1).payload
    out: dict[str, dict] = {}
    for kind in kinds:
        dev = {"torch-cpu": "cpu", "torch-cuda": "cuda"}.get(kind)
        u = update if dev is None else {k: torch.from_numpy(v).to(dev) for k, v in update.items()}
        s = state if dev is None else {k: torch.from_numpy(v).to(dev) for k, v in state.items()}
        best = float("inf")
        for _ in range(repeat):
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            payload = pipe.encode(u, s, seed=1).payload
            best = min(best, time.perf_counter() - t)
        out[kind] = {"encode_ms": round(1e3 * best, 2), "same_bytes_as_numpy": payload == ref}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="1 round, 4 clients, a 100k-parameter update")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=10, help="clients per round")
    p.add_argument("--cpus-per-client", type=float, default=1.0)
    p.add_argument("--gpu-share", type=float, default=0.1, help="client-num-gpus for the GPU runs")
    p.add_argument("--params", type=int, default=10_100_000, help="parameters of the codec bench update")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-sim", action="store_true", help="only the codec bench")
    args = p.parse_args(argv)
    if args.tiny:
        args.rounds, args.clients, args.params, args.repeat = 1, 4, 100_000, 1
    gpu = torch.cuda.is_available()
    if gpu:
        print(f"GPU: {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    else:
        print(
            f"NO GPU FOUND (torch {torch.__version__}, CUDA build: {torch.version.cuda}): "
            "running the CPU half only; GPU columns are 'n/a'",
            flush=True,
        )
    devices = ["cpu", "cuda"] if gpu else ["cpu"]
    report: dict = {"gpu": torch.cuda.get_device_name(0) if gpu else None, "sim": {}, "codec": {}}
    if not args.skip_sim:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            for name in RUNS:
                report["sim"][name] = {d: sim_seconds_per_round(name, d, args, Path(tmp)) for d in devices}
        print(f"\nsimulation ({args.rounds} rounds, {args.clients} clients/round, uplink {UPLINK!r})")
        print(f"{'dataset':10s} {'cpu s/round':>12s} {'gpu s/round':>12s} {'speed-up':>9s}")
        for name, by in report["sim"].items():
            c, g = by["cpu"]["seconds_per_round"], by.get("cuda", {}).get("seconds_per_round")
            speed = f"{c / g:8.1f}x" if g else "      n/a"
            print(f"{name:10s} {c:12.2f} {g if g is not None else 'n/a':>12} {speed}")
    kinds = ["numpy", "torch-cpu"] + (["torch-cuda"] if gpu else [])
    report["codec"] = codec_times(args.params, args.repeat, kinds)
    print(f"\ncodec {UPLINK!r} on a {args.params:,}-parameter update (encode, best of {args.repeat})")
    for kind, row in report["codec"].items():
        print(f"{kind:11s} {row['encode_ms']:10.1f} ms   same bytes as numpy: {row['same_bytes_as_numpy']}")
    if not gpu:
        print("\nno GPU was found: the GPU half did not run")
    print(json.dumps(report))
    ok = all(row["same_bytes_as_numpy"] for row in report["codec"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
