"""Capture use cases shared by the REST and gRPC adapters: one lead, or a batch with one
result per item where a bad item never blocks the others."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.lead import service
from crm_leads.lead.rules import NewIntent, NewLead
from crm_platform import metrics
from crm_platform.auth import WRITE_ROLES, Principal
from crm_platform.db import Database
from crm_platform.errors import DomainError, FieldViolation, InvalidArgument

MAX_BATCH = 1000


@dataclass(frozen=True)
class CaptureRequest:
    """A validated capture, or the violations that reject it."""

    lead: NewLead | None
    intent: NewIntent | None
    request_id: uuid.UUID | None
    violations: Sequence[FieldViolation] = ()


@dataclass(frozen=True)
class ItemResult:
    index: int
    captured: service.Captured | None
    violations: Sequence[FieldViolation] = ()


async def capture_one(
    db: Database,
    principal: Principal,
    lead: NewLead,
    intent: NewIntent,
    request_id: uuid.UUID | None,
) -> tuple[service.Captured, Sequence[object]]:
    async with db.unit_of_work() as conn:
        captured = await service.capture(
            conn=conn, principal=principal, lead=lead, intent=intent, request_id=request_id
        )
        if captured.intents is not None:
            intents: Sequence[object] = captured.intents
        elif captured.visible:
            intents = await service.intents_of(conn=conn, lead_id=captured.lead.id)
        else:
            intents = ()
    # After the commit: a capture that rolled back was never captured.
    metrics.count_captures([captured.outcome.name])
    return captured, intents


async def capture_batch(
    db: Database, principal: Principal, items: Sequence[CaptureRequest]
) -> list[ItemResult]:
    """One transaction, one savepoint per item: an item that fails rolls back alone, and
    duplicates inside the batch merge into the lead an earlier item created."""
    if len(items) > MAX_BATCH:
        raise InvalidArgument.from_violations(
            [FieldViolation("leads", f"at most {MAX_BATCH} per call")], reason="BATCH_TOO_LARGE"
        )
    principal.require_any(WRITE_ROLES)
    results: list[ItemResult] = []
    async with db.unit_of_work() as conn:
        for index, item in enumerate(items):
            results.append(await _capture_item(conn, principal, index, item))
    metrics.count_captures(r.captured.outcome.name if r.captured else "REJECTED" for r in results)
    return results


async def _capture_item(
    conn: AsyncConnection, principal: Principal, index: int, item: CaptureRequest
) -> ItemResult:
    if item.lead is None or item.intent is None:
        return ItemResult(index, None, item.violations)
    try:
        async with conn.begin_nested():
            captured = await service.capture(
                conn=conn,
                principal=principal,
                lead=item.lead,
                intent=item.intent,
                request_id=item.request_id,
            )
    except DomainError as exc:
        violations = exc.violations or [FieldViolation("request_id", exc.message)]
        return ItemResult(index, None, violations)
    return ItemResult(index, captured)
