"""Run a study's cells one by one through `simulate()`, resuming finished cells and surviving broken ones.

Cells run sequentially: each is a whole Flower simulation that already uses every core. A cell is done when
its folder holds summary.json with status "complete" and a config.json whose config hashes to the cell's hash,
so a rerun after a crash, a Ctrl-C or a spec edit runs only what is missing. A cell that fails leaves
`FAILED` (the error) in its folder and the study goes on.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcompress.errors import ConfigError, RunError
from fedcompress.studies.spec import Cell, Study, config_hash, load_study

ROUND_LINE = re.compile(r"round\s+(\d+)\s*/\s*(\d+)")
Simulate = Callable[..., dict[str, Any]]


def default_out(study: Study) -> Path:
    return Path("runs") / "studies" / study.label


def cell_status(run_dir: Path, digest: str) -> str:
    """complete | failed | pending, from what is on disk (the single source of truth for resume)."""
    summary, config = run_dir / "summary.json", run_dir / "config.json"
    if summary.exists() and config.exists():
        try:
            done = json.loads(summary.read_text()).get("status") == "complete"
            stored = json.loads(config.read_text())["config"]
            if done and config_hash(stored) == digest:
                return "complete"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return "failed" if (run_dir / "FAILED").exists() else "pending"


def select(cells: list[Cell], pattern: str | None) -> list[Cell]:
    """--only: a glob on the cell id (a plain word matches as a substring)."""
    if not pattern:
        return cells
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [c for c in cells if fnmatch.fnmatchcase(c.cell_id, glob)]


def run_study(
    spec: str | Path,
    *,
    quick: bool = False,
    out: Path | None = None,
    only: str | None = None,
    progress: bool = True,
    verbose: bool = False,
    timeout: float | None = None,
    retries: int = 1,
    simulate: Simulate | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Validate the spec, run each selected cell not yet complete, write OUT/study.json; return it."""
    study = load_study(spec, quick=quick)  # raises SpecError before anything runs
    if simulate is None:
        from fedcompress.launch.simulation import simulate
    out = Path(out or default_out(study))
    out.mkdir(parents=True, exist_ok=True)
    chosen = select(study.cells, only)
    if not chosen:
        ids = "\n  ".join(c.cell_id for c in study.cells)
        raise ConfigError(f"--only {only!r} matches no cell of {study.label}; cells:\n  {ids}")
    index = _index(study, out)
    _write_index(out, index)
    echo(f"study {study.label}: {len(study.cells)} cells, {len(chosen)} selected, output {out}")

    bars = _Bars(progress, total=len(chosen))
    counts = {"complete": 0, "skipped": 0, "failed": 0}
    try:
        for cell in chosen:
            run_dir = out / cell.cell_id
            if cell_status(run_dir, cell.config_hash) == "complete":
                counts["skipped"] += 1
                bars.log(f"skip {cell.cell_id} (complete)")
                bars.cell_done()
                continue
            (run_dir / "FAILED").unlink(missing_ok=True)
            bars.start_cell(cell)
            t0 = time.monotonic()
            error = _run_cell(
                simulate, cell, run_dir, bars, verbose=verbose, timeout=timeout, retries=retries
            )
            if error is None:
                counts["complete"] += 1
                bars.log(f"done {cell.cell_id} in {time.monotonic() - t0:.0f} s")
            else:
                counts["failed"] += 1
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "FAILED").write_text(f"{type(error).__name__}: {error}\n")
                first = str(error).splitlines()[0] if str(error) else type(error).__name__
                bars.log(f"FAILED {cell.cell_id}: {first} (details in {run_dir / 'FAILED'})")
            bars.cell_done()
            index = _index(study, out)
            _write_index(out, index)
    finally:
        bars.close()
        index = _index(study, out)
        index["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _write_index(out, index)
    echo(
        f"study {study.label}: {counts['complete']} ran, {counts['skipped']} already complete, "
        f"{counts['failed']} failed; index {out / 'study.json'}"
    )
    index["counts"] = counts
    return index


def _run_cell(
    simulate: Simulate,
    cell: Cell,
    run_dir: Path,
    bars: _Bars,
    *,
    verbose: bool,
    timeout: float | None,
    retries: int,
) -> Exception | None:
    """Run one cell; None on success, else the error. A SimulationError is retried `retries` times: on a
    shared machine `flwr run` can lose its local SuperLink (e.g. its port taken by another run), which is not
    the cell's fault.
    """
    from fedcompress.launch.resume import can_resume

    for attempt in range(retries + 1):
        overrides = {**cell.overrides, "run-dir": str(run_dir.resolve())}
        if can_resume(run_dir, overrides):  # a cell killed mid-run continues from its checkpoint
            overrides["resume-run"] = True
        try:
            simulate(
                overrides,
                echo=bars.echo(verbose), verbose=verbose, timeout=timeout,
            )  # fmt: skip
            return None
        except Exception as err:  # a failed run, a bad data dir, ...: recorded by the caller, the rest go on
            if not isinstance(err, RunError) or attempt == retries:
                return err
            bars.log(f"retry {cell.cell_id} ({attempt + 1}/{retries}): {str(err).splitlines()[0]}")
    return None


def _index(study: Study, out: Path) -> dict[str, Any]:
    """study.json: the spec, the machine, and every cell with its status read back from disk."""
    cells = []
    for cell in study.cells:
        run_dir = out / cell.cell_id
        status = cell_status(run_dir, cell.config_hash)
        entry: dict[str, Any] = {
            "id": cell.cell_id,
            "config_hash": cell.config_hash,
            "overrides": cell.overrides,
            "status": status,
        }
        if status == "complete":
            entry["summary"] = json.loads((run_dir / "summary.json").read_text())
        elif status == "failed":
            entry["error"] = (run_dir / "FAILED").read_text().strip()
        cells.append(entry)
    return {
        "study": {
            "name": study.name,
            "label": study.label,
            "description": study.description,
            "spec_path": str(study.path.resolve()),
            "quick": study.quick,
            "targets": study.targets,
        },
        "spec": study.raw,
        "runner_environment": runner_environment(),
        "cells": cells,
    }


def _write_index(out: Path, index: dict[str, Any]) -> None:
    tmp = out / "study.json.tmp"
    tmp.write_text(json.dumps(index, indent=2, default=str))
    tmp.replace(out / "study.json")


_ENV: dict[str, Any] = {}


def runner_environment() -> dict[str, Any]:
    """Versions, git commit (+dirty) and machine of the process that ran the study.

    A run dir's own environment cannot know the commit: Flower runs the app from a copy outside the repo.
    """
    if _ENV:
        return _ENV
    import fedcompress
    from fedcompress.ledger.recorder import environment

    env: dict[str, Any] = dict(environment())
    commit = _git(Path(fedcompress.__file__).parent, "rev-parse", "--short", "HEAD")
    if commit:
        dirty = _git(Path(fedcompress.__file__).parent, "status", "--porcelain", "--untracked-files=no")
        env["git_commit"] = commit + ("+dirty" if dirty else "")
    env["cpu"] = _cpu_model()
    env["cpu_count"] = os.cpu_count()
    env["os"] = f"{platform.system()} {platform.release()}"
    env["memory_gb"] = _memory_gb()
    _ENV.update(env)
    return _ENV


def _git(cwd: Path, *args: str) -> str:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        return res.stdout.strip() if res.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    return None


class _Bars:
    """Two tqdm bars: cells, and rounds of the running cell (driven by the app's `round i/n` lines)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.cells = self.rounds = None
        if enabled:
            from tqdm import tqdm

            self._tqdm = tqdm
            self.cells = tqdm(
                total=total, desc="cells", unit="cell", position=0, file=sys.stderr, dynamic_ncols=True
            )

    def start_cell(self, cell: Cell) -> None:
        if self.enabled:
            if self.rounds is not None:
                self.rounds.close()
            self.rounds = self._tqdm(
                total=cell.num_rounds, desc=cell.cell_id[:40], unit="round", position=1, leave=False,
                file=sys.stderr, dynamic_ncols=True,
            )  # fmt: skip
        else:
            print(f"run {cell.cell_id} ({cell.num_rounds} rounds)", file=sys.stderr, flush=True)

    def echo(self, verbose: bool) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            m = ROUND_LINE.search(line)
            if m and self.rounds is not None:
                self.rounds.n = int(m.group(1))
                self.rounds.refresh()
                if verbose:
                    self.log(line)
            elif verbose or line.lstrip().startswith(("Traceback", "ERROR")):
                self.log(line)

        return on_line

    def log(self, text: str) -> None:
        if self.enabled:
            self._tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def cell_done(self) -> None:
        if self.cells is not None:
            self.cells.update(1)

    def close(self) -> None:
        for bar in (self.rounds, self.cells):
            if bar is not None:
                bar.close()
