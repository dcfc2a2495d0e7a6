"""Seeded synthetic payment traffic with injected fraud, to train and test risk models without real data.

No real payment history exists in this project, so models are trained on traffic from this generator.
Its assumptions (docs/risk.md, "Training data") are deliberately simple and stated here in full:

- Customers: each has a home currency, one or two partners, 2 to 8 regular payees and a personal
  typical amount (log-normal around 40 major units, sigma 0.5 per payment). They pay 0.3 to 3 times a
  day, at exponentially distributed gaps, mostly regular payees (one payment in ten goes to a new one).
  Four in ten are there from the start; the others join at a uniform time in the first 80 % of the
  period, so a new account paying is ordinary, not a sign.
  Honest look-alikes make the patterns less than trivial: one payment in a hundred is a big purchase
  (5 to 30 times the typical amount) at a new shop, one in a hundred starts a burst of 3 to 8
  small payments within about an hour, one in twenty is a micro-payment (0.50 to 3.00: transit, an
  app store), half of them to a payee never paid before, and one in twenty-five goes to a person no one
  paid before (a friend, a landlord: a payee as new as a fraudster's).
- Card testing (label `card_testing`): a stolen credential is tried with a burst of 8 to 25 tiny
  payments (0.50 to 3.00) within 30 minutes, to 1 to 3 payees the customer never paid; half the time
  from the victim's account, half from an account the fraudster opened just before.
- Account takeover (`account_takeover`): a taken-over account sends 1 to 4 payments of 8 to 40 times the
  customer's typical amount to new payees within an hour, often through a partner it never used.
- Mule fan-out (`mule_fan_out`): a mule account that received money sends it on within a day to 6 to
  15 distinct new payees, in mid-sized amounts. The victim's payment that feeds the mule is not
  labelled: at that point it looks like a larger payment to a new payee, nothing more.

Failures after approval (`Traffic.failures`, the `payer_failures_7d` feature): a partner refuses most
card tests (6 in 10: invalid card numbers), some takeovers (1 in 10) and mule transfers (1 in 20), and
2 honest payments in 100 (a closed account, a typo); the failure is known 1 to 30 seconds after the
payment. They are drawn from a generator of their own, so the payments are the same with or without them.

Every payment of a pattern is labelled with it; no other payment is. Real fraud is rarer, noisier and adaptive: a
model that does well here has learnt these three patterns, not fraud.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, Protocol

from consumers.risk.features import Attempt
from payments.money import Money
from payments.money import exponent as currency_exponent

Pattern = Literal["card_testing", "account_takeover", "mule_fan_out"]
PATTERNS: Final[tuple[Pattern, ...]] = ("card_testing", "account_takeover", "mule_fan_out")
CURRENCIES: Final = ("EUR", "EUR", "EUR", "GBP", "USD", "JPY")
PARTNERS: Final = ("acme-bank", "globex-pay", "initech-rails")


FAILURE_SHARE: Final[dict[str, float]] = {"card_testing": 0.6, "account_takeover": 0.1, "mule_fan_out": 0.05,
                                           "legit": 0.02}


@dataclass(frozen=True)
class Traffic:
    attempts: tuple[Attempt, ...]   # in time order (ties by payment id)
    labels: dict[str, Pattern]      # fraudulent payment id -> pattern
    failures: dict[str, datetime]   # payment id -> when its failure after approval became known


@dataclass
class _Customer:
    account: str
    currency: str
    partners: tuple[str, ...]
    payees: list[str]
    typical_major: float
    per_day: float
    joined: datetime


def _money(major: float, currency: str) -> Money:
    minor = max(1, round(major * 10 ** currency_exponent(currency)))
    return Money(amount_minor=minor, currency=currency)


def generate(*, seed: int, customers: int, days: int, start: datetime,
             fraud_share: float = 0.03) -> Traffic:
    """`customers` customers over `days` days from `start`; about `fraud_share` of them hit by a pattern."""
    rng = random.Random(seed)
    end = start + timedelta(days=days)
    merchants = [f"merchant-{i:04d}" for i in range(max(20, customers // 5))]
    attempts: list[Attempt] = []
    labels: dict[str, Pattern] = {}
    serial = 0

    def pay(at: datetime, payer: str, payee: str, major: float, *, currency: str, partner: str,
            pattern: Pattern | None = None) -> None:
        nonlocal serial
        serial += 1
        payment_id = f"syn-{seed}-{serial:08d}"
        attempts.append(Attempt(payment_id, at, payer, payee, _money(major, currency), partner))
        if pattern is not None:
            labels[payment_id] = pattern

    people = []
    for i in range(customers):
        people.append(_Customer(
            account=f"customer-{i:06d}", currency=rng.choice(CURRENCIES),
            partners=tuple(rng.sample(PARTNERS, rng.choice((1, 1, 2)))),
            payees=rng.sample(merchants, rng.randint(2, 8)),
            typical_major=math.exp(rng.gauss(math.log(40), 0.8)), per_day=rng.uniform(0.3, 3.0),
            joined=start + timedelta(days=0 if rng.random() < 0.4 else rng.uniform(0, days * 0.8))))
    for person in people:
        at = person.joined + timedelta(days=rng.expovariate(person.per_day))
        while at < end:
            payee = rng.choice(merchants) if rng.random() < 0.1 else rng.choice(person.payees)
            major = person.typical_major * math.exp(rng.gauss(0, 0.5))
            kind = rng.random()
            if kind < 0.01:  # an honest big purchase at a new shop: what a takeover looks like
                payee, major = rng.choice(merchants), person.typical_major * rng.uniform(5, 30)
            elif kind < 0.06:  # a micro-payment (transit, an app store): what one card test looks like
                payee = rng.choice(merchants) if rng.random() < 0.5 else payee
                major = rng.uniform(0.5, 3.0)
            elif kind < 0.10:  # a person no one paid before: a payee as new as a fraudster's
                payee = f"person-{seed}-{serial}"
            pay(at, person.account, payee, major, currency=person.currency, partner=rng.choice(person.partners))
            if rng.random() < 0.01:  # an honest burst (tickets, top-ups): what card testing looks like
                for _ in range(rng.randint(3, 8)):
                    at += timedelta(minutes=rng.uniform(1, 10))
                    pay(at, person.account, rng.choice(merchants), rng.uniform(1, 15), currency=person.currency,
                        partner=person.partners[0])
            at += timedelta(days=rng.expovariate(person.per_day))
    # Fraud begins after the first fifth of the period, so every victim has a history first.
    victims = rng.sample(people, max(len(PATTERNS), round(customers * fraud_share)) if fraud_share > 0 else 0)
    for n, victim in enumerate(victims):
        at = max(victim.joined + timedelta(days=2), start + timedelta(days=rng.uniform(days / 5, days * 0.95)))
        _inject(rng, PATTERNS[n % len(PATTERNS)], victim, at, tag=f"{seed}-{n}", pay=pay)
    attempts.sort(key=lambda a: (a.at, a.payment_id))
    failing = random.Random(seed * 7_919 + 1)
    failures = {a.payment_id: a.at + timedelta(seconds=failing.uniform(1, 30)) for a in attempts
                if failing.random() < FAILURE_SHARE[labels.get(a.payment_id, "legit")]}
    return Traffic(tuple(attempts), labels, failures)


class _Pay(Protocol):
    def __call__(self, at: datetime, payer: str, payee: str, major: float, *, currency: str, partner: str,
                 pattern: Pattern | None = None) -> None: ...


def _inject(rng: random.Random, pattern: Pattern, victim: _Customer, at: datetime, *, tag: str, pay: _Pay) -> None:
    """One occurrence of `pattern` against `victim`, starting at `at` (module docstring)."""
    strangers = [f"stranger-{tag}-{k}" for k in range(16)]
    if pattern == "card_testing":
        targets = strangers[:rng.randint(1, 3)]
        payer = victim.account if rng.random() < 0.5 else f"fresh-{tag}"  # the victim's, or one just opened
        for _ in range(rng.randint(8, 25)):
            at += timedelta(seconds=rng.uniform(10, 110))
            pay(at, payer, rng.choice(targets), rng.uniform(0.5, 3.0), currency=victim.currency,
                partner=rng.choice(victim.partners), pattern=pattern)
    elif pattern == "account_takeover":
        partner = rng.choice(PARTNERS)
        for k in range(rng.randint(1, 4)):
            at += timedelta(minutes=rng.uniform(2, 15))
            pay(at, victim.account, strangers[k], victim.typical_major * rng.uniform(8, 40),
                currency=victim.currency, partner=partner, pattern=pattern)
    else:
        mule = f"mule-{tag}"
        pay(at, victim.account, mule, victim.typical_major * rng.uniform(5, 20), currency=victim.currency,
            partner=victim.partners[0])
        for k in range(rng.randint(6, 15)):
            at += timedelta(minutes=rng.uniform(5, 90))
            pay(at, mule, strangers[k], rng.uniform(80, 400), currency=victim.currency,
                partner=victim.partners[0], pattern=pattern)
