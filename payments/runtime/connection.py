"""How a process reaches Kafka: the bootstrap servers and, on a secured cluster, TLS and SASL.

Every client this project makes (the loops, the readers, the admin calls, the CLI, replay and the
benchmarks) builds its librdkafka configuration through `client_config`, so one `KafkaConnection`
from the settings secures all of them. A plain bootstrap string still works and means PLAINTEXT: the
local stack and most tests use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SASL settings, in librdkafka's terms. The defaults are an unsecured PLAINTEXT listener."""

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None  # the CA that signed the brokers' certificates (PEM)
    ssl_certificate_location: str | None = None  # this client's certificate, for mutual TLS (PEM)
    ssl_key_location: str | None = None  # its private key (PEM)
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_endpoint_identification: Literal["https", "none"] = "https"  # check the broker's name against its cert

    def __post_init__(self) -> None:
        if self.protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"security protocol {self.protocol} needs a SASL username and password")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("mutual TLS needs both a client certificate and its key")

    def properties(self) -> dict[str, str]:
        """The librdkafka properties for this security setting (none for PLAINTEXT)."""
        props: dict[str, str] = {}
        if self.protocol == "PLAINTEXT":
            return props
        props["security.protocol"] = self.protocol
        if self.protocol.startswith("SASL"):
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.username"] = self.sasl_username or ""
            props["sasl.password"] = self.sasl_password or ""
        if self.protocol.endswith("SSL"):
            optional = {"ssl.ca.location": self.ssl_ca_location,
                        "ssl.certificate.location": self.ssl_certificate_location,
                        "ssl.key.location": self.ssl_key_location, "ssl.key.password": self.ssl_key_password}
            props.update({key: value for key, value in optional.items() if value})
            props["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification
        return props


PLAINTEXT = KafkaSecurity()


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap_servers: str
    security: KafkaSecurity = PLAINTEXT

    def __str__(self) -> str:  # logs and error messages name the servers, never the secrets
        return self.bootstrap_servers


Kafka = KafkaConnection | str  # what every client-making function accepts


def connection_of(kafka: Kafka) -> KafkaConnection:
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection(kafka)


def client_config(kafka: Kafka, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka configuration for a client of `kafka`: servers, security, then `extra`.

    `Any` values: the extras hold callbacks (`error_cb`) beside strings and numbers, and confluent-kafka's
    stubs type AdminClient's and Consumer's configurations differently."""
    connection = connection_of(kafka)
    config: dict[str, Any] = {"bootstrap.servers": connection.bootstrap_servers}
    config.update(connection.security.properties())
    if extra:
        config.update(extra)
    return config
