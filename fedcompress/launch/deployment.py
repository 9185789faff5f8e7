"""The multi-device use case on one machine, with Flower's real deployment engine (not the simulation engine).

Starts a `flower-superlink` and N `flower-supernode`s on free loopback ports, optionally with TLS (a throwaway
CA generated here) and SuperNode authentication (an EC key pair per node, registered with `flwr supernode
register`), runs the fedcompress app on them with `flwr run --stream`, waits for the run directory to say
"complete", stops every process it started (and their children), and prints one JSON line.

    python -m fedcompress.launch.deployment --nodes 2 --rounds 2 --tls --auth \
        --run-config 'uplink="topk(0.05) > ef > uniform(4) > entropy" downlink="topk(0.2) > uniform(4) > entropy"'

Flower 1.42 serves the Fleet, Control and Runtime APIs of a SuperLink on ONE HTTP(S) port (`--host/--port`;
`--fleet-api-address` and `--control-api-address` are deprecated), so one free port serves all three.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcompress.config import parse_overrides
from fedcompress.errors import ConfigError, RunError
from fedcompress.launch.certs import TlsFiles, check_readable, generate_node_keys, generate_tls
from fedcompress.launch.process import (
    TAG_ENV,
    free_ports,
    is_complete,
    kill_tree,
    launch_env,
    read_summary,
    tagged,
    write_app,
    write_run_config,
)
from fedcompress.launch.progress import RoundPrinter, wire_report
from fedcompress.launch.proxy import ByteCountingProxy
from fedcompress.launch.simulation import absolute_paths, resolve_config

CONNECTION = "deploy-local"
SUPEREXEC_POLL_S = 0.1  # FLWR_SUPEREXEC_TASK_POLL_INTERVAL for our SuperNodes (Flower's default: 1 s)


class DeployError(RunError):
    """The deployment did not produce a complete run."""


# --------------------------------------------------------------------------------------------- processes


@dataclass
class Federation:
    """One SuperLink and its SuperNodes on loopback, all under `workdir`; `stop()` ends every process."""

    workdir: Path
    tls: bool = False
    auth: bool = False
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    port: int = 0
    tls_files: TlsFiles | None = None
    wire_proxy: bool = False
    fast_poll: bool = True
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    seen_pids: set[int] = field(default_factory=set)
    node_keys: dict[str, Path] = field(default_factory=dict)  # name -> private key (a restart reuses it)
    proxy: ByteCountingProxy | None = None
    restarts: int = 0
    _superlink_cmd: list[str] = field(default_factory=list)
    away: set[str] = field(default_factory=set)  # SuperNodes stopped on purpose and not restarted

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def node_address(self) -> str:
        """Where SuperNodes connect: the byte-counting relay when there is one, else the SuperLink itself."""
        return self.proxy.address if self.proxy else self.address

    @property
    def home(self) -> Path:
        return self.workdir / "flwr-home"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def env(self, home: Path | None = None) -> dict[str, str]:
        """Offline, private FLWR_HOME, tagged so leaks can be found by environment."""
        return launch_env(FLWR_HOME=str(home or self.home), **{TAG_ENV: self.tag})

    def start_superlink(self, timeout: float = 60.0) -> None:
        """Start the SuperLink (one port: Fleet, Control and Runtime APIs) and wait until it accepts."""
        if self.auth and not self.tls:
            raise DeployError("--auth needs --tls (Flower refuses SuperNode auth without TLS)")
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.tls and self.tls_files is None:
            self.tls_files = generate_tls(self.workdir / "tls")
        if self.tls_files is not None:
            f = self.tls_files
            check_readable(f.ca_cert, f.server_cert, f.server_key)
        self.port = free_ports(1)[0]
        cmd = ["flower-superlink", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--database", str(self.workdir / "superlink.db"), "--disable-runtime-dependency-installation"]
        cmd += self._server_tls_args() + (["--enable-supernode-auth"] if self.auth else [])
        self._superlink_cmd = cmd
        self._spawn("superlink", cmd, self.env())
        self._wait_for_port(timeout)
        self.write_connection()
        if self.wire_proxy:
            self.proxy = ByteCountingProxy("127.0.0.1", self.port).start()

    def _server_tls_args(self) -> list[str]:
        f = self.tls_files
        if f is None:
            return ["--insecure"]
        return [
            "--ssl-ca-certfile", str(f.ca_cert), "--ssl-certfile", str(f.server_cert),
            "--ssl-keyfile", str(f.server_key),
        ]  # fmt: skip

    def _client_tls_args(self) -> list[str]:
        return ["--root-certificates", str(self.tls_files.ca_cert)] if self.tls_files else ["--insecure"]

    def write_connection(self) -> None:
        """`$FLWR_HOME/config.toml` with one `[superlink.NAME]` connection to our Control API."""
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [f"[superlink.{CONNECTION}]", f'address = "{self.address}"']
        if self.tls_files:
            lines.append(f'root-certificates = "{self.tls_files.ca_cert}"')
        else:
            lines.append("insecure = true")
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def register(self, public_keys: dict[str, Path], timeout: float = 120.0) -> None:
        """`flwr supernode register` for each key, in parallel (each CLI start costs seconds): with auth on,
        the SuperLink admits only SuperNodes whose keys were registered this way."""
        cmds = {
            n: ["flwr", "supernode", "register", str(k), CONNECTION, "--name", n]
            for n, k in public_keys.items()
        }
        procs = {n: self._spawn(f"register-{n}", cmd, self.env()) for n, cmd in cmds.items()}
        for name, proc in procs.items():
            if proc.wait(timeout=timeout) != 0:
                log = (self.logs / f"register-{name}.log").read_text(errors="replace")
                raise DeployError(f"registering {name} failed:\n{log[-2000:]}")

    def start_supernodes(self, num_nodes: int, timeout: float = 120.0) -> None:
        """N SuperNodes, partition i on node i; with auth, each with its own key pair, registered first."""
        keys = {}
        if self.auth:
            keys = {
                f"supernode-{i}": generate_node_keys(self.workdir / "keys", f"supernode-{i}")
                for i in range(num_nodes)
            }
            self.register({name: public for name, (_, public) in keys.items()}, timeout)
            self.node_keys = {name: private for name, (private, _) in keys.items()}
        for i in range(num_nodes):
            self.start_supernode(i, num_nodes, self.node_keys.get(f"supernode-{i}"))

    def start_supernode(
        self,
        index: int,
        num_nodes: int,
        private_key: Path | None = None,
        log_name: str = "",
        tls_args: list[str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> subprocess.Popen:
        """A SuperNode with its own runtime port, FLWR_HOME (apps are installed there) and partition."""
        name = f"supernode-{index}"
        cmd = ["flower-supernode", "--superlink", self.node_address, "--port", str(free_ports(1)[0])]
        cmd += ["--node-config", f"partition-id={index} num-partitions={num_nodes}"]
        cmd += self._client_tls_args() if tls_args is None else tls_args
        cmd += list(extra)
        if private_key is not None:
            cmd += ["--auth-supernode-private-key", str(private_key)]
        env = self.env(self.workdir / name)
        if self.fast_poll:  # the SuperExec looks for new ClientApp tasks every 1 s by default
            env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(SUPEREXEC_POLL_S)
        return self._spawn(name, cmd, env, log_name=log_name)

    def restart_supernode(
        self, index: int, num_nodes: int, *, hard: bool = False, pause: float = 0.0, come_back: bool = True
    ) -> None:
        """Stop SuperNode `index` (SIGTERM: it deactivates itself; `hard`: SIGKILL, as a crash or power cut),
        then, if `come_back`, start it again with the same key pair and partition. Its in-memory node state (the
        compression residual and the model it held) is gone; the server notices through the digest check."""
        name = f"supernode-{index}"
        proc = self.procs[name]
        if hard:
            self.seen_pids |= kill_tree([proc.pid], grace=0.0)
        else:
            self.seen_pids |= kill_tree([proc.pid], grace=8.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if not come_back:
            self.away.add(name)
            return
        time.sleep(pause)
        self.restarts += 1
        self.start_supernode(
            index, num_nodes, self.node_keys.get(name), log_name=f"{name}-restart{self.restarts}"
        )

    def restart_superlink(self, timeout: float = 60.0) -> None:
        """Stop the SuperLink (and what it started: SuperExec, the ServerApp) and start it again on the same
        port with the same `--database`: what a SuperLink host reboot does to a run."""
        self.seen_pids |= kill_tree([self.procs["superlink"].pid], grace=8.0)
        self._spawn("superlink", self._superlink_cmd, self.env(), log_name="superlink-restart")
        self._wait_for_port(timeout)

    def retry_activation(self, name: str, num_nodes: int) -> bool:
        """A SuperNode restarted after SIGKILL is refused ("Failed to activate") until the SuperLink stops
        counting it online (2 missed heartbeats, <= 60 s in Flower 1.42): start it again, a few seconds later.
        Returns True if it was restarted."""
        if not name.startswith("supernode-") or self.restarts == 0:
            return False
        log = self.logs / f"{name}-restart{self.restarts}.log"
        if "Failed to activate" not in log.read_text(errors="replace"):
            return False
        time.sleep(3)
        index = int(name.split("-")[1])
        self.start_supernode(
            index, num_nodes, self.node_keys.get(name), log_name=f"{name}-restart{self.restarts}"
        )
        return True

    def connection_cause(self) -> str:
        """Why a SuperNode could not connect, probed the way it connects (empty if the handshake works)."""
        from fedcompress.launch.diagnose import diagnose

        ca = self.tls_files.ca_cert if self.tls_files else None
        cause = diagnose(self.node_address, ca, insecure=ca is None)
        return "" if cause == "ok" else f": {cause}"

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], log_name: str = "") -> subprocess.Popen:
        """Start a process with its output in logs/NAME.log."""
        log = open(self.logs / f"{log_name or name}.log", "wb")  # noqa: SIM115 - the child owns it while it runs
        try:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        finally:
            log.close()
        self.procs[name] = proc
        self.seen_pids.add(proc.pid)
        return proc

    def _wait_for_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["superlink"].poll() is not None:
                raise DeployError("the SuperLink exited at start-up")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.2)
        raise DeployError(f"the SuperLink did not open port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop every process we started and all their descendants (SuperExec, ServerApp, ClientApps); the
        environment tag catches orphans whose parent died first."""
        roots = {p.pid for p in self.procs.values()} | tagged(self.tag)
        self.seen_pids |= kill_tree(roots, grace=8.0)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        if self.proxy is not None:
            self.proxy.stop()

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every log we captured: what a failure report shows."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)


# --------------------------------------------------------------------------------------------- the run


def run_overrides(nodes: int, rounds: int, run_dir: Path, user: dict[str, Any]) -> dict[str, Any]:
    """The app's run config: one partition per SuperNode, all sampled, absolute paths (the app runs from a
    copy under FLWR_HOME, so relative paths would not resolve)."""
    fixed = {"num-partitions": nodes, "clients-per-round": nodes, "num-server-rounds": rounds}
    overrides = absolute_paths({"dataset": "digits", **user, **fixed}, run_dir)
    resolve_config(overrides)  # unknown keys and bad values fail here, before anything starts
    return overrides


def submit_run(fed: Federation, app_dir: Path, overrides: dict[str, Any]) -> subprocess.Popen:
    """`flwr run APP CONNECTION --stream --run-config FILE`, its output in logs/flwr-run.log."""
    cfg_file = write_run_config(fed.workdir / "run-config.toml", overrides)
    cmd = ["flwr", "run", str(app_dir), CONNECTION, "--stream", "--run-config", str(cfg_file)]
    return fed._spawn("flwr-run", cmd, fed.env())


@dataclass(frozen=True)
class Restart:
    """Kill SuperNode `node` once round `after_round` is complete, then start it again (same key, same partition)."""

    node: int
    after_round: int
    hard: bool = False
    come_back: bool = True  # False: the node stays away (the rounds after go on without it)


def wait_for_summary(
    run_dir: Path,
    fed: Federation,
    deadline: float,
    printer: RoundPrinter | None = None,
    restart: Restart | None = None,
    num_nodes: int = 0,
) -> dict[str, Any]:
    """Block until summary.json says complete, printing each round as it ends; fail early if the run says
    otherwise or a SuperNode dies (other than the one we restart on purpose)."""
    printer = printer or RoundPrinter(run_dir, 0, out=None)
    pending = restart
    while time.monotonic() < deadline:
        rows = printer.poll()
        if pending and any(r["round"] >= pending.after_round for r in rows):
            fed.restart_supernode(pending.node, num_nodes, hard=pending.hard, come_back=pending.come_back)
            pending = None
        summary = read_summary(run_dir)
        if summary is not None:
            printer.poll()
            if is_complete(summary):
                return summary
            raise DeployError(f"run ended with status {summary.get('status')!r}: {summary.get('error')}")
        dead = [
            n
            for n, p in fed.procs.items()
            if n.startswith(("superlink", "supernode")) and p.poll() is not None and n not in fed.away
        ]
        dead = [n for n in dead if not fed.retry_activation(n, num_nodes)]
        if dead:
            raise DeployError(f"{', '.join(dead)} exited before the run completed{fed.connection_cause()}")
        time.sleep(0.5)
    raise DeployError("timed out waiting for the run to complete")


def deploy(
    nodes: int = 2,
    rounds: int = 2,
    *,
    tls: bool = False,
    auth: bool = False,
    run_config: dict[str, Any] | None = None,
    workdir: Path | None = None,
    timeout: float = 600.0,
    app_dir: Path | None = None,
    wire_proxy: bool = False,
    restart: Restart | None = None,
    fast_poll: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the app on a fresh local federation; returns the summary line's fields. Always stops everything.

    `wire_proxy` relays SuperNode traffic through a byte counter and adds its counts next to the ledger's;
    `restart` kills and restarts one SuperNode mid-run; `progress` prints one line per round as it ends.
    """
    deadline = time.monotonic() + timeout
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="fedcompress-deploy-"))).resolve()
    run_dir = workdir / "run"
    overrides = run_overrides(nodes, rounds, run_dir, run_config or {})
    if restart is not None and not 0 <= restart.node < nodes:
        raise ConfigError(f"--restart-node {restart.node} outside [0, {nodes})")
    fed = Federation(workdir, tls=tls, auth=auth, wire_proxy=wire_proxy, fast_poll=fast_poll)
    printer = RoundPrinter(run_dir, rounds, out=(lambda line: print(line, flush=True)) if progress else None)
    t0 = time.monotonic()
    failure: Exception | None = None
    try:
        fed.start_superlink(timeout=max(1.0, deadline - time.monotonic()))
        fed.start_supernodes(nodes, timeout=max(1.0, deadline - time.monotonic()))
        submit_run(fed, app_dir or write_app(workdir / "app"), overrides)
        summary = wait_for_summary(run_dir, fed, deadline, printer, restart, nodes)
    except (DeployError, subprocess.TimeoutExpired) as err:
        failure = err
    finally:
        fed.stop()
    if failure is not None:
        raise DeployError(f"{failure}\n{fed.log_tails()}") from failure
    result = {
        "rounds": summary["rounds"], "final_accuracy": summary["final_accuracy"],
        "uplink_mb": round(summary["uplink_mb"], 4), "downlink_mb": round(summary["downlink_mb"], 4),
        "seconds_per_round": round(summary["seconds_per_round"] or 0.0, 2), "wall_seconds": round(time.monotonic() - t0, 1),
        "nodes": nodes, "tls": tls, "auth": auth, "restarts": fed.restarts, "run_dir": str(run_dir),
        "workdir": str(workdir), "pids": sorted(fed.seen_pids), "tag": fed.tag,
    }  # fmt: skip
    if fed.proxy is not None:
        result["wire"] = wire_report(fed.proxy.snapshot(), run_dir, nodes * (time.monotonic() - t0))
    return result


# --------------------------------------------------------------------------------------------- CLI


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=2, help="SuperNodes (one partition each)")
    p.add_argument("--rounds", type=int, default=2, help="server rounds")
    p.add_argument("--tls", action="store_true", help="TLS with a throwaway CA generated in the workdir")
    p.add_argument("--auth", action="store_true", help="SuperNode authentication (needs --tls)")
    p.add_argument(
        "--run-config", default="", help="app overrides, 'k=v k2=\"a b\"' (dataset digits by default)"
    )
    p.add_argument(
        "--workdir", type=Path, help="where certificates, keys, logs and the run go (default: a temp dir)"
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before everything is killed")
    p.add_argument(
        "--wire-proxy", action="store_true",
        help="relay SuperNode <-> SuperLink traffic through a byte-counting proxy and compare with the ledger",
    )  # fmt: skip
    p.add_argument("--restart-node", type=int, help="kill this SuperNode mid-run and start it again")
    p.add_argument("--restart-after", type=int, default=1, help="...once this round is complete (default 1)")
    p.add_argument("--restart-hard", action="store_true", help="kill with SIGKILL (a crash), not SIGTERM")
    p.add_argument("--stay-away", action="store_true", help="do not start the killed SuperNode again")
    p.add_argument(
        "--flower-poll", action="store_true",
        help=f"keep Flower's 1 s SuperExec task polling (default: {SUPEREXEC_POLL_S} s)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no per-round lines, only the final JSON line")
    return p


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    """Turn SIGTERM into SystemExit: cleanup in `finally` blocks runs instead of leaving processes behind."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so `finally` stops the federation on SIGTERM too
    try:
        result = deploy(
            args.nodes, args.rounds, tls=args.tls, auth=args.auth, run_config=parse_overrides(args.run_config),
            workdir=args.workdir, timeout=args.timeout, wire_proxy=args.wire_proxy,
            restart=None if args.restart_node is None else Restart(args.restart_node, args.restart_after, args.restart_hard, not args.stay_away),
            fast_poll=not args.flower_poll, progress=not args.quiet,
        )  # fmt: skip
    except (DeployError, ConfigError) as err:
        print(f"deploy_local: error: {err}", file=sys.stderr)
        return 1
    result.pop("pids")
    result.pop("tag")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
