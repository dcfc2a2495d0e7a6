"""Funds participant: balances and holds per account, keyed by ACCOUNT (one instance owns an account).

Commands arrive on funds.commands keyed by the account they touch (ReserveFunds/ReleaseFunds/
CommitFunds `.account`); replies go to funds.replies keyed by payment id, where the orchestrator
reads them. The state per account (`FundsState`) is the fold of this service's own decisions and
is snapshotted to the changelog by the processor in the same transaction as the replies.

Idempotency, two layers:
  * by command id: a redelivered or re-sent command gets the reply it got first (same reply_id);
  * by hold id: a new command for a hold that already reached the asked-for state answers the same
    outcome again (release of a released hold -> RELEASED), so compensation retries are safe.

An account with no state yet starts from the seed file; an account absent from it is unknown.

Retention (docs/participants.md): an account keeps its balances and open holds for ever; a finished
hold and an answered command id are kept `retention` (7 days) after they finished or were answered,
then dropped with the account's next change. A command issued `retention` or longer ago is
dead-lettered (StaleCommand), never applied: what it would repeat may have been forgotten.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from consumers.funds.accounts import (
    RETENTION,
    Account,
    Hold,
    HoldConflictError,
    InvalidFundsCommandError,
    load_seed,
)
from consumers.ids import reply_id
from payments.contracts.codes import CommitOutcome, ReleaseOutcome, ReservationOutcome
from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.contracts.participants import (
    CommitFunds,
    FundsCommitResult,
    FundsReleaseResult,
    FundsReservationResult,
    ReleaseFunds,
    ReserveFunds,
)
from payments.contracts.topics import FUNDS_COMMANDS, FUNDS_REPLIES
from payments.money import Money
from payments.runtime.logic import STATE_CONFIG, Decision, Incoming, InputRejected, JsonState, NoTimers, Outgoing

SERVICE = "funds"
FundsCommand = ReserveFunds | ReleaseFunds | CommitFunds
FundsReply = FundsReservationResult | FundsReleaseResult | FundsCommitResult


class FundsAnswer(BaseModel):
    """A reply already given, by command id, stored so a redelivery repeats it exactly."""

    model_config = STATE_CONFIG

    kind: Literal["reserve", "release", "commit"]
    payment_id: str
    hold_id: str
    outcome: str
    available: Money | None = None
    at: datetime | None = None  # when answered (retention counts from it)


class FundsState(BaseModel):
    model_config = STATE_CONFIG

    account: Account
    answers: dict[str, FundsAnswer] = {}  # in the order answered

    def answered(self, command_id: str, answer: FundsAnswer, forget_before: datetime) -> dict[str, FundsAnswer]:
        """The answers with this one, without those answered at or before `forget_before`."""
        answers = dict(self.answers)  # one C-level copy: a hot account keeps thousands inside the retention
        for earlier_id, earlier in self.answers.items():
            if earlier.at is not None and earlier.at > forget_before:
                break
            del answers[earlier_id]  # answered before answers carried a time count as old too: they are the oldest
        answers[command_id] = answer
        return answers


# -- the changelog in parts (payments.runtime.logic.Parted) ------------------------------------------
# "" the head: account id, balances, overdraft limits; "o/<hold id>" an open hold; "f/<hold id>" a finished
# hold; "a/<command id>" an answer. A change writes the head if a balance moved, and only the holds and
# answers it added or dropped, so the bytes per change do not depend on how many the account keeps.
OPEN, FINISHED, ANSWER = "o/", "f/", "a/"


def _head(state: FundsState) -> bytes:
    bare = state.account.model_copy(update={"holds": {}, "finished": {}})
    return FundsState(account=bare).model_dump_json(exclude_defaults=True).encode()


def _ordered_diff(prefix: str, before: dict[str, Any], after: dict[str, Any]) -> dict[str, bytes | None]:
    """For a dict kept in order, changed only by dropping a prefix and appending: the parts to write."""
    parts: dict[str, bytes | None] = {}
    for key in reversed(after):
        if key in before:
            break
        parts[prefix + key] = after[key].model_dump_json().encode()
    for key in before:
        if key in after:
            break
        parts[prefix + key] = None
    return parts


def encode_parts(before: FundsState | None, after: FundsState | None) -> dict[str, bytes | None]:
    if after is None:
        return {} if before is None else dict.fromkeys(["", *_part_names(before)])
    parts: dict[str, bytes | None] = {}
    old_account = before.account if before is not None else None
    if old_account is None or (old_account.balances, old_account.overdraft_limits) != (
            after.account.balances, after.account.overdraft_limits):
        parts[""] = _head(after)
    old_open = old_account.holds if old_account is not None else {}
    for key, hold in after.account.holds.items():
        if old_open.get(key) != hold:
            parts[OPEN + key] = hold.model_dump_json().encode()
    parts.update(dict.fromkeys((OPEN + key for key in old_open if key not in after.account.holds), None))
    parts.update(_ordered_diff(FINISHED, old_account.finished if old_account else {}, after.account.finished))
    parts.update(_ordered_diff(ANSWER, before.answers if before else {}, after.answers))
    return parts


def _part_names(state: FundsState) -> list[str]:
    return [*(OPEN + k for k in state.account.holds), *(FINISHED + k for k in state.account.finished),
            *(ANSWER + k for k in state.answers)]


def decode_parts(parts: dict[str, bytes]) -> FundsState | None:
    head = parts.get("")
    if head is None:
        return None
    state = FundsState.model_validate_json(head)  # a whole snapshot from before parts also decodes here
    open_holds, finished, answers = dict(state.account.holds), dict(state.account.finished), dict(state.answers)
    for name, data in parts.items():
        if name.startswith(OPEN):
            open_holds[name.removeprefix(OPEN)] = Hold.model_validate_json(data)
        elif name.startswith(FINISHED):
            finished[name.removeprefix(FINISHED)] = Hold.model_validate_json(data)
        elif name.startswith(ANSWER):
            answers[name.removeprefix(ANSWER)] = FundsAnswer.model_validate_json(data)
    oldest = datetime.min.replace(tzinfo=UTC)
    finished = dict(sorted(finished.items(), key=lambda item: item[1].finished_at or oldest))
    answers = dict(sorted(answers.items(), key=lambda item: item[1].at or oldest))
    account = state.account.model_copy(update={"holds": open_holds, "finished": finished})
    return FundsState(account=account, answers=answers)


def reply_of(command_id: str, answer: FundsAnswer) -> FundsReply:
    common = {"payment_id": answer.payment_id, "reply_id": reply_id(SERVICE, command_id),
              "command_id": command_id, "hold_id": answer.hold_id}
    if answer.kind == "reserve":
        return FundsReservationResult.model_validate({**common, "outcome": answer.outcome,
                                                      "available": answer.available})
    if answer.kind == "release":
        return FundsReleaseResult.model_validate({**common, "outcome": answer.outcome})
    return FundsCommitResult.model_validate({**common, "outcome": answer.outcome})


def reserve(account: Account, command: ReserveFunds) -> tuple[Account, ReservationOutcome, Money]:
    amount = command.amount
    if amount.amount_minor <= 0:
        raise InvalidFundsCommandError(f"reserve of non-positive amount {amount.amount_minor} for hold "
                                       f"{command.hold_id}")
    existing = account.hold(command.hold_id)
    if existing is not None:
        if (existing.payment_id, existing.amount, existing.status) != (command.payment_id, amount, "HELD"):
            raise HoldConflictError(f"hold {command.hold_id} exists as {existing.status} for payment "
                                    f"{existing.payment_id} {existing.amount.amount_minor} {existing.amount.currency}")
        return account, "RESERVED", _available(account, amount.currency)
    if not account.can_reserve(amount):
        return account, "INSUFFICIENT_FUNDS", _available(account, amount.currency)
    after = account.reserve(command.hold_id, command.payment_id, amount)
    return after, "RESERVED", _available(after, amount.currency)


def release(account: Account, hold_id: str, now: datetime) -> tuple[Account, ReleaseOutcome]:
    hold = account.hold(hold_id)
    if hold is None or hold.status == "COMMITTED":  # a committed debit cannot be released: refunds reverse it
        return account, "UNKNOWN_HOLD"
    if hold.status == "RELEASED":
        return account, "RELEASED"
    return account.release(hold_id, now), "RELEASED"


def commit(account: Account, hold_id: str, now: datetime) -> tuple[Account, CommitOutcome]:
    hold = account.hold(hold_id)
    if hold is None or hold.status == "RELEASED":
        return account, "UNKNOWN_HOLD"
    if hold.status == "COMMITTED":
        return account, "COMMITTED"
    # The payee's credit is not booked here (no message type for it yet): see docs/participants.md.
    return account.commit(hold_id, now), "COMMITTED"


def _available(account: Account, currency: str) -> Money:
    return Money.of(account.balance(currency).available, currency)


class FundsLogic(JsonState[FundsState], NoTimers[FundsState]):
    """The `Logic` of the funds service. Seed accounts are read once, at construction."""

    state_model = FundsState
    service: ClassVar[str] = SERVICE
    input_topics: ClassVar[tuple[str, ...]] = (FUNDS_COMMANDS,)
    output_topics: ClassVar[tuple[str, ...]] = (FUNDS_REPLIES,)

    def __init__(self, seed: dict[str, Account] | None = None, seed_path: Path | None = None,
                 retention: timedelta = RETENTION) -> None:
        self.seed = seed if seed is not None else load_seed(seed_path)
        self.retention = retention

    def key_of(self, message: Message, envelope: Envelope) -> str:
        if isinstance(message, ReserveFunds | ReleaseFunds | CommitFunds):
            return message.account
        return message.payment_id

    def encode_parts(self, before: FundsState | None, after: FundsState | None) -> dict[str, bytes | None]:
        return encode_parts(before, after)

    def decode_parts(self, parts: dict[str, bytes]) -> FundsState | None:
        return decode_parts(parts)

    def decide(self, state: FundsState | None, incoming: Incoming, now: datetime) -> Decision[FundsState]:
        command = incoming.message
        if not isinstance(command, ReserveFunds | ReleaseFunds | CommitFunds):
            return Decision(state)
        if state is not None and command.command_id in state.answers:
            return self._reply(state, command.command_id, state.answers[command.command_id])
        forget_before = now - self.retention
        if command.issued_at <= forget_before:
            raise InputRejected("StaleCommand", "stale_command", f"{type(command).__name__} {command.command_id} "
                                f"was issued at {command.issued_at.isoformat()}, {self.retention} or more ago: "
                                "not applied")
        if state is None:
            seeded = self.seed.get(command.account)
            if seeded is None:
                return self._unknown_account(command)
            state = FundsState(account=seeded)
        account = state.account
        if isinstance(command, ReserveFunds):
            account, reserved, available = reserve(account, command)
            answer = FundsAnswer(kind="reserve", payment_id=command.payment_id, hold_id=command.hold_id,
                                 outcome=reserved, available=available)
        elif isinstance(command, ReleaseFunds):
            account, released = release(account, command.hold_id, now)
            answer = FundsAnswer(kind="release", payment_id=command.payment_id, hold_id=command.hold_id,
                                 outcome=released)
        else:
            account, committed = commit(account, command.hold_id, now)
            answer = FundsAnswer(kind="commit", payment_id=command.payment_id, hold_id=command.hold_id,
                                 outcome=committed)
        answer = answer.model_copy(update={"at": now})
        # Built from models already valid: validating a hot account's thousands of answers again would make
        # every command cost O(what the account keeps) in pydantic (20 ms at 20,000 answers).
        new_state = FundsState.model_construct(account=account.forget_finished(forget_before),
                                               answers=state.answered(command.command_id, answer, forget_before))
        return self._reply(new_state, command.command_id, answer)

    def _unknown_account(self, command: FundsCommand) -> Decision[FundsState]:
        # No state is kept for an unknown account: the reply is a function of the command alone.
        if isinstance(command, ReserveFunds):
            answer = FundsAnswer(kind="reserve", payment_id=command.payment_id, hold_id=command.hold_id,
                                 outcome="ACCOUNT_UNKNOWN")
        else:
            kind: Literal["release", "commit"] = "release" if isinstance(command, ReleaseFunds) else "commit"
            answer = FundsAnswer(kind=kind, payment_id=command.payment_id, hold_id=command.hold_id,
                                 outcome="UNKNOWN_HOLD")
        return Decision(None, (Outgoing(FUNDS_REPLIES, command.payment_id, reply_of(command.command_id, answer)),))

    @staticmethod
    def _reply(state: FundsState, command_id: str, answer: FundsAnswer) -> Decision[FundsState]:
        return Decision(state, (Outgoing(FUNDS_REPLIES, answer.payment_id, reply_of(command_id, answer)),))
