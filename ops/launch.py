"""The composition root of a service process: `payments run <service>` and `payments run projection <name>`.

Settings are read once by the CLI and passed in; this module wires the registry's Logic or
projection to its exactly-once loop with real Kafka and PostgreSQL clients, a watchdog over their
blocking calls and a health record, and returns the exit code (payments.runtime.service). A process
started while Kafka or PostgreSQL is down waits for them with a log line per attempt. It never
imports the local stack (`make lint` checks that).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import structlog

from consumers.errors import ParticipantError
from consumers.partner.sim_server import serve as serve_partner
from ops.errors import OpsError
from ops.registry import PROJECTIONS, SERVICES, SIMULATORS, ServiceSpec, process_topology
from ops.settings import Settings
from payments.observability import configure_logging
from payments.runtime import metrics
from payments.runtime.calls import CallRunner
from payments.runtime.clients import kafka_clients
from payments.runtime.errors import KafkaCallError, KafkaCredentialsError, TopologyError
from payments.runtime.health import Health, serve_health
from payments.runtime.logic import Logic
from payments.runtime.processor import Processor
from payments.runtime.retry import gave_up_transient, refused_authorization
from payments.runtime.rocks import RocksStores
from payments.runtime.service import EXIT_CONFIG, EXIT_OK, install_signal_handlers, run_until_stopped
from payments.runtime.topics import ensure_topics, wait_for_kafka
from payments.runtime.watchdog import Watchdog
from payments.telemetry import configure_metrics, configure_tracing
from projections.gauges import LedgerState, OpenPayments
from projections.migrate import migrate_when_available
from projections.runner import ProjectionRunner

log = structlog.get_logger(__name__)
TOPIC_SETUP_PAUSE_S = 1.0  # after topic setup gave up on transient errors; doubling up to the max
TOPIC_SETUP_PAUSE_MAX_S = 30.0


def build_processor(spec: ServiceSpec, settings: Settings, watchdog: Watchdog, health: Health,
                    logic: Logic[Any] | None = None) -> Processor[object]:
    """One processor instance: the Logic (`logic`, else built from the registry), clients for this instance,
    config from settings, and for a Logic that calls out, a call runner of its own (closed with the processor)."""
    topics = settings.topics
    group = topics.group(spec.name)
    config = settings.processor()
    changelog = topics.changelog(spec.name)
    # One folder per changelog and instance: two instances on one machine never share a store, and a
    # restarted instance finds its own (docs/architecture.md §3, "Local state stores").
    stores = RocksStores(settings.state_home / changelog / settings.instance_id)
    clients = kafka_clients(settings.kafka, group=group,
                            transactional_id=f"{group}-{settings.instance_id}",
                            changelog_topic=changelog, config=config, stores=stores)
    calls = None
    if spec.performer is not None:
        performer, limit = spec.performer(settings)
        calls = CallRunner(performer, limit=limit, name=spec.name)
    try:
        return Processor(logic or spec.build(settings), clients=clients, topics=topics, serde=settings.serde(),
                         instance_id=settings.instance_id, config=config, watchdog=watchdog, health=health,
                         calls=calls)
    except BaseException:
        if calls is not None:
            calls.close()
        raise


def _start(name: str, settings: Settings, progress_bound_s: float) -> tuple[threading.Event, Watchdog, Health] | int:
    """Logging, signals, the watchdog, health; then wait for Kafka and make the topology. An int: exit now.

    Kafka down, or failing transiently past the retry bound while the topics are made, is waited for
    (`waiting_for_kafka`, `waiting_for_topics`); a topic of the wrong shape (TopologyError) or one Kafka
    refuses to create is EXIT_CONFIG; `stop` meanwhile is EXIT_OK (docs/operations.md, exit codes)."""
    configure_logging(name, settings.log_level)
    configure_metrics(name, settings.instance_id)
    configure_tracing(name, settings.instance_id, settings.traces_exporter, settings.traces_sample_ratio)
    stop = threading.Event()
    watchdog = Watchdog(name)
    install_signal_handlers(stop, watchdog)
    watchdog.start()
    health = Health(progress_bound_s)
    metrics.watch_health(name, health, settings.topics.base)
    if settings.health_port:
        serve_health(health, settings.health_port)
    attempt = 0
    while True:
        try:
            if not wait_for_kafka(settings.kafka, stop):
                return EXIT_OK
        except KafkaCredentialsError as error:
            log.error("kafka_credentials_refused", service=name, error=str(error), exit_code=EXIT_CONFIG)
            print(f"payments run {name}: {error}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            # Only the topics this process uses: a service principal on a secured cluster may describe
            # nothing else (deploy/kafka/acls.json), and when they all exist no CreateTopics is sent.
            ensure_topics(settings.kafka, process_topology(name, settings.topics, settings.partitions))
            return stop, watchdog, health
        except TopologyError as error:
            print(f"payments run {name}: {error}", file=sys.stderr)
            return EXIT_CONFIG
        except KafkaCallError as error:
            if not gave_up_transient(error):
                # Kafka refused a topic (authorization, a topic policy, a replication factor the cluster
                # cannot meet): the cluster or the configuration must change; a restart will not help.
                log.error("topic_setup_refused", service=name, error=str(error), exit_code=EXIT_CONFIG)
                hint = ("; this principal may not create topics: create them first as an admin "
                        "(`payments topics ensure`, the deployment's topics job)" if refused_authorization(error)
                        else "")
                print(f"payments run {name}: {error}{hint}", file=sys.stderr)
                return EXIT_CONFIG
            # Kafka answered and then kept failing transiently (a controller moving, timeouts): wait it
            # out as a Kafka that is down at start is waited out, instead of exiting as if it were a bug.
            attempt += 1
            if _paused(stop, "waiting_for_topics", name, attempt, error):
                return EXIT_OK


def _paused(stop: threading.Event, event: str, name: str, attempt: int, error: Exception) -> bool:
    """Log `event` for a transient Kafka failure and pause before the next attempt (1 s doubling to 30 s);
    True when `stop` came meanwhile."""
    log.warning(event, service=name, attempt=attempt, error=str(error))
    return stop.wait(min(TOPIC_SETUP_PAUSE_MAX_S, TOPIC_SETUP_PAUSE_S * 2 ** (attempt - 1)))


def run_service(name: str, settings: Settings) -> int:
    """The whole life of a Kafka->Kafka service process; returns its exit code."""
    spec = SERVICES[name]
    started = _start(name, settings, settings.processor().progress_bound_s)
    if isinstance(started, int):
        return started
    stop, watchdog, health = started
    built = _build(name, spec, settings, stop)
    if isinstance(built, int):
        return built
    logic = built
    return run_until_stopped(lambda: build_processor(spec, settings, watchdog, health, logic), stop, name)


def _build(name: str, spec: ServiceSpec, settings: Settings, stop: threading.Event) -> Logic[Any] | int:
    """The service's Logic, built once: its configuration (a model, a seed file) is checked at start, and
    rebuilds keep it. Some read Kafka to build (the risk service reads `risk.models`): Kafka failing
    transiently past the retry bound (a leader moving) is waited out as in `_start`; a refusal, or a bad
    configuration, is EXIT_CONFIG; `stop` meanwhile is EXIT_OK."""
    attempt = 0
    while True:
        try:
            return spec.build(settings)
        except (ParticipantError, OpsError, KafkaCallError) as error:
            if isinstance(error, KafkaCallError) and gave_up_transient(error):
                attempt += 1
                if _paused(stop, "waiting_for_kafka_to_build", name, attempt, error):
                    return EXIT_OK
                continue
            event = "service_build_refused" if isinstance(error, KafkaCallError) else "service_misconfigured"
            log.error(event, service=name, error=str(error), exit_code=EXIT_CONFIG)
            print(f"payments run {name}: {error}", file=sys.stderr)
            return EXIT_CONFIG


def run_projection(name: str, settings: Settings) -> int:
    """The whole life of a projection process (Kafka -> PostgreSQL); returns its exit code."""
    spec = PROJECTIONS[name]
    config = settings.runner()
    started = _start(f"projection-{name}", settings, config.progress_bound_s)
    if isinstance(started, int):
        return started
    stop, watchdog, health = started
    # Under the watchdog: a database that stops answering mid-migration ends the process (exit 4).
    if migrate_when_available(settings.database, stop, watchdog=watchdog,
                              call_deadline_s=config.db_call_deadline_s) is None:
        return EXIT_OK

    if name == "payment_status":  # payments in flight and stuck, from the read model it keeps
        counts = OpenPayments(settings.database, settings.stuck_after_s)
        metrics.GAUGES.register(metrics.PAYMENTS_IN_FLIGHT, name, counts.in_flight)
        metrics.GAUGES.register(metrics.PAYMENTS_STUCK, name, counts.stuck)
    if name == "ledger":  # double entry: every currency nets to 0
        ledger = LedgerState(settings.database)
        metrics.GAUGES.register(metrics.LEDGER_NET, name, ledger.net)
        metrics.GAUGES.register(metrics.LEDGER_UNPOSTED, name, ledger.unposted)

    def build() -> ProjectionRunner:
        return ProjectionRunner(spec.projection(), bootstrap_servers=settings.kafka,
                                database_url=settings.database, topics=settings.topics, serde=settings.serde(),
                                config=config, watchdog=watchdog, health=health)

    return run_until_stopped(build, stop, f"projection-{name}")


def run_simulator(name: str, settings: Settings) -> int:
    """A simulator process (ops.registry.SIMULATORS): serves until SIGTERM; returns its exit code."""
    assert name in SIMULATORS, name
    configure_logging(name, settings.log_level)
    stop = threading.Event()
    install_signal_handlers(stop)
    health = Health()  # alive while its event loop turns
    if settings.health_port:
        serve_health(health, settings.health_port)
    try:
        asyncio.run(serve_partner(settings.simulator(), "127.0.0.1", settings.partner_sim_port, stop,
                                  tick=health.iterated))
    except OSError as error:  # the port is taken, the data directory unwritable
        print(f"payments run {name}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK
