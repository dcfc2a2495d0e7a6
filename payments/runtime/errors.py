"""Errors of the service runtime: the exactly-once loop, its Kafka adapters, topics and readers.

Each maps to one documented outcome (docs/architecture.md §2 and docs/operations.md):

- `FatalProcessorError`: the service rebuilds its consumer, producer and state from committed Kafka
  state; past a bound of rebuilds the process exits (payments.runtime.service);
- `TopologyError`: the process exits at once: a topic has the wrong shape, and no restart fixes that;
- `KafkaCallError`: a Kafka admin or metadata call kept failing past its retry bound; inside the
  loop it is fatal (rebuild), a command line prints it as one line;
- `ReadTimeoutError`: a read did not reach the end offsets in time (a `KafkaCallError`).
"""

from __future__ import annotations

from payments.errors import PaymentsError


class ServiceError(PaymentsError):
    """Root of the service runtime's errors."""


class FatalProcessorError(ServiceError):
    """The producer is fenced or the transaction state is unusable: rebuild the processor from committed state."""


class TopologyError(ServiceError):
    """A topic is missing or has another shape than declared (e.g. a different partition count)."""


class KafkaCredentialsError(ServiceError):
    """The brokers refuse this client's credentials (SASL authentication or the TLS handshake failed):
    configuration, not an outage; waiting does not mend it."""


class KafkaCallError(ServiceError):
    """A Kafka admin, metadata or offset call failed with a non-retriable error or past its retry bound."""


class ReadTimeoutError(KafkaCallError, TimeoutError):
    """A read did not reach the end offsets in time."""
