"""A private certificate authority for the sandbox's HTTPS listener.

``ensure_certificates(directory)`` guarantees that ``directory`` holds a CA certificate and a
server certificate signed by it, valid for ``127.0.0.1``, ``::1`` and ``localhost`` (plus any
extra host names given). Existing files are reused when they are still valid for at least a day
and cover the requested names, so a client that trusted the CA once keeps trusting it across
restarts. Clients trust ``CertificatePaths.ca_certificate``; the server loads the other two.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERTIFICATE_FILE = "sandbox-ca.pem"
CA_KEY_FILE = "sandbox-ca-key.pem"
SERVER_CERTIFICATE_FILE = "sandbox-server.pem"
SERVER_KEY_FILE = "sandbox-server-key.pem"

DEFAULT_NAMES = ("127.0.0.1", "::1", "localhost")
_CA_LIFETIME = datetime.timedelta(days=3650)
_SERVER_LIFETIME = datetime.timedelta(days=825)
_MINIMUM_REMAINING = datetime.timedelta(days=1)


@dataclass(frozen=True)
class CertificatePaths:
    """Where the PEM files live."""

    ca_certificate: Path
    server_certificate: Path
    server_key: Path


def ensure_certificates(directory: Path, extra_names: tuple[str, ...] = ()) -> CertificatePaths:
    """Return paths to a valid CA + server certificate in ``directory``, creating them if needed.

    A directory it creates is private (0700), and so are the private keys (0600).
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = tuple(dict.fromkeys((*DEFAULT_NAMES, *extra_names)))
    paths = CertificatePaths(
        ca_certificate=directory / CA_CERTIFICATE_FILE,
        server_certificate=directory / SERVER_CERTIFICATE_FILE,
        server_key=directory / SERVER_KEY_FILE,
    )
    ca_key_path = directory / CA_KEY_FILE
    ca = _load_valid_ca(paths.ca_certificate, ca_key_path)
    if ca is None:
        ca = _create_ca()
        _write_private_key(ca_key_path, ca[1])
        paths.ca_certificate.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    elif _server_certificate_is_valid(paths, ca[0], names):
        return paths
    certificate, key = _create_server_certificate(ca[0], ca[1], names)
    _write_private_key(paths.server_key, key)
    paths.server_certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return paths


def server_ssl_context(paths: CertificatePaths) -> ssl.SSLContext:
    """A TLS server context presenting the sandbox's server certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(paths.server_certificate, paths.server_key)
    return context


def client_ssl_context(paths: CertificatePaths) -> ssl.SSLContext:
    """A TLS client context that trusts only the sandbox CA (handy for tests and tools)."""
    return ssl.create_default_context(cafile=str(paths.ca_certificate))


def _now() -> datetime.datetime:
    # The system clock, not the sandbox's (clock.py): real TLS stacks judge these certificates.
    return datetime.datetime.now(datetime.UTC)


def _still_valid(certificate: x509.Certificate) -> bool:
    now = _now()
    return (
        certificate.not_valid_before_utc <= now
        and certificate.not_valid_after_utc - now > _MINIMUM_REMAINING
    )


def _load_valid_ca(
    certificate_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    if not (certificate_path.is_file() and key_path.is_file()):
        return None
    try:
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _still_valid(certificate):
        return None
    if certificate.public_key() != key.public_key():
        return None
    return certificate, key


def _server_certificate_is_valid(
    paths: CertificatePaths, ca_certificate: x509.Certificate, names: tuple[str, ...]
) -> bool:
    if not (paths.server_certificate.is_file() and paths.server_key.is_file()):
        return False
    try:
        certificate = x509.load_pem_x509_certificate(paths.server_certificate.read_bytes())
        key = serialization.load_pem_private_key(paths.server_key.read_bytes(), password=None)
        certificate.verify_directly_issued_by(ca_certificate)
        alternative = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if certificate.public_key() != key.public_key() or not _still_valid(certificate):
        return False
    present = {str(value) for value in alternative.get_values_for_type(x509.IPAddress)}
    present |= set(alternative.get_values_for_type(x509.DNSName))
    return all(_normalise_name(name) in present for name in names)


def _normalise_name(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _create_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailbox-worker sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, "mailbox-worker sandbox CA"),
        ]
    )
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures only, plus certificate and CRL signing for the CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _create_server_certificate(
    ca_certificate: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: tuple[str, ...],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + _SERVER_LIFETIME, ca_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(signs_certificates=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
