"""Per-tier table for tiered runs: what each device stores, downloads, runs and scores, against fp32 global.

    python -m fedcompress.studies.tier_table RUN_DIR [MORE_RUN_DIRS ...] [--baseline FP32_RUN_DIR] [--out FILE.md]

The first run's tiers are exported the way each tier stores its model (int8 tiers as quantized TorchScript,
fp32 tiers as TorchScript): bytes are measured on disk, latency on one CPU thread at batch 1, accuracy is the
artefact's own on the central test set. Downlink is the mean bytes a client of the tier received per round
(from the ledger). Further runs (same tiers, trained another way) add a comparison of per-tier accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig
from fedcompress.devices.config import parse_tier_config
from fedcompress.export import export_from_run


def _rows(run: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / name).read_text().splitlines() if line.strip()]


def _config(run: Path) -> RunConfig:
    return RunConfig.from_run_config(json.loads((run / "config.json").read_text())["config"], strict=False)


def tier_rows(run: Path, tmp: Path) -> list[dict[str, Any]]:
    cfg = _config(run)
    tiers, mix = parse_tier_config(cfg.tiers, cfg.tier_mix)
    ledger = _rows(run, "ledger.jsonl")
    last = [r for r in _rows(run, "metrics.jsonl") if r.get("accuracy") is not None][-1]
    out = []
    for name, tier in tiers.items():
        fmt = "int8" if tier.quant == "int8" else "torchscript"
        rep = export_from_run(run, tmp / f"{run.name}-{name}.pt", fmt, name)
        down = [
            x["message_bytes"]
            for x in ledger
            if x["direction"] == "downlink" and x["tier"] == name and x["round"] > 1
        ]
        out.append(
            {
                "tier": name, "width": tier.width, "stored_as": fmt, "share": mix[name], "params": rep["params"],
                "stored_bytes": rep["bytes_on_disk"], "latency_ms": rep["latency_ms_p50"],
                "downlink_bytes_per_round": statistics.mean(down) if down else 0.0,
                "accuracy_stored": rep["accuracy"], "accuracy_fp32": last.get(f"accuracy/{name}"),
            }
        )  # fmt: skip
    return out


def storage_variants(run: Path, tier: str | None, quants: list[str], tmp: Path) -> list[dict[str, Any]]:
    """The same trained model stored other ways (int8, k-means B-bit weight sharing): what a device would keep
    if it downloads the full-width model compressed, Deep Compression-style. Bytes are the artefact on disk."""
    import torch

    from fedcompress.devices import Tier, build_tier_artefact
    from fedcompress.export import load_run_model, measure_latency_ms
    from fedcompress.task import dataset
    from fedcompress.training import evaluate

    model, cfg = load_run_model(run, tier)
    ds = dataset(cfg)
    calib = torch.from_numpy(ds.x_train[:256].copy())
    out = []
    for quant in quants:
        art = build_tier_artefact(model, Tier(f"{tier or 'global'}/{quant}", quant=quant), calibration=calib)
        path = tmp / f"{run.name}-{tier}-{quant}.bin"
        path.write_bytes(art.data)
        out.append(
            {
                "tier": f"{tier or 'global'} as {quant}", "width": 1.0, "stored_as": quant, "share": 0.0,
                "params": sum(p.numel() for p in model.parameters()), "stored_bytes": path.stat().st_size,
                "latency_ms": measure_latency_ms(art.model, calib[:1]), "downlink_bytes_per_round": float("nan"),
                "accuracy_stored": evaluate(art.model, ds.x_test, ds.y_test)[1],
                "accuracy_fp32": evaluate(model, ds.x_test, ds.y_test)[1],
            }
        )  # fmt: skip
    return out


def render(
    main_run: Path, rows: list[dict[str, Any]], baseline: dict[str, Any] | None, others: list[Path]
) -> str:
    cfg = _config(main_run)
    ref = baseline or {
        "stored_bytes": rows[0]["stored_bytes"],
        "accuracy": rows[0]["accuracy_fp32"],
        "label": f"tier {rows[0]['tier']} (fp32)",
    }
    lines = [
        f"## {cfg.dataset}: device tiers ({cfg.tier_training}, {cfg.num_server_rounds} rounds, seed {cfg.seed})",
        "",
        f"Run: `{main_run}`; uplink `{cfg.uplink}`, downlink `{cfg.downlink}`. Reference: {ref['label']}, "
        f"{ref['stored_bytes']:,} B, accuracy {ref['accuracy']:.4f}.",
        "",
        "| tier | width | stored as | params | stored bytes | x smaller | downlink B/round | CPU ms (b=1) | acc stored | acc fp32 | vs ref (pts) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tier']} | {r['width']} | {r['stored_as']} | {r['params']:,} | {r['stored_bytes']:,} | "
            f"{ref['stored_bytes'] / r['stored_bytes']:.1f}x | {_bytes_or_dash(r['downlink_bytes_per_round'])} | {r['latency_ms']:.3f} | "
            f"{r['accuracy_stored']:.4f} | {r['accuracy_fp32']:.4f} | {100 * (r['accuracy_stored'] - ref['accuracy']):+.2f} |"
        )
    if others:
        runs = [main_run, *others]
        names = [t["tier"] for t in rows if t["share"] > 0]  # the run's tiers, not storage variants
        lines += ["", f"### The same tiers trained other ways (equal rounds and seeds): accuracy per tier, mean ± std "
                  f"of the last {LAST} evaluations (test accuracy moves by a point or two between rounds)", "",
                  "| tier training | " + " | ".join(names) + " | run |", "|---|" + "---|" * (len(names) + 1)]  # fmt: skip
        for run in runs:
            evals = [r for r in _rows(run, "metrics.jsonl") if r.get("accuracy") is not None][-LAST:]
            accs = " | ".join(_mean_std([r.get(f"accuracy/{n}", float("nan")) for r in evals]) for n in names)
            cfg_run = _config(run)
            how = cfg_run.tier_training + (
                f" (teachers: {cfg_run.distill_teachers})" if cfg_run.tier_training == "distill" else ""
            )
            lines.append(f"| {how} | {accs} | `{run.name}` |")
    return "\n".join(lines) + "\n"


LAST = 5


def _bytes_or_dash(value: float) -> str:
    return "—" if value != value else f"{value:,.0f}"  # NaN: not a tier of the run, so nothing was downloaded


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def baseline_row(run: Path, tmp: Path) -> dict[str, Any]:
    rep = export_from_run(run, tmp / "baseline.pt", "torchscript")
    return {
        "stored_bytes": rep["bytes_on_disk"],
        "accuracy": rep["accuracy"],
        "label": f"fp32 global model of `{run.name}`",
    }


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument(
        "--baseline", type=Path, help="a run without tiers whose fp32 global model is the reference"
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--variants",
        default="",
        help="storage variants of the largest tier's model, e.g. int8,kmeans4,kmeans3",
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = tier_rows(args.runs[0], Path(tmp))
        if args.variants:
            quants = [q for q in args.variants.split(",") if q]
            rows += storage_variants(args.runs[0], rows[0]["tier"], quants, Path(tmp))
            if args.baseline:
                rows += storage_variants(args.baseline, None, quants, Path(tmp))
        base = baseline_row(args.baseline, Path(tmp)) if args.baseline else None
    text = render(args.runs[0], rows, base, args.runs[1:])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
