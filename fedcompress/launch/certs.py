"""Credentials for a Flower deployment: a CA, a SuperLink certificate for given hosts, SuperNode key pairs.

Written with the `cryptography` package; private keys are written with private permissions.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcompress.errors import ConfigError

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the SuperLink's server side and the clients' trust anchor."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def generate_tls(
    directory: Path,
    hosts: tuple[str, ...] = HOSTS,
    days: int = 2,
    *,
    keep_ca_key: bool = False,
    expired: bool = False,
) -> TlsFiles:
    """A CA and a server certificate for `hosts` signed by it. `keep_ca_key` also writes ca.key (0600) so the
    server certificate can be re-issued later under the same CA (rotation without touching the SuperNodes);
    `expired` back-dates the server certificate so it is already expired (to test that it is refused)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca_cert(ca_key, days)
    files = issue_server_cert(directory, ca_key, ca, hosts, days, expired=expired)
    files.ca_cert.write_bytes(_pem(ca))
    if keep_ca_key:
        _write_private(directory / "ca.key", _private_pem(ca_key))
    return files


def _ca_cert(ca_key: Any, days: int) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedcompress deployment CA")])
    return (
        _cert_builder(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def issue_server_cert(
    directory: Path, ca_key: Any, ca: Any, hosts: tuple[str, ...], days: int, *, expired: bool = False
) -> TlsFiles:
    """A fresh server key and certificate for `hosts` (IP or DNS SANs), signed by the CA; ca.crt is the path
    the SuperNodes trust (written by the caller)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ConfigError("the SuperLink certificate needs at least one host name or IP (--host)")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        now -= datetime.timedelta(days=days + 1)
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    names = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    server = (
        _cert_builder(names, ca.subject, key.public_key(), now, days)
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.crt", directory / "server.pem", directory / "server.key")
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
    """Write a private key readable by its owner only (created 0600: never readable by others, even briefly)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
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


# --------------------------------------------------------------------------------------------- files on disk


@dataclass(frozen=True)
class Layout:
    """Where `fedcompress certs DIR` puts each file, and so which host each one goes to."""

    root: Path

    @property
    def ca_cert(self) -> Path:  # every SuperNode host and the host running `flwr`
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:  # stays with the operator, offline: only to re-issue the server certificate
        return self.root / "ca.key"

    @property
    def server_dir(self) -> Path:  # the SuperLink host
        return self.root / "superlink"

    @property
    def nodes_dir(
        self,
    ) -> Path:  # NAME goes to that SuperNode's host; NAME.pub is registered with the SuperLink
        return self.root / "supernodes"

    @property
    def public_keys(self) -> Path:
        return self.root / "public-keys.txt"


def check_readable(*paths: Path) -> None:
    """Fail with the file's name when a credential is missing, not a file, or unreadable (before any process
    starts, so the error is ours and names the file, not a TLS error three processes later)."""
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"credential file {path} does not exist")
        if not path.is_file():
            raise ConfigError(f"credential file {path} is not a file")
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as err:
            raise ConfigError(f"credential file {path} is unreadable: {err.strerror}") from err


def write_credentials(
    root: Path,
    hosts: tuple[str, ...],
    nodes: tuple[str, ...],
    *,
    days: int = 365,
    force: bool = False,
    only: str = "all",
) -> dict[str, Any]:
    """Write (or extend) a credentials folder: the CA (reused when present), the SuperLink's certificate for
    `hosts`, a key pair per SuperNode name, and public-keys.txt. Refuses to overwrite a file unless `force`."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    lay = Layout(Path(root))
    server_files = [lay.server_dir / "server.pem", lay.server_dir / "server.key"]
    node_files = [p for n in nodes for p in (lay.nodes_dir / n, lay.nodes_dir / f"{n}.pub")]
    targets = (server_files if only in ("all", "server") else []) + (
        node_files if only in ("all", "nodes") else []
    )
    new_ca = only == "all" and (force or not lay.ca_cert.exists())
    if new_ca and not force and lay.ca_key.exists():
        targets.append(lay.ca_key)
    clash = [str(p) for p in targets if p.exists()]
    if clash and not force:
        raise ConfigError(
            f"refusing to overwrite {', '.join(clash)} (use --force; see 'Rotating credentials')"
        )
    if only in ("all", "server") and not hosts:
        raise ConfigError("give the SuperLink's host names or IPs with --host (one or more)")
    for n in nodes:
        if not n or "/" in n or n.startswith("."):
            raise ConfigError(f"bad SuperNode name {n!r}: use letters, digits, '-' or '_'")
    lay.root.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if only in ("all", "server"):
        if new_ca:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca = _ca_cert(ca_key, days)
            lay.ca_cert.write_bytes(_pem(ca))
            _write_private(lay.ca_key, _private_pem(ca_key))
            written += [str(lay.ca_cert), str(lay.ca_key)]
        else:
            check_readable(lay.ca_cert, lay.ca_key)
            ca = x509.load_pem_x509_certificate(lay.ca_cert.read_bytes())
            ca_key = load_pem_private_key(lay.ca_key.read_bytes(), None)
        issue_server_cert(lay.server_dir, ca_key, ca, hosts, days)
        written += [str(p) for p in server_files]
    if only in ("all", "nodes"):
        for n in nodes:
            generate_node_keys(lay.nodes_dir, n)
            written += [str(lay.nodes_dir / n), str(lay.nodes_dir / f"{n}.pub")]
        _write_public_keys(lay)
    return {"dir": str(lay.root), "hosts": list(hosts), "nodes": list(nodes), "written": written}


def _write_public_keys(lay: Layout) -> None:
    """public-keys.txt: `NAME KEY` for every SuperNode key in the folder (what the SuperLink admin registers)."""
    lines = [f"{pub.stem} {pub.read_text().strip()}" for pub in sorted(lay.nodes_dir.glob("*.pub"))]
    lay.public_keys.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `certs` subcommand to a CLI's subparsers (`fedcompress certs ...`)."""
    p = subparsers.add_parser("certs", help="write a CA, the SuperLink certificate and SuperNode key pairs")
    _add_arguments(p)
    p.set_defaults(func=_cmd)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder to write (see docs/deploy.md for which file goes where)")
    p.add_argument(
        "--host", action="append", default=[],
        help="a host name or IP the SuperNodes use to reach the SuperLink (repeat; each becomes a SAN)",
    )  # fmt: skip
    p.add_argument("--nodes", type=int, default=0, help="N SuperNode key pairs named supernode-0..N-1")
    p.add_argument("--node", action="append", default=[], help="a SuperNode key pair with this name (repeat)")
    p.add_argument("--days", type=int, default=365, help="validity of the CA and server certificate")
    p.add_argument(
        "--only", choices=["all", "server", "nodes"], default="all",
        help="server: (re-)issue only the SuperLink certificate under the existing CA; nodes: only node keys",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def _cmd(args: argparse.Namespace) -> int:
    nodes = tuple(args.node) + tuple(f"supernode-{i}" for i in range(args.nodes))
    if args.days < 1:
        raise ConfigError(f"--days must be at least 1, got {args.days}")
    out = write_credentials(
        args.dir, tuple(args.host), nodes, days=args.days, force=args.force, only=args.only
    )
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fedcompress.launch.certs", description=__doc__.split("\n\n")[0]
    )
    _add_arguments(p)
    args = p.parse_args(argv)
    try:
        return _cmd(args)
    except ConfigError as err:
        print(f"certs: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
