"""The ceiling of one exactly-once hop in Python: a plain pass-through with confluent-kafka, nothing else.

A read_committed consumer takes batches of up to `--batch` records; each batch is one transaction: every
record's key, value and headers produced unchanged to the output topic, the consumed positions sent with
`consumer_group_metadata()`, commit. No decoding, no state, no dead letters, no watchdog: what is left is
the price of librdkafka's transactions from Python, which no hop written in Python on this client beats.
The producer is configured as the services' own (payments.runtime.clients): linger.ms 5, retry.backoff.ms
20, the murmur2 partitioner.

It exits 0 once it has committed `expected` records (the input is written without transactions, so
records and offsets count alike), non-zero on any Kafka error. benchmarks/hops.py runs it and measures it.

    .venv/bin/python benchmarks/ceiling_hop.py BOOTSTRAP INPUT OUTPUT GROUP EXPECTED [--batch 500]
"""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import Consumer, Producer, TopicPartition

from ops.settings import Settings
from payments.runtime.connection import Kafka, KafkaConnection, client_config

CALL_TIMEOUT_S = 30.0
POLL_TIMEOUT_S = 0.1  # as the services' loop (ProcessorConfig.poll_timeout_ms)


def run(bootstrap: Kafka, source: str, sink: str, group: str, *, expected: int, batch: int) -> int:
    consumer = Consumer(client_config(bootstrap, {
        "group.id": group, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed",
    }))
    producer = Producer(client_config(bootstrap, {
        "transactional.id": f"{group}-0", "enable.idempotence": True,
        "linger.ms": 5, "retry.backoff.ms": 20, "partitioner": "murmur2_random",
    }))
    producer.init_transactions(CALL_TIMEOUT_S)
    consumer.subscribe([source])
    committed = 0
    try:
        while committed < expected:
            records = [r for r in consumer.consume(batch, POLL_TIMEOUT_S) if r.error() is None]
            if not records:
                continue
            producer.begin_transaction()
            ends: dict[int, int] = {}
            for record in records:
                while True:
                    try:
                        producer.produce(sink, value=record.value(), key=record.key(), headers=record.headers())
                        break
                    except BufferError:  # the local queue is full: let librdkafka deliver
                        producer.poll(0.1)
                partition, offset = record.partition(), record.offset()
                assert partition is not None and offset is not None
                ends[partition] = max(offset + 1, ends.get(partition, 0))
            positions = [TopicPartition(source, partition, offset) for partition, offset in ends.items()]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), CALL_TIMEOUT_S)
            producer.commit_transaction(CALL_TIMEOUT_S)
            committed += len(records)
    finally:
        consumer.close()
    print(f"committed {committed} records", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("group")
    parser.add_argument("expected", type=int)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    # The servers from the argument, TLS and SASL from the environment (KAFKA_SECURITY_PROTOCOL, ...), as
    # every other client of the project.
    kafka = KafkaConnection(args.bootstrap, Settings.load().kafka.security)
    return run(kafka, args.input, args.output, args.group, expected=args.expected, batch=args.batch)


if __name__ == "__main__":
    sys.exit(main())
