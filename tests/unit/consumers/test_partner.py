from __future__ import annotations

import uuid

from consumers.ids import reply_id
from consumers.partner.client import PartnerUnavailableError, QueryOutcome, SubmissionOutcome
from consumers.partner.logic import PartnerGatewayLogic, PartnerState
from payments.contracts.participants import (
    PartnerQueryResult,
    PartnerSubmissionResult,
    QueryPartnerPayment,
    SubmitToPartner,
)
from payments.contracts.topics import PARTNER_COMMANDS, PARTNER_REPLIES
from payments.money import Money
from tests.unit.consumers.helpers import NOW, incoming

EUR_10 = Money.of(1000, "EUR")


# -- gateway logic --------------------------------------------------------------------------------

class CountingPartner:
    def __init__(self, outcome: SubmissionOutcome, fail: bool = False) -> None:
        self.outcome = outcome
        self.fail = fail
        self.calls = 0

    def submit(self, submission_id: str, amount: Money, payer: str, payee: str) -> SubmissionOutcome:
        self.calls += 1
        if self.fail:
            raise PartnerUnavailableError("connection refused")
        return self.outcome

    def query(self, submission_id: str) -> QueryOutcome:
        self.calls += 1
        if self.fail:
            raise PartnerUnavailableError("connection refused")
        return QueryOutcome("ACCEPTED", "REF-1")


def submit_command() -> SubmitToPartner:
    return SubmitToPartner(payment_id="pay-1", command_id=str(uuid.uuid4()), issued_at=NOW, partner="simbank",
                           submission_id="pay-1:1", amount=EUR_10, payer_account="acc-a", payee_account="acc-b")


def gateway_reply(logic: PartnerGatewayLogic, command: SubmitToPartner | QueryPartnerPayment,
                  state: PartnerState | None = None) -> tuple[PartnerState | None, object]:
    decision = logic.decide(state, incoming(command, PARTNER_COMMANDS), NOW)
    (out,) = decision.outgoing
    assert out.destination == PARTNER_REPLIES and out.key == command.payment_id
    return decision.state, out.message


def test_gateway_replies_with_the_partner_outcome() -> None:
    logic = PartnerGatewayLogic(CountingPartner(SubmissionOutcome("ACCEPTED", "REF-1")))
    command = submit_command()
    _, reply = gateway_reply(logic, command)
    assert isinstance(reply, PartnerSubmissionResult)
    assert (reply.outcome, reply.partner_reference, reply.submission_id) == ("ACCEPTED", "REF-1", "pay-1:1")
    assert reply.reply_id == reply_id("partner", command.command_id)


def test_gateway_redelivery_repeats_the_reply_without_calling_the_partner() -> None:
    partner = CountingPartner(SubmissionOutcome("DECLINED", reason_code="NO"))
    logic = PartnerGatewayLogic(partner)
    command = submit_command()
    state, first = gateway_reply(logic, command)
    again_state, again = gateway_reply(logic, command, state)
    assert again == first and again_state == state and partner.calls == 1
    assert logic.decode_state(logic.encode_state(state)) == state  # type: ignore[arg-type]


def test_gateway_query_and_unreachable_partner() -> None:
    query = QueryPartnerPayment(payment_id="pay-1", command_id=str(uuid.uuid4()), issued_at=NOW, partner="simbank",
                                submission_id="pay-1:1")
    _, reply = gateway_reply(PartnerGatewayLogic(CountingPartner(SubmissionOutcome("ACCEPTED"))), query)
    assert isinstance(reply, PartnerQueryResult) and (reply.status, reply.partner_reference) == ("ACCEPTED", "REF-1")
    down = PartnerGatewayLogic(CountingPartner(SubmissionOutcome("ACCEPTED"), fail=True))
    _, reply = gateway_reply(down, query)
    assert isinstance(reply, PartnerQueryResult) and reply.status == "PENDING"
    _, reply = gateway_reply(down, submit_command())
    assert isinstance(reply, PartnerSubmissionResult)
    assert (reply.outcome, reply.reason_code) == ("ERROR", "PARTNER_UNAVAILABLE")
