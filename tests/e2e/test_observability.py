"""Metrics on real processes, scraped by a real Prometheus.

On the e2e package's shared pipeline (every service and projection, each serving /metrics on its own
health port): payments of several outcomes and one undecodable command go through; then
- the orchestrator's outcome counters equal the terminal events on payments.events, one for one;
- the intake counts the dead letter, the partner gateway its calls, the projections what they applied,
  the ledger nets to 0 per currency, the status projection reports payments in flight;
- every metric the alert rules and the Grafana dashboard use is in the live exposition;
- a Prometheus server (Debian's package, fetched by ops.stack.prometheus) scrapes every process with
  the project's rules loaded: every target is up, every rule evaluates without error, and a query of
  its HTTP API agrees with the scrape.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from ops.stack.prometheus import PrometheusServer
from ops.supervisor import ServiceProcess, free_port
from payments.contracts.messages import (
    Message,
    PaymentCancelled,
    PaymentFailed,
    PaymentRejected,
    PaymentSettled,
)
from tests.e2e.pipeline import Pipeline
from tests.support import make_initiate, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "payments.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "payments-dashboard.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(service: ServiceProcess) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.health_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for (sample, have), value in samples.items()
               if sample == name and set(labels.items()) <= have)


def outcomes_in_metrics(samples: Samples) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for (name, labels), value in samples.items():
        if name == "payments_payment_outcomes_total" and value:
            have = dict(labels)
            found[(have["outcome"], have["reason_code"])] += int(value)
    return found


def outcomes_in_events(events: list[Message]) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for event in events:
        match event:
            case PaymentSettled():
                found[("SETTLED", "")] += 1
            case PaymentFailed():
                found[("FAILED", event.reason_code)] += 1
            case PaymentCancelled():
                found[("CANCELLED", "")] += 1
            case PaymentRejected() if event.seq == 1 and event.reason_code != "UNKNOWN_PAYMENT":
                found[("REJECTED", event.reason_code)] += 1
    return found


def metric_names_used() -> set[str]:
    """Every exported metric (not recording rule) the rules and the dashboard's queries name."""
    texts = [RULES.read_text()]
    texts += [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    names = {name for text in texts for name in re.findall(r"\b(payments_[a-z_]+)", text)}
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


def query(server: PrometheusServer, promql: str) -> list[dict[str, object]]:
    url = f"{server.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_metrics_count_what_happened_and_prometheus_scrapes_them(pipeline: Pipeline, tmp_path: Path) -> None:
    by_args = {" ".join(s.args): s for s in pipeline.services}
    intake, orchestrator = by_args["intake"], by_args["orchestrator"]
    dead_before = total(scrape(intake), "payments_records_dead_lettered_total", service="intake",
                        topic="payments.commands")

    commands = [make_initiate(payer_account="acc-alice", payee_account="acc-bob") for _ in range(3)]
    commands += [make_initiate(payer_account="acc-blocked", payee_account="acc-bob"),   # risk declines
                 make_initiate(payer_account="acc-poor", payee_account="acc-bob", amount_minor=50_000)]  # no funds
    pipeline.send(*commands)
    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    producer.produce(pipeline.topics.commands, key=b"not-a-payment", value=b"\x00not avro at all")
    assert producer.flush(30) == 0
    for command in commands:
        pipeline.wait_events(command.payment_id, (PaymentSettled, PaymentFailed))

    # The orchestrator's counters are the terminal events on the log, one for one (every payment the shared
    # pipeline has seen, this test's and the earlier tests').
    expected: Counter[tuple[str, str]] = Counter()

    def counted_as_logged() -> bool:
        nonlocal expected
        expected = outcomes_in_events(pipeline.topic("payments.events"))
        return outcomes_in_metrics(scrape(orchestrator)) == expected

    wait_for(counted_as_logged, 60, "the orchestrator's outcome counters to equal the terminal events")
    samples = scrape(orchestrator)
    assert expected[("SETTLED", "")] >= 3 and sum(v for (o, _), v in expected.items() if o == "FAILED") >= 2
    settled_durations = total(samples, "payments_saga_duration_seconds_count", outcome="SETTLED")
    assert settled_durations == expected[("SETTLED", "")]
    # Every payment came through the intake, which stamps its publish time: each outcome has a latency.
    for outcome in ("SETTLED", "FAILED"):
        assert total(samples, "payments_payment_latency_seconds_count", outcome=outcome) == sum(
            count for (name, _), count in expected.items() if name == outcome)
    assert total(samples, "payments_records_processed_total", service="orchestrator", topic="payments.admitted") > 0
    assert total(samples, "payments_transaction_commit_duration_seconds_count", service="orchestrator") > 0
    assert total(samples, "payments_partitions_owned", service="orchestrator") > 0

    wait_for(lambda: total(scrape(intake), "payments_records_dead_lettered_total", service="intake",
                           topic="payments.commands") == dead_before + 1,
             30, "the intake to count the undecodable command")
    partner = scrape(by_args["partner"])
    assert total(partner, "payments_partner_call_duration_seconds_count", partner="simbank", operation="submit") >= 3
    assert total(partner, "payments_partner_breaker_state", partner="simbank") == 0  # closed
    ledger = scrape(by_args["projection ledger"])
    nets = {dict(labels)["currency"]: value for (name, labels), value in ledger.items()
            if name == "payments_ledger_net"}
    assert nets.get("EUR") == 0 and all(value == 0 for value in nets.values()), nets
    assert total(ledger, "payments_records_processed_total", service="projection-ledger") > 0
    status = scrape(by_args["projection payment_status"])
    assert {dict(labels)["status"] for (name, labels) in status if name == "payments_in_flight"} >= {
        "SUBMITTED", "COMPENSATION_FAILED"}

    # Every metric the alert rules and the dashboard use is exported by some process.
    exported = {name for service in pipeline.services for (name, _) in scrape(service)}
    exported |= {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in exported}
    missing = {name for name in metric_names_used() if name not in exported and f"{name}_total" not in exported}
    assert not missing, f"used by deploy/prometheus or deploy/grafana, exported by no process: {sorted(missing)}"

    # A real Prometheus scrapes every process with the project's rules.
    targets = [f"127.0.0.1:{s.health_port}" for s in pipeline.services]
    config = (f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n"
              f"rule_files: ['{RULES}']\n"
              f"scrape_configs:\n  - job_name: payments\n    static_configs:\n      - targets: {json.dumps(targets)}\n")
    server = PrometheusServer(tmp_path / "prometheus", free_port(), config)
    server.start()
    try:
        wait_for(lambda: [r["value"][1] for r in query(server, 'count(up{job="payments"} == 1)')] == [  # type: ignore[index]
            str(len(targets))], 60, f"Prometheus to scrape all {len(targets)} processes")
        direct = sum(outcomes_in_metrics(scrape(orchestrator)).values())
        wait_for(lambda: [r["value"][1] for r in query(server, "sum(payments_payment_outcomes_total)")] == [  # type: ignore[index]
            str(direct)], 30, f"Prometheus' sum of outcomes to equal the scrape ({direct})")
        assert query(server, "payments_ledger_net != 0") == []
        assert query(server, "payments_ledger_net"), "no ledger series in Prometheus"

        def rules_evaluated() -> bool:
            with urllib.request.urlopen(f"{server.url}/api/v1/rules", timeout=5) as response:
                groups = json.loads(response.read())["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            assert all(rule["health"] != "err" for rule in rules), [r for r in rules if r["health"] == "err"]
            return bool(rules) and all(rule["health"] == "ok" for rule in rules)

        wait_for(rules_evaluated, 30, "every rule to be evaluated")
        firing = [r["metric"] for r in query(server, 'ALERTS{alertstate="firing", severity="page"}')]
        assert not [a for a in firing if a.get("alertname") in ("LedgerImbalanced", "PaymentsTargetDown")], firing  # type: ignore[union-attr]
    finally:
        server.stop()
