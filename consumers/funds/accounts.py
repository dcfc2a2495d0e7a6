"""Account state of the funds participant and the pure operations on it.

All amounts are integer minor units. Per account and currency:
  available + held + debited == opening balance   (money is conserved; asserted after every change)
  available >= -overdraft_limit                    (never below the limit; asserted after every change)
  held == sum of the HELD holds in that currency
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from consumers.errors import ParticipantError
from payments.money import Money, MoneyError
from payments.runtime.logic import STATE_CONFIG

SEED_FILE: Final = "seed-accounts.json"
# Finished (released/committed) holds and answered command ids are kept this long for idempotent replies.
RETENTION: Final = timedelta(days=7)

HoldStatus = Literal["HELD", "RELEASED", "COMMITTED"]
NonNegative = Annotated[int, Field(ge=0)]


class FundsError(ParticipantError):
    """Root of the funds participant's errors."""


class SeedError(FundsError):
    """The seed accounts file is missing or invalid."""


class HoldConflictError(FundsError):
    """A ReserveFunds reuses a hold id for another payment, amount, or a hold that already finished.

    Hold ids are single-use and derived by the orchestrator; this is a bug upstream, so the record
    goes to the dead-letter topic (the processor does that for any exception from `decide`).
    """


class InvalidFundsCommandError(FundsError):
    """A command the orchestrator should never send (e.g. a non-positive amount)."""


class Balance(BaseModel):
    model_config = STATE_CONFIG

    opening: int
    available: int
    held: NonNegative = 0
    debited: NonNegative = 0


class Hold(BaseModel):
    model_config = STATE_CONFIG

    payment_id: str
    amount: Money
    status: HoldStatus = "HELD"
    finished_at: datetime | None = None  # when released or committed (retention counts from it)


class Account(BaseModel):
    """One account's state: the changelog snapshot of the funds service, keyed by account id."""

    model_config = STATE_CONFIG

    account: str
    balances: dict[str, Balance]
    overdraft_limits: dict[str, NonNegative] = {}
    holds: dict[str, Hold] = {}  # open (HELD) holds
    finished: dict[str, Hold] = {}  # released and committed holds, in the order they finished

    @model_validator(mode="before")
    @classmethod
    def _split_finished(cls, data: object) -> object:
        """A snapshot from before `finished` existed kept every hold in `holds`: move the finished ones."""
        if isinstance(data, dict) and isinstance(data.get("holds"), dict):
            holds = data["holds"]
            done = {k: h for k, h in holds.items() if isinstance(h, dict) and h.get("status", "HELD") != "HELD"}
            if done:
                data = {**data, "holds": {k: h for k, h in holds.items() if k not in done},
                        "finished": {**data.get("finished", {}), **done}}
        return data

    def hold(self, hold_id: str) -> Hold | None:
        """The hold, open or finished (and not yet forgotten)."""
        return self.holds.get(hold_id) or self.finished.get(hold_id)

    def balance(self, currency: str) -> Balance:
        return self.balances.get(currency, Balance(opening=0, available=0))

    def limit(self, currency: str) -> int:
        return self.overdraft_limits.get(currency, 0)

    def can_reserve(self, amount: Money) -> bool:
        return self.balance(amount.currency).available - amount.amount_minor >= -self.limit(amount.currency)

    def reserve(self, hold_id: str, payment_id: str, amount: Money) -> Account:
        assert self.can_reserve(amount) and self.hold(hold_id) is None
        before = self.balance(amount.currency)
        after = before.model_copy(update={"available": before.available - amount.amount_minor,
                                          "held": before.held + amount.amount_minor})
        holds = {**self.holds, hold_id: Hold(payment_id=payment_id, amount=amount)}
        return self._with(amount.currency, after, holds)

    def release(self, hold_id: str, now: datetime) -> Account:
        hold = self.holds[hold_id]
        assert hold.status == "HELD"
        before = self.balance(hold.amount.currency)
        after = before.model_copy(update={"available": before.available + hold.amount.amount_minor,
                                          "held": before.held - hold.amount.amount_minor})
        return self._with(hold.amount.currency, after, *self._finish(hold_id, "RELEASED", now))

    def commit(self, hold_id: str, now: datetime) -> Account:
        """The held amount leaves the account: a debit of the payer."""
        hold = self.holds[hold_id]
        assert hold.status == "HELD"
        before = self.balance(hold.amount.currency)
        after = before.model_copy(update={"held": before.held - hold.amount.amount_minor,
                                          "debited": before.debited + hold.amount.amount_minor})
        return self._with(hold.amount.currency, after, *self._finish(hold_id, "COMMITTED", now))

    def _finish(self, hold_id: str, status: HoldStatus, now: datetime) -> tuple[dict[str, Hold], dict[str, Hold]]:
        """(open holds, finished holds) once `hold_id` finished: appended, so `finished` is in finishing order."""
        holds = {key: hold for key, hold in self.holds.items() if key != hold_id}
        done = self.holds[hold_id].model_copy(update={"status": status, "finished_at": now})
        return holds, {**self.finished, hold_id: done}

    def forget_finished(self, before: datetime) -> Account:
        """Without the holds finished at or before `before` (open holds always stay). `finished` is in the
        order they finished, so this drops a prefix and stops at the first one finished later."""
        old = 0
        for hold in self.finished.values():
            if hold.finished_at is not None and hold.finished_at > before:
                break
            old += 1  # finished before holds carried a time counts as old: those are the oldest
        if not old:
            return self
        return self.model_copy(update={"finished": dict(list(self.finished.items())[old:])})

    def _with(self, currency: str, balance: Balance, holds: dict[str, Hold],
              finished: dict[str, Hold] | None = None) -> Account:
        update: dict[str, object] = {"balances": {**self.balances, currency: balance}, "holds": holds}
        if finished is not None:
            update["finished"] = finished
        account = self.model_copy(update=update)
        account.check_invariants(currency)
        return account

    def check_invariants(self, currency: str) -> None:
        balance = self.balance(currency)
        assert balance.available >= -self.limit(currency), f"{self.account} {currency} below its limit"
        assert balance.available + balance.held + balance.debited == balance.opening, "money not conserved"
        held = sum(hold.amount.amount_minor for hold in self.holds.values() if hold.amount.currency == currency)
        assert held == balance.held, f"{self.account} {currency} held {balance.held} != holds {held}"


class SeedAccount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    balances: dict[str, str]  # currency -> decimal string in major units, e.g. "1000000.00"
    overdraft_limits: dict[str, str] = {}


class SeedFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    accounts: dict[str, SeedAccount]


def _minor(text: str, currency: str) -> int:
    return Money.parse(text, currency).amount_minor


def parse_seed(data: object) -> dict[str, Account]:
    try:
        seed = SeedFile.model_validate(data)
        accounts = {
            name: Account(
                account=name,
                balances={cur: Balance(opening=_minor(v, cur), available=_minor(v, cur))
                          for cur, v in entry.balances.items()},
                overdraft_limits={cur: _minor(v, cur) for cur, v in entry.overdraft_limits.items()})
            for name, entry in seed.accounts.items()}
    except (ValidationError, MoneyError) as error:
        raise SeedError(f"invalid seed accounts: {error}") from error
    for account in accounts.values():
        for currency in account.balances:
            if account.balance(currency).available < -account.limit(currency):
                raise SeedError(f"{account.account} {currency} opens below its limit")
    return accounts


def load_seed(path: Path | None = None) -> dict[str, Account]:
    """The demo's opening accounts; the packaged seed file when `path` is None."""
    try:
        if path is None:
            text = resources.files("consumers.funds").joinpath(SEED_FILE).read_text("utf-8")
        else:
            text = path.read_text("utf-8")
        data = json.loads(text)
    except (OSError, json.JSONDecodeError) as error:
        raise SeedError(f"cannot read seed accounts: {error}") from error
    return parse_seed(data)
