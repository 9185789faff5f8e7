"""Per-tier report for tiered runs: what each device stores, moves, runs and scores, against two references.

    python -m fedcompress.studies.tier_table RUN_DIR [MORE_RUN_DIRS ...] [--reference SINGLE_TIER_RUN]
        [--baseline FP32_RUN] [--scratch TIER=RUN ...] [--fgsm 0.02] [--out FILE.md]

The first run's tiers are exported the way each tier stores its model (int8 tiers as quantized TorchScript,
fp32 tiers as TorchScript): bytes are measured on disk, latency on one CPU thread at batch 1, accuracy is the
artefact's own on the central test set. Bytes per round come from the ledger (what Flower serialized). References:
`--reference`, the global model of a single-tier run with the same codecs, rounds and seed (its accuracy, its
bytes per round, and its exported fp32 size, which "x smaller" divides); `--scratch tier=RUN`, the tier's
architecture trained from scratch by all clients in fp32. `--fgsm EPS` adds each tier's accuracy under an FGSM
perturbation of EPS times the test images' value range. Further runs (same tiers, trained another way or another
seed) add a comparison. `--out X.md` also writes X.csv and X.png (accuracy per tier over rounds).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedcompress.config import RunConfig
from fedcompress.devices.config import parse_tier_config
from fedcompress.errors import ConfigError
from fedcompress.export import export_from_run

LAST = 5  # evaluations averaged: test accuracy moves by a point or two between rounds


def _rows(run: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / name).read_text().splitlines() if line.strip()]


def _config(run: Path) -> RunConfig:
    return RunConfig.from_run_config(json.loads((run / "config.json").read_text())["config"], strict=False)


def _evals(run: Path) -> list[dict[str, Any]]:
    return [r for r in _rows(run, "metrics.jsonl") if r.get("accuracy") is not None]


def last_rounds(run: Path) -> list[int]:
    """The rounds of the run's last LAST evaluations (a reference is read at the same rounds)."""
    return [r["round"] for r in _evals(run)[-LAST:]]


def last_mean(run: Path, key: str = "accuracy", rounds: list[int] | None = None) -> tuple[float, float]:
    """Mean and std of `key` over the run's last LAST evaluations, or over its evaluations at `rounds`."""
    picked = _evals(run)[-LAST:] if rounds is None else [r for r in _evals(run) if r["round"] in set(rounds)]
    return _mean_std(picked, key)


def upto_mean(run: Path, key: str, last_round: int) -> tuple[float, float]:
    """Mean and std of `key` over the run's last LAST evaluations at or before `last_round`."""
    return _mean_std([r for r in _evals(run) if r["round"] <= last_round][-LAST:], key)


def _mean_std(picked: list[dict[str, Any]], key: str) -> tuple[float, float]:
    vals = [float(r[key]) for r in picked if r.get(key) is not None]
    if not vals:
        return math.nan, math.nan
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def bytes_per_round(run: Path) -> float:
    """Mean bytes (uplink + downlink messages) the whole federation moved per round."""
    rows = [r for r in _rows(run, "metrics.jsonl") if r["round"] > 0]
    return statistics.mean(r["uplink_bytes"] + r["downlink_bytes"] for r in rows) if rows else math.nan


def fgsm_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch: int = 512) -> float:
    """Accuracy on x + eps * sign(grad of the loss), clipped to the images' value range (one step, untargeted)."""
    lo, hi = float(x.min()), float(x.max())
    step = eps * (hi - lo)
    model.eval()
    correct = 0
    for xb, yb in zip(torch.split(x, batch), torch.split(y, batch), strict=True):
        xb = xb.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        (grad,) = torch.autograd.grad(loss, xb)
        with torch.no_grad():
            adv = (xb + step * grad.sign()).clamp(lo, hi)
            correct += int((model(adv).argmax(1) == yb).sum())
    return correct / max(len(x), 1)


def tier_rows(run: Path, tmp: Path, fgsm_eps: float = 0.0) -> list[dict[str, Any]]:
    from fedcompress.export import load_run_model
    from fedcompress.task import dataset

    cfg = _config(run)
    tiers, mix = parse_tier_config(cfg.tiers, cfg.tier_mix)
    ledger = _rows(run, "ledger.jsonl")
    rounds = max(1, len({x["round"] for x in ledger if x["round"] > 1}))
    out = []
    for name, tier in tiers.items():
        fmt = "int8" if tier.quant == "int8" else "torchscript"
        rep = export_from_run(run, tmp / f"{run.name}-{name}.pt", fmt, name)
        mine = [x for x in ledger if x["tier"] == name and x["round"] > 1]
        down = [x["message_bytes"] for x in mine if x["direction"] == "downlink"]
        up = [x["message_bytes"] for x in mine if x["direction"] == "uplink"]
        mean, std = last_mean(run, f"accuracy/{name}")
        row = {
            "tier": name, "width": tier.width, "stored_as": fmt, "share": mix[name], "params": rep["params"],
            "stored_bytes": rep["bytes_on_disk"], "latency_ms": rep["latency_ms_p50"],
            "downlink_bytes_per_round": statistics.mean(down) if down else 0.0,
            "uplink_bytes_per_round": statistics.mean(up) if up else 0.0,
            "tier_bytes_per_round": (sum(down) + sum(up)) / rounds,
            "accuracy_stored": rep["accuracy"], "accuracy_fp32": _evals(run)[-1].get(f"accuracy/{name}"),
            "accuracy_last_mean": mean, "accuracy_last_std": std, "fgsm_accuracy": math.nan,
        }  # fmt: skip
        if fgsm_eps > 0:
            model, _ = load_run_model(run, name)
            ds = dataset(cfg)
            row["fgsm_accuracy"] = fgsm_accuracy(
                model, torch.from_numpy(ds.x_test.copy()), torch.from_numpy(ds.y_test.copy()), fgsm_eps
            )
        out.append(row)
    return out


def storage_variants(run: Path, tier: str | None, quants: list[str], tmp: Path) -> list[dict[str, Any]]:
    """The same trained model stored other ways (int8, k-means B-bit weight sharing): what a device would keep
    if it downloads the full-width model compressed, Deep Compression-style. Bytes are the artefact on disk."""
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
        acc = evaluate(model, ds.x_test, ds.y_test)[1]
        out.append(
            {
                "tier": f"{tier or 'global'} as {quant}", "width": 1.0, "stored_as": quant, "share": 0.0,
                "params": sum(p.numel() for p in model.parameters()), "stored_bytes": path.stat().st_size,
                "latency_ms": measure_latency_ms(art.model, calib[:1]), "downlink_bytes_per_round": math.nan,
                "uplink_bytes_per_round": math.nan, "tier_bytes_per_round": math.nan,
                "accuracy_stored": evaluate(art.model, ds.x_test, ds.y_test)[1], "accuracy_fp32": acc,
                "accuracy_last_mean": math.nan, "accuracy_last_std": math.nan, "fgsm_accuracy": math.nan,
            }
        )  # fmt: skip
    return out


def reference_row(run: Path, tmp: Path, rounds: list[int] | None = None) -> dict[str, Any]:
    """A single-tier run's global model: exported fp32 size, accuracy at `rounds` (default: its last
    evaluations), bytes/round."""
    rep = export_from_run(run, tmp / f"{run.name}-reference.pt", "torchscript")
    mean, std = last_mean(run, rounds=rounds)
    return {
        "stored_bytes": rep["bytes_on_disk"], "accuracy": rep["accuracy"], "accuracy_last_mean": mean,
        "accuracy_last_std": std, "bytes_per_round": bytes_per_round(run), "label": f"`{run.name}`", "path": run,
    }  # fmt: skip


def baseline_row(run: Path, tmp: Path) -> dict[str, Any]:
    rep = export_from_run(run, tmp / "baseline.pt", "torchscript")
    return {
        "stored_bytes": rep["bytes_on_disk"],
        "accuracy": rep["accuracy"],
        "label": f"fp32 global model of `{run.name}`",
    }


def render(
    main_run: Path,
    rows: list[dict[str, Any]],
    baseline: dict[str, Any] | None,
    others: list[Path],
    reference: dict[str, Any] | None = None,
    scratch: dict[str, tuple[float, float]] | None = None,
    fgsm_eps: float = 0.0,
) -> str:
    cfg = _config(main_run)
    scratch = scratch or {}
    size_ref = baseline or reference or {"stored_bytes": rows[0]["stored_bytes"], "accuracy": rows[0]["accuracy_fp32"], "label": f"tier {rows[0]['tier']} (fp32)"}  # fmt: skip
    acc_ref = reference["accuracy_last_mean"] if reference else size_ref["accuracy"]
    lines = [
        f"## {cfg.dataset}: device tiers ({cfg.tier_training}, {cfg.num_server_rounds} rounds, seed {cfg.seed})",
        "",
        f"Run: `{main_run.name}`; uplink `{cfg.uplink}`, downlink `{cfg.downlink}`"
        + (f"; per-tier uplink `{cfg.tier_uplink}`" if cfg.tier_uplink else "")
        + (f"; per-tier downlink `{cfg.tier_downlink}`" if cfg.tier_downlink else "")
        + f". Sizes against {size_ref['label']} ({size_ref['stored_bytes']:,} B fp32).",
    ]
    if reference:
        lines.append(
            f"Reference: the global model of the single-tier run {reference['label']} (same codecs, rounds, seed): "
            f"accuracy {reference['accuracy_last_mean']:.4f} ± {reference['accuracy_last_std']:.4f} (mean at the "
            f"rounds of the tiered run's last {LAST} evaluations), {reference['bytes_per_round']:,.0f} B per round."
        )
    lines += [
        "",
        f"Accuracy: mean ± std of the last {LAST} evaluations (fp32 weights); 'acc stored' is the stored artefact's "
        f"own, after the last round. 'vs ref' compares the mean with the reference's mean."
        + (f" FGSM: one step of {fgsm_eps} x the images' value range." if fgsm_eps > 0 else ""),
        "",
        "| tier | width | stored as | params | stored bytes | x smaller | CPU ms (b=1) | down B/client/round | "
        "up B/client/round | tier B/round | acc (last 5) | acc stored | vs ref (pts) | scratch fp32 | FGSM acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sc = scratch.get(r["tier"])
        lines.append(
            f"| {r['tier']} | {r['width']} | {r['stored_as']} | {r['params']:,} | {r['stored_bytes']:,} | "
            f"{size_ref['stored_bytes'] / r['stored_bytes']:.1f}x | {r['latency_ms']:.3f} | "
            f"{_num(r['downlink_bytes_per_round'])} | {_num(r['uplink_bytes_per_round'])} | {_num(r['tier_bytes_per_round'])} | "
            f"{_pm(r['accuracy_last_mean'], r['accuracy_last_std'])} | {r['accuracy_stored']:.4f} | "
            f"{_pts((r['accuracy_last_mean'] if r['accuracy_last_mean'] == r['accuracy_last_mean'] else r['accuracy_stored']) - acc_ref)} | "
            f"{_pm(*sc) if sc else '—'} | {_acc(r['fgsm_accuracy'])} |"
        )
    lines += ["", federation_lines(main_run, reference)]
    if others:
        runs = [main_run, *others]
        names = [t["tier"] for t in rows if t["share"] > 0]  # the run's tiers, not storage variants
        cutoff = min(
            _config(r).num_server_rounds for r in runs
        )  # equal rounds: compare where all runs got to
        lines += [
            "", f"### The same tiers trained other ways: accuracy per tier at equal rounds (mean ± std of the last "
            f"{LAST} evaluations up to round {cutoff})", "",
            "| tier training | seed | rounds run | " + " | ".join(names) + " | B/round | run |",
            "|---|---|---|" + "---|" * (len(names) + 2),
        ]  # fmt: skip
        for run in runs:
            c = _config(run)
            accs = " | ".join(_pm(*upto_mean(run, f"accuracy/{n}", cutoff)) for n in names)
            lines.append(
                f"| {_how(c)} | {c.seed} | {c.num_server_rounds} | {accs} | {bytes_per_round(run):,.0f} | `{run.name}` |"
            )
        if reference and "path" in reference:  # the single-tier global model at the same evaluation rounds
            run = reference["path"]
            picked = [r["round"] for r in _evals(others[-1] if others else main_run) if r["round"] <= cutoff][
                -LAST:
            ]
            acc = _pm(*last_mean(run, rounds=picked))
            lines.append(
                f"| single-tier global (reference) | {_config(run).seed} | {_config(run).num_server_rounds} | "
                + " | ".join(acc for _ in names)
                + f" | {reference['bytes_per_round']:,.0f} | `{run.name}` |"
            )
    return "\n".join(lines) + "\n"


def federation_lines(run: Path, reference: dict[str, Any] | None) -> str:
    """Whole-federation bytes per round against the reference, and server time spent making device models."""
    rows = [r for r in _rows(run, "metrics.jsonl") if r["round"] > 0]
    per_round = bytes_per_round(run)
    text = f"Whole federation: {per_round:,.0f} B per round"
    if reference:
        text += f", {per_round / reference['bytes_per_round']:.2f}x the single-tier run's"
    made = [float(r["server_make_seconds"]) for r in rows if r.get("server_make_seconds") is not None]
    secs = statistics.mean(r["seconds"] for r in rows) if rows else math.nan
    if made:
        text += (
            f". Server time making device models: {sum(made) / len(rows):.2f} s per round on average "
            f"({statistics.mean(made):.2f} s per refresh, {len(made)} refreshes) against {secs:.2f} s per round"
        )
    else:
        text += f"; no server-made device models (round time {secs:.2f} s)"
    return text + "."


def _how(c: RunConfig) -> str:
    return c.tier_training + (f" (teachers: {c.distill_teachers})" if c.tier_training == "distill" else "")


def _num(value: float) -> str:
    return "—" if value != value else f"{value:,.0f}"  # NaN: not a tier of the run, so nothing moved


def _acc(value: float) -> str:
    return "—" if value != value else f"{value:.4f}"


def _pts(value: float) -> str:
    return "—" if value != value else f"{100 * value:+.2f}"


def _pm(mean: float, std: float) -> str:
    return "—" if mean != mean else f"{mean:.4f} ± {std:.4f}"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_plot(path: Path, run: Path, names: list[str], reference: Path | None) -> None:
    """Accuracy of each tier over rounds, and the reference's global model."""
    from fedcompress.studies.plots import DPI, SIZE, plt

    fig, ax = plt.subplots(figsize=SIZE)
    evals = _evals(run)
    for n in names:
        pts = [(r["round"], r[f"accuracy/{n}"]) for r in evals if r.get(f"accuracy/{n}") is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=n)
    if reference is not None:
        ref = _evals(reference)
        ax.plot([r["round"] for r in ref], [r["accuracy"] for r in ref], "k:", label="single-tier global")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{_config(run).dataset}: tiers ({_config(run).tier_training})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _scratch(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        tier, sep, run = item.partition("=")
        if not sep or not tier or not run:
            raise ConfigError(f"--scratch takes TIER=RUN_DIR, got {item!r}")
        out[tier] = Path(run)
    return out


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument(
        "--baseline", type=Path, help="a run without tiers whose fp32 global model sizes the tiers"
    )
    ap.add_argument("--reference", type=Path, help="single-tier run with the same codecs, rounds and seed")
    ap.add_argument(
        "--scratch", action="append", default=[], help="TIER=RUN: the tier trained from scratch in fp32"
    )
    ap.add_argument(
        "--fgsm", type=float, default=0.0, help="FGSM step, a fraction of the images' value range"
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--variants",
        default="",
        help="storage variants of the largest tier's model, e.g. int8,kmeans4,kmeans3",
    )
    args = ap.parse_args(argv)
    if not 0 <= args.fgsm < 1:
        raise ConfigError(f"--fgsm must be in [0, 1) (a fraction of the value range), got {args.fgsm}")
    scratch = {
        t: last_mean(run, rounds=last_rounds(args.runs[0])) for t, run in _scratch(args.scratch).items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        rows = tier_rows(args.runs[0], Path(tmp), args.fgsm)
        names = [r["tier"] for r in rows]
        if args.variants:
            quants = [q for q in args.variants.split(",") if q]
            rows += storage_variants(args.runs[0], rows[0]["tier"], quants, Path(tmp))
            if args.baseline:
                rows += storage_variants(args.baseline, None, quants, Path(tmp))
        base = baseline_row(args.baseline, Path(tmp)) if args.baseline else None
        ref = reference_row(args.reference, Path(tmp), last_rounds(args.runs[0])) if args.reference else None
    text = render(args.runs[0], rows, base, args.runs[1:], ref, scratch, args.fgsm)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        write_csv(args.out.with_suffix(".csv"), rows)
        write_plot(args.out.with_suffix(".png"), args.runs[0], names, args.reference)
    print(text)
    return text


if __name__ == "__main__":
    main()
