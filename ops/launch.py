"""The composition root of a service process: `payments run <service>` and `payments run projection <name>`.

Settings are read once by the CLI and passed in; this module wires the registry's Logic or
projection to the exactly-once loop with real Kafka and PostgreSQL clients, and returns the exit
code (payments.runtime.service). It never imports the local stack (`make lint` checks that).
"""

from __future__ import annotations

import sys
import threading

from ops.registry import PROJECTIONS, SERVICES, ServiceSpec, topology
from ops.settings import Settings
from payments.observability import configure_logging
from payments.runtime.clients import kafka_clients
from payments.runtime.errors import TopologyError
from payments.runtime.processor import Processor
from payments.runtime.service import EXIT_CONFIG, install_signal_handlers, run_until_stopped
from payments.runtime.topics import ensure_topics
from projections.migrate import migrate
from projections.runner import ProjectionRunner


def ensure_topology(settings: Settings) -> None:
    ensure_topics(settings.bootstrap_servers, topology(settings.topics, settings.partitions))


def build_processor(spec: ServiceSpec, settings: Settings) -> Processor[object]:
    """One processor instance: the Logic from the registry, clients for this instance, config from settings."""
    topics = settings.topics
    group = topics.group(spec.name)
    config = settings.processor()
    clients = kafka_clients(settings.bootstrap_servers, group=group,
                            transactional_id=f"{group}-{settings.instance_id}",
                            changelog_topic=topics.changelog(spec.name), config=config)
    return Processor(spec.build(settings), clients=clients, topics=topics, serde=settings.serde(),
                     instance_id=settings.instance_id, config=config)


def run_service(name: str, settings: Settings) -> int:
    """The whole life of a Kafka->Kafka service process; returns its exit code."""
    spec = SERVICES[name]
    configure_logging(name, settings.log_level)
    try:
        ensure_topology(settings)
    except TopologyError as error:
        print(f"payments run {name}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()
    install_signal_handlers(stop)
    return run_until_stopped(lambda: build_processor(spec, settings), stop, name)


def run_projection(name: str, settings: Settings) -> int:
    """The whole life of a projection process (Kafka -> PostgreSQL); returns its exit code."""
    spec = PROJECTIONS[name]
    configure_logging(f"projection-{name}", settings.log_level)
    try:
        ensure_topology(settings)
    except TopologyError as error:
        print(f"payments run projection {name}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    migrate(settings.database)
    stop = threading.Event()
    install_signal_handlers(stop)

    def build() -> ProjectionRunner:
        return ProjectionRunner(spec.projection(), bootstrap_servers=settings.bootstrap_servers,
                                database_url=settings.database, topics=settings.topics, serde=settings.serde(),
                                config=settings.runner())

    return run_until_stopped(build, stop, f"projection-{name}")
