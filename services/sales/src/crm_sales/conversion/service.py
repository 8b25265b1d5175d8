"""The sales step of the lead conversion saga (contract: the leads service's conversion
saga; commands crm.cmd.sales.*). Keyword-only functions taking the consumer's connection;
they never commit.

Every conversion id gets one ``conversion_records`` row, inserted if missing and then
locked, so the create and the undo of one conversion serialise on it whatever order they
arrive in, and a repeated command answers as the first did."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.common.v1 import event_pb2
from crm.sales.v1 import commands_pb2, events_pb2
from crm_platform import records
from crm_platform.errors import DomainError, FieldViolation, InvalidArgument
from crm_platform.events import PoisonMessage, ReceivedEvent
from crm_platform.ids import parse_optional_id
from crm_platform.outbox import NewEvent, add_events
from crm_platform.validation import clean_text
from crm_sales.conversion.models import (
    COMPLETED,
    FAILED,
    UNDONE,
    conversion_records,
)
from crm_sales.opportunity import rules
from crm_sales.opportunity import service as opportunity_service
from crm_sales.opportunity.models import opportunities

log = logging.getLogger(__name__)

PRODUCER = opportunity_service.PRODUCER
COMPLETED_EVENT = "crm.sales.conversion.completed.v1"
FAILED_EVENT = "crm.sales.conversion.failed.v1"
UNDONE_EVENT = "crm.sales.conversion.undone.v1"
DELETED_EVENT = "crm.sales.opportunity.deleted.v1"
# The command's own references: a bad one is reported once, not once per spec.
COMMAND_FIELDS = frozenset({"customer_id", "contact_id", "lead_id"})


@dataclass(frozen=True)
class ConversionSpec:
    """One validated opportunity of a conversion."""

    opportunity: rules.NewOpportunity
    lead_intent_id: uuid.UUID | None


@dataclass(frozen=True)
class ValidCommand:
    owner_org_id: uuid.UUID
    owner_org_path: str
    specs: list[ConversionSpec]


# --- pure validation -------------------------------------------------------------------


def _validate_spec(
    command: commands_pb2.CreateConversionOpportunities,
    index: int,
    violations: list[FieldViolation],
) -> ConversionSpec | None:
    spec = command.opportunities[index]
    prefix = f"opportunities.{index}."
    lead_intent_id = parse_optional_id(spec.lead_intent_id, prefix + "lead_intent_id", violations)
    try:
        new = rules.validate_new_opportunity(
            title=spec.title,
            customer_id=command.customer_id,
            contact_id=command.contact_id,
            lead_id=command.lead_id,
            currency_code=spec.amount.currency_code,
            # Message fields have presence: an unset amount is "required", not zero.
            amount=spec.amount if spec.HasField("amount") else None,
            stage=rules.DEFAULT_STAGE,
            close_date=spec.close_date,
            product=spec.product,
            campaign=spec.campaign,
        )
    except InvalidArgument as exc:
        for v in exc.violations:
            if v.field in COMMAND_FIELDS:
                if v not in violations:
                    violations.append(v)
            else:
                violations.append(FieldViolation(prefix + v.field, v.description))
        return None
    return ConversionSpec(new, lead_intent_id)


def validate_command(command: commands_pb2.CreateConversionOpportunities) -> ValidCommand:
    """Every spec through the same rules as a REST or gRPC create; all violations at once,
    each spec's fields named ``opportunities.<index>.<field>``."""
    violations: list[FieldViolation] = []
    owner_org_id = parse_optional_id(command.owner_org_id, "owner_org_id", violations)
    if owner_org_id is None and not command.owner_org_id.strip():
        violations.append(FieldViolation("owner_org_id", "required"))
    owner_org_path = clean_text(command.owner_org_path)
    if not (owner_org_path.startswith("/") and owner_org_path.endswith("/")):
        violations.append(FieldViolation("owner_org_path", "an org path such as /acme/east/"))
    if not command.opportunities:
        violations.append(FieldViolation("opportunities", "at least one"))
    specs = [_validate_spec(command, i, violations) for i in range(len(command.opportunities))]
    if violations:
        raise InvalidArgument.from_violations(violations, reason="OPPORTUNITY_INVALID")
    assert owner_org_id is not None
    return ValidCommand(owner_org_id, owner_org_path, [s for s in specs if s is not None])


def constraint_message(exc: IntegrityError) -> str:
    """Human text naming the constraint that refused the rows (asyncpg reports it on the
    driver's exception, the cause of the DBAPI error)."""
    driver_error = getattr(exc.orig, "__cause__", None)
    name = getattr(driver_error, "constraint_name", None)
    if name:
        return f"rejected by constraint {name}"
    return "rejected by the database: " + str(exc.orig).strip().splitlines()[0]


# --- the record --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """What every reply of one handled command shares."""

    event: ReceivedEvent
    conversion_id: uuid.UUID
    lead_id: str

    @property
    def envelope(self) -> event_pb2.Event:
        return self.event.envelope

    def reply(self, event_type: str, payload: Message, org_path: str) -> NewEvent:
        return NewEvent(
            event_type=event_type,
            payload=payload,
            tenant_id=self.envelope.tenant_id,
            org_path=org_path,
            correlation_id=self.envelope.correlation_id,
            causation_id=self.envelope.id,
        )

    def failed(self, reason: str, message: str, org_path: str) -> NewEvent:
        return self.reply(
            FAILED_EVENT,
            events_pb2.ConversionFailed(
                conversion_id=str(self.conversion_id),
                lead_id=self.lead_id,
                reason=reason,
                message=message,
            ),
            org_path,
        )

    def completed(self, opportunity_ids: list[uuid.UUID], org_path: str) -> NewEvent:
        return self.reply(
            COMPLETED_EVENT,
            events_pb2.ConversionCompleted(
                conversion_id=str(self.conversion_id),
                lead_id=self.lead_id,
                opportunity_ids=[str(i) for i in opportunity_ids],
            ),
            org_path,
        )

    def undone(self, removed: int, org_path: str) -> NewEvent:
        return self.reply(
            UNDONE_EVENT,
            events_pb2.ConversionUndone(
                conversion_id=str(self.conversion_id),
                lead_id=self.lead_id,
                opportunities_removed=removed,
            ),
            org_path,
        )


def _step(event: ReceivedEvent, conversion_id: str, lead_id: str) -> _Step:
    try:
        cid = uuid.UUID(conversion_id)
    except ValueError:
        # Without a valid key there is nothing to answer to: dead-letter it.
        raise PoisonMessage(f"conversion_id {conversion_id!r} is not a UUID") from None
    return _Step(event, cid, lead_id)


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


async def _claim(
    conn: AsyncConnection, step: _Step, *, state: str, **values: Any
) -> tuple[Any, bool]:
    """The conversion's record, locked for this transaction; inserted with ``state`` (and
    ``values``) when missing. Returns ``(row, inserted)``."""
    row, inserted = await records.claim(
        conn,
        conversion_records,
        conversion_records.c.conversion_id,
        {
            "conversion_id": step.conversion_id,
            "tenant_id": step.event.tenant_id,
            "lead_id": _uuid_or_none(step.lead_id),
            "state": state,
            **values,
        },
    )
    if row.tenant_id != step.event.tenant_id:
        raise PoisonMessage(f"conversion {step.conversion_id} belongs to another tenant")
    return row, inserted


async def _set_record(conn: AsyncConnection, conversion_id: uuid.UUID, **values: Any) -> None:
    await conn.execute(
        conversion_records.update()
        .where(conversion_records.c.conversion_id == conversion_id)
        .values(**values, update_time=sa.func.now())
    )


# --- create ------------------------------------------------------------------------------


def _new_rows(step: _Step, valid: ValidCommand) -> list[dict[str, Any]]:
    """Every opportunity of the conversion, in spec order (their ids are fixed here)."""
    owner = {
        "tenant_id": step.event.tenant_id,
        "owner_org_id": valid.owner_org_id,
        "owner_org_path": valid.owner_org_path,
    }
    return [
        {
            **opportunity_service.new_values(spec.opportunity, owner),
            "lead_intent_id": spec.lead_intent_id,
            "conversion_id": step.conversion_id,
        }
        for spec in valid.specs
    ]


def _repeat_create(step: _Step, record: Any, org_path: str) -> NewEvent:
    """The answer to a create command for a conversion already decided."""
    if record.state == COMPLETED:
        return step.completed(list(record.opportunity_ids), org_path)
    if record.state == FAILED:
        return step.failed(record.reason, record.message, org_path)
    if record.state == UNDONE:
        return step.failed(
            "CONVERSION_UNDONE", f"conversion {step.conversion_id} was undone", org_path
        )
    raise RuntimeError(f"conversion {step.conversion_id} is in state {record.state!r}")


async def create_conversion_opportunities(
    *,
    conn: AsyncConnection,
    event: ReceivedEvent,
    command: commands_pb2.CreateConversionOpportunities,
) -> None:
    """Open the conversion's opportunities (all or none) and reply completed or failed.

    The record is claimed in its outcome (completed with the ids, or failed): the ids are
    ours and the command is checked before any write, so a step that succeeds costs no
    second write of its record. Only a database constraint refusing the rows (rare) turns
    a completed claim into a failed one."""
    step = _step(event, command.conversion_id, command.lead_id)
    org_path = clean_text(command.owner_org_path) or event.envelope.org_path
    try:
        rows = _new_rows(step, validate_command(command))
    except DomainError as exc:
        record, inserted = await _claim(
            conn, step, state=FAILED, reason=exc.reason, message=exc.message
        )
        if inserted:
            log.info("conversion %s failed: %s: %s", step.conversion_id, exc.reason, exc.message)
            reply = step.failed(exc.reason, exc.message, org_path)
        else:
            reply = _repeat_create(step, record, org_path)
        await add_events(conn, [reply], producer=PRODUCER)
        return
    ids = [row["id"] for row in rows]
    record, inserted = await _claim(conn, step, state=COMPLETED, opportunity_ids=ids)
    if not inserted:
        await add_events(conn, [_repeat_create(step, record, org_path)], producer=PRODUCER)
        return
    try:
        async with conn.begin_nested():
            opened = await opportunity_service.insert_many(conn=conn, values=rows)
    except IntegrityError as exc:
        await _fail(conn, step, "OPPORTUNITY_REJECTED", constraint_message(exc), org_path)
        return
    created = [
        opportunity_service.created_event(
            row, correlation_id=step.envelope.correlation_id, causation_id=step.envelope.id
        )
        for row in opened
    ]
    await add_events(conn, [*created, step.completed(ids, org_path)], producer=PRODUCER)


async def _fail(
    conn: AsyncConnection, step: _Step, reason: str, message: str, org_path: str
) -> None:
    log.info("conversion %s failed: %s: %s", step.conversion_id, reason, message)
    await _set_record(
        conn, step.conversion_id, state=FAILED, reason=reason, message=message, opportunity_ids=[]
    )
    await add_events(conn, [step.failed(reason, message, org_path)], producer=PRODUCER)


# --- undo --------------------------------------------------------------------------------


async def _delete_opened(
    conn: AsyncConnection, step: _Step, record: Any, reason: str
) -> tuple[list[uuid.UUID], list[NewEvent]]:
    """Delete the conversion's opportunities (only those it opened); their ids in the
    record's order and their deleted events."""
    deleted = (
        await conn.execute(
            opportunities.delete()
            .where(
                opportunities.c.conversion_id == step.conversion_id,
                opportunities.c.tenant_id == step.event.tenant_id,
            )
            .returning(opportunities.c.id, opportunities.c.owner_org_path)
        )
    ).all()
    path_of = {row.id: row.owner_org_path for row in deleted}
    ids = [i for i in record.opportunity_ids if i in path_of]
    events = [
        step.reply(
            DELETED_EVENT,
            events_pb2.OpportunityDeleted(opportunity_id=str(i), reason=reason),
            path_of[i],
        )
        for i in ids
    ]
    return ids, events


async def undo_conversion(
    *, conn: AsyncConnection, event: ReceivedEvent, command: commands_pb2.UndoConversion
) -> None:
    """Remove what the conversion opened and reply undone. Before any create it leaves a
    tombstone, so a create arriving later is refused; a repeated undo answers the same."""
    step = _step(event, command.conversion_id, command.lead_id)
    org_path = event.envelope.org_path
    record, inserted = await _claim(conn, step, state=UNDONE)
    if inserted or record.state == UNDONE:
        # A tombstone, or undone before: the ids kept are the ones removed then.
        reply = step.undone(len(record.opportunity_ids), org_path)
        await add_events(conn, [reply], producer=PRODUCER)
        return
    removed: list[uuid.UUID] = []
    events: list[NewEvent] = []
    if record.state == COMPLETED:
        reason = clean_text(command.reason) or "lead conversion undone"
        removed, events = await _delete_opened(conn, step, record, reason)
        org_path = events[0].org_path if events else org_path
    await _set_record(conn, step.conversion_id, state=UNDONE, opportunity_ids=removed)
    await add_events(conn, [*events, step.undone(len(removed), org_path)], producer=PRODUCER)
