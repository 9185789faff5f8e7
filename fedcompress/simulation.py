"""Run the fedcompress app on Flower's simulation engine (Ray) exactly as `flwr run` does, and collect the run.

`flwr run` starts a detached local SuperLink that outlives the run; we give each launch its own FLWR_HOME and
stop that SuperLink (and its simulation process) when the run ends, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcompress.config import PROJECT_ROOT, RunConfig, pyproject_defaults
from fedcompress.errors import ConfigError, RunError

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
}


class SimulationError(RunError):
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
    run_dir = Path(
        cfg.run_dir or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.dataset}-{cfg.digest()}"
    )
    run_dir = run_dir.expanduser().resolve()
    overrides = {**overrides, "run-dir": str(run_dir)}
    if (
        not cfg.data_dir
    ):  # Flower runs the app from a copy under FLWR_HOME: relative defaults would not resolve
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
        env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": home, **_private_ports()}
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


def _private_ports() -> dict[str, str]:
    """Free loopback ports for this launch's local SuperLink, so concurrent simulations never share one
    (by default every `flwr run` on a machine talks to the SuperLink on 39091, whoever started it)."""
    ports = []
    socks = [socket.socket() for _ in range(2)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
            ports.append(str(s.getsockname()[1]))
    finally:
        for s in socks:
            s.close()
    return {"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": ports[0], "FLWR_LOCAL_CONTROL_API_PORT": ports[1]}


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
    """Stop the detached SuperLink that `flwr run` started for this FLWR_HOME, and everything it started
    (the simulation process and its Ray workers), so no run leaves processes behind."""
    procs = _process_table()
    roots = [pid for pid, (_, cmd) in procs.items() if "flower-superlink" in cmd and flwr_home in cmd]
    doomed = set(roots)
    grew = True
    while grew:  # add descendants until none are new
        new = {pid for pid, (ppid, _) in procs.items() if ppid in doomed} - doomed
        doomed |= new
        grew = bool(new)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in doomed):
            time.sleep(0.1)


def _process_table() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} from /proc."""
    table: dict[int, tuple[int, str]] = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(pid_dir.name)] = (ppid, cmd)
    return table
