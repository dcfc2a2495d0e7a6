"""Poison input, fuzzed (hypothesis): random and mutated records on every input topic of every service and
projection while the whole pipeline runs. Mutations of real records taken from the running pipeline: bit
flips, truncations, unknown fingerprints, dropped and garbled headers, oversize values, random bytes, and
valid Avro with absurd field values (encoded by our own serde, headers consistent).

Every poison record is consumed past by every group that reads its topic (no partition stalls), those
that cannot be read as a record of ours (unknown fingerprint, truncated, oversize, random bytes, a
required header dropped) are dead-lettered by each of them (Kafka's dead-letter topic for the services,
`projection_dead_letters` for the projections), no process exits, and payments sent behind the poison
all settle. Bit flips, garbled headers and absurd values may decode into something valid: those may be
processed or refused (a rejection, a dead letter), as long as nothing stops.

`make test` runs a bounded number of examples (PAYMENTS_FUZZ_EXAMPLES, default 1, of about 100 records:
every mutation kind on every topic once, plus up to 30 drawn at random); set it higher for a longer run.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ops.registry import PROJECTIONS, SERVICES
from payments.contracts.envelope import REQUIRED_HEADERS, build_headers
from payments.contracts.messages import Message, PaymentFailed, PaymentSettled
from payments.money import Money
from payments.runtime.deadletter import DeadLetter
from tests.e2e.pipeline import Pipeline
from tests.support import make_initiate, read_all, serde, wait_for

pytestmark = pytest.mark.e2e
EXAMPLES = int(os.environ.get("PAYMENTS_FUZZ_EXAMPLES", "1"))
MUST_DEAD_LETTER = {"fingerprint", "truncate", "huge", "random", "header_drop"}
KINDS = sorted(MUST_DEAD_LETTER | {"bitflip", "header_garble", "absurd"})
Raw = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def _readers() -> dict[str, list[str]]:
    """Each input topic (base name) -> the groups that read it: `svc:<service>` or `proj:<projection>`."""
    readers: dict[str, list[str]] = {}
    for name, spec in SERVICES.items():
        for topic in spec.logic.input_topics:
            readers.setdefault(topic, []).append(f"svc:{name}")
    for name, projection in PROJECTIONS.items():
        for topic in projection.projection().topics:
            readers.setdefault(topic, []).append(f"proj:{name}")
    return readers


def _absurd(message: Message, rng: random.Random) -> Message | None:
    """The message with one field set to an absurd value of its type, or None when it has no such field."""
    fields = {name: value for name, value in message if name != "schema_version"}
    name = rng.choice(sorted(fields))
    value = fields[name]
    if isinstance(value, bool):
        return None
    if isinstance(value, Money):
        new: Any = Money.model_construct(amount_minor=rng.choice([0, -1, 2**62, -(2**62)]),
                                         currency=rng.choice(["EUR", "ZZZ", "", "€€€"]))
    elif isinstance(value, int):
        new = rng.choice([0, -1, 2**62, -(2**62)])
    elif isinstance(value, str):
        new = rng.choice(["", "x" * 20_000, "\u0000", "💥" * 50, "' OR 1=1 --", "../../etc/passwd"])
    else:
        return None
    return message.model_copy(update={name: new})


@st.composite
def poison(draw: st.DrawFn, seeds: dict[str, list[Any]], topic: str | None = None,
           kind: str | None = None) -> tuple[str, str, Raw]:
    """(topic base name, mutation kind, the record) from a real record of that topic; the topic and the
    kind drawn too unless given."""
    topic = topic or draw(st.sampled_from(sorted(seeds)))
    seed = seeds[topic][draw(st.integers(0, 2**16)) % len(seeds[topic])]  # the draw must not depend on
    # how many records the topic has now: it changes between examples (hypothesis replays the draws)
    kind = kind or draw(st.sampled_from(KINDS))
    rng = random.Random(draw(st.integers(0, 2**32)))
    key, value, headers = seed.key, bytes(seed.value), list(seed.headers)
    if kind == "bitflip":
        flipped = bytearray(value)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(flipped) * 8)
            flipped[i // 8] ^= 1 << (i % 8)
        value = bytes(flipped)
    elif kind == "truncate":
        value = value[:rng.randrange(len(value))]
    elif kind == "fingerprint":
        value = value[:2] + rng.randbytes(8) + value[10:]
    elif kind == "header_drop":
        gone = rng.choice(sorted(REQUIRED_HEADERS))
        headers = [(n, v) for n, v in headers if n != gone]
    elif kind == "header_garble":
        i = rng.randrange(len(headers))
        headers[i] = (headers[i][0], rng.randbytes(rng.randint(0, 40)))
    elif kind == "huge":
        value = rng.randbytes(600 * 1024)  # over the services' 512 KiB input limit
    elif kind == "random":
        value = rng.randbytes(rng.randint(0, 200))
    else:  # absurd: valid Avro, consistent headers, an absurd value
        message = serde().decode(value)
        mutated = _absurd(message, rng)
        if mutated is None:
            return topic, "bitflip-free", (key, value, headers)  # unchanged: a valid duplicate
        try:
            value = serde().encode(mutated)
        except Exception:
            return topic, "random", (key, rng.randbytes(64), headers)
        headers = build_headers(mutated, source="fuzzer", traceparent=None)
    return topic, kind, (key, value, headers)


def _ours(record: Any) -> bool:
    """A record the pipeline wrote (not a poison record of an earlier example): ours to mutate."""
    if not record.value:
        return False
    try:
        serde().decode(record.value)
    except Exception:
        return False
    names = {name for name, _ in record.headers}
    return all(required in names for required in REQUIRED_HEADERS)


def _publish(pipeline: Pipeline, records: list[tuple[str, str, Raw]]) -> list[tuple[str, str, int, int]]:
    """Produce each record as it is (its own key, its own partitioner's choice); (topic, kind, partition,
    offset) of each."""
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "partitioner": "murmur2_random",
                         "message.max.bytes": 2_000_000})
    placed: dict[int, tuple[int, int]] = {}
    for index, (topic, _, (key, value, headers)) in enumerate(records):
        def delivered(error: Any, message: Any, index: int = index) -> None:
            assert error is None, error
            placed[index] = (message.partition(), message.offset())
        producer.produce(pipeline.topics.name(topic), key=key, value=value, headers=headers, on_delivery=delivered)
    assert producer.flush(30) == 0
    return [(topic, kind, *placed[i]) for i, (topic, kind, _) in enumerate(records)]


def _consumed_past(pipeline: Pipeline, group: str, topic: str, partition: int, offset: int) -> bool:
    kind, name = group.split(":", 1)
    full = pipeline.topics.name(topic)
    if kind == "proj":
        with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
            row = conn.execute("SELECT next_offset FROM projection_offsets WHERE projection = %s AND topic = %s "
                               "AND partition = %s", (name, full, partition)).fetchone()
        return row is not None and int(row[0]) > offset
    consumer = Consumer({"bootstrap.servers": pipeline.bootstrap, "group.id": pipeline.topics.group(name),
                         "enable.auto.commit": False})
    try:
        (committed,) = consumer.committed([TopicPartition(full, partition)], timeout=10)
    finally:
        consumer.close()
    return committed.offset > offset


def _dead_lettered(pipeline: Pipeline) -> tuple[set[tuple[str, int, int]], set[tuple[str, str, int, int]]]:
    """(source positions in the services' dead-letter topic, (projection, topic, partition, offset) stored)."""
    kafka = set()
    for record in read_all(pipeline.bootstrap, pipeline.topics.dlq):
        letter = DeadLetter.from_headers(record.headers)
        kafka.add((letter.source_topic, letter.source_partition, letter.source_offset))
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        rows = conn.execute('SELECT projection, topic, partition, "offset" FROM projection_dead_letters').fetchall()
    return kafka, {(str(p), str(t), int(n), int(o)) for p, t, n, o in rows}


@settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_poison_on_every_input_topic_is_dead_lettered_or_refused_and_nothing_stalls_or_stops(
        pipeline: Pipeline, data: st.DataObject) -> None:
    readers = _readers()
    first = [make_initiate() for _ in range(3)]  # real records on every input topic, to mutate
    # and one the partner declines after risk approved it: a RecordRiskOutcome on risk.outcomes
    declined = make_initiate(payee_account="acc-sim-decline-poison")
    pipeline.send(*first, declined)
    for payment in first:
        pipeline.wait_events(payment.payment_id, PaymentSettled, timeout_s=90)
    pipeline.wait_events(declined.payment_id, PaymentFailed, timeout_s=90)
    seeds = {topic: [r for r in read_all(pipeline.bootstrap, pipeline.topics.name(topic)) if _ours(r)][-20:]
             for topic in readers}
    assert all(seeds.values()), f"no record to mutate on {[t for t, s in seeds.items() if not s]}"

    # Every kind on every topic once, then more drawn at random.
    records = [data.draw(poison(seeds, topic, kind)) for topic in sorted(seeds) for kind in KINDS]
    records += data.draw(st.lists(poison(seeds), max_size=30))
    placed = _publish(pipeline, records)
    behind = [make_initiate() for _ in range(6)]
    pipeline.send(*behind)
    for payment in behind:  # a valid payment behind the poison settles
        pipeline.wait_events(payment.payment_id, PaymentSettled, timeout_s=120)

    pending = [(group, topic, partition, offset) for topic, _, partition, offset in placed
               for group in readers[topic]]

    def all_consumed_past() -> bool:
        nonlocal pending
        pending = [p for p in pending if not _consumed_past(pipeline, *p)]
        return not pending

    wait_for(all_consumed_past, 120, "every group past every poison record", interval_s=1)
    time.sleep(1)  # dead letters are committed with the offsets that pass them; read them now
    kafka_dead, projection_dead = _dead_lettered(pipeline)
    missing = []
    for topic, kind, partition, offset in placed:
        if kind not in MUST_DEAD_LETTER:
            continue
        full = pipeline.topics.name(topic)
        for group in readers[topic]:
            side, name = group.split(":", 1)
            found = ((full, partition, offset) in kafka_dead if side == "svc"
                     else (name, full, partition, offset) in projection_dead)
            if not found:
                missing.append((group, topic, kind, partition, offset))
    assert not missing, f"poison not dead-lettered: {missing}"
    dead = [s.args for s in pipeline.services if not s.alive()]
    assert not dead, f"processes exited: {dead}\n{pipeline.logs()}"

