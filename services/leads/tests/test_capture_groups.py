"""Group-committed single captures (crm_leads.lead.group, crm_leads.lead.flows.Captures)
against real PostgreSQL: a group answers every item as one-at-a-time captures would —
new leads, a duplicate inside the group, a duplicate of an existing lead, a rejected
duplicate, a replayed Idempotency-Key — and writes one lead.created per new lead."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from conftest import Tenant
from crm.leads.v1 import events_pb2
from crm_leads.dedup import rules as dedup_rules
from crm_leads.dedup import service as dedup_service
from crm_leads.lead import flows, group, rules
from crm_leads.lead.models import lead_intents, lead_keys
from crm_leads.lead.models import leads as leads_table
from crm_leads.lead.service import Outcome
from crm_platform.auth import Principal
from crm_platform.errors import AlreadyExists
from crm_platform.outbox import outbox
from crm_platform.runtime import Runtime

CREATED = "crm.leads.lead.created.v1"
MERGED = "crm.leads.lead.merged.v1"


def mobile() -> str:
    return "137" + "".join(random.choices("0123456789", k=8))


def rep(tenant: Tenant, unit: str = "d1") -> Principal:
    where = tenant.units[unit]
    return Principal(
        tenant_id=uuid.UUID(tenant.id),
        subject=f"{unit}-rep",
        org_unit_id=uuid.UUID(where["id"]),
        org_path=where["path"],
        roles=frozenset({"rep"}),
    )


def item(
    principal: Principal, *, request_id: uuid.UUID | None = None, **fields: str
) -> group.Capture:
    lead = rules.validate_new_lead(
        phone_region="CN",
        full_name=fields.pop("full_name", "Group Lead"),
        phone=fields.pop("phone", ""),
        email=fields.pop("email", ""),
        company=fields.pop("company", ""),
        province="",
        city=fields.pop("city", ""),
        source="web",
        open_id="",
        union_id="",
    )
    return group.Capture(principal, lead, rules.NewIntent(source="web", **fields), request_id)


async def write_group(rt: Runtime, items: Sequence[group.Capture]) -> list[Any]:
    async with rt.db.unit_of_work() as conn:
        return [*await group.capture_group(conn, items)]


async def events_of(rt: Runtime, lead_ids: set[uuid.UUID], event_type: str) -> int:
    """Outbox rows of ``event_type`` naming one of ``lead_ids`` (decoded from the envelope)."""
    from crm.common.v1 import event_pb2
    from crm.leads.v1 import events_pb2

    message = {CREATED: events_pb2.LeadCreated, MERGED: events_pb2.LeadMerged}[event_type]
    async with rt.db.read() as conn:
        rows = await conn.execute(sa.select(outbox.c.data).where(outbox.c.event_type == event_type))
        found = 0
        for (data,) in rows:
            envelope = event_pb2.Event.FromString(data)
            payload = message()
            envelope.payload.Unpack(payload)
            if uuid.UUID(payload.lead.id) in lead_ids:
                found += 1
    return found


async def test_a_group_answers_each_capture_as_one_at_a_time_would(
    leads: Runtime, tenant: Tenant
) -> None:
    d1 = rep(tenant)
    existing_phone = mobile()
    (existing,) = await write_group(leads, [item(d1, phone=existing_phone)])
    assert existing[0].outcome is Outcome.CREATED
    phone_a, phone_b = mobile(), mobile()
    email_b = f"group-{uuid.uuid4().hex[:8]}@example.com"

    answers = await write_group(
        leads,
        [
            item(d1, full_name="A", phone=phone_a, campaign="spring"),
            item(d1, full_name="B", phone=phone_b, email=email_b),
            # The same person as A, in the same group: merges into the lead A creates.
            item(d1, full_name="A again", phone=phone_a, campaign="summer", email="a@example.com"),
            # An existing lead's phone: merges into it.
            item(d1, full_name="Old", phone=existing_phone),
        ],
    )

    outcomes = [(a[0].outcome, a[0].lead.id) for a in answers]
    a_id, b_id = outcomes[0][1], outcomes[1][1]
    assert outcomes == [
        (Outcome.CREATED, a_id),
        (Outcome.CREATED, b_id),
        (Outcome.MERGED, a_id),
        (Outcome.MERGED, existing[0].lead.id),
    ]
    assert answers[2][0].lead.intent_count == 2
    assert answers[2][0].lead.email == "a@example.com"  # a blank field filled by the merge
    assert [i.campaign for i in answers[2][1]] == ["summer", "spring"]
    async with leads.db.read() as conn:
        keys = dict(
            (
                await conn.execute(
                    sa.select(lead_keys.c.value, lead_keys.c.lead_id).where(
                        lead_keys.c.tenant_id == d1.tenant_id,
                        lead_keys.c.value.in_(
                            [f"+86{phone_a}", f"+86{phone_b}", email_b, "a@example.com"]
                        ),
                    )
                )
            ).all()
        )
        # No key is left pointing at a provisional id that never became a lead.
        orphans = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(lead_keys)
                .where(
                    lead_keys.c.tenant_id == d1.tenant_id,
                    ~sa.exists().where(leads_table.c.id == lead_keys.c.lead_id),
                )
            )
        ).scalar_one()
    assert keys == {
        f"+86{phone_a}": a_id,
        f"+86{phone_b}": b_id,
        email_b: b_id,
        "a@example.com": a_id,
    }
    assert orphans == 0
    # One lead.created per new lead, one lead.merged per merge.
    assert await events_of(leads, {a_id, b_id}, CREATED) == 2
    assert await events_of(leads, {a_id, existing[0].lead.id}, MERGED) == 2


async def test_a_rejected_duplicate_fails_alone(leads: Runtime, other_tenant: Tenant) -> None:
    d1 = rep(other_tenant)
    admin = Principal(
        d1.tenant_id, "admin", d1.org_unit_id, d1.org_path, frozenset({"tenant_admin"})
    )
    async with leads.db.unit_of_work() as conn:
        await dedup_service.put(
            conn=conn,
            principal=admin,
            rules=dedup_rules.DedupRules.model_validate(
                {"rules": [{"name": "no-repeats", "keys": ["phone"], "action": "reject"}]}
            ),
        )
    async with leads.db.read() as conn:
        await dedup_service.CACHE.latest(conn, d1.tenant_id)  # this process sees them now
    phone = mobile()
    (first,) = await write_group(leads, [item(d1, phone=phone)])
    new_email = f"rejected-{uuid.uuid4().hex[:8]}@example.com"

    answers = await write_group(
        leads,
        [
            item(d1, phone=mobile()),
            item(d1, phone=phone, email=new_email),
            item(d1, phone=mobile()),
        ],
    )

    assert answers[0][0].outcome is Outcome.CREATED
    assert isinstance(answers[1], AlreadyExists)
    assert answers[1].reason == "LEAD_DUPLICATE_REJECTED"
    assert answers[2][0].outcome is Outcome.CREATED
    async with leads.db.read() as conn:
        claimed = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(lead_keys)
                .where(lead_keys.c.tenant_id == d1.tenant_id, lead_keys.c.value == new_email)
            )
        ).scalar_one()
        intents = (
            await conn.execute(
                sa.select(sa.func.count()).where(lead_intents.c.lead_id == first[0].lead.id)
            )
        ).scalar_one()
    assert (claimed, intents) == (0, 1)  # the rejected item wrote nothing


async def test_a_replayed_idempotency_key_gets_its_first_answer(
    leads: Runtime, tenant: Tenant
) -> None:
    d1 = rep(tenant)
    captures = flows.Captures(leads.db, max_in_flight=1)
    request_id = uuid.uuid4()
    phone = mobile()
    first = await captures.capture(d1, *_parts(item(d1, phone=phone)), request_id)
    # Submitted together behind a lone first item, so the last three form one group; the
    # replay names a different person, so only the intent's Idempotency-Key gives it away.
    lone = asyncio.create_task(captures.capture(d1, *_parts(item(d1, phone=mobile())), None))
    await asyncio.sleep(0)
    grouped = await asyncio.gather(
        captures.capture(d1, *_parts(item(d1, phone=mobile())), None),
        captures.capture(d1, *_parts(item(d1, phone=phone)), request_id),
        captures.capture(d1, *_parts(item(d1, phone=mobile())), None),
    )
    await lone
    assert grouped[1][0].lead.id == first[0].lead.id
    assert grouped[1][0].outcome is Outcome.CREATED  # answered as the first time
    assert grouped[0][0].outcome is grouped[2][0].outcome is Outcome.CREATED
    assert len({g[0].lead.id for g in grouped}) == 3


async def test_a_failed_group_is_captured_one_at_a_time(
    leads: Runtime, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    d1 = rep(tenant)
    real = group.capture_group
    sizes: list[int] = []

    async def flaky(conn: Any, items: Sequence[group.Capture]) -> list[Any]:
        sizes.append(len(items))
        if len(items) > 1:
            await real(conn, items)  # writes, then the transaction is lost
            raise RuntimeError("deadlock detected")
        return await real(conn, items)

    monkeypatch.setattr(group, "capture_group", flaky)
    captures = flows.Captures(leads.db, max_in_flight=1)
    phones = [mobile() for _ in range(4)]
    answers = await asyncio.gather(
        *(captures.capture(d1, *_parts(item(d1, phone=p)), None) for p in phones)
    )
    assert sizes == [1, 3]
    assert [a[0].outcome for a in answers] == [Outcome.CREATED] * 4
    async with leads.db.read() as conn:
        made = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    leads_table.c.tenant_id == d1.tenant_id,
                    leads_table.c.phone.in_([f"+86{p}" for p in phones]),
                )
            )
        ).scalar_one()
    assert made == 4  # the rolled-back group's leads were written once, alone


def _parts(capture: group.Capture) -> tuple[rules.NewLead, rules.NewIntent]:
    return capture.lead, capture.intent


async def test_each_capture_of_a_group_keeps_its_own_trace(leads: Runtime, tenant: Tenant) -> None:
    """The events of a group's captures carry each submitting request's trace, not the trace
    of whichever request's task wrote the group: a new lead's lead.created and a merge's
    lead.merged alike."""
    from opentelemetry import context as otel_context

    from crm_platform.telemetry import extract_context

    d1 = rep(tenant)
    captures = flows.Captures(leads.db, max_in_flight=1)
    traces = [uuid.uuid4().hex for _ in range(3)]
    phone = mobile()

    def traced(n: int, capture: group.Capture) -> asyncio.Task[group.Answer]:
        parent = extract_context({"traceparent": f"00-{traces[n]}-{uuid.uuid4().hex[:16]}-01"})
        token = otel_context.attach(parent)
        try:  # the task copies the context it is created in, as a request's task would
            return asyncio.create_task(captures.capture(d1, *_parts(capture), None))
        finally:
            otel_context.detach(token)

    lone = traced(0, item(d1, phone=phone))
    await asyncio.sleep(0)
    new, merged = traced(1, item(d1, phone=mobile())), traced(2, item(d1, phone=phone))
    answers = [await lone, await new, await merged]
    assert [a[0].outcome for a in answers] == [Outcome.CREATED, Outcome.CREATED, Outcome.MERGED]

    from crm.common.v1 import event_pb2

    async with leads.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(outbox.c.event_type, outbox.c.data, outbox.c.headers).where(
                    outbox.c.event_type.in_([CREATED, MERGED])
                )
            )
        ).all()
    seen: dict[tuple[str, str], str] = {}
    wanted = {str(answers[1][0].lead.id), str(answers[2][0].lead.id)}
    for event_type, data, headers in rows:
        payload = {CREATED: events_pb2.LeadCreated, MERGED: events_pb2.LeadMerged}[event_type]()
        event_pb2.Event.FromString(data).payload.Unpack(payload)
        if payload.lead.id in wanted:
            seen[(event_type, payload.lead.id)] = headers["traceparent"].split("-")[1]
    assert seen[(CREATED, str(answers[1][0].lead.id))] == traces[1]
    assert seen[(MERGED, str(answers[2][0].lead.id))] == traces[2]
