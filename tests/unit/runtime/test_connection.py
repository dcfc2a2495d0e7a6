"""A Kafka connection builds every client's librdkafka configuration: nothing for PLAINTEXT, TLS and SASL
properties for a secured cluster, the caller's own properties last, and never a secret in its text."""

from __future__ import annotations

import pytest

from payments.runtime.connection import KafkaConnection, KafkaSecurity, client_config

SECURED = KafkaSecurity(protocol="SASL_SSL", sasl_username="payments-risk", sasl_password="s3cret",
                        ssl_ca_location="/tls/ca.pem", ssl_certificate_location="/tls/risk.pem",
                        ssl_key_location="/tls/risk.key", ssl_key_password="k3y")


def test_a_bootstrap_string_is_a_plaintext_connection_with_only_the_servers_and_the_extras() -> None:
    assert client_config("127.0.0.1:9092", {"group.id": "g"}) == {"bootstrap.servers": "127.0.0.1:9092",
                                                                   "group.id": "g"}


def test_sasl_ssl_with_mutual_tls_sets_every_property_librdkafka_needs() -> None:
    config = client_config(KafkaConnection("k1:9093,k2:9093", SECURED))
    assert config == {
        "bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "payments-risk", "sasl.password": "s3cret", "ssl.ca.location": "/tls/ca.pem",
        "ssl.certificate.location": "/tls/risk.pem", "ssl.key.location": "/tls/risk.key",
        "ssl.key.password": "k3y", "ssl.endpoint.identification.algorithm": "https",
    }


def test_the_callers_properties_come_last() -> None:
    config = client_config(KafkaConnection("k:9093", SECURED), {"ssl.endpoint.identification.algorithm": "none"})
    assert config["ssl.endpoint.identification.algorithm"] == "none"


def test_sasl_without_tls_sets_no_tls_properties() -> None:
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    assert not [key for key in security.properties() if key.startswith("ssl.")]


def test_tls_without_sasl_sets_no_sasl_properties() -> None:
    security = KafkaSecurity(protocol="SSL", ssl_ca_location="/ca.pem")
    assert security.properties() == {"security.protocol": "SSL", "ssl.ca.location": "/ca.pem",
                                     "ssl.endpoint.identification.algorithm": "https"}


def test_sasl_without_a_password_is_refused() -> None:
    with pytest.raises(ValueError, match="SASL username and password"):
        KafkaSecurity(protocol="SASL_SSL", sasl_username="u")


def test_a_client_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(ValueError, match="both a client certificate and its key"):
        KafkaSecurity(protocol="SSL", ssl_certificate_location="/c.pem")


def test_neither_the_text_nor_the_repr_of_a_connection_shows_a_secret() -> None:
    connection = KafkaConnection("k:9093", SECURED)
    assert str(connection) == "k:9093"
    assert "s3cret" not in repr(connection) and "k3y" not in repr(connection)
