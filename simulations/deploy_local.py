"""The multi-device use case on one machine, with Flower's real deployment engine (not the simulation engine).

Starts a `flower-superlink` and N `flower-supernode`s on free loopback ports, optionally with TLS (a throwaway
CA generated here) and SuperNode authentication (an EC key pair per node, registered with `flwr supernode
register`), runs the fedcompress app on them with `flwr run --stream`, waits for the run directory to say
"complete", stops every process it started (and their children), and prints one JSON line.

    python -m simulations.deploy_local --nodes 2 --rounds 2 --tls --auth \
        --run-config 'uplink="topk(0.05) > ef > uniform(4) > entropy" downlink="topk(0.2) > uniform(4) > entropy"'

Flower 1.42 serves the Fleet, Control and Runtime APIs of a SuperLink on ONE HTTP(S) port (`--host/--port`;
`--fleet-api-address` and `--control-api-address` are deprecated), so one free port serves all three.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
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

from fedcompress.config import PROJECT_ROOT, parse_overrides
from fedcompress.errors import ConfigError
from fedcompress.simulation import OFFLINE_ENV, _process_table, _toml_value, resolve_config

CONNECTION = "deploy-local"
TAG_ENV = "FEDCOMPRESS_DEPLOY_TAG"  # every process we start (and its children) carries it: a leak check
HOSTS = ("127.0.0.1", "localhost")


class DeployError(RuntimeError):
    """The deployment did not produce a complete run."""


# --------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the SuperLink's server side and the clients' trust anchor."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def generate_tls(directory: Path, hosts: tuple[str, ...] = HOSTS, days: int = 2) -> TlsFiles:
    """A throwaway CA and a server certificate for `hosts` signed by it (never reuse outside a test)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcompress throwaway CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        _cert_builder(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    server = (
        _cert_builder(names, ca_name, key.public_key(), now, days)
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.crt", directory / "server.pem", directory / "server.key")
    files.ca_cert.write_bytes(_pem(ca))
    files.server_cert.write_bytes(_pem(server))
    _write_private(files.server_key, _private_pem(key))
    return files


def _cert_builder(subject: Any, issuer: Any, public_key: Any, now: datetime.datetime, days: int) -> Any:
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_usage(cert_sign: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _general_name(host: str) -> Any:
    """An IP SAN for addresses (TLS clients match 127.0.0.1 only against an IP entry), else a DNS SAN."""
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM)


def _private_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization as ser

    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only."""
    path.write_bytes(data)
    path.chmod(0o600)


def generate_node_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC (NIST P-384) key pair in OpenSSH format: what `flwr supernode register` reads (SSH public key,
    NIST curve) and `flower-supernode --auth-supernode-private-key` reads (OpenSSH private key)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    _write_private(
        private, key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption())
    )
    public.write_bytes(key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH) + b"\n")
    return private, public


# --------------------------------------------------------------------------------------------- processes


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


@dataclass
class Federation:
    """One SuperLink and its SuperNodes on loopback, all under `workdir`; `stop()` ends every process."""

    workdir: Path
    tls: bool = False
    auth: bool = False
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    port: int = 0
    tls_files: TlsFiles | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    seen_pids: set[int] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return self.workdir / "flwr-home"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def env(self, home: Path | None = None) -> dict[str, str]:
        """Offline, private FLWR_HOME, tagged so leaks can be found by environment."""
        return {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(home or self.home), TAG_ENV: self.tag}

    def start_superlink(self, timeout: float = 60.0) -> None:
        """Start the SuperLink (one port: Fleet, Control and Runtime APIs) and wait until it accepts."""
        if self.auth and not self.tls:
            raise DeployError("--auth needs --tls (Flower refuses SuperNode auth without TLS)")
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.tls_files = generate_tls(self.workdir / "tls")
        self.port = free_ports(1)[0]
        cmd = ["flower-superlink", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--database", str(self.workdir / "superlink.db"), "--disable-runtime-dependency-installation"]
        cmd += self._server_tls_args() + (["--enable-supernode-auth"] if self.auth else [])
        self._spawn("superlink", cmd, self.env())
        self._wait_for_port(timeout)
        self.write_connection()

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
        for i in range(num_nodes):
            self.start_supernode(i, num_nodes, keys.get(f"supernode-{i}", (None, None))[0])

    def start_supernode(
        self, index: int, num_nodes: int, private_key: Path | None = None
    ) -> subprocess.Popen:
        """A SuperNode with its own runtime port, FLWR_HOME (apps are installed there) and partition."""
        name = f"supernode-{index}"
        cmd = ["flower-supernode", "--superlink", self.address, "--port", str(free_ports(1)[0])]
        cmd += ["--node-config", f"partition-id={index} num-partitions={num_nodes}"]
        cmd += self._client_tls_args()
        if private_key is not None:
            cmd += ["--auth-supernode-private-key", str(private_key)]
        return self._spawn(name, cmd, self.env(self.workdir / name))

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start a process with its output in logs/NAME.log."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it while it runs
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
        """Stop every process we started and all their descendants (SuperExec, ServerApp, ClientApps).

        The tree is read before anything is signalled (children of a killed parent lose their link to it), and
        re-read between passes to catch processes spawned meanwhile; the environment tag catches orphans.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            doomed = self._family()
            self.seen_pids |= doomed
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            _wait_gone(doomed, 8.0 if sig == signal.SIGTERM else 3.0)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)

    def _family(self) -> set[int]:
        """Live pids: our processes, their descendants, and any process carrying our tag."""
        table = _process_table()
        family = {p.pid for p in self.procs.values() if p.pid in table} | tagged_pids(self.tag, table)
        grew = True
        while grew:
            new = {pid for pid, (ppid, _) in table.items() if ppid in family} - family
            family |= new
            grew = bool(new)
        return {pid for pid in family if _alive(pid)}

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every log we captured: what a failure report shows."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)


def tagged_pids(tag: str, table: dict[int, tuple[int, str]] | None = None) -> set[int]:
    """Processes whose environment carries our tag (ours only: other users' environ is unreadable)."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = set()
    for pid in table or _process_table():
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/environ").read_bytes():
                found.add(pid)
    return found


def _alive(pid: int) -> bool:
    """Running, i.e. present and not a zombie awaiting its parent's wait()."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------- the run


def run_overrides(nodes: int, rounds: int, run_dir: Path, user: dict[str, Any]) -> dict[str, Any]:
    """The app's run config: one partition per SuperNode, all sampled, absolute paths (the app runs from a
    copy under FLWR_HOME, so relative paths would not resolve)."""
    from fedcompress.data import default_data_dir

    base = {"dataset": "digits", "data-dir": str(default_data_dir().resolve())}
    fixed = {"num-partitions": nodes, "clients-per-round": nodes, "num-server-rounds": rounds}
    overrides = {**base, **user, **fixed, "run-dir": str(run_dir.resolve())}
    resolve_config(overrides)  # unknown keys and bad values fail here, before anything starts
    return overrides


def submit_run(fed: Federation, app_dir: Path, overrides: dict[str, Any]) -> subprocess.Popen:
    """`flwr run APP CONNECTION --stream --run-config FILE`, its output in logs/flwr-run.log."""
    cfg_file = fed.workdir / "run-config.toml"
    cfg_file.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in overrides.items()))
    cmd = ["flwr", "run", str(app_dir), CONNECTION, "--stream", "--run-config", str(cfg_file)]
    return fed._spawn("flwr-run", cmd, fed.env())


def wait_for_summary(run_dir: Path, fed: Federation, deadline: float) -> dict[str, Any]:
    """Block until summary.json says complete; fail early if it says otherwise or a SuperNode dies."""
    path = run_dir / "summary.json"
    while time.monotonic() < deadline:
        if path.exists():
            with contextlib.suppress(json.JSONDecodeError):
                summary = json.loads(path.read_text())
                if summary.get("status") == "complete":
                    return summary
                raise DeployError(f"run ended with status {summary.get('status')!r}: {summary.get('error')}")
        dead = [
            n
            for n, p in fed.procs.items()
            if n.startswith(("superlink", "supernode")) and p.poll() is not None
        ]
        if dead:
            raise DeployError(f"{', '.join(dead)} exited before the run completed")
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
    app_dir: Path = PROJECT_ROOT,
) -> dict[str, Any]:
    """Run the app on a fresh local federation; returns the summary line's fields. Always stops everything."""
    deadline = time.monotonic() + timeout
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="fedcompress-deploy-"))).resolve()
    run_dir = workdir / "run"
    overrides = run_overrides(nodes, rounds, run_dir, run_config or {})
    fed = Federation(workdir, tls=tls, auth=auth)
    t0 = time.monotonic()
    failure: Exception | None = None
    try:
        fed.start_superlink(timeout=max(1.0, deadline - time.monotonic()))
        fed.start_supernodes(nodes, timeout=max(1.0, deadline - time.monotonic()))
        submit_run(fed, app_dir, overrides)
        summary = wait_for_summary(run_dir, fed, deadline)
    except (DeployError, subprocess.TimeoutExpired) as err:
        failure = err
    finally:
        fed.stop()
    if failure is not None:
        raise DeployError(f"{failure}\n{fed.log_tails()}") from failure
    return {
        "rounds": summary["rounds"], "final_accuracy": summary["final_accuracy"],
        "uplink_mb": round(summary["uplink_mb"], 4), "downlink_mb": round(summary["downlink_mb"], 4),
        "seconds_per_round": round(summary["seconds_per_round"], 2), "wall_seconds": round(time.monotonic() - t0, 1),
        "nodes": nodes, "tls": tls, "auth": auth, "run_dir": str(run_dir), "workdir": str(workdir),
        "pids": sorted(fed.seen_pids), "tag": fed.tag,
    }  # fmt: skip


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
            workdir=args.workdir, timeout=args.timeout,
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
