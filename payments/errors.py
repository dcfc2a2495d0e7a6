"""The root of every error the kernel (`payments`) raises on purpose.

Each layer below has its own root under this one: `payments.contracts.errors.ContractError` (a
record that cannot be decoded or encoded), `payments.money.MoneyError` (an amount that is not
money), `payments.runtime.errors.ServiceError` (the exactly-once loop and its Kafka adapters).
A caller that must never crash on our errors catches `PaymentsError`; driver errors (confluent-kafka,
psycopg) are translated into these at the adapter edge and never leak past it.
"""

from __future__ import annotations


class PaymentsError(Exception):
    """Root of the kernel's errors."""
