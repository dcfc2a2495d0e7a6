"""A throwaway certificate authority for a secured test broker: its CA, the broker's certificate, clients'.

Contract:
- `LocalAuthority.create(directory)` makes a CA (EC P-256, valid a day) and writes `ca.pem` there;
- `authority.broker(name, hosts)` writes the broker's keystore, PKCS#12 under the returned password: its key
  and its certificate, whose subject alternative names are `hosts` (IP addresses or DNS names), so a client
  that checks the broker's name (`ssl.endpoint.identification.algorithm=https`) accepts it at 127.0.0.1 and
  localhost. Not a PEM keystore: Kafka wants a PEM keystore's key encrypted, and the JVM cannot read the
  PBES2 encryption that `cryptography` writes for PKCS#8 (`PBES2 SecretKeyFactory not available`); it reads
  PKCS#12. The truststore (`ca.pem`) is PEM;
- `authority.client(name)` writes a client certificate (CN=`name`) and its unencrypted key, for mutual TLS.

For development and tests only: the keys live unprotected beside the certificates. A deployment's
certificates come from its own PKI (docs/security.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=1)
LOOPBACK = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class BrokerKeystore:
    path: Path  # PKCS#12: the private key and the certificate
    password: str  # of the store and of its key


@dataclass(frozen=True)
class ClientCertificate:
    certificate: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "payments-test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class LocalAuthority:
    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def create(cls, directory: Path) -> LocalAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (x509.CertificateBuilder().subject_name(_name("payments test CA")).issuer_name(
            _name("payments test CA")).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
        authority = cls(directory, key, certificate)
        authority.ca.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return authority

    def _issue(self, common_name: str, hosts: Iterable[str]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.certificate.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   # A broker is a server to clients and a client to itself (inter-broker): both uses.
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        names = [_san(host) for host in hosts]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())

    def broker(self, name: str = "broker", hosts: Iterable[str] = LOOPBACK) -> BrokerKeystore:
        key, certificate = self._issue(name, hosts)
        password = secrets.token_urlsafe(16)
        path = self.directory / f"{name}.keystore.p12"
        path.write_bytes(pkcs12.serialize_key_and_certificates(
            name.encode(), key, certificate, [self.certificate],
            serialization.BestAvailableEncryption(password.encode())))
        return BrokerKeystore(path, password)

    def client(self, name: str) -> ClientCertificate:
        key, certificate = self._issue(name, ())
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return ClientCertificate(cert_path, key_path)
