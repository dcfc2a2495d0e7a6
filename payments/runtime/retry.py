"""Bounded retries of Kafka admin, metadata and offset calls through transient errors.

After a broker restart or stall, metadata is briefly stale: a partition's leader moved or is not
known yet (`NOT_LEADER_FOR_PARTITION`, `UNKNOWN_LEADER_EPOCH`: "leader epoch is newer than broker
epoch"), a coordinator is loading, a request timed out. These pass; asking again a little later
works. Everything else, and a transient error past the bound, is a `KafkaCallError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar

import structlog
from confluent_kafka import KafkaError, KafkaException

from payments.runtime.errors import KafkaCallError

T = TypeVar("T")
log = structlog.get_logger(__name__)

TRANSIENT_CODES: Final = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.FENCED_LEADER_EPOCH, KafkaError.OFFSET_NOT_AVAILABLE,
    KafkaError.REPLICA_NOT_AVAILABLE, KafkaError.BROKER_NOT_AVAILABLE, KafkaError.NETWORK_EXCEPTION,
    KafkaError.KAFKA_STORAGE_ERROR, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
})
ATTEMPTS_MAX: Final = 10


def is_transient(error: KafkaError) -> bool:
    return bool(error.retriable()) or error.code() in TRANSIENT_CODES


def kafka_error(error: BaseException | None) -> KafkaError | None:
    """The KafkaError that `error`, a KafkaException, carries (None for anything else)."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None


def gave_up_transient(error: KafkaCallError) -> bool:
    """Whether `error` ended a call that failed transiently past its bound (asking again later may work),
    rather than one Kafka refused (authorization, a policy, an invalid request: asking again will not).

    It reads the Kafka error that `error` was raised from; one raised from none is a refusal."""
    cause = kafka_error(error.__cause__)
    return cause is not None and is_transient(cause)


AUTHORIZATION_CODES: Final = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
})


def refused_authorization(error: KafkaCallError) -> bool:
    """Whether `error` ended a call the cluster's ACLs refused (this principal may not do it)."""
    cause = kafka_error(error.__cause__)
    return cause is not None and cause.code() in AUTHORIZATION_CODES


def retry_kafka(call: Callable[[], T], what: str, *, attempts: int = ATTEMPTS_MAX, backoff_s: float = 0.1,
                backoff_max_s: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, asked again through transient Kafka errors, at most `attempts` times."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            if not is_transient(kafka_error) or attempt == attempts:
                raise KafkaCallError(f"{what} failed after {attempt} attempt(s): {kafka_error}") from error
            log.info("kafka_call_retry", call=what, attempt=attempt, error=kafka_error.name())
            sleep(min(backoff_max_s, backoff_s * 2 ** (attempt - 1)))
    raise AssertionError("unreachable: the loop returns or raises")
