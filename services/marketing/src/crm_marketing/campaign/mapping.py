from __future__ import annotations

from decimal import Decimal
from typing import Any

from crm.common.v1 import money_pb2
from crm.marketing.v1 import campaign_pb2
from crm_platform.errors import invalid
from crm_platform.protos import etag, timestamp

NANOS = 9


def decimal_to_money(amount: Decimal, currency_code: str) -> money_pb2.Money:
    # int() truncates toward zero, so nanos keep the sign of units as Money requires.
    units = int(amount)
    nanos = int((amount - units).scaleb(NANOS))
    return money_pb2.Money(currency_code=currency_code, units=units, nanos=nanos)


def money_to_decimal(money: money_pb2.Money, field_name: str) -> Decimal:
    """Exact amount of a client's Money; nanos out of range or of the other sign than
    units are a field violation, not a silently different amount."""
    if abs(money.nanos) > 999_999_999 or money.units * money.nanos < 0:
        raise invalid(f"{field_name}.nanos", "within ±999999999 and of the sign of units")
    return Decimal(money.units) + Decimal(money.nanos).scaleb(-NANOS)


def campaign_to_proto(row: Any) -> campaign_pb2.Campaign:
    return campaign_pb2.Campaign(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        name=row.name,
        channel=row.channel,
        status=row.status,
        budget=decimal_to_money(row.budget, row.currency),
        start_date=row.start_date.isoformat(),
        end_date=row.end_date.isoformat(),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
    )
