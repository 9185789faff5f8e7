"""Index bytes of real FEMNIST updates: independent positions (flat) against per-tensor grid coding.

    python -m fedcompress.bench.index_coding [--data-dir DIR] [--frac 0.002 --frac 0.02 ...]
    fedcompress bench index_coding [...]           (the same)

Top-k positions of a trained update are not independent: in a weight matrix they gather in the rows of the
output units with large errors and in the columns of the inputs that were active. This trains the FEMNIST CNN
on 15 writers, then lets 4 other writers train 3 times each from it, with error feedback (the residual of one
participation is added to the next, as `ef` does), selects the top-k positions of each update and codes them
both ways. Lossless both ways: the same positions, so a run's accuracy is the same; only the bytes differ.
"""

from __future__ import annotations

import argparse
import copy
import json
import math

import numpy as np

from fedcompress.codecs import indices
from fedcompress.codecs.sparsify import topk_positions
from fedcompress.config import RunConfig, defaults
from fedcompress.task import client_partition, dataset, make_model
from fedcompress.training import train

FRACS = (0.002, 0.003, 0.01, 0.02, 0.05)


def log2_binom(n: int, k: int) -> float:
    """The bound for k independent positions among n: log2 C(n, k)."""
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def updates(data_dir: str | None, warm: int = 15, clients: range = range(60, 64), visits: int = 3):
    """(update, shapes) of real client updates: a model trained on `warm` writers, then each client's visits."""
    over = {"dataset": "femnist", "partitioning": "natural", "num-partitions": 105, "seed": 0}
    cfg = RunConfig.from_run_config({**defaults(), **over, **({"data-dir": data_dir} if data_dir else {})})
    ds = dataset(cfg)
    model = make_model(cfg)

    def trained(m, pid: int, seed: int):  # noqa: ANN001, ANN202
        idx, _ = client_partition(cfg, pid)
        train(m, ds.x_train[idx], ds.y_train[idx], epochs=1, lr=0.05, momentum=0.0, batch_size=32, seed=seed)
        return np.concatenate([p.detach().numpy().ravel() for p in m.parameters()])

    for pid in range(warm):
        trained(model, pid, pid)
    base = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    shapes = [tuple(p.shape) for p in model.parameters()]
    out = []
    for pid in clients:
        out.append([trained(copy.deepcopy(model), pid, 100 * v + pid) - base for v in range(visits)])
    return out, shapes


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="where the FEMNIST files are (default: the shared data)")
    ap.add_argument(
        "--frac", type=float, action="append", help=f"top-k fraction (repeatable; default {FRACS})"
    )
    args = ap.parse_args(argv)
    per_client, shapes = updates(args.data_dir)
    n = sum(int(np.prod(s)) for s in shapes)
    results: dict[str, dict[str, float]] = {}
    print(f"{'top-k':>8} {'kept':>6} {'bound B':>9} {'flat B':>8} {'grid B':>8} {'grid vs flat':>12}")
    for frac in args.frac or FRACS:
        bound = flat = grid = 0.0
        count = 0
        for visits in per_client:
            residual = np.zeros(n, np.float32)
            for v, update in enumerate(visits):
                x = update + residual
                idx = topk_positions(x, max(1, round(frac * n)))
                residual = x.copy()
                residual[idx] = 0.0
                if v == 0:  # the first visit has no residual yet; measure the ones that do, as in a run
                    continue
                bound += log2_binom(n, idx.size) / 8
                flat += len(indices.encode(idx, n).data)
                enc = indices.encode(idx, n, shapes)
                np.testing.assert_array_equal(indices.decode(enc.data, n, shapes), idx)
                grid += len(enc.data)
                count += 1
        row = {"kept": round(frac * n), "bound": bound / count, "flat": flat / count, "grid": grid / count}
        results[str(frac)] = row
        print(
            f"{frac:>8g} {row['kept']:>6} {row['bound']:>9.0f} {row['flat']:>8.0f} {row['grid']:>8.0f} "
            f"{100 * (row['grid'] / row['flat'] - 1):>+11.1f}%"
        )
    print(json.dumps({"model": "cnn28 (FEMNIST)", "parameters": n, "index_bytes": results}))
    return results


if __name__ == "__main__":
    main()
