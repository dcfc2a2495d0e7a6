"""Every service and every projection, declared once. Everything else is derived from this module:

- the topology (which topics exist: every service's inputs and outputs, its changelog, every
  projection's inputs, and the dead-letter topic), made by `payments topics ensure`; each process
  makes the part it uses at start if missing (`process_topology`);
- the least-privilege Kafka ACLs of every principal (ops.acls);
- `payments run <service>` and `payments run projection <name>` (names, help text, what they build);
- `payments replay <projection>` (the projection's migrations and fold);
- the demo, the tests' and the benchmark's process lists.

Adding a participant or a projection is one entry here plus its own package (docs/architecture.md,
"Adding a participant, a projection, a schema version").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.funds.logic import FundsLogic
from consumers.partner.caller import PartnerCaller
from consumers.partner.logic import PartnerGatewayLogic
from consumers.risk.logic import RiskLogic
from consumers.settlement.logic import SettlementPublisherLogic
from intake.gate import GateLogic
from intake.idempotency import IdempotencyLogic
from intake.router import IntakeRouterLogic
from ops.risk_models import build_risk_logic
from ops.settings import Settings
from orchestrator.saga import OrchestratorLogic
from payments.contracts.topics import DLQ, DLQ_REDRIVES, RISK_MODELS
from payments.runtime.calls import Performer
from payments.runtime.logic import Logic
from payments.runtime.topics import Topics, TopicSpec
from projections.ledger import LedgerFold, LedgerProjection
from projections.report import SettlementReportFold, SettlementReportProjection
from projections.spec import ProjectionSpec
from projections.status import PaymentStatusFold, PaymentStatusProjection

# Shared bookkeeping, and the HTTP intake's Idempotency-Key store (not a read model: nothing replays it).
CORE_MIGRATIONS = ("0001_projection_core.sql", "0005_dead_letter_reason_code.sql", "0006_http_idempotency.sql")


@dataclass(frozen=True)
class ServiceSpec:
    """A Kafka->Kafka service run by the exactly-once processor: `payments run <name>`."""

    logic: type[Logic[Any]]  # the Logic class: its service name, input and output topics (class variables)
    build: Callable[[Settings], Logic[Any]]  # the Logic instance, from the settings
    summary: str
    # A Logic that calls out (payments.runtime.logic.Calling): who makes its calls, and how many at once.
    performer: Callable[[Settings], tuple[Performer, int]] | None = None
    # Topics the service reads outside its loop, each of ONE partition (the risk service's models): created
    # with it, readable by its principal, written only by the operator.
    reads: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.logic.service


SERVICES: dict[str, ServiceSpec] = {spec.name: spec for spec in (
    ServiceSpec(IntakeRouterLogic, lambda s: IntakeRouterLogic(),
                "accepts commands on any partition and repartitions them by payment id"),
    ServiceSpec(GateLogic, lambda s: GateLogic(s.gate()),
                "admits each payment's commands in order, each once its idempotency key is claimed"),
    ServiceSpec(IdempotencyLogic, lambda s: IdempotencyLogic(s.idempotency()),
                "idempotency keys per client, within PAYMENTS_IDEMPOTENCY_WINDOW_S"),
    ServiceSpec(OrchestratorLogic, lambda s: OrchestratorLogic(s.saga()),
                "the payment saga: commands and participant replies in, events and participant commands out"),
    ServiceSpec(RiskLogic, build_risk_logic,
                "risk scoring: rules, then the active model (behavioural features per account; docs/risk.md)",
                reads=(RISK_MODELS,)),
    ServiceSpec(FundsLogic, lambda s: FundsLogic(seed_path=s.funds_seed_file, retention=s.retention),
                "balances and holds per account (PAYMENTS_FUNDS_SEED_FILE)"),
    ServiceSpec(PartnerGatewayLogic, lambda s: PartnerGatewayLogic(retention=s.retention),
                "the partner gateway: HTTP calls to each partner's API, many at once (PAYMENTS_PARTNER_*)",
                performer=lambda s: (PartnerCaller(s.caller()), s.partner_max_in_flight)),
    ServiceSpec(SettlementPublisherLogic,
                lambda s: SettlementPublisherLogic(refund_window=s.refund_window, retention=s.retention),
                "publishes one settlement event per settlement and refund for downstream subscribers"),
)}

PROJECTIONS: dict[str, ProjectionSpec] = {spec.name: spec for spec in (
    ProjectionSpec("payment_status", "the current status of each payment and its timeline",
                   PaymentStatusProjection, PaymentStatusFold, ("0004_payment_status.sql",)),
    ProjectionSpec("ledger", "the double-entry ledger: journal entries, postings, balances",
                   LedgerProjection, LedgerFold, ("0002_ledger.sql",)),
    ProjectionSpec("settlement_report", "settled and refunded totals per day, currency and partner",
                   SettlementReportProjection, SettlementReportFold, ("0003_settlement_report.sql",)),
)}


def topology(topics: Topics, partitions: int) -> list[TopicSpec]:
    """Every topic the registered services and projections use, with its shape.

    All payment-keyed topics share one partition count (co-partitioning); changelogs are compacted.
    """
    names = {DLQ}
    for service in SERVICES.values():
        names.update(service.logic.input_topics, service.logic.output_topics)
    for spec in PROJECTIONS.values():
        names.update(spec.projection().topics)
    specs = [TopicSpec(topics.name(name), partitions) for name in sorted(names)]
    specs += [TopicSpec(topics.name(name), 1) for name in sorted({t for s in SERVICES.values() for t in s.reads})]
    specs += [TopicSpec(topics.changelog(name), partitions, compacted=True) for name in sorted(SERVICES)]
    # Which dead letters `payments dlq redrive` republished, keyed by DLQ position: kept forever, one record a key.
    specs.append(TopicSpec(topics.name(DLQ_REDRIVES), partitions, compacted=True))
    return specs


def process_topology(process: str, topics: Topics, partitions: int) -> list[TopicSpec]:
    """The part of the topology one process uses, which it creates at start if missing: a service's inputs,
    outputs, changelog and the dead-letter topic, or a projection's inputs (`process` is `projection-<name>`;
    it keeps its dead letters in PostgreSQL). Only these: on a secured cluster its principal may describe no
    other topic (ops.acls)."""
    if process.startswith("projection-"):
        names = {topics.name(name) for name in PROJECTIONS[process.removeprefix("projection-")].projection().topics}
    else:
        logic = SERVICES[process].logic
        reads = SERVICES[process].reads
        names = {topics.name(name) for name in (*logic.input_topics, *logic.output_topics, *reads, DLQ)}
        names.add(topics.changelog(process))
    return [spec for spec in topology(topics, partitions) if spec.name in names]


# Processes that stand in for systems outside ours, for development, tests and the demo (not production).
SIMULATORS: dict[str, str] = {
    "partner-sim": "the simulated partner's HTTP API on PAYMENTS_PARTNER_SIM_PORT (PAYMENTS_PARTNER_* behaviour)",
}


# Front doors for systems that cannot use Kafka (docs/http-intake.md). Not in the local pipeline
# (`process_args`): they need an OAuth2 issuer to trust.
GATEWAYS: dict[str, str] = {
    "http-intake": "the HTTP API for commands and payment status on PAYMENTS_HTTP_PORT (OAuth2 bearer tokens)",
}


def process_args() -> list[list[str]]:
    """`payments run` arguments of every process of the local pipeline: the simulators, each service, then
    each projection."""
    return [[name] for name in SIMULATORS] + [[name] for name in SERVICES] + [["projection", name]
                                                                                for name in PROJECTIONS]
