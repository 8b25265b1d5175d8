"""Lead capture and queries (SQLAlchemy Core: capture is a hot path). Keyword-only functions
taking the connection; they never commit.

Capture de-duplicates by claiming the lead's keys (normalised phone, email, open_id) in
``lead_keys``, whose primary key makes a concurrent capture of the same person wait for the
first and then merge into its lead: a database constraint, not a check-then-insert.

Then the tenant's de-duplication rules (crm_leads.dedup, read through a per-process cache)
decide whether a key match, or a lead of the same city with a similar company or name, is a
duplicate, and whether the capture merges into it, overwrites its fields or is rejected.

Every capture scores the lead with the tenant's rules (crm_leads.scoring, read through a
per-process cache) and stores the score in the statement that writes the lead: no extra
round trip."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import conversion_pb2, events_pb2, lead_pb2, lead_service_pb2
from crm_leads.activities.models import lead_activities
from crm_leads.conversion.models import lead_conversions
from crm_leads.dedup import history, matching
from crm_leads.dedup import rules as dedup
from crm_leads.dedup import service as dedup_service
from crm_leads.lead import cleansing, edit_rules
from crm_leads.lead.mapping import intent_to_proto, lead_to_proto
from crm_leads.lead.models import OPEN_STATUSES, lead_intents, lead_keys, leads
from crm_leads.lead.rules import NewIntent, NewLead
from crm_leads.scoring import service as scoring
from crm_leads.scoring.rules import LeadFacts, Scored, score
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal
from crm_platform.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    Unavailable,
    describe,
)
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest

PRODUCER = "leads"
CREATED_EVENT = "crm.leads.lead.created.v1"
INTENTS_SHOWN = 50
CONVERSION_COMPLETED = conversion_pb2.CONVERSION_STATE_COMPLETED

# Built once: SQLAlchemy does not cache PostgreSQL ON CONFLICT constructs.
# Claims all of a lead's keys in one statement, in the order given (rows are inserted in
# ordinality order, so concurrent captures still lock keys in the same order). Returns the
# keys it claimed; a key another lead holds waits for that lead's transaction, then is
# skipped.
_CLAIM_KEYS = sa.text(
    "INSERT INTO lead_keys (tenant_id, kind, value, lead_id) "
    "SELECT :tenant_id, k.kind, k.value, :lead_id "
    "FROM unnest(CAST(:kinds AS text[]), CAST(:key_values AS text[])) "
    "WITH ORDINALITY AS k (kind, value, n) ORDER BY k.n "
    "ON CONFLICT DO NOTHING RETURNING kind, value"
).bindparams(
    sa.bindparam("tenant_id", type_=lead_keys.c.tenant_id.type),
    sa.bindparam("lead_id", type_=lead_keys.c.lead_id.type),
)
_KEY_OWNER = sa.select(lead_keys.c.lead_id).where(
    lead_keys.c.tenant_id == sa.bindparam("tenant_id"),
    lead_keys.c.kind == sa.bindparam("kind"),
    lead_keys.c.value == sa.bindparam("value"),
)
_INSERT_LEAD = leads.insert().returning(*leads.c)
# Also counts the lead's other intents with a campaign or a product, for scoring. Run after
# the lead row is locked, so the counts include every intent committed before this one.
_ADD_INTENT = sa.text(
    "INSERT INTO lead_intents "
    "(id, tenant_id, lead_id, source, campaign, product_interest, request_id, created_lead) "
    "VALUES (:id, :tenant_id, :lead_id, :source, :campaign, :product_interest, :request_id, "
    ":created_lead) "
    "ON CONFLICT (tenant_id, request_id) WHERE request_id IS NOT NULL DO NOTHING "
    "RETURNING id, source, campaign, product_interest, occur_time, "
    "(SELECT count(*) FROM lead_intents o WHERE o.lead_id = :lead_id AND o.id <> :id "
    "AND o.campaign <> '') AS other_campaigns, "
    "(SELECT count(*) FROM lead_intents o WHERE o.lead_id = :lead_id AND o.id <> :id "
    "AND o.product_interest <> '') AS other_products"
).bindparams(
    *(
        sa.bindparam(c, type_=lead_intents.c[c].type)
        for c in ("id", "tenant_id", "lead_id", "request_id")
    )
)
# Logged visits count in the score (scoring's behaviours.visits).
VISIT = events_pb2.LEAD_ACTIVITY_KIND_VISIT
_PROFILE = ("full_name", "phone", "email", "company", "province", "city", "open_id", "source")


class Outcome(enum.Enum):
    CREATED = lead_service_pb2.CAPTURE_OUTCOME_CREATED
    MERGED = lead_service_pb2.CAPTURE_OUTCOME_MERGED


@dataclass(frozen=True)
class Captured:
    lead: Any
    outcome: Outcome
    # False when the duplicate belongs to an org unit outside the caller's subtree: the
    # enquiry is recorded there, but the caller must not see that lead.
    visible: bool
    # The lead's intents as ``intents_of`` would read them, when already known.
    intents: Sequence[Any] | None = None
    # ``lead`` as a message without intents, when already built (for its event).
    message: lead_pb2.Lead | None = None


async def capture(
    *,
    conn: AsyncConnection,
    principal: Principal,
    lead: NewLead,
    intent: NewIntent,
    request_id: uuid.UUID | None,
) -> Captured:
    """Create the lead owned by the caller's org unit, or merge the enquiry into the
    existing lead with one of its keys (oldest first). A retried request_id changes nothing
    and returns the same lead."""
    principal.require_any(WRITE_ROLES)
    lead_id = new_id()
    held: dict[str, uuid.UUID] = {}  # key kind -> the lead already holding it
    keys = lead.dedup_keys()
    if keys:
        claimed = {
            (row.kind, row.value)
            for row in await conn.execute(
                _CLAIM_KEYS,
                {
                    "tenant_id": principal.tenant_id,
                    "lead_id": lead_id,
                    "kinds": [kind for kind, _ in keys],
                    "key_values": [value for _, value in keys],
                },
            )
        }
        for kind, value in keys:
            if (kind, value) in claimed:
                continue
            owner = await key_owner(conn, principal.tenant_id, lead_id, kind, value)
            if owner is not None:
                held[kind] = owner
    rules = await scoring.CACHE.current(conn, principal.tenant_id)
    dedup_current = await dedup_service.CACHE.current(conn, principal.tenant_id)
    duplicate = await matching.find_duplicate(
        conn=conn,
        tenant_id=principal.tenant_id,
        rules=dedup_current.rules,
        probe=_probe(lead, intent),
        held=held,
    )
    if (duplicate is None or duplicate.rule.action == "reject") and held and request_id:
        # Not merged this time: a retry of a capture the rules answered differently (before
        # a rules change, say) must still get the first answer.
        retried = await _retried(conn, principal, request_id)
        if retried is not None:
            return retried
    if duplicate is None:
        # Keys other leads hold stay theirs (a key has one owner); the new lead gets the
        # keys it claimed.
        return await _create(conn, principal, lead_id, lead, intent, request_id, rules)
    if duplicate.rule.action == "reject":
        await _reject(conn, principal, duplicate)
    # Keys this capture added (a new email, say) now point at the lead it merged into.
    await conn.execute(
        lead_keys.update().where(lead_keys.c.lead_id == lead_id).values(lead_id=duplicate.lead_id)
    )
    return await _merge(conn, principal, duplicate, lead, intent, request_id, rules)


# Claim, look up, claim again: a key changes hands only when an edit removes it.
KEY_ATTEMPTS = 3


async def key_owner(
    conn: AsyncConnection, tenant_id: uuid.UUID, lead_id: uuid.UUID, kind: str, value: str
) -> uuid.UUID | None:
    """The lead holding a key this capture could not claim, or None once the capture has
    claimed it after all: between the claim and the lookup a concurrent edit may have
    removed the key from its lead (and committed), and then it is free to take."""
    key = {"tenant_id": tenant_id, "kind": kind, "value": value}
    for _ in range(KEY_ATTEMPTS):
        # A fresh statement: it sees the row a concurrent capture or edit just committed.
        owner: uuid.UUID | None = (await conn.execute(_KEY_OWNER, key)).scalar_one_or_none()
        if owner is not None:
            return owner
        claim = {"tenant_id": tenant_id, "lead_id": lead_id, "kinds": [kind], "key_values": [value]}
        if (await conn.execute(_CLAIM_KEYS, claim)).first() is not None:
            return None
    raise Unavailable(
        f"the {kind} is being moved between leads by concurrent edits; retry the request",
        reason="LEAD_KEY_CONTENDED",
    )


def profile_rules_apply(rules: dedup.DedupRules, lead: NewLead, intent: NewIntent) -> bool:
    """Whether de-duplicating this capture reads candidate leads (a profile rule whose
    fields it has), rather than only the identity keys it claims."""
    probe = _probe(lead, intent)
    return any(probe.has(rule) for rule in rules.profile_rules())


def _probe(lead: NewLead, intent: NewIntent) -> dedup.Probe:
    return dedup.Probe(
        full_name=lead.full_name,
        company=lead.company,
        province=lead.province,
        city=lead.city,
        source=lead.source,
        campaign=intent.campaign,
    )


async def _retried(
    conn: AsyncConnection, principal: Principal, request_id: uuid.UUID
) -> Captured | None:
    """The first answer to ``request_id``, if a capture with it committed before."""
    first = (
        await conn.execute(
            sa.select(leads, lead_intents.c.created_lead)
            .join(lead_intents, lead_intents.c.lead_id == leads.c.id)
            .where(
                lead_intents.c.tenant_id == principal.tenant_id,
                lead_intents.c.request_id == request_id,
            )
        )
    ).first()
    if first is None:
        return None
    outcome = Outcome.CREATED if first.created_lead else Outcome.MERGED
    return Captured(first, outcome, principal.can_see(first.tenant_id, first.owner_org_path))


async def _reject(
    conn: AsyncConnection, principal: Principal, duplicate: dedup.Duplicate
) -> NoReturn:
    """Refuse the capture. Raising rolls back the transaction (or the batch item's
    savepoint), so the keys it claimed are released and nothing is written. The lead is
    named only to a caller who can see it."""
    owner = (
        await conn.execute(
            sa.select(leads.c.tenant_id, leads.c.owner_org_path).where(
                leads.c.id == duplicate.lead_id
            )
        )
    ).one()
    visible = principal.can_see(owner.tenant_id, owner.owner_org_path)
    which = f"lead {duplicate.lead_id}" if visible else "an existing lead"
    message = (
        f"duplicate of {which} ({duplicate.matched}); "
        f"rejected by de-duplication rule {duplicate.rule.name!r}"
    )
    raise AlreadyExists(
        message,
        reason="LEAD_DUPLICATE_REJECTED",
        violations=[FieldViolation(duplicate.field, message)],
        metadata={"rule": duplicate.rule.name}
        | ({"lead": str(duplicate.lead_id)} if visible else {}),
    )


async def _create(
    conn: AsyncConnection,
    principal: Principal,
    lead_id: uuid.UUID,
    lead: NewLead,
    intent: NewIntent,
    request_id: uuid.UUID | None,
    rules: scoring.CurrentRules,
) -> Captured:
    values = new_lead_values(principal, lead_id, lead, intent, rules)
    row = (await conn.execute(_INSERT_LEAD, values)).one()
    added = await _add_intent(conn, row, intent, request_id, created_lead=True)
    if added is None:
        # Only reachable when a request_id is reused for a different person.
        raise AlreadyExists(
            "this Idempotency-Key was already used for another lead",
            reason="IDEMPOTENCY_KEY_REUSED",
        )
    message = lead_to_proto(row)
    await add_event(
        conn,
        event_type=CREATED_EVENT,
        payload=events_pb2.LeadCreated(lead=message),
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        producer=PRODUCER,
    )
    # A new lead has exactly this one intent: no need to read it back.
    return Captured(row, Outcome.CREATED, visible=True, intents=(added,), message=message)


def new_lead_values(
    principal: Principal,
    lead_id: uuid.UUID,
    lead: NewLead,
    intent: NewIntent,
    rules: scoring.CurrentRules,
) -> dict[str, Any]:
    """The ``leads`` row of a new lead owned by the caller's unit: scored, checked."""
    facts = LeadFacts(
        **{name: getattr(lead, name) for name in _PROFILE},
        intent_count=1,
        campaign_responses=int(bool(intent.campaign)),
        product_interests=int(bool(intent.product_interest)),
    )
    # No lead.scored event for a new lead: lead.created carries its score and grade.
    scored = score(facts, rules.rules)
    # Only a new lead is checked: a merge never changes a verification (a reviewer's
    # decision must not be undone by the next enquiry).
    verdict = cleansing.check(lead)
    return {
        "id": lead_id,
        **records.owned_by(principal),
        "full_name": lead.full_name,
        "phone": lead.phone,
        "email": lead.email,
        "company": lead.company,
        "province": lead.province,
        "city": lead.city,
        "source": lead.source,
        "open_id": lead.open_id,
        "union_id": lead.union_id,
        "territory": lead.territory,
        "custom_fields": dict(lead.custom),
        "status": lead_pb2.LEAD_STATUS_NEW,
        "score": scored.score,
        "grade": scored.grade,
        "verification": verdict.verification,
        "verification_note": verdict.note,
    }


async def _merge(
    conn: AsyncConnection,
    principal: Principal,
    duplicate: dedup.Duplicate,
    lead: NewLead,
    intent: NewIntent,
    request_id: uuid.UUID | None,
    rules: scoring.CurrentRules,
) -> Captured:
    target = duplicate.lead_id
    current = (
        await conn.execute(sa.select(leads).where(leads.c.id == target).with_for_update())
    ).one()
    added = await _add_intent(conn, current, intent, request_id, created_lead=False)
    visible = principal.can_see(current.tenant_id, current.owner_org_path)
    if added is None:  # a retry: answer as the first attempt did
        first = (
            await conn.execute(
                sa.select(lead_intents.c.created_lead).where(
                    lead_intents.c.tenant_id == current.tenant_id,
                    lead_intents.c.request_id == request_id,
                )
            )
        ).scalar_one()
        return Captured(current, Outcome.CREATED if first else Outcome.MERGED, visible)
    # A merge fills fields the lead lacks; an overwrite replaces them per the rule.
    rule = duplicate.rule
    changed = dedup.changes(
        rule.action,
        rule.overwrite_fields,
        {name: getattr(current, name) for name in dedup.OVERWRITABLE},
        {name: getattr(lead, name) for name in dedup.OVERWRITABLE},
    )
    fills = {name: new for name, (_, new) in changed.items()}
    facts = LeadFacts(
        **{name: fills.get(name, getattr(current, name)) for name in _PROFILE},
        intent_count=current.intent_count + 1,
        campaign_responses=added.other_campaigns + int(bool(intent.campaign)),
        product_interests=added.other_products + int(bool(intent.product_interest)),
        visits=await _visit_count(conn, target, rules.rules),
    )
    scored = score(facts, rules.rules)
    row = (
        await conn.execute(
            leads.update()
            .where(leads.c.id == target)
            .values(
                intent_count=leads.c.intent_count + 1,
                version=leads.c.version + 1,
                update_time=sa.func.now(),
                score=scored.score,
                grade=scored.grade,
                **fills,
            )
            .returning(*leads.c)
        )
    ).one()
    await add_event(
        conn,
        event_type="crm.leads.lead.merged.v1",
        payload=events_pb2.LeadMerged(
            lead=lead_to_proto(row),
            intent=intent_to_proto(added.id, intent, added.occur_time),
        ),
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        producer=PRODUCER,
    )
    await scored_event(conn, current, row, scored, rules.version)
    await _record_changes(conn, principal, row, duplicate, changed, added.id, request_id)
    return Captured(row, Outcome.MERGED, visible)


async def _record_changes(
    conn: AsyncConnection,
    principal: Principal,
    row: Any,
    duplicate: dedup.Duplicate,
    changed: dict[str, tuple[str, str]],
    intent_id: uuid.UUID,
    request_id: uuid.UUID | None,
) -> None:
    """Field history for every change; lead.updated when an overwrite changed something (a
    merge's fills are already in lead.merged's lead)."""
    if not changed:
        return
    action = duplicate.rule.action
    await history.record(
        conn=conn,
        lead=row,
        changed=changed,
        action=action,
        rule=duplicate.rule.name,
        intent_id=intent_id,
        request_id=request_id,
        author=principal.subject,
    )
    if action != "overwrite":
        return
    await add_event(
        conn,
        event_type="crm.leads.lead.updated.v1",
        payload=events_pb2.LeadUpdated(
            lead=lead_to_proto(row),
            changed_fields=sorted(changed),
            rule=duplicate.rule.name,
            intent_id=str(intent_id),
        ),
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        producer=PRODUCER,
    )


async def scored_event(
    conn: AsyncConnection, before: Any, after: Any, scored: Scored, rules_version: int
) -> None:
    """lead.scored, if the score or the grade changed."""
    if (before.score, before.grade) == (after.score, after.grade):
        return
    await add_event(
        conn,
        event_type="crm.leads.lead.scored.v1",
        payload=events_pb2.LeadScored(
            lead_id=str(after.id),
            score=after.score,
            grade=after.grade,
            previous_grade=before.grade,
            reasons=scored.reasons,
            previous_score=before.score,
            rules_version=rules_version,
        ),
        tenant_id=after.tenant_id,
        org_path=after.owner_org_path,
        producer=PRODUCER,
    )


@dataclass(frozen=True)
class Rescored:
    lead: Any
    reasons: list[str]
    rules_version: int


async def rescore(*, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID) -> Rescored:
    """Score a visible lead again with the tenant's current rules (read from the database,
    not the cache: whoever just changed the rules expects them here)."""
    principal.require_any(WRITE_ROLES)
    visible = await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    # Locked, so a concurrent capture's score cannot be overwritten with an older one.
    current = (
        await conn.execute(sa.select(leads).where(leads.c.id == visible.id).with_for_update())
    ).one()
    rules = await scoring.latest(conn=conn, tenant_id=current.tenant_id)
    scored = score(await _facts(conn, current, current), rules.rules)
    row = await store_score(conn, current, scored, rules.version)
    return Rescored(row or current, scored.reasons, rules.version)


async def store_score(
    conn: AsyncConnection, current: Any, scored: Scored, rules_version: int
) -> Any | None:
    """Write a lead's new score and grade (a new version) with its lead.scored event; the
    updated row, or None when neither changed (nothing written)."""
    if (scored.score, scored.grade) == (current.score, current.grade):
        return None
    row = (
        await conn.execute(
            leads.update()
            .where(leads.c.id == current.id)
            .values(
                score=scored.score,
                grade=scored.grade,
                version=leads.c.version + 1,
                update_time=sa.func.now(),
            )
            .returning(*leads.c)
        )
    ).one()
    await scored_event(conn, current, row, scored, rules_version)
    return row


async def _facts(conn: AsyncConnection, lead: Any, profile: Any) -> LeadFacts:
    """Scoring facts of ``lead`` with the profile fields of ``profile`` (the lead itself, or
    its edited profile), counting its intents and logged visits."""
    counts = (
        await conn.execute(
            sa.select(
                sa.func.count().filter(lead_intents.c.campaign != ""),
                sa.func.count().filter(lead_intents.c.product_interest != ""),
                visit_count(lead.id),
            ).where(lead_intents.c.lead_id == lead.id)
        )
    ).one()
    return LeadFacts(
        **{name: getattr(profile, name) for name in _PROFILE},
        intent_count=lead.intent_count,
        campaign_responses=counts[0],
        product_interests=counts[1],
        visits=counts[2],
    )


def visit_count(lead_id: Any) -> sa.ScalarSelect[int]:
    """Logged visits of a lead: a behaviour scoring counts (behaviours.visits)."""
    return (
        sa.select(sa.func.count())
        .where(lead_activities.c.lead_id == lead_id, lead_activities.c.kind == VISIT)
        .scalar_subquery()
    )


async def _visit_count(conn: AsyncConnection, lead_id: uuid.UUID, rules: Any) -> int:
    """Only read when the tenant's rules give visits points: merges stay one read less."""
    if rules.behaviours.visits is None:
        return 0
    return int((await conn.execute(sa.select(visit_count(lead_id)))).scalar_one())


async def update(
    *,
    conn: AsyncConnection,
    principal: Principal,
    lead_id: uuid.UUID,
    patch: Mapping[str, str],
    paths: Collection[str],
    phone_region: str,
    expected_etag: str = "",
) -> Any:
    """Edit the masked profile fields (crm_leads.lead.edit_rules) of an open, visible lead:
    one UPDATE, the field history (action "edit"), crm.leads.lead.updated.v1, and a new
    score (lead.scored) when a scoring input changed. No change: nothing is written.

    Optimistic, not locked up front: the new phone/email/open_id keys are claimed first
    and the lead row written last, the order captures take these locks in, so an edit and
    a capture cannot deadlock. The UPDATE only matches the version read, so a lead changed
    in between (a merge, a claim) is LEAD_VERSION_MISMATCH rather than overwritten."""
    principal.require_any(WRITE_ROLES)
    edit_rules.check_mask(paths)
    current = await records.get_visible(conn, leads, principal, lead_id, kind="lead")
    edit_rules.check_version(
        lead_id=current.id,
        version=current.version,
        expected_etag=expected_etag,
    )
    if current.status not in OPEN_STATUSES:
        raise FailedPrecondition(
            f"lead {lead_id} is not open", reason="LEAD_NOT_OPEN", metadata={"lead": str(lead_id)}
        )
    edit = edit_rules.plan_edit(
        current=dict(current._mapping), patch=patch, paths=paths, phone_region=phone_region
    )
    if not edit.changes:
        return current
    await _move_keys(conn, principal, current, edit.key_changes())
    values: dict[str, Any] = {name: new for name, (_, new) in edit.changes.items()}
    rescored: tuple[Scored, int] | None = None
    if not edit.changes.keys().isdisjoint(_PROFILE):
        rules = await scoring.CACHE.current(conn, current.tenant_id)
        scored = score(await _facts(conn, current, edit.lead), rules.rules)
        values |= {"score": scored.score, "grade": scored.grade}
        rescored = (scored, rules.version)
    row = (
        await conn.execute(
            leads.update()
            .where(
                leads.c.id == current.id,
                leads.c.version == current.version,
                leads.c.status.in_(OPEN_STATUSES),
            )
            .values(**values, version=leads.c.version + 1, update_time=sa.func.now())
            .returning(*leads.c)
        )
    ).first()
    if row is None:
        raise edit_rules.version_mismatch(current.id)
    await _edited(conn, principal, current, row, edit.changes, rescored)
    return row


async def _move_keys(
    conn: AsyncConnection,
    principal: Principal,
    lead: Any,
    key_changes: Sequence[tuple[str, str, str]],
) -> None:
    """Claim the edited identity keys for ``lead`` (with the capture's statements, in its
    order) and release the ones they replace. A key another lead holds is LEAD_DUPLICATE;
    raising rolls the claims back."""
    new = [(kind, value) for kind, _, value in key_changes if value]
    if new:
        tenant = {"tenant_id": lead.tenant_id}
        claimed = {
            (row.kind, row.value)
            for row in await conn.execute(
                _CLAIM_KEYS,
                {
                    **tenant,
                    "lead_id": lead.id,
                    "kinds": [kind for kind, _ in new],
                    "key_values": [value for _, value in new],
                },
            )
        }
        clashes = []
        for kind, value in new:
            if (kind, value) not in claimed:
                held = {**tenant, "kind": kind, "value": value}
                owner = (await conn.execute(_KEY_OWNER, held)).scalar_one()
                if owner != lead.id:  # already this lead's (from a merge, say): fine
                    clashes.append((kind, owner))
        if clashes:
            await _duplicate(conn, principal, clashes)
    # The replaced value no longer identifies this lead: later captures with it must not
    # merge into it, and another lead may take it.
    old = [(kind, value) for kind, value, _ in key_changes if value]
    if old:
        await conn.execute(
            lead_keys.delete().where(
                lead_keys.c.tenant_id == lead.tenant_id,
                lead_keys.c.lead_id == lead.id,
                sa.tuple_(lead_keys.c.kind, lead_keys.c.value).in_(old),
            )
        )


async def _duplicate(
    conn: AsyncConnection, principal: Principal, clashes: Sequence[tuple[str, uuid.UUID]]
) -> NoReturn:
    """409 LEAD_DUPLICATE, one violation per field; the other lead is named only to a caller
    who can see it."""
    owners = await conn.execute(
        sa.select(leads.c.id, leads.c.tenant_id, leads.c.owner_org_path).where(
            leads.c.id.in_([owner for _, owner in clashes])
        )
    )
    visible = {r.id for r in owners if principal.can_see(r.tenant_id, r.owner_org_path)}
    which = {owner: f"lead {owner}" if owner in visible else "another lead" for _, owner in clashes}
    violations = [
        FieldViolation(field, f"already the {field} of {which[owner]}") for field, owner in clashes
    ]
    shown = [str(owner) for _, owner in clashes if owner in visible]
    raise AlreadyExists(
        describe(violations),
        reason="LEAD_DUPLICATE",
        violations=violations,
        metadata={"lead": shown[0]} if shown else {},
    )


async def _edited(
    conn: AsyncConnection,
    principal: Principal,
    before: Any,
    row: Any,
    changes: Mapping[str, tuple[str, str]],
    rescored: tuple[Scored, int] | None,
) -> None:
    """Field history and events of an edit, in its transaction."""
    await history.record(
        conn=conn,
        lead=row,
        changed=changes,
        action="edit",
        rule="",
        intent_id=None,
        request_id=None,
        author=principal.subject,
    )
    await add_event(
        conn,
        event_type="crm.leads.lead.updated.v1",
        payload=events_pb2.LeadUpdated(lead=lead_to_proto(row), changed_fields=sorted(changes)),
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        producer=PRODUCER,
    )
    if rescored is not None:
        await scored_event(conn, before, row, *rescored)


async def _add_intent(
    conn: AsyncConnection,
    lead: Any,
    intent: NewIntent,
    request_id: uuid.UUID | None,
    *,
    created_lead: bool,
) -> Any:
    """The new intent row (id, occur_time), or None if request_id was seen before."""
    return (
        await conn.execute(
            _ADD_INTENT,
            {
                "id": new_id(),
                "tenant_id": lead.tenant_id,
                "lead_id": lead.id,
                "source": intent.source,
                "campaign": intent.campaign,
                "product_interest": intent.product_interest,
                "request_id": request_id,
                "created_lead": created_lead,
            },
        )
    ).first()


_INTENTS_OF = (
    sa.select(lead_intents)
    .where(lead_intents.c.lead_id == sa.bindparam("lead_id"))
    .order_by(lead_intents.c.id.desc())
    .limit(INTENTS_SHOWN)
)


async def intents_of(*, conn: AsyncConnection, lead_id: uuid.UUID) -> Sequence[Any]:
    """Newest first, the latest ``INTENTS_SHOWN``."""
    return (await conn.execute(_INTENTS_OF, {"lead_id": lead_id})).all()


async def get(*, conn: AsyncConnection, principal: Principal, lead_id: uuid.UUID) -> Any:
    """A lead outside the caller's subtree is reported as missing, so existence never leaks."""
    return await records.get_visible(conn, leads, principal, lead_id, kind="lead")


async def list_visible(
    *,
    conn: AsyncConnection,
    principal: Principal,
    page: PageRequest,
    customer_id: uuid.UUID | None = None,
) -> list[Any]:
    """Newest first (UUIDv7 ids are time-ordered), keyset-paged. ``customer_id``: only the
    leads a completed conversion turned into that customer (any number of leads may convert
    into one customer), still under the caller's visibility."""
    where: list[sa.ColumnElement[bool]] = []
    if customer_id is not None:
        # A semi-join, so a lead converted once yields one row; the tenant comes first so
        # ix_lead_conversions_customer finds the customer's few conversions directly.
        where.append(
            sa.exists().where(
                lead_conversions.c.tenant_id == principal.tenant_id,
                lead_conversions.c.customer_id == customer_id,
                lead_conversions.c.state == CONVERSION_COMPLETED,
                lead_conversions.c.lead_id == leads.c.id,
            )
        )
    return await records.visible_page(conn, leads, principal, page, *where)


_RANKED_INTENTS = (
    sa.select(
        lead_intents,
        sa.func.row_number()
        .over(partition_by=lead_intents.c.lead_id, order_by=lead_intents.c.id.desc())
        .label("rank"),
    )
    .where(
        lead_intents.c.lead_id
        == sa.func.any(sa.bindparam("lead_ids", type_=ARRAY(UUID(as_uuid=True))))
    )
    .subquery("ranked")
)
_INTENTS_OF_MANY = (
    sa.select(*(_RANKED_INTENTS.c[c.name] for c in lead_intents.c))
    .where(_RANKED_INTENTS.c.rank <= INTENTS_SHOWN)
    .order_by(_RANKED_INTENTS.c.lead_id, _RANKED_INTENTS.c.id.desc())
)


async def intents_by_lead(
    *, conn: AsyncConnection, lead_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Any]]:
    """Each lead's intents as ``intents_of`` reads them (newest first, the latest
    ``INTENTS_SHOWN``), for a whole page in one query rather than one per lead."""
    found: dict[uuid.UUID, list[Any]] = {lead_id: [] for lead_id in lead_ids}
    if lead_ids:
        rows = await conn.execute(_INTENTS_OF_MANY, {"lead_ids": list(lead_ids)})
        for row in rows:
            found[row.lead_id].append(row)
    return found
