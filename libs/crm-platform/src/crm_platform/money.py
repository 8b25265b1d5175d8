"""Money as services store it (NUMERIC(18,2) and a currency), send it over gRPC (Money:
units and nanos) and over REST (a decimal string, exact where a JSON number is not)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from crm.common.v1 import money_pb2
from crm_platform.errors import FieldViolation, InvalidArgument

NANOS = 9
MAX_NANOS = 999_999_999
# What NUMERIC(18,2) holds: 16 digits before the point, 2 after.
AMOUNT_LIMIT = Decimal(10) ** 16
CENT = Decimal("0.01")
CURRENCY_CODE_RE = re.compile(r"^[A-Z]{3}$")


def decimal_to_money(amount: Decimal, currency_code: str) -> money_pb2.Money:
    # int() truncates toward zero, so nanos keep the sign of units as Money requires.
    units = int(amount)
    nanos = int((amount - units).scaleb(NANOS))
    return money_pb2.Money(currency_code=currency_code, units=units, nanos=nanos)


def _exact(money: money_pb2.Money) -> Decimal:
    return Decimal(money.units) + Decimal(money.nanos).scaleb(-NANOS)


def _money_amount(
    money: money_pb2.Money, field_name: str, violations: list[FieldViolation]
) -> Decimal | None:
    if abs(money.nanos) > MAX_NANOS or money.units * money.nanos < 0:
        violations.append(
            FieldViolation(f"{field_name}.nanos", "within ±999999999 and of the same sign as units")
        )
        return None
    return _exact(money)


def money_to_decimal(money: money_pb2.Money, field_name: str) -> Decimal:
    """Exact amount of a client's Money; nanos out of range or of the other sign than units
    are a field violation, not a silently different amount."""
    violations: list[FieldViolation] = []
    amount = _money_amount(money, field_name, violations)
    if amount is None:
        raise InvalidArgument.from_violations(violations)
    return amount


def _decimal_amount(
    raw: str | Decimal, field_name: str, violations: list[FieldViolation]
) -> Decimal | None:
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        violations.append(FieldViolation(field_name, "not a decimal number"))
        return None
    if not amount.is_finite():
        violations.append(FieldViolation(field_name, "must be a finite number"))
        return None
    return amount


def parse_amount(
    raw: str | Decimal | money_pb2.Money | None,
    field_name: str,
    violations: list[FieldViolation],
) -> Decimal:
    """A non-negative amount of whole cents below 10^16, from a REST decimal string, a gRPC
    Money, or a Decimal taken from either. Violations join ``violations`` and name the part
    the client sent: ``<field>.amount`` for a string or Decimal, ``<field>.units`` /
    ``<field>.nanos`` for Money; None is ``<field>: required``. 0 when invalid."""
    if raw is None:
        violations.append(FieldViolation(field_name, "required"))
        return Decimal(0)
    if isinstance(raw, money_pb2.Money):
        amount = _money_amount(raw, field_name, violations)
        size_field, cents_field = f"{field_name}.units", f"{field_name}.nanos"
    else:
        size_field = cents_field = f"{field_name}.amount"
        amount = _decimal_amount(raw, size_field, violations)
    if amount is None:
        return Decimal(0)
    if amount < 0:
        violations.append(FieldViolation(size_field, "must not be negative"))
    elif amount >= AMOUNT_LIMIT:
        violations.append(FieldViolation(size_field, "at most 16 digits before the decimal point"))
    elif amount != amount.quantize(CENT):
        # Rejected rather than rounded: money is what the client meant exactly.
        violations.append(FieldViolation(cents_field, "at most 2 decimal places"))
    else:
        return abs(amount.quantize(CENT))  # abs: "-0" is a valid zero, stored as 0.00
    return Decimal(0)


def money_json(money: money_pb2.Money) -> dict[str, str]:
    """REST's shape of money, the one clients send: {"currency_code", "amount": "5000.50"},
    cents always shown, finer digits only where there are any."""
    amount = _exact(money)
    cents = amount.quantize(CENT)
    return {
        "currency_code": money.currency_code,
        "amount": f"{cents if cents == amount else amount.normalize():f}",
    }
