"""Pure platform pieces that services validate and map with: money, violations, enum
names, optional ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from crm.common.v1 import money_pb2
from crm.marketing.v1 import campaign_pb2
from crm.servicedesk.v1 import ticket_pb2
from crm_platform.errors import FieldViolation, InvalidArgument, invalid
from crm_platform.http import proto_json
from crm_platform.ids import parse_optional_id
from crm_platform.money import decimal_to_money, money_json, money_to_decimal, parse_amount
from crm_platform.protos import enum_by_short_name, parse_enum, timestamp
from crm_platform.validation import is_email


def cny(units: int, nanos: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="CNY", units=units, nanos=nanos)


@pytest.mark.parametrize(
    ("amount", "units", "nanos"),
    [
        ("0", 0, 0),
        ("5000.50", 5000, 500_000_000),
        ("0.01", 0, 10_000_000),
        ("-1.25", -1, -250_000_000),
        ("9999999999999999.99", 9_999_999_999_999_999, 990_000_000),
    ],
)
def test_money_round_trip(amount: str, units: int, nanos: int) -> None:
    money = decimal_to_money(Decimal(amount), "CNY")
    assert (money.currency_code, money.units, money.nanos) == ("CNY", units, nanos)
    assert money_to_decimal(money, "budget") == Decimal(amount)


@pytest.mark.parametrize(("units", "nanos"), [(5, -1), (-5, 1), (0, 1_000_000_000)])
def test_money_with_bad_nanos_is_a_field_violation(units: int, nanos: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        money_to_decimal(cny(units, nanos), "budget")
    assert [v.field for v in err.value.violations] == ["budget.nanos"]
    assert err.value.reason == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12345.67", Decimal("12345.67")),
        (" 1234567.5 ", Decimal("1234567.50")),
        ("0", Decimal("0.00")),
        ("-0", Decimal("0.00")),
        (Decimal("10"), Decimal("10.00")),
        (cny(99, 990_000_000), Decimal("99.99")),
    ],
)
def test_amount_accepted(raw: str | Decimal | money_pb2.Money, expected: Decimal) -> None:
    violations: list[FieldViolation] = []
    assert parse_amount(raw, "amount", violations) == expected
    assert violations == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("ten", "amount.amount"),
        ("NaN", "amount.amount"),
        ("Infinity", "amount.amount"),
        ("-1", "amount.amount"),
        ("1e16", "amount.amount"),
        ("12.345", "amount.amount"),
        (Decimal("0.001"), "amount.amount"),
        (cny(-1, 0), "amount.units"),
        (cny(10**16, 0), "amount.units"),
        (cny(1, 1_000_000), "amount.nanos"),
        (cny(5, -1), "amount.nanos"),
        (None, "amount"),
    ],
)
def test_amount_rejected_names_the_field_sent(
    raw: str | Decimal | money_pb2.Money | None, field: str
) -> None:
    violations: list[FieldViolation] = []
    assert parse_amount(raw, "amount", violations) == Decimal(0)
    assert [v.field for v in violations] == [field]


@pytest.mark.parametrize(
    ("money", "amount"),
    [
        (cny(5000, 500_000_000), "5000.50"),
        (cny(0, 0), "0.00"),
        (cny(1_234_567, 0), "1234567.00"),
        (cny(1, 1_000_000), "1.001"),
        (cny(-3, -50_000_000), "-3.05"),
    ],
)
def test_money_json_is_a_decimal_string_with_cents(money: money_pb2.Money, amount: str) -> None:
    assert money_json(money) == {"currency_code": "CNY", "amount": amount}


def test_proto_json_writes_money_as_clients_send_it() -> None:
    campaign = campaign_pb2.Campaign(name="Spring", budget=cny(5000, 500_000_000))
    body = proto_json(campaign)
    assert body["budget"] == {"currency_code": "CNY", "amount": "5000.50"}
    assert body["name"] == "Spring"
    assert "budget" not in proto_json(campaign_pb2.Campaign(name="No budget"))


def test_proto_json_finds_money_at_any_depth_and_skips_types_without_any() -> None:
    from google.protobuf.json_format import MessageToDict

    from crm.leads.v1 import lead_pb2
    from crm.sales.v1 import opportunity_pb2, sales_service_pb2

    page = sales_service_pb2.ListOpportunitiesResponse(
        opportunities=[
            opportunity_pb2.Opportunity(title="A", amount=cny(12, 0)),
            opportunity_pb2.Opportunity(title="B"),
        ]
    )
    body = proto_json(page)
    assert body["opportunities"][0]["amount"] == {"currency_code": "CNY", "amount": "12.00"}
    assert "amount" not in body["opportunities"][1]
    # A type that cannot hold Money is the plain proto3 JSON mapping.
    lead = lead_pb2.Lead(id="x", intents=[lead_pb2.LeadIntent(id="i", source="web")])
    plain = MessageToDict(
        lead, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert proto_json(lead) == plain


def test_from_violations_lists_every_violation() -> None:
    violations = [FieldViolation("title", "required"), FieldViolation("stage", "one of A, B")]
    err = InvalidArgument.from_violations(violations, reason="OPPORTUNITY_INVALID")
    assert err.message == "title: required; stage: one of A, B"
    assert err.reason == "OPPORTUNITY_INVALID"
    assert err.violations == violations
    assert InvalidArgument.from_violations(violations).reason == "INVALID_ARGUMENT"
    single = invalid("id", "must be a UUID")
    assert (single.message, single.violations) == (
        "id: must be a UUID",
        [FieldViolation("id", "must be a UUID")],
    )


def test_enum_short_names_drop_prefix_and_unspecified() -> None:
    assert enum_by_short_name(campaign_pb2.CampaignChannel) == {
        "EMAIL": campaign_pb2.CAMPAIGN_CHANNEL_EMAIL,
        "SMS": campaign_pb2.CAMPAIGN_CHANNEL_SMS,
        "EVENT": campaign_pb2.CAMPAIGN_CHANNEL_EVENT,
        "SOCIAL": campaign_pb2.CAMPAIGN_CHANNEL_SOCIAL,
    }


PRIORITIES = enum_by_short_name(ticket_pb2.TicketPriority)
NORMAL = ticket_pb2.TICKET_PRIORITY_NORMAL


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        ("HIGH", None, ticket_pb2.TICKET_PRIORITY_HIGH),
        (" ＨＩＧＨ ", None, ticket_pb2.TICKET_PRIORITY_HIGH),  # full-width, as clean_text folds
        (ticket_pb2.TICKET_PRIORITY_LOW, None, ticket_pb2.TICKET_PRIORITY_LOW),
        ("", NORMAL, NORMAL),
        (0, NORMAL, NORMAL),
    ],
)
def test_enum_name_or_number_parsed(raw: int | str, default: int | None, expected: int) -> None:
    violations: list[FieldViolation] = []
    assert parse_enum(raw, PRIORITIES, "priority", violations, default=default) == expected
    assert violations == []


@pytest.mark.parametrize("raw", ["CRITICAL", "UNSPECIFIED", "TICKET_PRIORITY_HIGH", "", 0, 42])
def test_bad_enum_value_lists_the_names(raw: int | str) -> None:
    violations: list[FieldViolation] = []
    parse_enum(raw, PRIORITIES, "priority", violations)
    assert violations == [FieldViolation("priority", "one of LOW, NORMAL, HIGH, URGENT")]


def test_optional_id() -> None:
    violations: list[FieldViolation] = []
    some = uuid.uuid4()
    assert parse_optional_id(f" {some} ", "customer_id", violations) == some
    assert parse_optional_id("", "customer_id", violations) is None
    assert parse_optional_id("   ", "customer_id", violations) is None
    assert violations == []
    assert parse_optional_id("cust-1", "customer_id", violations) is None
    assert violations == [FieldViolation("customer_id", "must be a UUID")]


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 24, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 11, 24, 11, 4, 5, 1, tzinfo=timezone(timedelta(hours=8))),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before the epoch
        datetime(2099, 1, 1, 0, 0, 0),  # naive: UTC, as FromDatetime reads it
    ],
)
def test_timestamp_equals_protobufs_own_conversion(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected


@pytest.mark.parametrize(
    "address",
    [
        "a@b.co",
        "zhang.san@example.com",
        "li+tag@mail.example.cn",
        "o'neil@ex-ample.com",
        "张三@例子.中国",  # an IDN domain is checked in its IDNA form
        "x@xn--fiqs8s.cn",
    ],
)
def test_addresses_that_look_deliverable(address: str) -> None:
    assert is_email(address)


@pytest.mark.parametrize(
    "address",
    [
        "a@..com",
        "a@-x-.com",
        "a@x_y!.com",
        "a@b,c.com",
        "a@[1.2.3.4].com",
        "a@b",
        "a@b.c",
        "a@b.123",
        "@b.com",
        "a b@c.com",
        "a..b@c.com",
        ".a@c.com",
        "a@b..com",
        "a@b.com.",
        "a@@b.com",
        "a@" + "x" * 64 + ".com",
        "x" * 65 + "@b.com",
    ],
)
def test_addresses_whose_syntax_or_domain_is_wrong(address: str) -> None:
    assert not is_email(address)
