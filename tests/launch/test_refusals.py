"""A SuperNode that cannot prove what it should is refused, and the refusal names the cause.

Flower 1.42 exits such a SuperNode with code 305 and a raw transport error; `diagnose` (which `deploy local`
appends to its error) says which misconfiguration it is. Real SuperLinks, real SuperNodes, `--max-retries 1`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fedcompress.errors import ConfigError
from fedcompress.launch.certs import TlsFiles, generate_tls
from fedcompress.launch.deployment import Federation
from fedcompress.launch.diagnose import diagnose
from fedcompress.launch.process import tagged

ONE_TRY = ("--max-retries", "1")


def _refused(fed: Federation, node: subprocess.Popen, log_name: str) -> str:
    try:
        code = node.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{log_name}: the SuperNode was neither refused nor stopped within 120 s")
    log = (fed.logs / f"{log_name}.log").read_text(errors="replace")
    assert code != 0, log
    assert "Failed to initialize the connection to the SuperLink" in log, log
    assert "SuperNode ID" not in log, log  # it never got a node id: never admitted
    return log


def test_node_without_tls_and_node_with_another_ca_are_refused(tmp_path: Path) -> None:
    fed = Federation(tmp_path, tls=True)
    try:
        fed.start_superlink()
        other_ca = generate_tls(tmp_path / "other").ca_cert
        plain = fed.start_supernode(0, 2, log_name="plain", tls_args=["--insecure"], extra=ONE_TRY)
        foreign = fed.start_supernode(
            1, 2, log_name="foreign", tls_args=["--root-certificates", str(other_ca)], extra=ONE_TRY
        )
        _refused(fed, plain, "plain")
        assert "CERTIFICATE_VERIFY_FAILED" in _refused(fed, foreign, "foreign")
        assert "requires TLS" in diagnose(fed.address, None, insecure=True)
        assert "not signed by the CA" in diagnose(fed.address, other_ca)
        assert diagnose(fed.address, fed.tls_files.ca_cert) == "ok"
    finally:
        fed.stop()
    assert not tagged(fed.tag)


def test_node_is_refused_when_the_superlink_certificate_has_expired(tmp_path: Path) -> None:
    fed = Federation(tmp_path, tls=True, tls_files=generate_tls(tmp_path / "tls", expired=True))
    try:
        fed.start_superlink()
        node = fed.start_supernode(0, 1, extra=ONE_TRY)
        assert "certificate has expired" in _refused(fed, node, "supernode-0")
        assert "has expired" in diagnose(fed.address, fed.tls_files.ca_cert)
    finally:
        fed.stop()
    assert not tagged(fed.tag)


def test_missing_or_unreadable_credentials_are_named_before_anything_starts(tmp_path: Path) -> None:
    good = generate_tls(tmp_path / "tls")
    missing = TlsFiles(good.ca_cert, good.server_cert, tmp_path / "nowhere" / "server.key")
    with pytest.raises(ConfigError, match=r"nowhere/server\.key does not exist"):
        Federation(tmp_path / "a", tls=True, tls_files=missing).start_superlink()
    folder = TlsFiles(good.ca_cert, tmp_path, good.server_key)
    with pytest.raises(ConfigError, match="is not a file"):
        Federation(tmp_path / "b", tls=True, tls_files=folder).start_superlink()
    assert "cannot be used" in diagnose("127.0.0.1:1", tmp_path / "absent-ca.crt")
