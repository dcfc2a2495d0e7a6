"""The supervisor's own plumbing: the ports it hands to processes it starts (health servers, brokers, the partner
simulator), and a start that fails leaving nothing running."""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

import pytest

from ops import supervisor
from ops.supervisor import ServiceProcess, free_port, start_all


def test_ports_are_distinct_bindable_and_outside_the_range_the_kernel_gives_outgoing_connections() -> None:
    low, high = supervisor._ephemeral_ports()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports)
    for port in ports[:20]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        # The first 50 candidates are the busy port: free_port must skip it, not return it.
        calls = itertools.chain([busy] * 50, range(busy + 1, 65536), range(1024, busy))
        monkeypatch.setattr(supervisor, "_ephemeral_ports", lambda: (65536, 65536))
        monkeypatch.setattr(supervisor, "_PORTS_FLOOR", 1024)

        class Sequence:
            def randrange(self, _a: int, _b: int) -> int:
                return next(calls)

        monkeypatch.setattr(supervisor, "_rng", Sequence())
        port = free_port()
    assert port != busy


def test_a_start_that_fails_stops_the_services_it_had_started(tmp_path: Path) -> None:
    env = {**os.environ, "PAYMENTS_PARTNER_SIM_PORT": str(free_port()),
           "PAYMENTS_PARTNER_DATA_DIR": str(tmp_path / "partner")}
    simulator = ServiceProcess(["partner-sim"], log_dir=tmp_path, env=env)  # no Kafka needed: it gets ready
    broken = ServiceProcess(["no-such-service"], log_dir=tmp_path, env=env)  # exits at once
    with pytest.raises(RuntimeError, match="exited before it was ready"):
        start_all([simulator, broken], timeout_s=30)
    assert simulator.process is not None and simulator.process.poll() is not None, "the simulator was left running"
