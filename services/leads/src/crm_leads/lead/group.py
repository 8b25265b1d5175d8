"""Writing a group of single captures in one transaction (crm_platform.group_commit): the
REST and gRPC create of concurrent requests, set-based.

The common capture is a new person under rules that compare identity keys only. For all
of those in the group together: one statement claims their keys, one inserts the leads, one
their first intents, one their ``lead.created`` events — instead of a transaction and four
statements each.

Every other capture runs the single-capture path (``service.capture``) in its own savepoint
of the same transaction, after the set-based part, so it sees the leads the group created:

- a key another lead holds (a merge, an overwrite or a rejection), including a lead created
  earlier in the same group: two requests with the same phone give one lead and one merge,
  as one after the other would;
- a tenant's profile rule that applies (similar company in the same city), which has to
  read candidates under its advisory lock.

A domain error of one item (a rejected duplicate) rolls back its savepoint only.

Race-freedom is the ``lead_keys`` primary key's, as for single captures. The group claims
keys sorted by (tenant, kind, value), the order single captures and imports claim theirs
in. An Idempotency-Key seen before makes the intent insert skip a row: the group then rolls
back (``Replayed``) and its items are captured one at a time, which answers a retry with
its first result."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2
from crm_leads.dedup import service as dedup_service
from crm_leads.lead import service
from crm_leads.lead.mapping import lead_to_proto
from crm_leads.lead.rules import NewIntent, NewLead
from crm_leads.scoring import service as scoring
from crm_platform.auth import Principal
from crm_platform.errors import DomainError
from crm_platform.ids import new_id
from crm_platform.outbox import NewEvent, add_events


@dataclass(frozen=True)
class Capture:
    """One queued single capture (the caller's write role already checked)."""

    principal: Principal
    lead: NewLead
    intent: NewIntent
    request_id: uuid.UUID | None
    # The submitting request's trace: its lead.created event carries it, whichever request's
    # task writes the group (that task's own spans join the first request's trace).
    trace_context: Context | None = None


# The captured lead and its intents as the single-capture API answers them.
Answer = tuple[service.Captured, Sequence[Any]]


class Replayed(Exception):
    """An item's Idempotency-Key was used before: capture the group's items one at a time."""


# Rows go in sorted by (tenant, kind, value), then item order: a key two items of the group
# share goes to the earlier one; the other item merges into its lead afterwards.
_CLAIM = sa.text(
    "INSERT INTO lead_keys (tenant_id, kind, value, lead_id) "
    "SELECT k.tenant_id, k.kind, k.value, k.lead_id "
    "FROM unnest(CAST(:tenant_ids AS uuid[]), CAST(:kinds AS text[]), "
    "CAST(:key_values AS text[]), CAST(:lead_ids AS uuid[])) "
    "WITH ORDINALITY AS k (tenant_id, kind, value, lead_id, n) "
    "ORDER BY k.tenant_id, k.kind, k.value, k.n "
    "ON CONFLICT DO NOTHING RETURNING lead_id, kind"
)
_RELEASE = sa.text("DELETE FROM lead_keys WHERE lead_id = ANY(CAST(:lead_ids AS uuid[]))")
_LEAD_COLUMNS: dict[str, str] = {
    "id": "uuid",
    "tenant_id": "uuid",
    "owner_org_id": "uuid",
    "owner_org_path": "text",
    "full_name": "text",
    "phone": "text",
    "email": "text",
    "company": "text",
    "province": "text",
    "city": "text",
    "source": "text",
    "open_id": "text",
    "union_id": "text",
    "territory": "text",
    "custom_fields": "jsonb",
    "status": "smallint",
    "score": "smallint",
    "grade": "text",
    "verification": "smallint",
    "verification_note": "text",
}
_INSERT_LEADS = sa.text(
    f"INSERT INTO leads ({', '.join(_LEAD_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _LEAD_COLUMNS.items())
    + ") RETURNING *"
)
_INSERT_INTENTS = sa.text(
    "INSERT INTO lead_intents "
    "(id, tenant_id, lead_id, source, campaign, product_interest, request_id, created_lead) "
    "SELECT i.id, i.tenant_id, i.lead_id, i.source, i.campaign, i.product_interest, "
    "i.request_id, true "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:tenant_ids AS uuid[]), CAST(:lead_ids AS uuid[]), "
    "CAST(:sources AS text[]), CAST(:campaigns AS text[]), CAST(:products AS text[]), "
    "CAST(:request_ids AS uuid[])) "
    "AS i (id, tenant_id, lead_id, source, campaign, product_interest, request_id) "
    "ON CONFLICT (tenant_id, request_id) WHERE request_id IS NOT NULL DO NOTHING "
    "RETURNING id, lead_id, source, campaign, product_interest, occur_time"
)


async def capture_group(
    conn: AsyncConnection, items: Sequence[Capture]
) -> list[Answer | DomainError]:
    """Each item's answer, or the domain error that refused it, in item order. In the
    caller's transaction; raises ``Replayed`` (roll back, then capture one at a time)."""
    answers: list[Answer | DomainError | None] = [None] * len(items)
    ids = [new_id() for _ in items]
    simple = [n for n, item in enumerate(items) if not await _needs_candidates(conn, item)]
    lost = await _claim(conn, items, ids, simple)
    created = [n for n in simple if n not in lost]
    if created:
        for n, answer in zip(created, await _create(conn, items, ids, created), strict=True):
            answers[n] = answer
    if lost:
        # Their claims were provisional: the single-capture path claims again and merges.
        await conn.execute(_RELEASE, {"lead_ids": [ids[n] for n in sorted(lost)]})
    return [
        answer if answer is not None else await capture_alone(conn, item)
        for answer, item in zip(answers, items, strict=True)
    ]


async def _needs_candidates(conn: AsyncConnection, item: Capture) -> bool:
    """Whether one of the tenant's profile rules applies to this capture."""
    current = await dedup_service.CACHE.current(conn, item.principal.tenant_id)
    return service.profile_rules_apply(current.rules, item.lead, item.intent)


async def _claim(
    conn: AsyncConnection, items: Sequence[Capture], ids: Sequence[uuid.UUID], simple: list[int]
) -> set[int]:
    """Claims the simple items' keys; the items that did not get all of theirs."""
    rows = [
        (n, items[n].principal.tenant_id, kind, value, ids[n])
        for n in simple
        for kind, value in items[n].lead.dedup_keys()
    ]
    if not rows:
        return set()
    claimed = {
        (row.lead_id, row.kind)
        for row in await conn.execute(
            _CLAIM,
            {
                "tenant_ids": [r[1] for r in rows],
                "kinds": [r[2] for r in rows],
                "key_values": [r[3] for r in rows],
                "lead_ids": [r[4] for r in rows],
            },
        )
    }
    return {n for n, _, kind, _, lead_id in rows if (lead_id, kind) not in claimed}


async def _create(
    conn: AsyncConnection, items: Sequence[Capture], ids: Sequence[uuid.UUID], created: list[int]
) -> list[Answer]:
    values = []
    for n in created:
        item = items[n]
        rules = await scoring.CACHE.current(conn, item.principal.tenant_id)
        values.append(
            service.new_lead_values(item.principal, ids[n], item.lead, item.intent, rules)
        )
    rows = {
        row.id: row
        for row in await conn.execute(
            _INSERT_LEADS,
            {
                **{name: [v[name] for v in values] for name in _LEAD_COLUMNS},
                # An array of jsonb binds as the JSON texts.
                "custom_fields": [json.dumps(v["custom_fields"]) for v in values],
            },
        )
    }
    intents = {
        row.lead_id: row
        for row in await conn.execute(
            _INSERT_INTENTS,
            {
                "ids": [new_id() for _ in created],
                "tenant_ids": [items[n].principal.tenant_id for n in created],
                "lead_ids": [ids[n] for n in created],
                "sources": [items[n].intent.source for n in created],
                "campaigns": [items[n].intent.campaign for n in created],
                "products": [items[n].intent.product_interest for n in created],
                "request_ids": [items[n].request_id for n in created],
            },
        )
    }
    if len(intents) < len(created):
        raise Replayed()
    made = [(rows[ids[n]], intents[ids[n]]) for n in created]
    messages = [lead_to_proto(row) for row, _ in made]
    await add_events(
        conn,
        [
            NewEvent(
                service.CREATED_EVENT,
                events_pb2.LeadCreated(lead=message),
                row.tenant_id,
                row.owner_org_path,
                trace_context=items[n].trace_context,
            )
            for n, (row, _), message in zip(created, made, messages, strict=True)
        ],
        producer=service.PRODUCER,
    )
    return [
        (
            service.Captured(
                row, service.Outcome.CREATED, visible=True, intents=(intent,), message=message
            ),
            (intent,),
        )
        for (row, intent), message in zip(made, messages, strict=True)
    ]


async def capture_alone(conn: AsyncConnection, item: Capture) -> Answer | DomainError:
    """The single-capture path in a savepoint: a domain error rolls back this item only."""
    try:
        async with conn.begin_nested():
            return await capture_in(conn, item)
    except DomainError as exc:
        return exc


async def capture_in(conn: AsyncConnection, item: Capture) -> Answer:
    """The single-capture path, in the caller's transaction: the lead and the intents the
    answer shows (none for a lead the caller cannot see). Runs in the item's trace."""
    token = None if item.trace_context is None else otel_context.attach(item.trace_context)
    try:
        captured = await service.capture(
            conn=conn,
            principal=item.principal,
            lead=item.lead,
            intent=item.intent,
            request_id=item.request_id,
        )
        if captured.intents is not None:
            return captured, captured.intents
        if captured.visible:
            return captured, await service.intents_of(conn=conn, lead_id=captured.lead.id)
        return captured, ()
    finally:
        if token is not None:
            otel_context.detach(token)
