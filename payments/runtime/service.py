"""Run one service process: signals, rebuild-on-fatal, and a bound on how often it rebuilds."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import structlog

from payments.config import Settings
from payments.contracts.codec import serde_from_env
from payments.observability import configure_logging
from payments.runtime.logic import Logic
from payments.runtime.processor import FatalProcessorError, Processor, ProcessorConfig
from payments.runtime.topics import Topics, ensure_topics
from payments.runtime.topology import all_topics

S = TypeVar("S")

log = structlog.get_logger(__name__)
REBUILDS_MAX = 20
REBUILD_PAUSE_S = 1.0


class Runnable(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask the loop to finish its checkpoint and leave the group cleanly."""
    def handler(signum: int, _frame: object) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_until_stopped(build: Callable[[], Runnable], stop: threading.Event, name: str) -> None:
    """Build and run the service; after a fatal (e.g. fenced) error, rebuild it from committed state.

    Rebuilding is bounded: a service that keeps failing exits with the last error so the
    supervisor (systemd, Kubernetes) restarts it and the alert fires.
    """
    for attempt in range(1, REBUILDS_MAX + 1):
        try:
            build().run(stop)
            return
        except FatalProcessorError as error:
            log.error("service_rebuild", service=name, attempt=attempt, error=str(error))
            if stop.is_set() or attempt == REBUILDS_MAX:
                raise
            time.sleep(REBUILD_PAUSE_S)


def processor_config_from_env() -> ProcessorConfig:
    return ProcessorConfig(batch_records_max=int(os.environ.get("PAYMENTS_BATCH_MAX", "500")),
                           batch_time_budget_ms=int(os.environ.get("PAYMENTS_BATCH_BUDGET_MS", "4000")))


def serve(logic_factory: Callable[[], Logic[S]], name: str) -> int:
    """The whole life of a Kafka->Kafka service process: logs, topics, signals, run, rebuild on fatal."""
    configure_logging(name)
    settings = Settings.from_env()
    topics = Topics(settings.topic_prefix)
    ensure_topics(settings.bootstrap_servers, all_topics(topics))
    stop = threading.Event()
    install_signal_handlers(stop)

    def build() -> Processor[S]:
        return Processor(logic_factory(), bootstrap_servers=settings.bootstrap_servers, topics=topics,
                         serde=serde_from_env(), instance_id=settings.instance_id,
                         config=processor_config_from_env())

    run_until_stopped(build, stop, name)
    return 0
