"""The conversion saga's storage and steps. Keyword-only functions taking the connection;
they never commit (the API's unit of work, or the consumer runner's, does).

Every step locks the conversion row first, so the replies of one conversion (and its
deadline) apply one at a time whatever order they arrive in; a reply that no longer fits
the state (late, repeated, or superseded by a compensation) changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.customers.v1 import commands_pb2 as customers_cmd
from crm.leads.v1 import conversion_pb2, events_pb2, lead_pb2
from crm.sales.v1 import commands_pb2 as sales_cmd
from crm_leads.conversion import rules
from crm_leads.conversion.models import lead_conversions
from crm_leads.conversion.rules import Plan
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.lead.models import lead_intents, leads
from crm_leads.lead.service import PRODUCER
from crm_platform import metrics, records
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, ROLE_REP, Principal, visible_to
from crm_platform.errors import FailedPrecondition, NotFound
from crm_platform.events import ReceivedEvent
from crm_platform.ids import new_id
from crm_platform.money import decimal_to_money
from crm_platform.outbox import NewEvent, add_events
from crm_platform.protos import timestamp

SAGA = "lead_conversion"
# Conversions reach their waiters through PostgreSQL NOTIFY, sent on commit.
NOTIFY_CHANNEL = "crm_lead_conversions"
CONVERT_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER, ROLE_REP})

PREPARE = "crm.cmd.customers.prepare_conversion.v1"
UNDO_CUSTOMERS = "crm.cmd.customers.undo_conversion.v1"
CREATE_OPPORTUNITIES = "crm.cmd.sales.create_conversion_opportunities.v1"
UNDO_SALES = "crm.cmd.sales.undo_conversion.v1"


async def start(
    *,
    conn: AsyncConnection,
    principal: Principal,
    lead_id: uuid.UUID,
    options: rules.Options,
    step_timeout: timedelta,
) -> tuple[Any, bool]:
    """The lead's running or completed conversion (False), or a new one (True): the lead
    becomes CONVERTING and the customers service is asked to prepare the customer."""
    principal.require_any(CONVERT_ROLES)
    # Visible and locked in one statement: two concurrent requests for one lead serialise
    # here; the second finds the first (the check below runs after the lock, so it sees it).
    lead = (
        await conn.execute(
            sa.select(leads)
            .where(leads.c.id == lead_id, visible_to(leads, principal))
            .with_for_update()
        )
    ).first()
    if lead is None:
        raise NotFound(
            f"lead {lead_id} not found", reason="LEAD_NOT_FOUND", metadata={"lead": str(lead_id)}
        )
    existing = (
        await conn.execute(
            sa.select(lead_conversions).where(
                lead_conversions.c.lead_id == lead.id, lead_conversions.c.state != rules.FAILED
            )
        )
    ).first()
    if existing is not None:
        return existing, False
    if lead.status not in rules.CONVERTIBLE_STATUSES:
        raise FailedPrecondition(
            f"lead {lead_id} is not open (only NEW or QUALIFIED leads convert)",
            reason="LEAD_NOT_CONVERTIBLE",
            metadata={"lead": str(lead_id)},
        )
    intents = (
        await conn.execute(
            sa.select(lead_intents.c.id, lead_intents.c.campaign, lead_intents.c.product_interest)
            .where(lead_intents.c.lead_id == lead.id)
            .order_by(lead_intents.c.occur_time.desc(), lead_intents.c.id.desc())
        )
    ).all()
    the_plan = rules.plan(
        options,
        rules.LeadFacts(
            full_name=lead.full_name,
            phone=lead.phone,
            email=lead.email,
            company=lead.company,
            province=lead.province,
            city=lead.city,
        ),
        [rules.IntentFacts(i.id, i.campaign, i.product_interest) for i in intents],
    )
    conversion_id = new_id()
    row = (
        await conn.execute(
            lead_conversions.insert()
            .values(
                id=conversion_id,
                tenant_id=lead.tenant_id,
                lead_id=lead.id,
                state=rules.CUSTOMER_PENDING,
                prev_status=lead.status,
                owner_org_id=lead.owner_org_id,
                owner_org_path=lead.owner_org_path,
                actor=principal.subject,
                actor_org_path=principal.org_path,
                options=the_plan.to_json(),
                deadline=sa.func.now() + step_timeout,
            )
            .returning(*lead_conversions.c)
        )
    ).one()
    await conn.execute(
        leads.update()
        .where(leads.c.id == lead.id)
        .values(
            status=lead_pb2.LEAD_STATUS_CONVERTING,
            conversion_id=conversion_id,
            version=leads.c.version + 1,
            update_time=sa.func.now(),
        )
    )
    await _send(conn, row, [(PREPARE, prepare_command(row, the_plan))])
    return row, True


def prepare_command(row: Any, the_plan: Plan) -> customers_cmd.PrepareConversion:
    c, k = the_plan.customer, the_plan.contact
    return customers_cmd.PrepareConversion(
        conversion_id=str(row.id),
        lead_id=str(row.lead_id),
        actor=row.actor,
        actor_org_path=row.actor_org_path,
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        customer_id=c.customer_id,
        kind=c.kind,  # type: ignore[arg-type]
        display_name=c.display_name,
        tax_id=c.tax_id,
        phone=c.phone,
        email=c.email,
        province=c.province,
        city=c.city,
        contact_full_name=k.full_name,
        contact_title=k.title,
        contact_phone=k.phone,
        contact_email=k.email,
    )


def opportunities_command(row: Any, the_plan: Plan) -> sales_cmd.CreateConversionOpportunities:
    return sales_cmd.CreateConversionOpportunities(
        conversion_id=str(row.id),
        lead_id=str(row.lead_id),
        customer_id=str(row.customer_id),
        contact_id=str(row.contact_id) if row.contact_id else "",
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        opportunities=[
            sales_cmd.ConversionOpportunitySpec(
                title=s.title,
                amount=decimal_to_money(Decimal(s.amount), s.currency_code),
                product=s.product,
                campaign=s.campaign,
                close_date=s.close_date,
                lead_intent_id=s.lead_intent_id,
            )
            for s in the_plan.opportunities
        ],
    )


async def _send(
    conn: AsyncConnection,
    row: Any,
    messages: Sequence[tuple[str, Message]],
    *,
    causation_id: str = "",
) -> None:
    """Commands and events of one step; the conversion id correlates the whole saga."""
    await _send_each(
        conn, [(row, event_type, payload, causation_id) for event_type, payload in messages]
    )


async def _send_each(
    conn: AsyncConnection, messages: Sequence[tuple[Any, str, Message, str]]
) -> None:
    """(conversion row, event type, payload, causation id) of many conversions, staged in
    one statement."""
    await add_events(
        conn,
        [
            NewEvent(
                event_type,
                payload,
                row.tenant_id,
                row.owner_org_path,
                correlation_id=str(row.id),
                causation_id=causation_id,
            )
            for row, event_type, payload, causation_id in messages
        ],
        producer=PRODUCER,
    )


async def _lock(conn: AsyncConnection, conversion_id: str) -> Any:
    try:
        cid = uuid.UUID(conversion_id)
    except ValueError:
        return None
    return (
        await conn.execute(
            sa.select(lead_conversions).where(lead_conversions.c.id == cid).with_for_update()
        )
    ).first()


async def _update(conn: AsyncConnection, row: Any, **values: Any) -> Any:
    updated = (
        await conn.execute(
            lead_conversions.update()
            .where(lead_conversions.c.id == row.id)
            .values(update_time=sa.func.now(), **values)
            .returning(*lead_conversions.c)
        )
    ).one()
    await _notify_if_ended(conn, updated, values)
    return updated


async def _notify_if_ended(conn: AsyncConnection, row: Any, values: dict[str, Any]) -> None:
    """Wakes the requests waiting on this conversion (crm_leads.conversion.waiters)."""
    if values.get("state") in rules.ENDED:
        await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, str(row.id))))


async def on_customer_failed(conn: AsyncConnection, event: ReceivedEvent) -> None:
    msg: Any = event.payload
    row = await _lock(conn, msg.conversion_id)
    if row is None or row.state != rules.CUSTOMER_PENDING:
        return
    # Nothing was created: the conversion ends here.
    row = await _update(
        conn,
        row,
        failure_step=rules.STEP_CUSTOMER,
        failure_reason=msg.reason,
        failure_message=msg.message,
    )
    await _fail(conn, row, causation_id=event.envelope.id)


async def on_sales_failed(conn: AsyncConnection, event: ReceivedEvent) -> None:
    msg: Any = event.payload
    row = await _lock(conn, msg.conversion_id)
    if row is None or row.state != rules.OPPORTUNITY_PENDING:
        return
    # Sales created nothing: only the customers step is undone.
    await _compensate(
        conn,
        row,
        step=rules.STEP_OPPORTUNITY,
        reason=msg.reason,
        message=msg.message,
        undo_sales=False,
        causation_id=event.envelope.id,
    )


async def on_customers_undone(conn: AsyncConnection, event: ReceivedEvent) -> None:
    msg: Any = event.payload
    await _undone(conn, event, msg.conversion_id, "customers_undone")


async def on_sales_undone(conn: AsyncConnection, event: ReceivedEvent) -> None:
    msg: Any = event.payload
    await _undone(conn, event, msg.conversion_id, "sales_undone")


async def _undone(
    conn: AsyncConnection, event: ReceivedEvent, conversion_id: str, flag: str
) -> None:
    row = await _lock(conn, conversion_id)
    if row is None or row.state != rules.COMPENSATING:
        return
    row = await _update(conn, row, **{flag: True})
    if row.customers_undone and row.sales_undone:
        await _fail(conn, row, causation_id=event.envelope.id)


async def _compensate(
    conn: AsyncConnection,
    row: Any,
    *,
    step: str,
    reason: str,
    message: str,
    undo_sales: bool,
    causation_id: str = "",
) -> None:
    row = await _update(
        conn,
        row,
        state=rules.COMPENSATING,
        failure_step=step,
        failure_reason=reason,
        failure_message=message,
        customers_undone=False,
        sales_undone=not undo_sales,
    )
    commands: list[tuple[str, Message]] = [
        (
            UNDO_CUSTOMERS,
            customers_cmd.UndoConversion(
                conversion_id=str(row.id), lead_id=str(row.lead_id), reason=reason
            ),
        )
    ]
    if undo_sales:
        commands.append(
            (
                UNDO_SALES,
                sales_cmd.UndoConversion(
                    conversion_id=str(row.id), lead_id=str(row.lead_id), reason=reason
                ),
            )
        )
    await _send(conn, row, commands, causation_id=causation_id)


async def _fail(conn: AsyncConnection, row: Any, *, causation_id: str) -> None:
    """End a conversion without converting: the lead goes back to its previous status."""
    row = await _update(conn, row, state=rules.FAILED)
    await conn.execute(
        leads.update()
        .where(leads.c.id == row.lead_id, leads.c.status == lead_pb2.LEAD_STATUS_CONVERTING)
        .values(status=row.prev_status, version=leads.c.version + 1, update_time=sa.func.now())
    )
    await _send(
        conn,
        row,
        [
            (
                "crm.leads.conversion.failed.v1",
                events_pb2.LeadConversionFailed(
                    conversion_id=str(row.id),
                    lead_id=str(row.lead_id),
                    step=row.failure_step,
                    reason=row.failure_reason,
                    message=row.failure_message,
                ),
            )
        ],
        causation_id=causation_id,
    )
    metrics.SAGA_OUTCOMES.labels(SAGA, "failed").inc()


async def expire_due(conn: AsyncConnection, *, limit: int = 100) -> int:
    """Give up on conversions whose step was not answered by their deadline (a service or
    its consumer is down for longer than the tenant can wait, or a command was
    dead-lettered): compensate both later steps. Safe on several replicas (SKIP LOCKED)."""
    due = (
        await conn.execute(
            sa.select(lead_conversions)
            .where(
                lead_conversions.c.state.in_((rules.CUSTOMER_PENDING, rules.OPPORTUNITY_PENDING)),
                lead_conversions.c.deadline <= sa.func.now(),
            )
            .order_by(lead_conversions.c.deadline)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for row in due:
        await _compensate(
            conn,
            row,
            step=rules.STEP_TIMEOUT,
            reason=rules.REASON_TIMED_OUT,
            message=f"step {rules.STATE_NAMES[row.state]} not answered before the deadline",
            undo_sales=True,
        )
    return len(due)


async def count_running(conn: AsyncConnection) -> dict[int, int]:
    rows = await conn.execute(
        sa.select(lead_conversions.c.state, sa.func.count())
        .where(lead_conversions.c.state.in_(rules.RUNNING))
        .group_by(lead_conversions.c.state)
    )
    return {state: n for state, n in rows.tuples()}


async def get_visible(
    *, conn: AsyncConnection, principal: Principal, conversion_id: uuid.UUID
) -> Any:
    return await records.get_visible(
        conn, lead_conversions, principal, conversion_id, kind="conversion"
    )


def to_proto(row: Any) -> conversion_pb2.LeadConversion:
    the_plan = Plan.from_json(row.options)
    c, k, o = the_plan.customer, the_plan.contact, the_plan.opportunity
    msg = conversion_pb2.LeadConversion(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        lead_id=str(row.lead_id),
        state=row.state,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        customer=conversion_pb2.ConversionCustomer(
            customer_id=c.customer_id,
            kind=c.kind,  # type: ignore[arg-type]
            display_name=c.display_name,
            tax_id=c.tax_id,
            phone=c.phone,
            email=c.email,
            province=c.province,
            city=c.city,
        ),
        contact=conversion_pb2.ConversionContact(
            full_name=k.full_name, title=k.title, phone=k.phone, email=k.email
        ),
        opportunity=conversion_pb2.ConversionOpportunity(
            title=o.title, product=o.product, close_date=o.close_date
        ),
        opportunity_per_intent=the_plan.per_intent,
    )
    msg.opportunity.amount.CopyFrom(decimal_to_money(Decimal(o.amount), o.currency_code))
    if row.state == rules.COMPLETED:
        msg.outcome.CopyFrom(
            conversion_pb2.ConversionOutcome(
                customer_id=str(row.customer_id),
                contact_id=str(row.contact_id) if row.contact_id else "",
                opportunity_ids=[str(i) for i in row.opportunity_ids],
                customer_created=row.customer_created,
                contact_created=row.contact_created,
            )
        )
    if row.failure_reason:
        msg.failure.CopyFrom(
            conversion_pb2.ConversionFailure(
                step=row.failure_step, reason=row.failure_reason, message=row.failure_message
            )
        )
    return msg


# -- the forward replies, a consumer fetch at a time (ConsumerSpec.batched) ----------------

_RETURNING = ", ".join(f"c.{column.name}" for column in lead_conversions.c)
# One conditional UPDATE for a fetch of replies: a conversion moves only from the state the
# reply answers, as _advance does one at a time.
_PREPARED_MANY = (
    sa.text(
        "UPDATE lead_conversions c SET state = :to_state, update_time = now(), "
        "customer_id = v.customer_id, contact_id = v.contact_id, "
        "customer_created = v.customer_created, contact_created = v.contact_created "
        "FROM unnest(CAST(:ids AS uuid[]), CAST(:customer_ids AS uuid[]), "
        "CAST(:contact_ids AS uuid[]), CAST(:customer_created AS boolean[]), "
        "CAST(:contact_created AS boolean[])) "
        "AS v(id, customer_id, contact_id, customer_created, contact_created) "
        f"WHERE c.id = v.id AND c.state = :expected RETURNING {_RETURNING}"
    )
    .bindparams(
        sa.bindparam("ids", type_=ARRAY(UUID(as_uuid=True))),
        sa.bindparam("customer_ids", type_=ARRAY(UUID(as_uuid=True))),
        sa.bindparam("contact_ids", type_=ARRAY(UUID(as_uuid=True))),
        sa.bindparam("customer_created", type_=ARRAY(sa.Boolean)),
        sa.bindparam("contact_created", type_=ARRAY(sa.Boolean)),
    )
    .columns(*lead_conversions.c)
)
_COMPLETED_MANY = (
    sa.text(
        "UPDATE lead_conversions c SET state = :to_state, update_time = now(), "
        "opportunity_ids = CAST(string_to_array(v.opportunity_ids, ',') AS uuid[]) "
        "FROM unnest(CAST(:ids AS uuid[]), CAST(:opportunity_ids AS text[])) "
        "AS v(id, opportunity_ids) "
        f"WHERE c.id = v.id AND c.state = :expected RETURNING {_RETURNING}"
    )
    .bindparams(
        sa.bindparam("ids", type_=ARRAY(UUID(as_uuid=True))),
        sa.bindparam("opportunity_ids", type_=ARRAY(sa.Text)),
    )
    .columns(*lead_conversions.c)
)
_CONVERT_LEADS = (
    leads.update()
    .where(leads.c.id == sa.any_(sa.bindparam("lead_ids", type_=ARRAY(UUID(as_uuid=True)))))
    .values(
        status=lead_pb2.LEAD_STATUS_CONVERTED,
        version=leads.c.version + 1,
        update_time=sa.func.now(),
    )
    .returning(*leads.c)
)
_NOTIFY_MANY = sa.text(
    "SELECT pg_notify(:channel, id::text) FROM unnest(CAST(:ids AS uuid[])) AS id"
).bindparams(sa.bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))


def _first_per_conversion(events: Sequence[ReceivedEvent]) -> dict[uuid.UUID, ReceivedEvent]:
    """The first reply of each conversion in the fetch (a repeated reply is answered as the
    first was, so it changes nothing); replies naming no valid conversion are ignored."""
    firsts: dict[uuid.UUID, ReceivedEvent] = {}
    for event in events:
        try:
            cid = uuid.UUID(event.payload.conversion_id)  # type: ignore[attr-defined]
        except ValueError:
            continue
        firsts.setdefault(cid, event)
    return firsts


async def on_customer_prepared(conn: AsyncConnection, events: Sequence[ReceivedEvent]) -> None:
    """Customers prepared the customer and contact: ask sales for the opportunities. A
    fetch of replies in one UPDATE and one outbox statement; a conversion moves only from
    CUSTOMER_PENDING, so a reply that arrives twice, late or after a compensation changes
    nothing (the UPDATE locks the row and re-checks the state on its latest version)."""
    firsts = _first_per_conversion(events)
    if not firsts:
        return
    msgs: list[Any] = [event.payload for event in firsts.values()]
    rows = (
        await conn.execute(
            _PREPARED_MANY,
            {
                "to_state": rules.OPPORTUNITY_PENDING,
                "expected": rules.CUSTOMER_PENDING,
                "ids": list(firsts),
                "customer_ids": [uuid.UUID(m.customer_id) for m in msgs],
                "contact_ids": [uuid.UUID(m.contact_id) if m.contact_id else None for m in msgs],
                "customer_created": [m.customer_created for m in msgs],
                "contact_created": [m.contact_created for m in msgs],
            },
        )
    ).all()
    await _send_each(
        conn,
        [
            (
                row,
                CREATE_OPPORTUNITIES,
                opportunities_command(row, Plan.from_json(row.options)),
                firsts[row.id].envelope.id,
            )
            for row in rows
        ],
    )


async def on_sales_completed(conn: AsyncConnection, events: Sequence[ReceivedEvent]) -> None:
    """Sales created the opportunities: the conversion completes and the lead is converted.
    A fetch of replies in four statements (conversions, leads, the waiters' notifications,
    events); only conversions still in OPPORTUNITY_PENDING move."""
    firsts = _first_per_conversion(events)
    if not firsts:
        return
    opportunity_ids = []
    for event in firsts.values():
        ids = [str(uuid.UUID(i)) for i in event.payload.opportunity_ids]  # type: ignore[attr-defined]
        opportunity_ids.append(",".join(ids))
    rows = (
        await conn.execute(
            _COMPLETED_MANY,
            {
                "to_state": rules.COMPLETED,
                "expected": rules.OPPORTUNITY_PENDING,
                "ids": list(firsts),
                "opportunity_ids": opportunity_ids,
            },
        )
    ).all()
    if not rows:
        return
    converted = {
        lead.id: lead
        for lead in await conn.execute(_CONVERT_LEADS, {"lead_ids": [r.lead_id for r in rows]})
    }
    await conn.execute(_NOTIFY_MANY, {"channel": NOTIFY_CHANNEL, "ids": [r.id for r in rows]})
    await _send_each(
        conn,
        [
            (
                row,
                "crm.leads.lead.converted.v1",
                events_pb2.LeadConverted(
                    lead=lead_to_proto(converted[row.lead_id]),
                    conversion_id=str(row.id),
                    customer_id=str(row.customer_id),
                    contact_id=str(row.contact_id) if row.contact_id else "",
                    opportunity_ids=[str(i) for i in row.opportunity_ids],
                    customer_created=row.customer_created,
                ),
                firsts[row.id].envelope.id,
            )
            for row in rows
        ],
    )
    metrics.LEADS_CONVERTED.inc(len(rows))
    metrics.SAGA_OUTCOMES.labels(SAGA, "completed").inc(len(rows))
