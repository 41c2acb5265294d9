"""A local certificate authority under HUXUE_HOME/tls for the stack's TLS listener.

`huxue stack up` with an mqtts:// URL creates, once: ca.crt/ca.key (10 years) and
mosquitto.crt/mosquitto.key (2 years) for localhost, 127.0.0.1 and the configured host.
Clients trust ca.crt (Config.mqtt_ca_file finds it). Keys are 0600. SKI/AKI and the CA's
key usage are set: Python 3.13's strict verification rejects certificates without them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.credentials import write_private


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)  # type: ignore[return-value]


def _san(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(host)
        if str(ip) != "127.0.0.1":
            names.append(x509.IPAddress(ip))
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    return names


def ensure(home: Path, host: str) -> tuple[Path, Path, Path]:
    """(ca.crt, server cert, server key): created if missing or not covering `host`."""
    d = home / "tls"
    d.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key, crt, key = d / "ca.crt", d / "ca.key", d / "mosquitto.crt", d / "mosquitto.key"
    now = dt.datetime.now(dt.timezone.utc)
    if not (ca_crt.exists() and ca_key.exists()):
        k = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "huxue"), x509.NameAttribute(NameOID.COMMON_NAME, "huxue local CA")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
            .sign(k, hashes.SHA256())
        )
        write_private(ca_key, _key_pem(k))
        ca_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        crt.unlink(missing_ok=True)  # signed by the old CA
    ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    san = _san(host)
    if crt.exists() and key.exists():
        current = x509.load_pem_x509_certificate(crt.read_bytes())
        covered = set(current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        if set(san) <= covered and current.not_valid_after_utc > now + dt.timedelta(days=30):
            return ca_crt, crt, key
    k = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")]))
        .issuer_name(ca.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(_load_key(ca_key), hashes.SHA256())
    )
    write_private(key, _key_pem(k))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_crt, crt, key
