"""Configuration of the exactly-once loop, passed in by the composition root. Units are in the names."""

from __future__ import annotations

from dataclasses import dataclass, field

from payments.runtime.deadletter import DeadLetterLimits

# Record size limits, aligned (docs/contracts.md §8): a topic accepts batches up to TOPIC_MESSAGE_BYTES_MAX
# (Kafka's default), our producers send records up to PRODUCER_MESSAGE_BYTES_MAX (librdkafka's default),
# which is below it, and nothing we produce ourselves is larger than `output_bytes_max`.
TOPIC_MESSAGE_BYTES_MAX = 1_048_588
PRODUCER_MESSAGE_BYTES_MAX = 1_000_000


@dataclass(frozen=True)
class ProcessorConfig:
    batch_records_max: int = 500
    poll_timeout_ms: int = 100
    calls_poll_ms: int = 10  # the wait for records, or for room, while calls are out (payments.runtime.calls)
    calls_full_s: float = 5.0  # no room for calls this long: pause the input (and keep serving the group)
    retry_backoff_ms: int = 20  # the producer's first retry backoff (payments.runtime.clients says why)
    transaction_timeout_ms: int = 10_000  # bounds how long a crashed instance's open transaction blocks readers
    # A batch stops taking records once this much time went into it (a slow partner call, say): the rest
    # is read again after the commit. Keeps every transaction well inside transaction_timeout_ms.
    batch_time_budget_ms: int = 4_000
    call_timeout_s: float = 15.0  # each attempt of a transactional call; librdkafka may not honour it (watchdog)
    retriable_attempts_max: int = 10
    record_bytes_max: int = 512 * 1024  # an input value larger than this is dead-lettered (OversizeRecord)
    output_bytes_max: int = 900_000  # key + value + headers of anything a decision emits
    message_bytes_max: int = PRODUCER_MESSAGE_BYTES_MAX
    dead_letters: DeadLetterLimits = field(default_factory=DeadLetterLimits)
    restore_timeout_s: float = 120.0  # a restore (changelog read to its end) taking longer is fatal: rebuild
    restore_slice_ms: int = 500  # the main loop reads the changelog this long per step, then serves the group
    # A local store's checkpoint older than this is not trusted: the changelog keeps a tombstone this long
    # (delete.retention.ms, payments.runtime.topics), so a key deleted while the store was away could have
    # lost its tombstone to compaction after it. An hour's margin below the changelogs' day.
    store_checkpoint_age_max_s: float = 23 * 3600.0
    state_cache_keys: int = 10_000  # states kept decoded (most recently used); the rest as snapshot bytes
    # A timer whose firing raised (a bug) is tried again this much later instead of in a hot loop.
    timer_retry_ms: int = 60_000
    max_poll_interval_ms: int = 60_000
    session_timeout_ms: int = 10_000
    # A blocking call still running this long after its own timeout means the client is stuck: exit.
    watchdog_margin_s: float = 10.0
    progress_bound_s: float = 60.0  # /healthz turns unhealthy after this long without progress
    lag_check_s: float = 5.0  # how often a background thread asks the brokers for the input lag (/healthz)
    # How often a restore asks whether a transaction is still open on its changelog (two ListOffsets round
    # trips); the loop steps every batch wait, far more often than that needs asking.
    stable_ask_interval_ms: int = 200

    @property
    def call_deadline_s(self) -> float:
        """How long one attempt of a transactional call may block before the watchdog ends the process."""
        return self.call_timeout_s + self.watchdog_margin_s

    @property
    def consume_deadline_s(self) -> float:
        """consume() runs the rebalance callbacks, which only assign, pause and drop state (the restore runs
        in the main loop), and may block on the group coordinator for a call timeout."""
        return self.poll_timeout_ms / 1000 + self.call_timeout_s + self.watchdog_margin_s

    def __post_init__(self) -> None:
        assert self.batch_records_max > 0 and self.retriable_attempts_max > 0
        assert 0 < self.batch_time_budget_ms < self.transaction_timeout_ms, "a batch must fit in a transaction"
        assert 0 < self.restore_slice_ms < self.max_poll_interval_ms, "a restore slice must leave time to poll"
        assert self.output_bytes_max < self.message_bytes_max <= TOPIC_MESSAGE_BYTES_MAX
        assert self.dead_letters.copy_bytes_max < self.message_bytes_max
