"""Why a SuperNode cannot connect: one TLS handshake against the SuperLink, the failure named in words.

Flower 1.42's SuperNode reports these as exit code 305 with the raw transport error ("Server disconnected without
sending a response" for a node started with --insecure against a TLS SuperLink). This probe does what the
SuperNode does (verify the server's certificate against the CA file, by the host it dials) and says which of
the usual causes it is: plaintext against TLS, a certificate from another CA, an expired certificate, a host name
the certificate does not list, a missing CA file.

    python -m fedcompress.launch.diagnose 10.0.0.5:9092 --root-certificates ca.crt
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
from pathlib import Path

from fedcompress.errors import ConfigError
from fedcompress.launch.certs import check_readable


def diagnose(
    address: str, root_certificates: Path | None, insecure: bool = False, timeout: float = 5.0
) -> str:
    """'ok' if a SuperNode configured this way can complete the TLS handshake, else the cause in one sentence."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if insecure:
        return _diagnose_plaintext(host, int(port), timeout)
    if root_certificates is None:
        return "no CA file: give the SuperNode --root-certificates ca.crt (the CA that signed the SuperLink's certificate)"
    try:
        check_readable(root_certificates)
        ctx = ssl.create_default_context(cafile=str(root_certificates))
    except (ConfigError, ssl.SSLError) as err:
        return f"the CA file cannot be used: {err}"
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return "ok"
    except ssl.SSLCertVerificationError as err:
        return _verify_cause(err, host, root_certificates)
    except ssl.SSLError as err:
        if "WRONG_VERSION_NUMBER" in str(err) or "record layer" in str(err):
            return f"{address} does not speak TLS: start the SuperLink with its certificate, or the SuperNode with --insecure"
        return f"TLS handshake with {address} failed: {err.reason or err}"
    except OSError as err:
        return f"cannot reach {address}: {err.strerror or err}"


def _verify_cause(err: ssl.SSLCertVerificationError, host: str, ca: Path) -> str:
    msg = str(err.verify_message or err)
    if "expired" in msg:
        return "the SuperLink's certificate has expired: re-issue it (fedcompress certs DIR --only server --force)"
    if "not yet valid" in msg:
        return "the SuperLink's certificate is not valid yet: check both hosts' clocks"
    if "local issuer" in msg or "self-signed" in msg or "self signed" in msg:
        return f"the SuperLink's certificate is not signed by the CA in {ca} (wrong ca.crt on this host?)"
    if "mismatch" in msg or "doesn't match" in msg:
        return f"the SuperLink's certificate does not name {host}: re-issue it with --host {host}"
    return f"the SuperLink's certificate was refused: {msg}"


def _diagnose_plaintext(host: str, port: int, timeout: float) -> str:
    """A plaintext HTTP request, as a SuperNode started with --insecure sends: a TLS server answers it with an
    alert or hangs up."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = s.recv(64)
    except OSError as err:
        return f"cannot reach {host}:{port}: {err.strerror or err}"
    if reply.startswith(b"HTTP/"):
        return "ok"
    return (
        f"the SuperLink at {host}:{port} requires TLS but this SuperNode was started with --insecure: "
        "use --root-certificates ca.crt"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fedcompress.launch.diagnose", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("superlink", help="host:port the SuperNode dials (the SuperLink's Fleet API)")
    p.add_argument("--root-certificates", type=Path, help="the CA file the SuperNode is given")
    p.add_argument("--insecure", action="store_true", help="the SuperNode is started with --insecure")
    args = p.parse_args(argv)
    cause = diagnose(args.superlink, args.root_certificates, args.insecure)
    print(cause)
    return 0 if cause == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
