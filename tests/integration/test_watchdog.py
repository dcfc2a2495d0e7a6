"""The watchdog ends a real process that is stuck: a transactional call that never returns (as
librdkafka's send_offsets_to_transaction can, #5456), and a SIGTERM that arrives while the main thread
is blocked in C, where no Python signal handler can run. Subprocesses; no broker needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from payments.runtime.watchdog import EXIT_STUCK

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

STUCK_PROCESSOR = textwrap.dedent("""
    import threading
    from payments.observability import configure_logging
    from payments.runtime.config import ProcessorConfig
    from payments.runtime.processor import Processor
    from payments.runtime.watchdog import Watchdog
    from payments.contracts.envelope import build_headers
    from tests.unit.runtime.fakes import FakeBroker, fake_clients
    from tests.unit.runtime.test_processor import SERDE, TOPICS, CountingLogic, command

    configure_logging("stuck-test")
    clients, consumer, producer = fake_clients(FakeBroker(), TOPICS.changelog("counter"))
    def never_returns(*args, **kwargs):
        threading.Event().wait()  # blocked, like a coordinator request that is never timed out
    producer.send_offsets_to_transaction = never_returns
    watchdog = Watchdog("stuck-test", check_interval_s=0.2).start()
    config = ProcessorConfig(call_timeout_s=1.0, watchdog_margin_s=1.0)
    processor = Processor(CountingLogic(), clients=clients, topics=TOPICS, serde=SERDE, instance_id="i",
                          config=config, watchdog=watchdog)
    item = command()
    producer.broker.append(TOPICS.commands, item.payment_id.encode(), SERDE.encode(item),
                           [*build_headers(item, source="test", traceparent=None)])
    processor.run(threading.Event())
""")

BLOCKED_IN_C = textwrap.dedent("""
    import ctypes, signal, sys
    from payments.observability import configure_logging
    from payments.runtime.watchdog import Watchdog

    configure_logging("blocked-test")
    signal.signal(signal.SIGTERM, lambda *_: None)  # the Python handler does nothing: only the wakeup fd tells
    watchdog = Watchdog("blocked-test", stop_grace_s=1.0, check_interval_s=0.2)
    watchdog.watch_signals()
    watchdog.start()
    print("ready", flush=True)
    libc = ctypes.CDLL(None)
    while True:
        libc.pause()  # in C; returns only to run the (no-op) handler, then blocks again
""")


def _run(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_transactional_call_that_never_returns_ends_the_process_with_the_watchdog_code() -> None:
    process = _run(STUCK_PROCESSOR)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == EXIT_STUCK, output
    assert '"event": "watchdog_call_stuck"' in output and '"call": "send_offsets_to_transaction"' in output


def test_sigterm_stops_a_process_whose_main_thread_is_blocked_in_c_within_the_grace_period() -> None:
    process = _run(BLOCKED_IN_C)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == EXIT_STUCK, output
    assert time.monotonic() - started < 10
    assert '"event": "watchdog_stop_forced"' in output
