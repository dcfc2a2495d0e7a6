"""Account identifiers never reach a log line whole: the structlog processor masks them in every value,
nested ones and the formatted exception too, keeping a prefix and the last characters."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from payments.observability import configure_logging, mask_account, mask_accounts

ACCOUNT = "acc-00001234"
IBAN = "DE89370400440532013000"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _logged_line(capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, object]]:
    line = capsys.readouterr().err.strip().splitlines()[-1]
    return line, json.loads(line)


@pytest.mark.parametrize(("account", "masked"), [
    ("acc-00001234", "acc-****1234"),
    ("acc_00001234", "acc_****1234"),
    ("acc-alice", "acc-****ce"),  # a short id shows at most half of what follows the prefix
    ("acc-bob", "acc-****b"),
    (IBAN, "DE****3000"),
    ("x", "****"),
])
def test_an_account_id_keeps_its_prefix_and_at_most_its_last_four_characters(account: str, masked: str) -> None:
    assert mask_account(account) == masked


def test_a_logged_line_never_contains_a_full_account_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("masking-test")
    log = structlog.get_logger("test")
    log.info("funds_reserved", payer_account=ACCOUNT, payee_account="acc-payee-99887766", amount_minor=1250,
             currency="EUR", payment_id="3f2b8c1e-9a4d-4c5e-8f7a-1b2c3d4e5f60",
             detail=f"INSUFFICIENT_FUNDS on {ACCOUNT}",
             nested={"legs": [{"account": "plain-name-7777"}, {"iban": IBAN}], "note": f"from {IBAN} to x"})
    line, logged = _logged_line(capsys)

    for whole in (ACCOUNT, "acc-payee-99887766", "plain-name-7777", IBAN):
        assert whole not in line
    assert logged["payer_account"] == "acc-****1234"
    assert logged["payee_account"] == "acc-****7766"
    assert logged["detail"] == "INSUFFICIENT_FUNDS on acc-****1234"
    assert logged["nested"] == {"legs": [{"account": "pl****7777"}, {"iban": "DE****3000"}],
                                "note": "from DE****3000 to x"}
    # Everything else is left as it was.
    assert (logged["event"], logged["amount_minor"], logged["currency"], logged["service"]) == (
        "funds_reserved", 1250, "EUR", "masking-test")
    assert logged["payment_id"] == "3f2b8c1e-9a4d-4c5e-8f7a-1b2c3d4e5f60"


def test_an_exception_message_with_an_account_id_is_masked_in_the_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("masking-test")
    log = structlog.get_logger("test")
    try:
        raise ValueError(f"no such account {ACCOUNT}")
    except ValueError:
        log.exception("reservation_failed")
    line, logged = _logged_line(capsys)

    assert ACCOUNT not in line
    assert "no such account acc-****1234" in str(logged["exception"])


def test_an_object_whose_repr_names_an_account_is_masked_as_it_would_be_printed() -> None:
    class Holder:
        def __repr__(self) -> str:
            return f"Holder(account={ACCOUNT!r})"

    masked = mask_accounts(None, "info", {"event": "x", "holder": Holder(), "ids": ("acc-a1", 3)})

    assert masked == {"event": "x", "holder": "Holder(account='acc-****1234')", "ids": ["acc-****1", 3]}


def test_a_line_written_inside_a_span_carries_its_trace_and_span_ids() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from payments.observability import add_trace_ids

    tracer = TracerProvider().get_tracer("test")  # a provider of its own: the global one stays untouched
    with tracer.start_as_current_span("process payments.events") as span:
        inside = add_trace_ids(None, "info", {"event": "x"})
    outside = add_trace_ids(None, "info", {"event": "y"})
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}" and inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside and "span_id" not in outside
