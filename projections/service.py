"""A projection process: `payments run projection <name>`."""

from __future__ import annotations

import os
import threading

from payments.config import Settings
from payments.contracts.codec import serde_from_env
from payments.observability import configure_logging
from payments.runtime.service import install_signal_handlers, run_until_stopped
from payments.runtime.topics import Topics, ensure_topics
from payments.runtime.topology import all_topics
from projections.ledger import LedgerProjection
from projections.migrate import migrate
from projections.report import SettlementReportProjection
from projections.runner import Projection, ProjectionRunner, RunnerConfig
from projections.status import PaymentStatusProjection

PROJECTIONS: dict[str, type[Projection]] = {
    "payment_status": PaymentStatusProjection,
    "ledger": LedgerProjection,
    "settlement_report": SettlementReportProjection,
}


def build(name: str, settings: Settings) -> ProjectionRunner:
    config = RunnerConfig(batch_records_max=int(os.environ.get("PAYMENTS_PROJECTION_BATCH_MAX", "1000")))
    return ProjectionRunner(PROJECTIONS[name](), bootstrap_servers=settings.bootstrap_servers,
                            database_url=settings.database_url, topics=Topics(settings.topic_prefix),
                            serde=serde_from_env(), config=config)


def main(name: str) -> int:
    if name not in PROJECTIONS:
        raise SystemExit(f"unknown projection {name!r}; known: {', '.join(sorted(PROJECTIONS))}")
    configure_logging(f"projection-{name}")
    settings = Settings.from_env()
    ensure_topics(settings.bootstrap_servers, all_topics(Topics(settings.topic_prefix)))
    migrate(settings.database_url)
    stop = threading.Event()
    install_signal_handlers(stop)
    run_until_stopped(lambda: build(name, settings), stop, f"projection-{name}")
    return 0
