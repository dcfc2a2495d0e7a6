"""The one-hop benchmark's harness works (benchmarks/hops.py): on a few hundred records each of the three hops
(the plain pass-through ceiling, the Quix Streams peer in its own venv, the orchestrator) commits every input
record, is measured over a window of its own, and the ceiling and the peer emit exactly one output per input,
which the peer's is a PaymentInitiated our serde reads. It proves the harness, not a speed.

The peer's venv is made on first use (a pip install of quixstreams, under the user cache dir), which takes
longer once; after that the test takes well under a minute.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from confluent_kafka import Message as KafkaRecord

from ops.settings import Settings
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import check_consistent, parse_headers
from payments.contracts.messages import InitiatePayment, PaymentInitiated
from payments.contracts.topics import EVENTS, RISK_COMMANDS
from payments.runtime.reader import committed_records, partitions_of
from payments.runtime.records import headers_of

pytestmark = pytest.mark.e2e

RECORDS = 600
BATCH = 10  # many transactions for so few records, so each hop's measured window spans several polls
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_hops() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_hops", BENCHMARKS / "hops.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def records_of(bootstrap: str, topics: list[str]) -> list[KafkaRecord]:
    return list(committed_records(bootstrap, partitions_of(bootstrap, topics)))


def value_of(record: KafkaRecord) -> bytes:
    value = record.value()
    assert value is not None
    return value


def test_each_hop_commits_every_record_and_the_ceiling_and_the_peer_emit_one_output_per_input(
        kafka_bootstrap: str, postgres_server_url: str) -> None:
    hops = load_hops()
    settings = Settings.load({**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                              "DATABASE_URL": postgres_server_url, "PAYMENTS_BATCH_MAX": str(BATCH)})
    results = hops.run_hops(settings, RECORDS, hops.HOPS)

    assert list(results) == ["ceiling", "peer", "ours"]
    for hop, result in results.items():
        assert result["committed"] == RECORDS, (hop, result)
        assert 0 < result["records"] <= RECORDS and result["seconds"] > 0, (hop, result)
        assert result["records_per_s"] > 0 and result["cpu_s_per_1000"] >= 0, (hop, result)

    serde = SingleObjectSerde()
    inputs = {r.key(): r for r in records_of(kafka_bootstrap, [results["ours"]["input"]])}
    assert len(inputs) == RECORDS
    assert all(isinstance(serde.decode(value_of(r)), InitiatePayment) for r in inputs.values())

    ceiling = records_of(kafka_bootstrap, results["ceiling"]["output_topics"])
    assert Counter(r.key() for r in ceiling) == Counter(set(inputs)), "one output per input, each key once"
    for record in ceiling:  # passed through unchanged
        original = inputs[record.key()]
        assert (record.value(), headers_of(record)) == (original.value(), headers_of(original))

    peer = records_of(kafka_bootstrap, results["peer"]["output_topics"])
    assert Counter(r.key() for r in peer) == Counter(set(inputs)), "one output per input, each key once"
    for record in peer:  # a PaymentInitiated our services would read
        event = serde.decode(value_of(record))
        assert isinstance(event, PaymentInitiated) and event.payment_id.encode() == record.key()
        check_consistent(parse_headers(headers_of(record)), event)
        command = serde.decode(value_of(inputs[record.key()]))
        assert isinstance(command, InitiatePayment) and event.causation_id == command.command_id

    # The orchestrator emits PaymentInitiated and AssessRisk once per payment; no timer fires in so short a run.
    outputs = results["ours"]["outputs"]
    assert outputs[EVENTS] == RECORDS and outputs[RISK_COMMANDS] == RECORDS, outputs
