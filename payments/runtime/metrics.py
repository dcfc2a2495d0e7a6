"""Every metric the services export, in one place (docs/slo.md and deploy/grafana use these names).

Instruments come from OpenTelemetry's global API: until a process installs the SDK (payments.telemetry)
they record nothing. Prometheus names follow from the OpenTelemetry ones: dots become underscores,
the unit is appended (`s` -> `_seconds`), counters end in `_total`. Label values are bounded sets
(services, topics, partitions, error classes, reason codes, outcomes), never ids.

Gauges are observed on each scrape from a `Gauges` source the process registers (its Health, the
partner caller, the status projection): a source is a function returning `(value, labels)` pairs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

Labels = Mapping[str, str | int]
Source = Callable[[], Iterable[tuple[float, Labels]]]

METER: Final = metrics.get_meter("payments")

# Seconds buckets for transaction commits (tens of ms) and for sagas (seconds to minutes).
COMMIT_BUCKETS: Final = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
SAGA_BUCKETS: Final = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
CALL_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RECORDS_PROCESSED: Final = METER.create_counter(
    "payments.records.processed", unit="{record}",
    description="input records committed by a service or projection, by input topic")
RECORDS_DEAD_LETTERED: Final = METER.create_counter(
    "payments.records.dead_lettered", unit="{record}",
    description="input records committed as dead letters, by input topic, error class and reason code")
TRANSACTION_COMMIT: Final = METER.create_histogram(
    "payments.transaction.commit.duration", unit="s", explicit_bucket_boundaries_advisory=COMMIT_BUCKETS,
    description="Kafka transaction commit (services) or PostgreSQL transaction (projections), committed ones")
TRANSACTIONS_ABORTED: Final = METER.create_counter(
    "payments.transactions.aborted", unit="{transaction}",
    description="transactions aborted and read again (a broker error, a refused record)")
REBUILDS: Final = METER.create_counter(
    "payments.service.rebuilds", unit="{rebuild}",
    description="fatal errors after which the process rebuilt its clients from committed state")
PAYMENT_OUTCOMES: Final = METER.create_counter(
    "payments.payment.outcomes", unit="{payment}",
    description="payments that reached a terminal state, by outcome and reason code (orchestrator)")
SAGA_DURATION: Final = METER.create_histogram(
    "payments.saga.duration", unit="s", explicit_bucket_boundaries_advisory=SAGA_BUCKETS,
    description="PaymentInitiated to the terminal event, by outcome (orchestrator's clock)")
PAYMENT_LATENCY: Final = METER.create_histogram(
    "payments.payment.latency", unit="s", explicit_bucket_boundaries_advisory=SAGA_BUCKETS,
    description="the upstream client's publish of InitiatePayment to the terminal event, by outcome (orchestrator)")
PARTNER_CALL: Final = METER.create_histogram(
    "payments.partner.call.duration", unit="s", explicit_bucket_boundaries_advisory=CALL_BUCKETS,
    description="one HTTP request to a payment partner, by partner, operation and result")
RISK_ASSESSMENTS: Final = METER.create_counter(
    "payments.risk.assessments", unit="{payment}",
    description="payments the risk service assessed, by model version, decision and what declined (rules, model)")
RISK_SCORES: Final = METER.create_counter(
    "payments.risk.scores", unit="{payment}",
    description="risk scores by model version, role (active, candidate) and score bin (its upper bound in bp)")
RISK_SHADOW_DECISIONS: Final = METER.create_counter(
    "payments.risk.shadow.decisions", unit="{payment}",
    description="payments scored by the active and the candidate model, by both models' decisions")


class Gauges:
    """Gauge sources registered by name; each OpenTelemetry observable gauge reads its source on a scrape.
    A process registers a source once (a rebuilt processor replaces its own); a failing source is skipped."""

    def __init__(self) -> None:
        self._sources: dict[str, dict[str, Source]] = {}
        self._lock = threading.Lock()

    def register(self, gauge: str, owner: str, source: Source) -> None:
        with self._lock:
            self._sources.setdefault(gauge, {})[owner] = source

    def unregister(self, gauge: str, owner: str) -> None:
        with self._lock:
            self._sources.get(gauge, {}).pop(owner, None)

    def observe(self, gauge: str) -> list[Observation]:
        with self._lock:
            sources = list(self._sources.get(gauge, {}).values())
        found: list[Observation] = []
        for source in sources:
            try:
                found += [Observation(value, dict(labels)) for value, labels in source()]
            except Exception:  # noqa: S112 - a source that cannot answer now only leaves this scrape's value out
                continue
        return found


GAUGES: Final = Gauges()
CONSUMER_LAG: Final = "payments.consumer.lag"
PARTITIONS_OWNED: Final = "payments.partitions.owned"
TIMERS_PENDING: Final = "payments.timers.pending"
STATE_KEYS: Final = "payments.state.keys"
BREAKER_STATE: Final = "payments.partner.breaker.state"
PAYMENTS_IN_FLIGHT: Final = "payments.in_flight"
PAYMENTS_STUCK: Final = "payments.stuck"
PROJECTION_LAG_SECONDS: Final = "payments.projection.lag"
LEDGER_NET: Final = "payments.ledger.net"
LEDGER_UNPOSTED: Final = "payments.ledger.unposted"
RISK_MODEL: Final = "payments.risk.model"
RISK_SHADOW_AGREEMENT: Final = "payments.risk.shadow.agreement"
RISK_SHADOW_PSI: Final = "payments.risk.shadow.psi"

_GAUGE_HELP: Final = {
    CONSUMER_LAG: ("{record}", "records in an input partition past what the service or projection committed"),
    PARTITIONS_OWNED: ("{partition}", "input partitions assigned and restored"),
    TIMERS_PENDING: ("{timer}", "timers armed in the service's state (saga windows, retention)"),
    STATE_KEYS: ("{key}", "keys in the service's owned state (sagas, holds, answers remembered)"),
    BREAKER_STATE: ("", "a partner's circuit breaker: 0 closed, 1 half-open, 2 open"),
    PAYMENTS_IN_FLIGHT: ("{payment}", "payments not yet terminal, by status (payment_status projection)"),
    PAYMENTS_STUCK: ("{payment}", "payments not terminal and unchanged for longer than the stuck bound, by status"),
    PROJECTION_LAG_SECONDS: ("s", "age of the newest record a projection has applied, when records wait"),
    LEDGER_NET: ("", "sum of every ledger account balance, per currency, in minor units: 0 unless the ledger is wrong"),
    LEDGER_UNPOSTED: ("{event}", "events the ledger projection could not post (ledger_unposted)"),
    RISK_MODEL: ("", "1 for each risk model this instance scores with, by role (active, candidate) and version"),
    RISK_SHADOW_AGREEMENT: ("", "share of payments the candidate model decided as the active one did, since it "
                                "started in shadow on this instance"),
    RISK_SHADOW_PSI: ("", "population stability index of the candidate's scores against the active model's, "
                          "on the same payments, since it started in shadow on this instance"),
}


def _callback(gauge: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    return lambda _options: GAUGES.observe(gauge)


for _name, (_unit, _description) in _GAUGE_HELP.items():
    METER.create_observable_gauge(_name, callbacks=[_callback(_name)], unit=_unit, description=_description)


def watch_health(service: str, health: Any, base: Callable[[str], str]) -> None:
    """Gauges of a service or projection process from its Health: lag per input partition (`base` turns a
    topic name into its base name) and the partitions it owns."""
    labels = {"service": service}
    GAUGES.register(CONSUMER_LAG, service, lambda: [
        (lag, {**labels, "topic": base(topic), "partition": partition})
        for (topic, partition), lag in dict(health.lag_by_partition).items()])
    GAUGES.register(PARTITIONS_OWNED, service, lambda: [(health.partitions, labels)])
