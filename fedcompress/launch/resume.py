"""Continuing a killed run from its checkpoint: `fedcompress simulate --resume RUN_DIR` and the study runner.

The run directory holds the resolved config (`config.json`) and the last checkpoint; resuming re-launches the
same config with `resume=true`, and the server continues after the checkpoint's round. Mismatches are found
here, before anything starts: a checkpoint of another config or version is refused naming each difference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig
from fedcompress.errors import RunError
from fedcompress.flower.checkpoint import FOLDER, STATE, comparable, differences, versions
from fedcompress.flower.statefile import load_state


def checkpoint_meta(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / FOLDER / STATE
    return load_state(path)[1] if path.exists() else None


def mismatch(run_dir: Path, config: dict[str, Any]) -> list[str]:
    """Why the checkpoint in `run_dir` cannot continue a run of `config` (empty: it can, or there is none)."""
    meta = checkpoint_meta(run_dir)
    if meta is None:
        return []
    return [f"version {d}" for d in differences(meta["versions"], versions())] + [
        f"config {d}" for d in differences(meta["config"], comparable(config))
    ]


def resume_overrides(run_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config that continues `run_dir` (its stored config, `overrides` on top), checked against its checkpoint."""
    run_dir = Path(run_dir).expanduser().resolve()
    try:
        stored = json.loads((run_dir / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as err:
        raise RunError(f"{run_dir} is not a run directory (config.json unreadable: {err})") from None
    if checkpoint_meta(run_dir) is None:
        raise RunError(f"{run_dir} holds no checkpoint ({FOLDER}/{STATE}): nothing to resume")
    out = {**stored, **overrides, "run-dir": str(run_dir), "resume-run": True}
    resolved = RunConfig.from_run_config(out).as_run_config()
    diff = mismatch(run_dir, resolved)
    if diff:
        raise RunError(
            f"the checkpoint in {run_dir} cannot continue this run (saved -> now): {'; '.join(diff)}"
        )
    return out


def can_resume(run_dir: Path, overrides: dict[str, Any]) -> bool:
    """A study cell killed mid-run continues from its checkpoint when it is of the same config; else afresh."""
    if checkpoint_meta(run_dir) is None:
        return False
    try:
        from fedcompress.config import defaults

        resolved = RunConfig.from_run_config({**defaults(), **overrides}).as_run_config()
        return not mismatch(run_dir, resolved)
    except (RunError, ValueError):
        return False
