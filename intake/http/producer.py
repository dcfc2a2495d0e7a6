"""Commands to `payments.commands`: an idempotent producer (acks=all), one delivery report awaited per request.

librdkafka delivers on its own thread of `poll()` calls (one thread here); each request awaits its
record's report on the event loop, bounded by `message.timeout.ms`, so a 202 means Kafka's in-sync
replicas hold the command. Enable.idempotence keeps librdkafka's own retries from duplicating it;
a client's retry of the whole request re-sends the same command (its ids come from the key), which
the Kafka intake recognises (docs/contracts.md §2a). A fatal producer error (the idempotent producer
lost its sequence) makes a new producer for the next request.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from payments.contracts.base import Command
from payments.contracts.codec import Serde
from payments.contracts.envelope import build_headers
from payments.runtime.connection import Kafka, client_config

log = structlog.get_logger(__name__)
POLL_S = 0.1


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge the command in time (or refused it): the request may be retried as is."""


class CommandProducer:
    def __init__(self, kafka: Kafka, topic: str, serde: Serde, *, delivery_timeout_s: float,
                 client_id: str = "http-intake") -> None:
        self.topic = topic
        self.serde = serde
        self.delivery_timeout_s = delivery_timeout_s
        self._config = client_config(kafka, {
            "client.id": client_id, "acks": "all", "enable.idempotence": True,
            "partitioner": "murmur2_random",  # Java's: the key's partition agrees with every other client's
            "linger.ms": 2, "message.timeout.ms": int(delivery_timeout_s * 1000),
            "error_cb": self._on_error,
        })
        self._producer = Producer(self._config)
        self._fatal = False
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="http-intake-producer", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_S)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = True
        log.warning("kafka_error", error=str(error), fatal=error.fatal())

    def _renew_if_fatal(self) -> None:
        if self._fatal:
            log.warning("producer_renewed", reason="fatal error")
            self._fatal = False
            self._producer = Producer(self._config)  # the poller picks it up at its next call

    async def send(self, command: Command, *, source: str, traceparent: str | None = None) -> None:
        """Produce `command` keyed by its payment id and return once it is acknowledged; raises KafkaUnavailable."""
        self._renew_if_fatal()
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: KafkaError | None, _record: Message) -> None:
            loop.call_soon_threadsafe(_settle, delivered, error)

        headers: Any = build_headers(command, source=source, traceparent=traceparent,
                                     content_type=self.serde.content_type)
        try:
            self._producer.produce(self.topic, key=command.payment_id.encode(), value=self.serde.encode(command),
                                   headers=headers, on_delivery=report)
        except BufferError:
            raise KafkaUnavailable("the producer's queue is full") from None
        except KafkaException as error:
            raise KafkaUnavailable(str(error)) from error
        try:
            # librdkafka reports every record by message.timeout.ms; the margin covers the poll interval.
            await asyncio.wait_for(asyncio.shield(delivered), self.delivery_timeout_s + 5)
        except TimeoutError:
            raise KafkaUnavailable("no delivery report in time") from None

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop polling, deliver what is left (each record is bounded by message.timeout.ms), close."""
        self._stop.set()
        self._poller.join(timeout_s)
        self._producer.flush(timeout_s)
        self._producer.close()


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaUnavailable(f"not delivered: {error}"))
