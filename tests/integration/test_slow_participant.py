"""A slow partner must not stall its partition: batches are cut short to stay inside the transaction."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest

from ops.supervisor import start_all
from payments.contracts.messages import PaymentSettled, SubmitToPartner
from payments.contracts.topics import PARTNER_COMMANDS
from payments.runtime.topics import Topics
from tests.support import COMMAND_PATH, decode_all, make_initiate, produce, read_all, service, setup_topics, wait_for

pytestmark = pytest.mark.integration


def test_slow_partner_calls_cut_batches_short_and_every_payment_settles_once(
        kafka_bootstrap: str, postgres_server_url: str) -> None:
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka_bootstrap, topics)
    log_dir = Path(tempfile.mkdtemp(prefix="slow-partner-"))
    env = {"PAYMENTS_PARTNER_LATENCY_MS": "40,60", "PAYMENTS_PARTNER_DECLINE_RATE": "0",
           "PAYMENTS_PARTNER_TIMEOUT_RATE": "0", "PAYMENTS_PARTNER_DATA_DIR": str(log_dir / "partner"),
           "PAYMENTS_BATCH_BUDGET_MS": "300"}
    processes = start_all([service([name], bootstrap=kafka_bootstrap, database_url=postgres_server_url,
                                   topics=topics, log_dir=log_dir, extra_env=env)
                           for name in (*COMMAND_PATH, "risk", "funds", "partner")])
    commands = [make_initiate(amount_minor=10 + i, payer_account="acc-alice", payee_account="acc-bob")
                for i in range(60)]
    produce(kafka_bootstrap, topics.commands, commands, key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
    try:
        wait_for(lambda: len({e.payment_id for e in decode_all(read_all(kafka_bootstrap, topics.events))
                              if isinstance(e, PaymentSettled)}) == 60, 120, "60 settled payments")
    finally:
        for process in processes:
            assert process.stop() == 0, process.log_tail()
    partner_log = next(p for p in processes if p.args == ["partner"]).log_path.read_text()
    assert "batch_cut_short" in partner_log  # the budget was hit, and nothing was lost or doubled for it
    settled = [e for e in decode_all(read_all(kafka_bootstrap, topics.events)) if isinstance(e, PaymentSettled)]
    assert sorted(e.payment_id for e in settled) == sorted(c.payment_id for c in commands)
    submissions = [c for c in decode_all(read_all(kafka_bootstrap, topics.name(PARTNER_COMMANDS)))
                   if isinstance(c, SubmitToPartner)]
    assert len(submissions) == 60
