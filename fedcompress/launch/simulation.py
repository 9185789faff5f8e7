"""Run the fedcompress app on Flower's simulation engine (Ray) exactly as `flwr run` does, and collect the run.

`flwr run` starts a detached local SuperLink that outlives the run; each launch gets its own FLWR_HOME and
private ports, and that SuperLink (with its simulation process and Ray workers) is stopped when the run ends, so
nothing is left running and concurrent launches never share a SuperLink.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcompress.config import RunConfig, check_keys, defaults
from fedcompress.errors import ConfigError, RunError
from fedcompress.launch.process import (
    TAG_ENV,
    free_ports,
    is_complete,
    kill_tree,
    launch_env,
    matching,
    read_summary,
    write_app,
    write_run_config,
)
from fedcompress.ledger.recorder import default_run_dir


class SimulationError(RunError):
    """The Flower run ended without a complete run directory."""


def resolve_config(overrides: dict[str, Any]) -> RunConfig:
    """Defaults from the declaration, then the overrides; checked (unknown keys too) before anything starts."""
    check_keys(overrides)
    return RunConfig.from_run_config({**defaults(), **overrides})


def absolute_paths(overrides: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Flower runs the app from a copy under FLWR_HOME, so every path the app reads must be absolute."""
    from fedcompress.data import default_data_dir

    out = {**overrides, "run-dir": str(Path(run_dir).expanduser().resolve())}
    if out.get("data-dir"):
        out["data-dir"] = str(Path(out["data-dir"]).expanduser().resolve())
    elif default_data_dir().exists():
        out["data-dir"] = str(default_data_dir().resolve())
    return out


def simulate(
    overrides: dict[str, Any],
    *,
    num_supernodes: int | None = None,
    cpus_per_client: float = 1.0,
    echo: Callable[[str], None] | None = print,
    verbose: bool = False,
    timeout: float | None = None,
    resume: Path | None = None,
) -> dict[str, Any]:
    """Run one simulation; returns its summary. Raises SimulationError if it did not complete.

    `resume`: a run directory to continue from its checkpoint (a finished one is returned as it is)."""
    if resume is not None:
        summary = read_summary(Path(resume))
        if is_complete(summary):
            return {**summary, "run_dir": str(Path(resume).resolve())}  # type: ignore[dict-item]
        from fedcompress.launch.resume import resume_overrides

        overrides = resume_overrides(Path(resume), overrides)
    cfg = resolve_config(overrides)
    check_devices(cfg)
    _check_data(cfg)
    overrides = absolute_paths(overrides, default_run_dir(cfg.run_dir, cfg.dataset, cfg.digest()))
    with tempfile.TemporaryDirectory(prefix="fedcompress-app-") as app_dir:
        tail = run_flower_app(
            write_app(Path(app_dir)), overrides, num_supernodes or cfg.num_partitions,
            cpus_per_client=cpus_per_client, gpus_per_client=cfg.client_num_gpus, echo=echo, verbose=verbose,
            timeout=timeout,
        )  # fmt: skip
    summary = read_summary(Path(overrides["run-dir"]))
    if not is_complete(summary):
        reason = (summary or {}).get("error") or "no summary written"
        log = "\n".join(tail[-25:])
        raise SimulationError(f"run did not complete ({reason}); last output:\n{log}")
    assert summary is not None
    summary["run_dir"] = overrides["run-dir"]
    return summary


def run_flower_app(
    app_dir: Path,
    overrides: dict[str, Any],
    num_supernodes: int,
    *,
    cpus_per_client: float = 1.0,
    gpus_per_client: float = 0.0,
    echo: Callable[[str], None] | None = print,
    verbose: bool = False,
    timeout: float | None = None,
) -> list[str]:
    """`flwr run APP --stream` on the simulation engine in a private FLWR_HOME; returns the last output lines."""
    with tempfile.TemporaryDirectory(prefix="fedcompress-flwr-") as home:
        cfg_file = write_run_config(Path(home) / "run-config.toml", overrides)
        http_port, control_port = free_ports(2)
        env = launch_env(
            FLWR_HOME=home,
            FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
            FLWR_LOCAL_CONTROL_API_PORT=str(control_port),
            **{TAG_ENV: os.environ.get(TAG_ENV, home)},
        )
        cmd = [
            sys.executable, "-m", "flwr.cli.app", "run", str(app_dir), "--stream",
            "--run-config", str(cfg_file),
            "--federation-config", federation_config(num_supernodes, cpus_per_client, gpus_per_client),
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
            # the detached SuperLink `flwr run` started for this FLWR_HOME, and everything it started
            kill_tree(pid for pid in matching("flower-superlink") if _started_in(pid, home))
    return tail


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def federation_config(num_supernodes: int, cpus_per_client: float, gpus_per_client: float = 0.0) -> str:
    """Ray's sizing of the federation: supernodes and the CPUs and GPU share each virtual client reserves.

    Flower 1.42 takes whole CPUs per client (a fraction fails deep inside `flwr run` with "'float' object cannot
    be interpreted as an integer"). A fraction (more clients in flight than cores, e.g. for clients that mostly
    wait) is given as one CPU per client on a Ray instance told it has cores / fraction CPUs.
    """
    if cpus_per_client <= 0:
        raise ConfigError(f"cpus-per-client must be > 0, got {cpus_per_client}")
    if cpus_per_client < 1:
        if os.environ.get("RAY_ADDRESS"):
            raise ConfigError(
                f"cpus-per-client {cpus_per_client} < 1 sizes a private Ray instance; on a Ray cluster "
                "(RAY_ADDRESS is set) give whole CPUs and size the cluster with `ray start --num-cpus`"
            )
        logical = max(1, math.ceil((os.cpu_count() or 1) / cpus_per_client))
        text = f"num-supernodes={num_supernodes} client-resources-num-cpus=1 init-args-num-cpus={logical}"
    elif float(cpus_per_client).is_integer():
        text = f"num-supernodes={num_supernodes} client-resources-num-cpus={int(cpus_per_client)}"
    else:
        raise ConfigError(
            f"cpus-per-client must be a whole number of CPUs or a fraction below 1, got {cpus_per_client}"
        )
    if gpus_per_client > 0:
        text += f" client-resources-num-gpus={_number(gpus_per_client)}"
    return text


def check_devices(cfg: RunConfig) -> None:
    """Fail before Ray starts: `device=cuda` without CUDA, or a GPU share Ray could never grant (the run
    would wait forever for a GPU)."""
    from fedcompress.accel import cuda_available, resolve_device

    resolve_device(cfg.device)
    if cfg.client_num_gpus > 0 and not cuda_available():
        raise ConfigError(
            f"config key 'client-num-gpus' = {cfg.client_num_gpus}: no GPU is visible here, Ray could never "
            "schedule a client; use 0"
        )


def _started_in(pid: int, flwr_home: str) -> bool:
    """A SuperLink started for this FLWR_HOME (named in its command line, or set in its environment)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return flwr_home in " ".join(proc.cmdline()) or proc.environ().get("FLWR_HOME") == flwr_home
    except psutil.Error:
        return False


def _check_data(cfg: RunConfig) -> None:
    """Load the dataset here first: a bad name or path fails in one clear line instead of inside Ray."""
    from fedcompress.task import dataset

    dataset(cfg)


def _is_ours(line: str) -> bool:
    text = line.strip()
    return text.startswith(("round ", "fedcompress:", "Traceback", "ERROR")) or "Error" in text[:40]
