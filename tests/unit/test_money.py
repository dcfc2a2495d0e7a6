import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from payments.money import (
    CURRENCY_EXPONENTS,
    CurrencyMismatchError,
    InvalidAmountError,
    Money,
    MoneyError,
    MoneyOverflowError,
    UnknownCurrencyError,
    exponent,
    is_known_currency,
)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (["JPY", "KRW", "ISK", "CLP", "VND"], 0),
        (
            ["EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "CAD", "AUD", "NZD", "SGD",
             "HKD", "CNY", "INR", "BRL", "MXN", "ZAR"],
            2,
        ),
        (["BHD", "KWD", "OMR", "JOD", "TND", "IQD", "LYD"], 3),
    ],
)
def test_exponent_table_covers_required_currencies(codes: list[str], expected: int) -> None:
    for code in codes:
        assert is_known_currency(code)
        assert exponent(code) == expected


def test_unknown_currency_is_a_typed_money_error() -> None:
    assert not is_known_currency("XXX")
    with pytest.raises(UnknownCurrencyError) as info:
        exponent("XXX")
    assert isinstance(info.value, MoneyError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "EUR", 1234),
        ("12.3", "EUR", 1230),
        ("12", "EUR", 1200),
        ("0.01", "USD", 1),
        ("-0.05", "USD", -5),
        ("1234", "JPY", 1234),
        ("1.234", "BHD", 1234),
        ("0.5", "KWD", 500),
        ("92233720368547758.07", "EUR", 2**63 - 1),
    ],
)
def test_parse_decimal_string_to_minor_units(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(amount_minor=minor, currency=currency)


@pytest.mark.parametrize(
    ("text", "currency"),
    [("12.345", "EUR"), ("1.5", "JPY"), ("1.2345", "BHD"), ("1e3", "EUR"), ("abc", "EUR"), ("", "EUR"),
     ("1.", "EUR"), (".5", "EUR"), ("+1", "EUR"), ("NaN", "EUR"), ("1,5", "EUR")],
)
def test_parse_rejects_malformed_or_too_precise_amounts(text: str, currency: str) -> None:
    with pytest.raises(InvalidAmountError):
        Money.parse(text, currency)


def test_parse_unknown_currency_raises() -> None:
    with pytest.raises(UnknownCurrencyError):
        Money.parse("1.00", "ABC")


@pytest.mark.parametrize("text", ["92233720368547758.08", "-92233720368547758.09", "1" * 40])
def test_parse_overflow_raises_overflow_error(text: str) -> None:
    with pytest.raises(MoneyOverflowError):
        Money.parse(text, "EUR")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(amount_minor=1234, currency="EUR"), "12.34 EUR"),
        (Money(amount_minor=5, currency="EUR"), "0.05 EUR"),
        (Money(amount_minor=-5, currency="USD"), "-0.05 USD"),
        (Money(amount_minor=1234, currency="JPY"), "1234 JPY"),
        (Money(amount_minor=1234, currency="BHD"), "1.234 BHD"),
        (Money(amount_minor=0, currency="KWD"), "0.000 KWD"),
    ],
)
def test_format(money: Money, text: str) -> None:
    assert money.format() == text


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_format_then_parse_round_trips(minor: int, currency: str) -> None:
    money = Money(amount_minor=minor, currency=currency)
    amount, code = money.format().split(" ")
    assert Money.parse(amount, code) == money


def test_add_and_sub_same_currency() -> None:
    a = Money.of(1000, "EUR")
    b = Money.of(250, "EUR")
    assert a.add(b) == Money.of(1250, "EUR")
    assert a.sub(b) == Money.of(750, "EUR")
    assert b.sub(a).amount_minor == -750


def test_mixing_currencies_raises_currency_mismatch() -> None:
    with pytest.raises(CurrencyMismatchError) as info:
        Money.of(1, "EUR").add(Money.of(1, "USD"))
    assert (info.value.left, info.value.right) == ("EUR", "USD")
    with pytest.raises(CurrencyMismatchError):
        Money.of(1, "EUR").sub(Money.of(1, "JPY"))


def test_arithmetic_overflow_raises() -> None:
    with pytest.raises(MoneyOverflowError):
        Money.of(2**63 - 1, "EUR").add(Money.of(1, "EUR"))


def test_money_refuses_floats_and_is_frozen() -> None:
    with pytest.raises(ValidationError):
        Money(amount_minor=12.5, currency="EUR")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Money(amount_minor="12", currency="EUR")  # type: ignore[arg-type]
    money = Money.of(1, "EUR")
    with pytest.raises(ValidationError):
        money.amount_minor = 2  # type: ignore[misc]


def test_money_accepts_unknown_currency_so_validation_can_reject_it_with_a_code() -> None:
    assert Money.of(1, "ZZZ").currency == "ZZZ"
