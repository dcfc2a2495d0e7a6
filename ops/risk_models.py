"""The risk service's models at the edge: which ones score (the `risk.models` topic), loading them, following
the operator's changes while the service runs, and the operator's commands that record a change.

- At start, `build_risk_logic` reads `risk.models` to its end: the last change names the active model and a
  candidate; with none recorded, `PAYMENTS_RISK_MODEL` and `PAYMENTS_RISK_CANDIDATE` do. Each is loaded and
  verified (consumers/risk/models.py: the artifact's hash, its feature list, its graph); one that fails
  refuses the start (`RiskModelError`, exit 2): a risk service never scores with a model it cannot trust.
- While it runs, a `ModelWatcher` thread follows the topic: each new change is loaded and verified off the
  loop, then the logic's `Models` are swapped between two decisions. A change that fails to load leaves the
  running models in place (`risk_models_refused`, and `payments_risk_model` shows what still scores).
- `payments risk shadow|promote|rollback|unshadow` load and verify the model themselves, the same way,
  before they record the change: a change the service would refuse is never recorded.
"""

from __future__ import annotations

import getpass
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import structlog
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from pydantic import ValidationError

from consumers.risk.deployment import Action, Deployment, ModelChange, current, plan
from consumers.risk.logic import RiskLogic
from consumers.risk.models import Models, load_scorer
from consumers.risk.scoring import RiskModelError, load_rules
from consumers.risk.telemetry import RiskTelemetry
from ops.settings import Settings
from payments.contracts.topics import RISK_MODELS
from payments.runtime.connection import client_config
from payments.runtime.reader import READER_GROUP_PREFIX, committed_records
from payments.runtime.topics import TopicSpec, ensure_topics

log = structlog.get_logger(__name__)
PARTITION: Final = 0  # the topic has one partition: the changes in one order
READ_TIMEOUT_S: Final = 60.0
WATCH_POLL_S: Final = 1.0
PRODUCE_TIMEOUT_S: Final = 30.0


def models_topic(settings: Settings) -> TopicSpec:
    """`risk.models`: one partition, kept forever (the audit of every change)."""
    return TopicSpec(settings.topics.name(RISK_MODELS), 1)


def read_changes(settings: Settings) -> tuple[list[ModelChange], int]:
    """Every committed change, in order, and the offset to follow the topic from (the topic is made first if
    missing: a fresh deployment has none)."""
    topic = models_topic(settings)
    ensure_topics(settings.kafka, [topic])
    changes, next_offset = [], 0
    for record in committed_records(settings.kafka, [(topic.name, PARTITION)], timeout_s=READ_TIMEOUT_S):
        next_offset = (record.offset() or 0) + 1
        if record.value() is not None:
            changes.append(_parse(record.value(), record.offset()))
    return changes, next_offset


def _parse(value: bytes | None, offset: int | None) -> ModelChange:
    try:
        return ModelChange.model_validate_json(value or b"")
    except ValidationError as error:
        raise RiskModelError(f"risk.models record at offset {offset} is unreadable: {error}") from None


def configured(settings: Settings) -> Deployment:
    """The deployment before any change is recorded: the settings'."""
    return Deployment(settings.risk_model, settings.risk_candidate)


def load_models(settings: Settings, deployment: Deployment) -> Models:
    """The deployment's models, loaded and verified (RiskModelError names the one that failed)."""
    active = load_scorer(deployment.active, settings.risk_models_dir, settings.risk_model_file)
    candidate = None
    if deployment.candidate is not None:
        candidate = load_scorer(deployment.candidate, settings.risk_models_dir, settings.risk_model_file)
    return Models(active, candidate)


def build_risk_logic(settings: Settings) -> RiskLogic:
    """The risk service's Logic: the rules, the recorded (else configured) models, and a watcher that swaps
    them when the operator changes them. Raises RiskModelError when a model or the rules cannot be loaded.
    Built once per process (ops.launch): the processors it rebuilds after a fatal error keep it."""
    rules = load_rules(settings.risk_rules_file)
    changes, next_offset = read_changes(settings)
    deployment = current(changes, configured(settings))
    logic = RiskLogic(rules, load_models(settings, deployment), retention=settings.retention)
    logic.observer = RiskTelemetry(lambda: logic.models.versions)
    log.info("risk_models", active=deployment.active, candidate=deployment.candidate,
             recorded=deployment.changed_by is not None, rules=rules.version)
    ModelWatcher(settings, logic, next_offset=next_offset).start()
    return logic


class ModelWatcher(threading.Thread):
    """Follows `risk.models` from `next_offset` and swaps the logic's models on each change it can load."""

    def __init__(self, settings: Settings, logic: RiskLogic, *, next_offset: int) -> None:
        super().__init__(name="risk-models", daemon=True)
        self.settings = settings
        self.logic = logic
        self.next_offset = next_offset

    def run(self) -> None:
        topic = models_topic(self.settings).name
        consumer = Consumer(client_config(self.settings.kafka, {
            "group.id": f"{READER_GROUP_PREFIX}risk-models-{uuid.uuid4().hex}", "enable.auto.commit": False,
            "isolation.level": "read_committed"}))
        try:
            consumer.assign([TopicPartition(topic, PARTITION, self.next_offset)])
            while True:
                record = consumer.poll(WATCH_POLL_S)
                if record is None or record.error() is not None or record.value() is None:
                    continue
                self.apply(record.value(), record.offset())
        except KafkaException as error:  # the service's own loop reports Kafka trouble; this one only logs it
            log.error("risk_models_watch_failed", error=str(error))
        finally:
            consumer.close()

    def apply(self, value: bytes | None, offset: int | None) -> None:
        try:
            change = _parse(value, offset)
            deployment = Deployment(change.active, change.candidate, change.previous_active, change)
            models = load_models(self.settings, deployment)
        except RiskModelError as error:
            log.error("risk_models_refused", offset=offset, error=str(error),
                      active=self.logic.models.active.version)
            return
        self.logic.models = models  # one assignment: a decision reads the models once
        log.info("risk_models_changed", action=change.action, active=change.active, candidate=change.candidate,
                 operator=change.operator, reason=change.reason, change_id=change.change_id)


@dataclass(frozen=True)
class Recorded:
    change: ModelChange
    offset: int


def record_change(settings: Settings, action: Action, version: str | None, *, reason: str,
                  operator: str | None = None) -> Recorded:
    """Plan `action` on the current deployment, load and verify the models it leaves (as the service will),
    and record the change on `risk.models`. RiskModelError when the change makes no sense or a model fails."""
    now = current(read_changes(settings)[0], configured(settings))
    active, candidate, previous = plan(now, action, version)
    load_models(settings, Deployment(active, candidate, previous))
    change = ModelChange(change_id=str(uuid.uuid4()), at=datetime.now(UTC), action=action, active=active,
                         candidate=candidate, previous_active=previous, operator=operator or _operator(),
                         reason=reason)
    producer = Producer(client_config(settings.kafka, {"enable.idempotence": True, "acks": "all"}))
    delivered: list[tuple[int, str | None]] = []

    def report(error: object, record: object) -> None:
        offset = getattr(record, "offset", lambda: -1)()
        delivered.append((offset, None if error is None else str(error)))

    producer.produce(models_topic(settings).name, key=b"risk-models", value=change.model_dump_json().encode(),
                     partition=PARTITION, on_delivery=report)
    producer.flush(PRODUCE_TIMEOUT_S)
    if not delivered or delivered[0][1] is not None:
        why = delivered[0][1] if delivered else f"no acknowledgement in {PRODUCE_TIMEOUT_S:.0f}s"
        raise RiskModelError(f"the change was not recorded on {models_topic(settings).name}: {why}")
    return Recorded(change, delivered[0][0])


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container without a passwd entry
        return "unknown"
