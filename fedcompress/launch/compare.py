"""A compressed run beside fp32 FedAvg on the same config: what compression bought, in bytes and accuracy."""

from __future__ import annotations

import json
from typing import Any

FP32 = {"compression": "custom", "uplink": "identity", "downlink": "identity"}  # custom: not a preset's


def compare_with_fp32(
    overrides: dict[str, Any], summary: dict[str, Any], **simulate_kwargs: Any
) -> dict[str, Any]:
    """Run the same config with uncompressed updates both ways; print both side by side; return the ratios."""
    from fedcompress.launch.simulation import simulate

    print("fedcompress: now the same run with fp32 updates both ways, for comparison", flush=True)
    reference = simulate({**overrides, **FP32, "run-dir": summary["run_dir"] + "-fp32"}, **simulate_kwargs)
    table = comparison_table(summary, reference)
    print(table["text"], flush=True)
    print(json.dumps({"compressed": summary, "fp32": reference, "ratios": table["ratios"]}))
    return table["ratios"]


def comparison_table(ours: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """Rows for both runs and the x-fewer-bytes ratios (fp32 bytes / compressed bytes)."""

    def total(s: dict[str, Any]) -> float:
        return s["uplink_mb"] + s["downlink_mb"]

    def ratio(a: float, b: float) -> float:
        return round(a / b, 1) if b else float("inf")

    ratios = {
        "uplink_x": ratio(fp32["uplink_mb"], ours["uplink_mb"]),
        "downlink_x": ratio(fp32["downlink_mb"], ours["downlink_mb"]),
        "total_x": ratio(total(fp32), total(ours)),
        "accuracy_delta": round((ours["final_accuracy"] or 0.0) - (fp32["final_accuracy"] or 0.0), 4),
    }
    rows = [("", "final acc", "best acc", "uplink MB", "downlink MB", "total MB")]
    for name, s in (("compressed", ours), ("fp32 FedAvg", fp32)):
        rows.append((
            name, f"{s['final_accuracy']:.4f}", f"{s['best_accuracy']:.4f}", f"{s['uplink_mb']:.3f}",
            f"{s['downlink_mb']:.3f}", f"{total(s):.3f}",
        ))  # fmt: skip
    rows.append((
        "fp32 / compressed", "", "", f"{ratios['uplink_x']}x", f"{ratios['downlink_x']}x", f"{ratios['total_x']}x",
    ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )
    return {"text": text, "ratios": ratios}
