"""Codec throughput and size benchmark on a synthetic 10M-parameter update, one thread.

    python -m fedcompress.bench.codecs [--params 10000000] [--repeat 3] [--quick]

For every stage and the main pipelines: encode and decode MB/s of fp32 input (best of ``--repeat``), each with
its ratio to a plain numpy copy of the same vector timed in the same run; compression ratio; metadata
share; and
coded value bytes over the empirical entropy of the quantized symbols. The last line is one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS: one thread

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from fedcompress.codecs import Pipeline, decode  # noqa: E402

SPARSE = "topk(0.01) > ef > uniform(4) > entropy"
DENSE = "uniform(4) > entropy"
MAIN = [
    SPARSE,
    DENSE,
    "topk(0.01) > ef > uniform(4, stochastic) > entropy",
    "topk(0.01) > ef > ternary > entropy",
    "topk(0.001) > ef > uniform(4) > entropy",
    "randk(0.01) > ef > uniform(4) > entropy",
    "uniform(8, block=256) > entropy",
]
STAGES = [
    "identity",
    "fp16",
    "bf16",
    "zstd",
    "entropy",
    "uniform(4)",
    "uniform(4, stochastic)",
    "uniform(4, per_channel)",
    "uniform(8, block=256)",
    "uniform(2)",
    "qsgd(7)",
    "ternary",
    "ternary(stochastic)",
    "sign",
    "kmeans(16)",
    "pq(4, 256)",
    "topk(0.01)",
    "topk(0.01, per_layer)",
    "randk(0.01)",
    "threshold(THRESH)",
]


def limit_threads() -> None:
    """One thread for numpy's BLAS (if already loaded) and torch (if imported): single-core numbers."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def synthetic_update(params: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A CNN-shaped update (convs, biases, norms, two dense layers) with heavy-tailed (Student-t, df=3)
    values."""
    h = max(4, int(math.sqrt(params / 218)))
    shapes = {
        "conv1.weight": (h, 3, 3, 3),
        "conv1.bias": (h,),
        "conv2.weight": (2 * h, h, 3, 3),
        "conv2.bias": (2 * h,),
        "conv3.weight": (4 * h, 2 * h, 3, 3),
        "conv3.bias": (4 * h,),
        "norm3.weight": (4 * h,),
        "norm3.bias": (4 * h,),
        "fc1.weight": (8 * h, 16 * h),
        "fc1.bias": (8 * h,),
        "fc2.weight": (62, 8 * h),
        "fc2.bias": (62,),
    }
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 64
        scale = 0.01 / math.sqrt(fan_in)
        out[name] = (rng.standard_t(3, size=shape) * scale).astype(np.float32)
    return out


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def entropy_bytes(symbols: np.ndarray) -> float:
    """Empirical (order-0) entropy of the symbols, in bytes."""
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols.astype(np.int64))
    p = counts[counts > 0] / symbols.size
    return float(-(p * np.log2(p)).sum()) * symbols.size / 8


def measure(spec: str, tensors: dict[str, np.ndarray], repeat: int, copy_s: float) -> dict:
    pipe = Pipeline.parse(spec)
    raw_mb = sum(t.size for t in tensors.values()) * 4 / 1e6
    state = pipe.encode(tensors, seed=1).state  # a realistic residual for error feedback
    result = pipe.encode(tensors, state, seed=2)
    enc = best_time(lambda: pipe.encode(tensors, state, seed=2), repeat)
    dec = best_time(lambda: decode(result.payload), repeat)
    symbols, bits = pipe.symbols(tensors, state, seed=2)
    ent = entropy_bytes(symbols) if bits <= 16 else float("nan")
    both = raw_mb / (enc + dec)
    copy = raw_mb / copy_s
    return {
        "spec": pipe.spec,
        "encode_mb_s": raw_mb / enc,
        "decode_mb_s": raw_mb / dec,
        "combined_mb_s": both,
        "encode_copy": (raw_mb / enc) / copy,
        "decode_copy": (raw_mb / dec) / copy,
        "combined_copy": both / copy,
        "ratio": result.ratio,
        "bytes": result.num_bytes,
        "metadata_share": result.metadata_bytes / result.num_bytes,
        "index_share": result.index_bytes / result.num_bytes,
        "coded_over_entropy": result.value_bytes / ent if ent > 0 else float("nan"),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark, print a table, and print (and return) the summary JSON as the last line."""
    parser = argparse.ArgumentParser(prog="fedcompress bench codecs", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=10_000_000, help="parameters in the synthetic update")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    parser.add_argument("--quick", action="store_true", help="main pipelines only, skip the per-stage table")
    args = parser.parse_args(argv)
    limit_threads()

    tensors = synthetic_update(args.params)
    flat = np.concatenate([t.reshape(-1) for t in tensors.values()])
    n = flat.size
    copy_s = best_time(lambda: flat.copy(), max(5, args.repeat))
    copy_mb_s = n * 4 / 1e6 / copy_s
    thresh = float(np.quantile(np.abs(flat[:: max(1, n // 1_000_000)]), 0.99))
    print(f"synthetic update: {n:,} parameters in {len(tensors)} tensors; numpy copy {copy_mb_s:,.0f} MB/s")
    header = (
        f"{'spec':50s} {'enc MB/s':>9s} {'(xcopy)':>7s} {'dec MB/s':>9s} {'(xcopy)':>7s} {'e+d MB/s':>9s} "
        f"{'ratio':>8s} {'meta%':>6s} {'idx%':>6s} {'coded/H':>7s}"
    )
    specs = list(MAIN) if args.quick else list(MAIN) + [s.replace("THRESH", f"{thresh:.3g}") for s in STAGES]
    rows = {}
    print(header)
    for spec in specs:
        r = measure(spec, tensors, args.repeat, copy_s)
        rows[spec] = r
        print(
            f"{r['spec']:50s} {r['encode_mb_s']:9.0f} {r['encode_copy']:7.3f} {r['decode_mb_s']:9.0f} "
            f"{r['decode_copy']:7.3f} {r['combined_mb_s']:9.0f} {r['ratio']:8.1f} "
            f"{100 * r['metadata_share']:6.2f} {100 * r['index_share']:6.1f} {r['coded_over_entropy']:7.3f}",
            flush=True,
        )
    sparse, dense = rows[SPARSE], rows[DENSE]
    summary = {
        "sparse_mb_per_s": round(sparse["combined_mb_s"], 1),
        "dense_mb_per_s": round(dense["combined_mb_s"], 1),
        "metadata_share": round(max(sparse["metadata_share"], dense["metadata_share"]), 5),
        "coded_over_entropy": round(max(sparse["coded_over_entropy"], dense["coded_over_entropy"]), 4),
        "copy_mb_per_s": round(copy_mb_s, 1),
        "sparse_copy_ratio": round(sparse["combined_copy"], 4),
        "dense_copy_ratio": round(dense["combined_copy"], 4),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
