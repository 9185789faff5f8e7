"""Run the fedcompress app on Flower's simulation engine (Ray) exactly as `flwr run` does, and collect the run.

`flwr run` starts a detached local SuperLink that outlives the run; we give each launch its own FLWR_HOME and
stop that SuperLink (and its simulation process) when the run ends, so nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcompress.config import PROJECT_ROOT, RunConfig, pyproject_defaults
from fedcompress.errors import ConfigError

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
}


class SimulationError(RuntimeError):
    """The Flower run ended without a complete run directory."""


def resolve_config(overrides: dict[str, Any], app_dir: Path = PROJECT_ROOT) -> RunConfig:
    """Defaults from the app's pyproject, then the overrides; checked before anything starts."""
    defaults = pyproject_defaults(app_dir)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(defaults))}")
    return RunConfig.from_run_config({**defaults, **overrides})


def simulate(
    overrides: dict[str, Any],
    *,
    app_dir: Path = PROJECT_ROOT,
    num_supernodes: int | None = None,
    cpus_per_client: float = 1.0,
    echo: Callable[[str], None] | None = print,
    verbose: bool = False,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run one simulation; returns its summary. Raises SimulationError if it did not complete."""
    cfg = resolve_config(overrides, app_dir)
    _check_data(cfg)
    run_dir = Path(cfg.run_dir or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.dataset}-{cfg.digest()}")
    run_dir = run_dir.expanduser().resolve()
    overrides = {**overrides, "run-dir": str(run_dir)}
    if not cfg.data_dir:  # Flower runs the app from a copy under FLWR_HOME: relative defaults would not resolve
        from fedcompress.data import default_data_dir

        if default_data_dir().exists():
            overrides["data-dir"] = str(default_data_dir().resolve())
    tail = run_flower_app(
        app_dir, overrides, num_supernodes or cfg.num_partitions,
        cpus_per_client=cpus_per_client, echo=echo, verbose=verbose, timeout=timeout,
    )  # fmt: skip
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if summary.get("status") != "complete":
        reason = summary.get("error") or "no summary written"
        log = "\n".join(tail[-25:])
        raise SimulationError(f"run did not complete ({reason}); last output:\n{log}")
    summary["run_dir"] = str(run_dir)
    return summary


def run_flower_app(
    app_dir: Path,
    overrides: dict[str, Any],
    num_supernodes: int,
    *,
    cpus_per_client: float = 1.0,
    echo: Callable[[str], None] | None = print,
    verbose: bool = False,
    timeout: float | None = None,
) -> list[str]:
    """`flwr run APP --stream` on the simulation engine in a private FLWR_HOME; returns the last output lines."""
    with tempfile.TemporaryDirectory(prefix="fedcompress-flwr-") as home:
        cfg_file = Path(home) / "run-config.toml"
        cfg_file.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in overrides.items()))
        env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": home}
        cmd = [
            sys.executable, "-m", "flwr.cli.app", "run", str(app_dir), "--stream",
            "--run-config", str(cfg_file),
            "--federation-config",
            f"num-supernodes={num_supernodes} client-resources-num-cpus={_toml_value(cpus_per_client)}",
        ]  # fmt: skip
        tail: list[str] = []
        try:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = None if timeout is None else time.monotonic() + timeout
            assert proc.stdout is not None
            for line in proc.stdout:
                tail = (tail + [line.rstrip()])[-60:]
                if echo and (verbose or _is_ours(line)):
                    echo(line.rstrip())
                if deadline and time.monotonic() > deadline:
                    proc.kill()
                    raise SimulationError(f"simulation exceeded {timeout} s")
            proc.wait()
        finally:
            _stop_local_superlink(home)
    return tail


def _check_data(cfg: RunConfig) -> None:
    """Load the dataset here first: a bad name or path fails in one clear line instead of inside Ray."""
    from fedcompress.task import dataset

    dataset(cfg)


def _is_ours(line: str) -> bool:
    text = line.strip()
    return text.startswith(("round ", "fedcompress:", "Traceback", "ERROR")) or "Error" in text[:40]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _stop_local_superlink(flwr_home: str) -> None:
    """Stop the detached SuperLink that `flwr run` started for this FLWR_HOME, with its process group."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "flower-superlink" in cmdline and flwr_home in cmdline:
            pid = int(pid_dir.name)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                for _ in range(50):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.1)
