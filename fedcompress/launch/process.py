"""What both launchers (simulation and deployment) need from the operating system and from Flower's CLI.

Free ports, the offline environment Flower and Ray need, run-config files, the app directory `flwr run` is
pointed at, reading a run's summary, and stopping process trees. Process trees are walked with `psutil`, so the
launchers work on Linux and macOS alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import tomli_w

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
}
TAG_ENV = "FEDCOMPRESS_LAUNCH_TAG"  # every process a launcher starts (and its children) carries it
SERVERAPP = "fedcompress.flower.serverapp:app"
CLIENTAPP = "fedcompress.flower.clientapp:app"


def launch_env(**extra: str) -> dict[str, str]:
    """The environment for Flower's CLI and servers: offline, and with this interpreter's scripts first on PATH,
    so `flower-superlink` & co. are found even when the virtual environment was not activated."""
    scripts = str(Path(sys.executable).parent)
    path = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    return {**os.environ, **OFFLINE_ENV, "PATH": path, **extra}


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open together, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_run_config(path: Path, overrides: dict[str, Any]) -> Path:
    """A `--run-config` TOML file for `flwr run` (values typed as TOML: codec specs keep their spaces)."""
    path.write_text(tomli_w.dumps(overrides))
    return path


def write_app(directory: Path) -> Path:
    """The fedcompress Flower app as `flwr run` wants it: a folder with a pyproject.toml.

    Its components point into the installed `fedcompress` package and its defaults come from the run-config
    declaration, so the installed command works from any folder, without the source checkout.
    """
    from fedcompress import __version__
    from fedcompress.config import defaults

    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"},
        "project": {
            "name": "fedcompress-app",
            "version": __version__,
            "dependencies": [],
            "license": "Apache-2.0",
            "description": "fedcompress: compressed updates and device-fitted models on Flower",
        },  # fmt: skip
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedcompress",
                    "components": {"serverapp": SERVERAPP, "clientapp": CLIENTAPP},
                    "config": defaults(),
                }
            }
        },
    }
    (directory / "pyproject.toml").write_text(tomli_w.dumps(doc))
    return directory


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's summary.json, or None while it is absent or half-written."""
    path = Path(run_dir) / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_complete(summary: dict[str, Any] | None) -> bool:
    return bool(summary) and summary.get("status") == "complete"


def tagged(tag: str) -> set[int]:
    """Live processes whose environment carries `TAG_ENV=tag` (other users' environments are unreadable)."""
    found = set()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(TAG_ENV) == tag:
                found.add(proc.pid)
    return found


def matching(text: str) -> set[int]:
    """Live processes whose command line contains `text`."""
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if text in " ".join(proc.info["cmdline"] or ()):
                found.add(proc.pid)
    return found


def family(roots: Iterable[int]) -> set[int]:
    """The roots and all their live descendants (not zombies)."""
    out: set[int] = set()
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            out.add(pid)
            out.update(child.pid for child in proc.children(recursive=True))
    return {pid for pid in out if alive(pid)}


def alive(pid: int) -> bool:
    """Running, i.e. present and not a zombie awaiting its parent's wait()."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_tree(roots: Iterable[int], *, grace: float = 5.0) -> set[int]:
    """Stop the roots and every descendant: SIGTERM, wait `grace` seconds, then SIGKILL what is left.

    The tree is read before anything is signalled (children of a killed parent lose their link to it) and re-read
    before the second pass to catch processes spawned meanwhile. Returns every pid it signalled.
    """
    roots = list(roots)
    seen: set[int] = set()
    for hard in (False, True):
        doomed = family(roots) | {p for p in seen if alive(p)}
        seen |= doomed
        procs = []
        for pid in doomed:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                proc.kill() if hard else proc.terminate()
                procs.append(proc)
        psutil.wait_procs(procs, timeout=3.0 if hard else grace)
    return seen
