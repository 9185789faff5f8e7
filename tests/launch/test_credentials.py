"""The throwaway TLS and node-auth credentials are what OpenSSL and Flower 1.42 accept (fast: no Flower process)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import public_key_to_bytes

from fedcompress.launch.certs import generate_node_keys, generate_tls


def test_server_certificate_verifies_against_the_ca_and_names_loopback(tmp_path: Path) -> None:
    files = generate_tls(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature or issuer is wrong
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert oct(files.server_key.stat().st_mode & 0o777) == "0o600"


def test_tls_handshake_to_127_0_0_1_succeeds_with_the_ca(tmp_path: Path) -> None:
    """What the SuperNode and `flwr` do: verify the server by its IP against our CA only."""
    files = generate_tls(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        accepted = threading.Thread(target=lambda: _serve_once(listener, server_ctx), daemon=True)
        accepted.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() is not None
        accepted.join(timeout=5)


def _serve_once(listener: socket.socket, ctx: ssl.SSLContext) -> None:
    conn, _ = listener.accept()
    with conn, ctx.wrap_socket(conn, server_side=True):
        pass


def test_node_keys_load_the_way_flower_loads_them(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    private, public = generate_node_keys(tmp_path, "node")
    key = load_ssh_private_key(private.read_bytes(), None)  # as flower-supernode does
    registered = try_load_public_key(public)  # as `flwr supernode register` does
    assert registered == public_key_to_bytes(key.public_key())


def test_certs_cli_writes_private_files_names_hosts_and_never_overwrites(tmp_path: Path) -> None:
    from fedcompress.launch.certs import main

    out = tmp_path / "creds"
    assert (
        main([str(out), "--host", "10.0.0.5", "--host", "superlink.lan", "--node", "edge-a", "--nodes", "1"])
        == 0
    )
    for private in ("ca.key", "superlink/server.key", "supernodes/edge-a", "supernodes/supernode-0"):
        assert oct((out / private).stat().st_mode & 0o777) == "0o600", private
    server = x509.load_pem_x509_certificate((out / "superlink/server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert san.get_values_for_type(x509.DNSName) == ["superlink.lan"]
    names = [line.split()[0] for line in (out / "public-keys.txt").read_text().splitlines()]
    assert names == ["edge-a", "supernode-0"]
    assert try_load_public_key(out / "supernodes/edge-a.pub")
    before = (out / "supernodes/edge-a").read_bytes()
    assert main([str(out), "--host", "10.0.0.5", "--node", "edge-a"]) == 2  # refuses: files exist
    assert (out / "supernodes/edge-a").read_bytes() == before
    # rotation: a new server certificate under the same CA, nothing else touched
    ca_before = (out / "ca.crt").read_bytes()
    assert main([str(out), "--host", "10.0.0.6", "--only", "server", "--force"]) == 0
    assert (out / "ca.crt").read_bytes() == ca_before and (out / "supernodes/edge-a").read_bytes() == before
    rotated = x509.load_pem_x509_certificate((out / "superlink/server.pem").read_bytes())
    rotated.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_before))
    assert main([str(out / "empty"), "--node", "x"]) == 2  # no --host for the server certificate


def test_python_m_certs_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "fedcompress.launch.certs", str(tmp_path / "c"), "--host", "127.0.0.1", "--nodes", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c" / "supernodes" / "supernode-1.pub").exists()
