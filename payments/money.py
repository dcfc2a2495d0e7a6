"""Money: an integer amount of minor units plus an ISO 4217 alphabetic code.

There is no float anywhere on this path: amounts are parsed from decimal strings with
integer arithmetic on their digits and stored as `int` minor units (cents, yen, fils, ...). The exponent of
a currency (how many minor-unit digits it has) comes from the ISO 4217 table below.

`Money` itself accepts any currency string so that a decoded message with an
unknown currency can be rejected with a reason code (see `payments.contracts.validation`)
instead of failing to decode; the helpers that need the exponent (`parse`, `format`) raise
`UnknownCurrencyError` for codes outside the table.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from payments.errors import PaymentsError

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# ISO 4217 alphabetic code -> minor-unit exponent. Not exhaustive: the currencies we
# route plus the usual 0- and 3-decimal ones. Add a code here before accepting it.
CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    # 0 decimals
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "PYG": 0, "UGX": 0, "XAF": 0, "XOF": 0,
    # 2 decimals
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2,
    "HUF": 2, "RON": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SGD": 2, "HKD": 2, "CNY": 2, "INR": 2,
    "BRL": 2, "MXN": 2, "ZAR": 2, "TRY": 2, "ILS": 2, "AED": 2, "SAR": 2, "THB": 2,
    # 3 decimals
    "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3, "IQD": 3, "LYD": 3,
}  # fmt: skip

_DECIMAL_STRING = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


class MoneyError(PaymentsError, ValueError):
    """Root of every money error."""


class UnknownCurrencyError(MoneyError):
    def __init__(self, currency: str) -> None:
        super().__init__(f"unknown ISO 4217 currency code: {currency!r}")
        self.currency = currency


class CurrencyMismatchError(MoneyError):
    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"cannot combine {left} with {right}")
        self.left = left
        self.right = right


class InvalidAmountError(MoneyError):
    """A decimal string that is malformed or has more decimals than its currency allows."""


class MoneyOverflowError(MoneyError):
    """The result does not fit the signed 64-bit Avro `long` that carries it on the wire."""


def is_known_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def exponent(currency: str) -> int:
    """Number of minor-unit digits of `currency` (2 for EUR, 0 for JPY, 3 for BHD)."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrencyError(currency) from None


def _checked(amount_minor: int) -> int:
    if not INT64_MIN <= amount_minor <= INT64_MAX:
        raise MoneyOverflowError(f"amount {amount_minor} does not fit in a signed 64-bit integer")
    return amount_minor


class Money(BaseModel):
    """An amount in minor units of an ISO 4217 currency. Immutable; never a float."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_minor: Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
    currency: str

    @classmethod
    def of(cls, amount_minor: int, currency: str) -> Money:
        return cls(amount_minor=amount_minor, currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount_minor=0, currency=currency)

    @classmethod
    def parse(cls, amount: str, currency: str) -> Money:
        """Parse a decimal string like "12.34" in `currency` ("12.34", "EUR") -> 1234 EUR.

        Rejects more fractional digits than the currency has, exponents, signs other than a
        leading minus, and anything that is not a plain decimal string.
        """
        digits = exponent(currency)
        text = amount.strip()
        if not _DECIMAL_STRING.match(text):
            raise InvalidAmountError(f"not a decimal amount: {amount!r}")
        whole, _, fraction = text.partition(".")
        if len(fraction) > digits:
            raise InvalidAmountError(f"{amount!r} has more than {digits} decimals allowed for {currency}")
        # Pure integer arithmetic on the digits: no float, no Decimal context rounding.
        minor = int(whole + fraction.ljust(digits, "0"))
        return cls(amount_minor=_checked(minor), currency=currency)

    def format(self) -> str:
        """"12.34 EUR", "1234 JPY", "1.234 BHD", "-0.05 USD"."""
        digits = exponent(self.currency)
        sign = "-" if self.amount_minor < 0 else ""
        magnitude = abs(self.amount_minor)
        if digits == 0:
            return f"{sign}{magnitude} {self.currency}"
        whole, fraction = divmod(magnitude, 10**digits)
        return f"{sign}{whole}.{fraction:0{digits}d} {self.currency}"

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatchError(self.currency, other.currency)

    def add(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(amount_minor=_checked(self.amount_minor + other.amount_minor), currency=self.currency)

    def sub(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(amount_minor=_checked(self.amount_minor - other.amount_minor), currency=self.currency)

    def negate(self) -> Money:
        return Money(amount_minor=_checked(-self.amount_minor), currency=self.currency)

    def is_positive(self) -> bool:
        return self.amount_minor > 0
