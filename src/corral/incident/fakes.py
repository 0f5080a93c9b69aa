"""Loopback fakes of incident vendors' HTTP APIs, for the tests and `corral demo --incident`.

A fake serves recorded JSON fixtures (`{"GET /api/0/...": body}`) over HTTPS on 127.0.0.1 with a
certificate from a throwaway CA it makes, because the vendors' MCP servers speak only HTTPS to a custom
host; the client trusts the CA through NODE_EXTRA_CA_CERTS. Every request is recorded, so a test can
show that a denied write never reached the vendor.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOT_FOUND = {"detail": "The requested resource does not exist"}
"""Sentry's documented body for an unknown resource."""


@dataclass(frozen=True)
class Tls:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_tls(directory: Path) -> Tls:
    """A CA and a 127.0.0.1/localhost leaf certificate signed by it, written under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral incident fake CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    tls.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    tls.key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    tls.key_pem.chmod(0o600)
    return tls


@dataclass
class FakeApi:
    """A recorded-fixture HTTPS API on 127.0.0.1; `requests` lists `METHOD /path` as they arrived."""

    fixtures: dict[str, Any]
    tls: Tls
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None, "the fake is not started"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                route = f"{self.command} {urlsplit(self.path).path}"
                fake.requests.append(route)
                body = fake.fixtures.get(route)
                status = 200 if body is not None else 404
                data = json.dumps(body if body is not None else NOT_FOUND).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert_pem, self.tls.key_pem)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, name="incident-fake", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
