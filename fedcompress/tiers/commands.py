"""`fedcompress device-model RUN_DIR --memory-kb .. --latency-ms .. --out DIR`: a model made for one device.

From a finished run's global model: checks every input first, searches the recipe for the budget by measured
artefact size and latency (`budget.search_recipe`), and writes into a temporary folder renamed to DIR only at
the end: model.bin (the artefact), recipe.json (recipe, measurements, accuracies, search trace) and the
per-layer sensitivity report (sensitivity.md / .csv / .png). Also `python -m fedcompress.tiers.commands`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcompress.errors import ConfigError, FedCompressError

if TYPE_CHECKING:  # torch and the search load only when the command runs: `fedcompress --help` stays fast
    from fedcompress.tiers.budget import DeviceBudget

SELECT_SHARE = 0.2  # of the proxy set, held out from distillation to score candidates by teacher agreement


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `device-model` subcommand to a `fedcompress` parser."""
    p = subparsers.add_parser(
        "device-model", help="make a device model of a finished run for a memory/latency budget"
    )
    add_arguments(p)
    p.set_defaults(func=cmd_device_model)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run directory (config.json, summary.json, models/global.pt)")
    mem = p.add_mutually_exclusive_group(required=True)
    mem.add_argument("--memory-kb", type=float, help="artefact memory budget in KiB (1024 B)")
    mem.add_argument("--memory-mb", type=float, help="artefact memory budget in MiB")
    p.add_argument(
        "--latency-ms",
        type=float,
        required=True,
        help="inference limit: ms at batch 1, one thread of this CPU",
    )
    p.add_argument(
        "--downlink-mbps", type=float, help="device downlink (Mbit/s); with --max-download-s caps the bytes"
    )
    p.add_argument(
        "--max-download-s", type=float, default=60.0, help="longest acceptable download (default 60 s)"
    )
    p.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")
    p.add_argument(
        "--tier", default=None, help="tiered runs: which tier's model is the teacher (default the largest)"
    )
    p.add_argument("--storages", default="int8,kmeans4", help="storages to search: fp32,int8,qat8,kmeans1..8")
    p.add_argument("--epochs", type=int, default=5, help="distillation epochs over the proxy set (default 5)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate for distillation")
    p.add_argument("--tau", type=float, default=4.0, help="distillation temperature")
    p.add_argument(
        "--proxy-fraction",
        type=float,
        default=None,
        help="share of train images as the proxy set (default: the run's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch threads for the search and training (default 1: on a shared CPU more threads spin and slow down)",
    )  # fmt: skip


def _budget(args: argparse.Namespace) -> DeviceBudget:
    from fedcompress.tiers.budget import DeviceBudget

    fields: dict[str, Any] = {"latency-ms": args.latency_ms, "max-download-s": args.max_download_s}
    fields["memory-kb" if args.memory_kb is not None else "memory-mb"] = (
        args.memory_kb if args.memory_kb is not None else args.memory_mb
    )
    if args.downlink_mbps is not None:
        fields["downlink-mbps"] = args.downlink_mbps
    return DeviceBudget.from_mapping(fields)


def _check_run(run: Path, tier: str | None) -> None:
    """A finished run: config.json, summary.json with status complete, and the model file."""
    if not run.is_dir():
        raise ConfigError(f"run directory {run} does not exist")
    for name in ("config.json", "summary.json"):
        if not (run / name).is_file():
            raise ConfigError(
                f"{run} is not a finished run: {name} is missing (expected config.json, summary.json, models/)"
            )
    status = json.loads((run / "summary.json").read_text()).get("status")
    if status != "complete":
        raise ConfigError(f"run {run} did not complete (summary status {status!r}); need status 'complete'")
    if not (run / "models").is_dir() or not any((run / "models").glob("*.pt")):
        raise ConfigError(f"{run}/models holds no model (.pt); the run must save its final model")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not an empty folder; choose a new folder")


def _parse_storages(text: str) -> tuple[str, ...]:
    from fedcompress.tiers.delivery import storage_bits

    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise ConfigError(f"--storages {text!r} names no storage; e.g. 'int8,kmeans4'")
    for s in items:
        storage_bits(s)
    return items


def _proxy(cfg: Any, fraction: float | None) -> Any:
    import numpy as np

    from fedcompress.task import dataset, proxy_indices
    from fedcompress.tiers.budget import MIN_PROXY

    if fraction is not None:
        if not 0 < fraction < 1:
            raise ConfigError(f"--proxy-fraction must be in (0, 1), got {fraction}")
        cfg = dataclasses.replace(cfg, distill_proxy_fraction=fraction)
    idx = proxy_indices(cfg)
    if len(idx) < MIN_PROXY / (1 - SELECT_SHARE):
        need = MIN_PROXY / (1 - SELECT_SHARE) / len(dataset(cfg).y_train)
        raise ConfigError(
            f"proxy set too small: {len(idx)} examples (fraction {cfg.distill_proxy_fraction}); "
            f"need at least {int(MIN_PROXY / (1 - SELECT_SHARE))}, i.e. --proxy-fraction >= {need:.4f}"
        )
    return np.asarray(idx)


def device_model(args: argparse.Namespace, say: Any = print) -> dict[str, Any]:
    """Everything the command does; returns the summary written to recipe.json."""
    import torch

    from fedcompress.export import load_run_model
    from fedcompress.task import dataset, model_name
    from fedcompress.tiers.budget import search_recipe
    from fedcompress.tiers.delivery import accuracy, atomic_write, channel_scores
    from fedcompress.tiers.sensitivity import layer_sensitivity, write_report

    t0 = time.perf_counter()
    budget = _budget(args)  # every check before any work
    out, run = Path(args.out), Path(args.run_dir)
    _check_out(out)
    storages = _parse_storages(args.storages)
    if args.epochs < 0:
        raise ConfigError(f"--epochs must be >= 0, got {args.epochs}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    _check_run(run, args.tier)
    torch.set_num_threads(args.threads)
    teacher, cfg = load_run_model(run, args.tier)
    family = model_name(cfg)
    idx = _proxy(cfg, args.proxy_fraction)
    ds = dataset(cfg)
    say(f"[device-model] run {run}: {family}, budget {budget.describe()}")
    proxy = torch.from_numpy(ds.x_train[idx].copy())
    gen = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(proxy), generator=gen)
    n_sel = int(len(proxy) * SELECT_SHARE)
    distill_x, select_x = proxy[perm[n_sel:]], proxy[perm[:n_sel]]
    with torch.no_grad():
        select_y = teacher(select_x).argmax(1)  # the server has no labels: candidates are scored by agreement
    xt, yt = torch.from_numpy(ds.x_test.copy()), torch.from_numpy(ds.y_test.copy())
    global_acc = accuracy(teacher, xt, yt)
    say(
        f"[device-model] proxy set {len(proxy)} ({len(distill_x)} distill, {n_sel} select); global accuracy {global_acc:.4f}"
    )

    search = search_recipe(
        teacher, budget, distill_x, (select_x, select_y), family=family, storages=storages,
        epochs=args.epochs, lr=args.lr, tau=args.tau, seed=args.seed,
        progress=lambda m: say(f"[device-model] {m}"),
    )  # fmt: skip
    dm = search.device_model
    test_acc = accuracy(dm.model, xt, yt)
    say("[device-model] sensitivity report (per layer: prune ratio, bits)")
    rows = layer_sensitivity(teacher, channel_scores(teacher, distill_x), (xt, yt))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        atomic_write(tmp / "model.bin", dm.artefact)
        write_report(rows, tmp, global_acc)
        summary = {
            "run_dir": str(run),
            "family": family,
            "budget": {"max_bytes": budget.max_bytes, "memory_bytes": budget.memory_bytes,
                       "latency_ms": budget.latency_ms, "downlink_bytes_per_s": budget.downlink_bytes_per_s,
                       "max_download_s": budget.max_download_s},
            "recipe": dm.recipe.to_dict(),
            "artefact": "model.bin",
            "bytes": dm.nbytes,
            "latency_ms": dm.latency_ms,
            "accuracy": test_acc,
            "select_agreement": dm.accuracy,
            "global_accuracy": global_acc,
            "global_fp32_bytes": sum(p.numel() * 4 for p in teacher.parameters()),
            "candidates": {s: {"bytes": c.nbytes, "latency_ms": c.latency_ms, "select_agreement": c.accuracy,
                               "channels": c.recipe.channels} for s, c in search.candidates.items()},
            "trace": search.trace,
            "proxy_examples": len(proxy),
            "seconds": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
        (tmp / "recipe.json").write_text(json.dumps(summary, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # checked empty above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    r = dm.recipe
    say(
        f"device-model: {out}/model.bin {dm.nbytes:,} B ({r.storage}, channels {r.channels}), "
        f"{dm.latency_ms:.3f} ms, accuracy {test_acc:.4f} vs global {global_acc:.4f} "
        f"({100 * (test_acc - global_acc):+.2f} pts), {summary['seconds']:.0f} s"
    )
    return summary


def cmd_device_model(args: argparse.Namespace) -> int:
    device_model(args, say=lambda m: print(m, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedcompress device-model", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_device_model(args)
    except FedCompressError as err:
        print(f"fedcompress: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
