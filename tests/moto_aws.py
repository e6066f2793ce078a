"""A moto server on loopback speaking TLS, and a process's AWS settings pointed at it: no request reaches AWS.

Shared by the cloud tests (tests/test_cloud.py, tests/test_cloud_iam_policy.py).
"""

from __future__ import annotations

import datetime
import ipaddress
import urllib.parse
from pathlib import Path

import pytest
from moto import server as moto_server

ACCOUNT = "123456789012"  # moto's account
REGION = "eu-west-1"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(loopback, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, key_file = directory / "moto.pem", directory / "moto.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key_file


class TLSMotoServer(moto_server.ThreadedMotoServer):
    """moto's threaded server, speaking TLS: the bucket's TLS-only policy must let these requests through."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._ssl = (str(cert), str(key))

    def _server_entry(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self._ip_address, self._port, app, True,
                                   request_handler=MotoRequestHandler, ssl_context=self._ssl)
        self._server_ready_event.set()
        self._server.serve_forever()


def loopback_only(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if not ipaddress.ip_address(host).is_loopback:
        pytest.fail(f"refusing to run cloud tests against {url}: not a loopback address")


UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
         "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ROLE_ARN",
         "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CA_BUNDLE")


def point_at(endpoint: str, patch: pytest.MonkeyPatch, home: Path, ca_bundle: Path | None = None) -> None:
    """Dummy credentials, no AWS config files, every AWS service at `endpoint` (loopback only)."""
    loopback_only(endpoint)
    for name in UNSET:
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ENDPOINT_URL", endpoint)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", REGION)
    patch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if ca_bundle is not None:
        patch.setenv("AWS_CA_BUNDLE", str(ca_bundle))
