"""The orchestrator process: `payments run orchestrator`."""

from __future__ import annotations

import os
import threading

from orchestrator.saga import OrchestratorLogic, SagaState
from payments.config import Settings
from payments.contracts.codec import serde_from_env
from payments.observability import configure_logging
from payments.runtime.processor import Processor, ProcessorConfig
from payments.runtime.service import install_signal_handlers, run_until_stopped
from payments.runtime.topics import Topics, ensure_topics
from payments.runtime.topology import all_topics


def build(settings: Settings) -> Processor[SagaState]:
    topics = Topics(settings.topic_prefix)
    config = ProcessorConfig(batch_records_max=int(os.environ.get("PAYMENTS_BATCH_MAX", "500")))
    return Processor(OrchestratorLogic(), bootstrap_servers=settings.bootstrap_servers, topics=topics,
                     serde=serde_from_env(), instance_id=settings.instance_id, config=config)


def main() -> int:
    configure_logging("orchestrator")
    settings = Settings.from_env()
    ensure_topics(settings.bootstrap_servers, all_topics(Topics(settings.topic_prefix)))
    stop = threading.Event()
    install_signal_handlers(stop)
    run_until_stopped(lambda: build(settings), stop, "orchestrator")
    return 0
