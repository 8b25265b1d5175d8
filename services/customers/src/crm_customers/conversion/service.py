"""The conversion step (match or create a customer and contact; undo) and the tenant's
matching rules. Keyword-only functions taking the connection; they never commit.

Every conversion id has one ``conversion_records`` row, locked first: the prepare and the
undo of a conversion serialise on it whatever order they arrive in, and a repeated command
gets the reply the first one got. Concurrent conversions of the same company serialise on
advisory locks of its matching keys, so they end with one customer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.customers.v1 import commands_pb2, events_pb2
from crm_customers.conversion import rules
from crm_customers.conversion.models import conversion_records, customer_match_rules
from crm_customers.conversion.rules import MatchKeys
from crm_customers.customer import contact_rules
from crm_customers.customer import service as customer_service
from crm_customers.customer.contact_rules import ContactFields
from crm_customers.customer.models import (
    contact_tags,
    contacts,
    customer_tags,
    customers,
    field_changes,
)
from crm_platform import records
from crm_platform.auth import ROLE_ADMIN, ROLE_INTEGRATION, Principal
from crm_platform.errors import DomainError, FieldViolation, InvalidArgument, NotFound
from crm_platform.outbox import add_event, deferred
from crm_platform.tenant_cache import TenantCache

PRODUCER = "customers"
PREPARED = "crm.customers.conversion.prepared.v1"
FAILED = "crm.customers.conversion.failed.v1"
UNDONE = "crm.customers.conversion.undone.v1"


@dataclass(frozen=True)
class Context:
    """Where the command came from: replies carry its tenant and correlation."""

    tenant_id: uuid.UUID
    correlation_id: str
    causation_id: str
    org_path: str  # the command envelope's, for replies about nothing owned


@dataclass(frozen=True)
class MatchRules:
    keys: tuple[str, ...]
    version: int  # 0: never written, the defaults apply
    update_time: datetime | None


async def _emit(
    conn: AsyncConnection, ctx: Context, event_type: str, payload: Message, org_path: str
) -> None:
    await add_event(
        conn,
        event_type=event_type,
        payload=payload,
        tenant_id=ctx.tenant_id,
        org_path=org_path or ctx.org_path,
        producer=PRODUCER,
        correlation_id=ctx.correlation_id,
        causation_id=ctx.causation_id,
    )


def _uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


# -- matching rules -----------------------------------------------------------------------


async def _read_rules(conn: AsyncConnection, tenant_id: uuid.UUID) -> Any:
    return (
        await conn.execute(
            sa.select(customer_match_rules).where(customer_match_rules.c.tenant_id == tenant_id)
        )
    ).first()


def _parsed_rules(row: Any) -> MatchRules:
    return MatchRules(tuple(row._mapping["keys"]), row.version, row.update_time)


# Every conversion step reads the rules: cached per tenant (crm_platform.tenant_cache: other
# replicas see a change within its TTL, this one at once).
RULES = TenantCache(
    read=_read_rules, parse=_parsed_rules, default=MatchRules(rules.DEFAULT_KEYS, 0, None)
)


async def get_rules(*, conn: AsyncConnection, tenant_id: uuid.UUID) -> MatchRules:
    """The tenant's stored rules (the defaults when it never wrote any)."""
    return await RULES.latest(conn, tenant_id)


async def put_rules(
    *, conn: AsyncConnection, principal: Principal, keys: tuple[str, ...]
) -> MatchRules:
    """Replace the tenant's matching keys (tenant admins only)."""
    principal.require_any([ROLE_ADMIN])
    table = customer_match_rules
    stmt = insert(table).values(tenant_id=principal.tenant_id, keys=list(keys))
    upsert = stmt.on_conflict_do_update(
        index_elements=[table.c.tenant_id],
        set_={
            "keys": stmt.excluded["keys"],
            "version": table.c.version + 1,
            "update_time": sa.func.now(),
        },
    ).returning(table)
    row = (await conn.execute(upsert)).one()
    stored = _parsed_rules(row)
    RULES.remember(principal.tenant_id, stored)
    return stored


# -- the record ---------------------------------------------------------------------------


async def _claim(
    conn: AsyncConnection, ctx: Context, conversion_id: uuid.UUID, lead_id: str, state: str
) -> tuple[Any, bool]:
    """The conversion's record, locked; inserted with ``state`` if it was missing."""
    return await records.claim(
        conn,
        conversion_records,
        conversion_records.c.conversion_id,
        {
            "conversion_id": conversion_id,
            "tenant_id": ctx.tenant_id,
            "lead_id": lead_id,
            "state": state,
            "org_path": ctx.org_path,
        },
    )


async def _set_record(conn: AsyncConnection, conversion_id: uuid.UUID, **values: Any) -> Any:
    return (
        await conn.execute(
            conversion_records.update()
            .where(conversion_records.c.conversion_id == conversion_id)
            .values(**values, update_time=sa.func.now())
            .returning(*conversion_records.c)
        )
    ).one()


def _failed(conversion_id: str, lead_id: str, reason: str, message: str) -> Message:
    return events_pb2.ConversionFailed(
        conversion_id=conversion_id, lead_id=lead_id, reason=reason, message=message
    )


async def _reply_recorded(conn: AsyncConnection, ctx: Context, record: Any) -> None:
    """A repeated command answers as the first one did; after an undo it is refused."""
    cid = str(record.conversion_id)
    if record.state == "prepared":
        await _emit(conn, ctx, PREPARED, _prepared(record), record.org_path)
    elif record.state == "failed":
        failed = _failed(cid, record.lead_id, record.reason, record.message)
        await _emit(conn, ctx, FAILED, failed, record.org_path)
    else:
        failed = _failed(cid, record.lead_id, "CONVERSION_UNDONE", "the conversion was undone")
        await _emit(conn, ctx, FAILED, failed, record.org_path)


def _prepared(record: Any) -> Message:
    return events_pb2.ConversionPrepared(
        conversion_id=str(record.conversion_id),
        lead_id=record.lead_id,
        customer_id=str(record.customer_id),
        contact_id=str(record.contact_id) if record.contact_id else "",
        customer_created=record.customer_created,
        contact_created=record.contact_created,
    )


# -- prepare ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    customer: Any
    contact: Any | None
    customer_created: bool
    contact_created: bool


async def prepare(
    *,
    conn: AsyncConnection,
    ctx: Context,
    cmd: commands_pb2.PrepareConversion,
    phone_region: str,
    now: datetime,
) -> None:
    """Match or create the customer and contact of a converting lead and stage the reply:
    crm.customers.conversion.prepared.v1, or .failed.v1 for a business failure (nothing
    written but the record). Transient errors propagate (the command is redelivered)."""
    conversion_id = _uuid(cmd.conversion_id)
    if conversion_id is None:
        failed = _failed(
            cmd.conversion_id, cmd.lead_id, "CONVERSION_INVALID", "conversion_id: not a UUID"
        )
        await _emit(conn, ctx, FAILED, failed, cmd.owner_org_path)
        return
    record, new = await _claim(conn, ctx, conversion_id, cmd.lead_id, "pending")
    if not new and record.state != "pending":
        await _reply_recorded(conn, ctx, record)
        return
    try:
        # A failure rolls the savepoint back and drops the events staged in it.
        async with conn.begin_nested(), deferred(conn):
            outcome = await _prepare(conn, ctx, conversion_id, cmd, phone_region, now)
    except (DomainError, IntegrityError) as exc:
        if isinstance(exc, DomainError):
            reason, message = exc.reason, exc.message
        else:
            reason, message = "CONVERSION_CONFLICT", str(exc.orig)
        record = await _set_record(
            conn,
            conversion_id,
            state="failed",
            reason=reason,
            message=message,
            org_path=cmd.owner_org_path or ctx.org_path,
        )
        await _reply_recorded(conn, ctx, record)
        return
    record = await _set_record(
        conn,
        conversion_id,
        state="prepared",
        customer_id=outcome.customer.id,
        contact_id=outcome.contact.id if outcome.contact is not None else None,
        customer_created=outcome.customer_created,
        contact_created=outcome.contact_created,
        org_path=outcome.customer.owner_org_path,
    )
    await _reply_recorded(conn, ctx, record)


def _phone_key(raw: str, region: str) -> str:
    violations: list[FieldViolation] = []
    return contact_rules.phone(raw, "phone", region, violations)


# Taken in the array's order (a function scan returns unnest's rows in order): one
# statement for all of a conversion's match keys.
_ADVISORY_LOCKS = sa.text(
    "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(CAST(:keys AS text[])) AS k"
)


async def _advisory_locks(conn: AsyncConnection, keys: list[str]) -> None:
    if keys:  # sorted by the caller: one lock order for everybody
        await conn.execute(_ADVISORY_LOCKS, {"keys": keys})


def _visible_from(path: str) -> sa.ColumnElement[bool]:
    return customers.c.owner_org_path.startswith(path, autoescape=True)


async def _locked_customer(
    conn: AsyncConnection, tenant_id: uuid.UUID, customer_id: uuid.UUID, path: str
) -> Any:
    return (
        await conn.execute(
            sa.select(customers)
            .where(
                customers.c.tenant_id == tenant_id,
                customers.c.id == customer_id,
                _visible_from(path),
            )
            .with_for_update()
        )
    ).first()


def _match_condition(kind: str, keys: MatchKeys) -> sa.ColumnElement[bool]:
    c = customers.c
    if kind == rules.TAX_ID:
        # The empty-string guards let the partial indexes serve a generic plan too.
        return sa.and_(c.tax_id == keys.tax_id, c.tax_id != "")
    if kind == rules.NAME_CITY:
        return sa.and_(c.match_name == keys.match_name, c.city == keys.city)
    return sa.and_(c.phone == keys.phone, c.phone != "")


async def _match_locked(
    conn: AsyncConnection, tenant_id: uuid.UUID, path: str, keys: MatchKeys, order: tuple[str, ...]
) -> Any:
    """The oldest visible customer matching the first key (in the tenant's order) that
    matches any, locked; one statement whatever the number of keys."""
    conditions = [_match_condition(kind, keys) for kind in order if keys.present(kind)]
    if not conditions:
        return None
    rank = sa.case(*((cond, i) for i, cond in enumerate(conditions)), else_=len(conditions))
    return (
        await conn.execute(
            sa.select(customers)
            .where(customers.c.tenant_id == tenant_id, _visible_from(path), sa.or_(*conditions))
            .order_by(rank, customers.c.id)
            .limit(1)
            .with_for_update(of=customers)
        )
    ).first()


def _owner(ctx: Context, cmd: commands_pb2.PrepareConversion) -> Principal:
    org_unit_id = _uuid(cmd.owner_org_id)
    violations = []
    if org_unit_id is None:
        violations.append(FieldViolation("owner_org_id", "not a UUID"))
    if not cmd.owner_org_path:
        violations.append(FieldViolation("owner_org_path", "required"))
    if violations or org_unit_id is None:
        raise InvalidArgument.from_violations(violations, reason="CUSTOMER_INVALID")
    return Principal(
        tenant_id=ctx.tenant_id,
        subject=cmd.actor or "lead-conversion",
        org_unit_id=org_unit_id,
        org_path=cmd.owner_org_path,
        roles=frozenset({ROLE_INTEGRATION}),
    )


async def _prepare(
    conn: AsyncConnection,
    ctx: Context,
    conversion_id: uuid.UUID,
    cmd: commands_pb2.PrepareConversion,
    phone_region: str,
    now: datetime,
) -> _Outcome:
    # Candidates are what the converting user can see: a sibling dealer's customers never
    # match (nor does their existence show).
    path = cmd.actor_org_path or cmd.owner_org_path
    if not path:
        raise InvalidArgument(
            "actor_org_path: required",
            reason="CUSTOMER_INVALID",
            violations=[FieldViolation("actor_org_path", "required")],
        )
    if cmd.customer_id:
        explicit = _uuid(cmd.customer_id)
        customer = None
        if explicit is not None:
            customer = await _locked_customer(conn, ctx.tenant_id, explicit, path)
        if customer is None:
            raise NotFound(
                f"customer {cmd.customer_id} not found",
                reason="CUSTOMER_NOT_FOUND",
                metadata={"customer": cmd.customer_id},
            )
    else:
        keys = MatchKeys(
            tax_id=rules.tax_key(cmd.tax_id),
            match_name=rules.match_name(cmd.display_name),
            city=rules.city_key(cmd.city),
            phone=_phone_key(cmd.phone, phone_region),
        )
        await _advisory_locks(conn, keys.lock_keys(ctx.tenant_id))
        order = (await RULES.current(conn, ctx.tenant_id)).keys
        customer = await _match_locked(conn, ctx.tenant_id, path, keys, order)
        if customer is None:
            # A new customer is created with its contact, as a REST create with contacts is:
            # one customer version, announced with the contact in it (adding the contact
            # afterwards would write the customer a second time for its etag). The contact
            # is checked first so that a bad one fails as CONTACT_INVALID before any write.
            fields = _contact_fields(cmd)
            if fields is not None:
                contact_rules.validate_new_contact(fields, phone_region=phone_region, now=now)
            customer, its_contacts = await customer_service.create(
                conn=conn,
                principal=_owner(ctx, cmd),
                kind=cmd.kind,
                profile={
                    "display_name": cmd.display_name,
                    "tax_id": cmd.tax_id,
                    "phone": cmd.phone,
                    "email": cmd.email,
                    "province": cmd.province,
                    "city": cmd.city,
                },
                custom_values={},
                contact_fields=() if fields is None else (fields,),
                parent_id=None,
                request_id=conversion_id,
                phone_region=phone_region,
                now=now,
            )
            contact = its_contacts[0] if its_contacts else None
            return _Outcome(customer, contact, True, contact is not None)
    contact, contact_created = await _contact(conn, customer, conversion_id, cmd, phone_region, now)
    return _Outcome(customer, contact, False, contact_created)


def _contact_fields(cmd: commands_pb2.PrepareConversion) -> ContactFields | None:
    """The command's contact, if it names one at all."""
    if not (cmd.contact_full_name or cmd.contact_phone or cmd.contact_email):
        return None
    return ContactFields(
        full_name=cmd.contact_full_name,
        title=cmd.contact_title,
        phone=cmd.contact_phone,
        email=cmd.contact_email,
    )


async def _contact(
    conn: AsyncConnection,
    customer: Any,
    conversion_id: uuid.UUID,
    cmd: commands_pb2.PrepareConversion,
    phone_region: str,
    now: datetime,
) -> tuple[Any | None, bool]:
    """The matched customer's contact with the same phone (else the same email), or a new
    one. No contact data at all: no contact. ``customer`` is locked by the caller."""
    fields = _contact_fields(cmd)
    if fields is None:
        return None, False
    phone = _phone_key(cmd.contact_phone, phone_region)
    email = cmd.contact_email.strip().lower()
    for column, value in ((contacts.c.phone, phone), (sa.func.lower(contacts.c.email), email)):
        if not value:
            continue
        row = (
            await conn.execute(
                sa.select(contacts)
                .where(contacts.c.customer_id == customer.id, column == value)
                .order_by(contacts.c.id)
                .limit(1)
            )
        ).first()
        if row is not None:
            return row, False
    row = await customer_service.add_contact_to_locked(
        conn=conn,
        customer=customer,
        fields=fields,
        request_id=conversion_id,
        phone_region=phone_region,
        now=now,
    )
    return row, True


# -- undo ---------------------------------------------------------------------------------


async def undo(*, conn: AsyncConnection, ctx: Context, cmd: commands_pb2.UndoConversion) -> None:
    """Compensate a conversion: remove the customer and contact it created when nothing
    else uses them yet, never what it matched, unless an undone conversion created that
    and kept it for this one. Before the command: leave a tombstone, so
    the command is refused when it comes. Replies crm.customers.conversion.undone.v1."""
    conversion_id = _uuid(cmd.conversion_id)
    if conversion_id is None:
        undone = events_pb2.ConversionUndone(conversion_id=cmd.conversion_id, lead_id=cmd.lead_id)
        await _emit(conn, ctx, UNDONE, undone, ctx.org_path)
        return
    record, new = await _claim(conn, ctx, conversion_id, cmd.lead_id, "undone")
    if not new and record.state in ("pending", "failed"):
        record = await _set_record(conn, conversion_id, state="undone")
    elif record.state == "prepared":
        customer_removed, contact_removed = await _compensate(conn, ctx, record, cmd.reason)
        record = await _set_record(
            conn,
            conversion_id,
            state="undone",
            customer_removed=customer_removed,
            contact_removed=contact_removed,
        )
    await _emit(
        conn,
        ctx,
        UNDONE,
        events_pb2.ConversionUndone(
            conversion_id=str(record.conversion_id),
            lead_id=record.lead_id or cmd.lead_id,
            customer_removed=record.customer_removed,
            contact_removed=record.contact_removed,
        ),
        record.org_path,
    )


async def _exists(conn: AsyncConnection, stmt: sa.Select[Any]) -> bool:
    return bool((await conn.execute(sa.select(stmt.exists()))).scalar())


def _other_records(record: Any, column: sa.Column[Any], value: uuid.UUID) -> sa.Select[Any]:
    return sa.select(conversion_records.c.conversion_id).where(
        column == value,
        conversion_records.c.state == "prepared",
        conversion_records.c.conversion_id != record.conversion_id,
    )


async def _left_by_undone_creator(
    conn: AsyncConnection, column: sa.Column[Any], created: sa.Column[Any], record: Any
) -> bool:
    """Whether the row this record uses was created by a conversion already undone, which
    kept it only because this (or another) conversion still used it. The last user to be
    undone then removes it, or compensated conversions of one company leave an orphan."""
    value = getattr(record, column.name)
    creator = sa.select(conversion_records.c.conversion_id).where(
        column == value,
        created.is_(True),
        conversion_records.c.state == "undone",
        conversion_records.c.conversion_id != record.conversion_id,
    )
    return await _exists(conn, creator)


async def _compensate(
    conn: AsyncConnection, ctx: Context, record: Any, reason: str
) -> tuple[bool, bool]:
    why = reason or "lead conversion undone"
    current = (
        await conn.execute(sa.select(customers).where(customers.c.id == record.customer_id))
    ).first()
    if current is None:
        return False, False
    # The keys prepare locks: a conversion matching this customer now waits for the undo,
    # then finds it gone (or still there, if it was kept).
    keys = MatchKeys(current.tax_id, current.match_name, current.city, current.phone)
    await _advisory_locks(conn, keys.lock_keys(current.tenant_id))
    customer = (
        await conn.execute(
            sa.select(customers).where(customers.c.id == record.customer_id).with_for_update()
        )
    ).first()
    if customer is None:
        return False, False
    records = conversion_records.c
    contact_removed = False
    if record.contact_id is not None and (
        record.contact_created
        or await _left_by_undone_creator(conn, records.contact_id, records.contact_created, record)
    ):
        contact_removed = await _remove_contact(conn, ctx, record, customer, why)
    customer_removed = False
    if record.customer_created or await _left_by_undone_creator(
        conn, records.customer_id, records.customer_created, record
    ):
        customer_removed = await _remove_customer(conn, ctx, record, customer, why)
    if contact_removed and not customer_removed:
        await conn.execute(
            customers.update()
            .where(customers.c.id == customer.id)
            .values(version=customers.c.version + 1, update_time=sa.func.now())
        )
    return customer_removed, contact_removed


async def _remove_contact(
    conn: AsyncConnection, ctx: Context, record: Any, customer: Any, why: str
) -> bool:
    contact_id = record.contact_id
    exists = sa.select(contacts.c.id).where(contacts.c.id == contact_id)
    if not await _exists(conn, exists):
        return False
    if await _exists(conn, _other_records(record, conversion_records.c.contact_id, contact_id)):
        return False
    if await _exists(conn, sa.select(contacts.c.id).where(contacts.c.reports_to_id == contact_id)):
        return False
    await conn.execute(contact_tags.delete().where(contact_tags.c.contact_id == contact_id))
    await conn.execute(field_changes.delete().where(field_changes.c.contact_id == contact_id))
    await conn.execute(contacts.delete().where(contacts.c.id == contact_id))
    await _emit(
        conn,
        ctx,
        "crm.customers.contact.deleted.v1",
        events_pb2.ContactDeleted(
            contact_id=str(contact_id), customer_id=str(customer.id), reason=why
        ),
        customer.owner_org_path,
    )
    return True


async def _remove_customer(
    conn: AsyncConnection, ctx: Context, record: Any, customer: Any, why: str
) -> bool:
    cid = customer.id
    if await _exists(conn, _other_records(record, conversion_records.c.customer_id, cid)):
        return False
    if await _exists(conn, sa.select(contacts.c.id).where(contacts.c.customer_id == cid)):
        return False
    if await _exists(conn, sa.select(customers.c.id).where(customers.c.parent_id == cid)):
        return False
    await conn.execute(customer_tags.delete().where(customer_tags.c.customer_id == cid))
    await conn.execute(field_changes.delete().where(field_changes.c.customer_id == cid))
    await conn.execute(customers.delete().where(customers.c.id == cid))
    await _emit(
        conn,
        ctx,
        "crm.customers.customer.deleted.v1",
        events_pb2.CustomerDeleted(customer_id=str(cid), reason=why),
        customer.owner_org_path,
    )
    return True
