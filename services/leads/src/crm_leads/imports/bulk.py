"""Writing one prepared slice of an import in one transaction, set-based: one key lookup,
COPY for the new leads, their keys and every intent, one UPDATE for the leads the slice
merges into, and batch events. Hot path: the asyncpg driver directly, no per-row statements.

Race-freedom is the ``lead_keys`` primary key's, as for single captures: a key inserted by a
concurrent capture after the lookup makes the COPY fail with a unique violation, the slice
rolls back whole (``KeyTaken``) and is written again, now seeing that key as existing. Keys
are inserted sorted by (kind, value); single captures claim theirs in the same order, so the
two never deadlock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import uuid_utils
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2, lead_pb2
from crm_leads.imports.prepare import FILLABLE, LEAD_INDEX, Key, Person, Prepared
from crm_leads.lead.rules import NewIntent, NewLead
from crm_leads.lead.service import Outcome, capture
from crm_leads.scoring.rules import LeadFacts, Scorer
from crm_platform.auth import ROLE_INTEGRATION, Principal
from crm_platform.errors import DomainError, FieldViolation
from crm_platform.outbox import add_event, batches

PRODUCER = "leads"

_LEAD_COLUMNS = (
    "id",
    "tenant_id",
    "owner_org_id",
    "owner_org_path",
    "full_name",
    "phone",
    "email",
    "company",
    "province",
    "city",
    "source",
    "status",
    "open_id",
    "union_id",
    "intent_count",
    "score",
    "grade",
    "verification",
    "verification_note",
)
_INTENT_COLUMNS = (
    "id",
    "tenant_id",
    "lead_id",
    "source",
    "campaign",
    "product_interest",
    "created_lead",
)
_KEY_COLUMNS = ("tenant_id", "kind", "value", "lead_id")
_ERROR_COLUMNS = ("import_id", "row_no", "fields", "messages", "raw")

# One primary-key probe per key. A plain join lets the planner pick a hash join over a
# sequential scan of every key of the table (560 ms per slice at 1.5M keys, growing with the
# table); the LATERAL ... LIMIT 1 cannot be flattened into one, so it stays index lookups.
_OWNERS = (
    "SELECT i.kind, i.value, k.lead_id "
    "FROM unnest($2::text[], $3::text[]) AS i (kind, value) "
    "CROSS JOIN LATERAL (SELECT lead_id FROM lead_keys "
    "WHERE tenant_id = $1 AND kind = i.kind AND value = i.value LIMIT 1) AS k"
)
# The statements above look expensive to the planner (tens of thousands of rows), which
# makes it JIT-compile them on every slice: ~10-50 ms each, for statements that run once.
_NO_JIT = "SET LOCAL jit = off"
_CLAIM_KEYS = (
    "INSERT INTO lead_keys (tenant_id, kind, value, lead_id) "
    "SELECT $1, kind, value, lead_id "
    "FROM unnest($2::text[], $3::text[], $4::uuid[]) AS k (kind, value, lead_id) "
    "ORDER BY kind, value ON CONFLICT DO NOTHING RETURNING kind, value"
)
_MOVE_KEYS = (
    "UPDATE lead_keys k SET lead_id = m.target "
    "FROM unnest($1::uuid[], $2::uuid[]) AS m (provisional, target) "
    "WHERE k.lead_id = m.provisional"
)
_ADD_KEYS = (
    "INSERT INTO lead_keys (tenant_id, kind, value, lead_id) "
    "SELECT $1, kind, value, lead_id "
    "FROM unnest($2::text[], $3::text[], $4::uuid[]) AS k (kind, value, lead_id) "
    "ORDER BY kind, value ON CONFLICT DO NOTHING"
)
# Locked in id order, so two imports merging into the same leads cannot deadlock.
# Logged visits count in a merged lead's score (scoring's behaviours.visits).
VISIT = events_pb2.LEAD_ACTIVITY_KIND_VISIT
_LOCK_TARGETS = (
    "SELECT l.id, l.owner_org_path, l.full_name, l.phone, l.email, l.company, l.province, "
    "l.city, l.open_id, l.union_id, l.source, l.intent_count, "
    "(SELECT count(*) FROM lead_intents i WHERE i.lead_id = l.id AND i.campaign <> '') "
    "AS campaigns, "
    "(SELECT count(*) FROM lead_intents i WHERE i.lead_id = l.id AND i.product_interest <> '') "
    "AS products, "
    f"(SELECT count(*) FROM lead_activities a WHERE a.lead_id = l.id AND a.kind = {VISIT}) "
    "AS visits "
    "FROM leads l WHERE l.id = ANY($1::uuid[]) ORDER BY l.id FOR UPDATE OF l"
)
_UPDATE_TARGETS = (
    "UPDATE leads l SET intent_count = u.intent_count, score = u.score, grade = u.grade, "
    "company = u.company, province = u.province, city = u.city, email = u.email, "
    "phone = u.phone, open_id = u.open_id, union_id = u.union_id, "
    "version = l.version + 1, update_time = now() "
    "FROM unnest($1::uuid[], $2::int[], $3::int2[], $4::text[], $5::text[], $6::text[], "
    "$7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) "
    "AS u (id, intent_count, score, grade, company, province, city, email, phone, open_id, "
    "union_id) WHERE l.id = u.id"
)


class KeyTaken(Exception):
    """A concurrent capture claimed one of the slice's keys: write the slice again."""


@dataclass(frozen=True)
class Job:
    """What writing a slice needs to know about its import."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    owner_org_id: uuid.UUID
    owner_org_path: str
    created_by: str = ""


@dataclass(frozen=True)
class Written:
    created: int  # new leads
    merged: int  # valid rows that became an intent of an existing or an earlier row's lead
    invalid: int


async def write(
    conn: AsyncConnection, job: Job, prepared: Prepared, scorer: Scorer, *, careful: bool = False
) -> Written:
    """In the caller's transaction, which must already have run a statement (SQLAlchemy
    begins the driver's transaction lazily). ``careful``: claim the new leads' keys with
    ON CONFLICT instead of COPY, merging into whoever took one meanwhile — slower, but it
    cannot fail on a concurrent capture (the retry after ``KeyTaken``)."""
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    await raw.execute(_NO_JIT)
    owners = await _owners(raw, job.tenant_id, prepared.groups)
    new: list[Person] = []
    merges: dict[uuid.UUID, list[Person]] = {}
    for person in prepared.groups:
        existing = {owners[key] for key in person[1] if key in owners}
        if existing:
            merges.setdefault(min(existing), []).append(person)
        else:
            new.append(person)
    new_ids = [_new_id() for _ in new]
    if careful:
        new, new_ids = await _claim_keys(raw, job, new, new_ids, owners, merges)
    else:
        try:
            await _copy_keys(raw, job, new, new_ids)
        except asyncpg.UniqueViolationError as exc:
            raise KeyTaken(str(exc)) from exc
    await raw.copy_records_to_table(
        "leads", records=_lead_records(job, new, new_ids), columns=_LEAD_COLUMNS
    )
    merged_rows = await _merge(raw, job, merges, owners, scorer)
    await raw.copy_records_to_table(
        "lead_intents",
        records=_intent_records(job, new, new_ids, merges),
        columns=_INTENT_COLUMNS,
    )
    if prepared.errors:
        await raw.copy_records_to_table(
            "lead_import_errors",
            records=[(job.id, *error) for error in prepared.errors],
            columns=_ERROR_COLUMNS,
        )
    await _created_events(conn, job, new, new_ids)
    await _merged_events(conn, job, merged_rows)
    valid = sum(len(person[2]) for person in prepared.groups)
    return Written(created=len(new), merged=valid - len(new), invalid=len(prepared.errors))


def _new_id() -> str:
    # Time-ordered (UUIDv7) like crm_platform.ids.new_id, but as text: asyncpg encodes it in
    # C and events carry text anyway, where a uuid.UUID costs two Python-level conversions.
    return str(uuid_utils.uuid7())


async def _owners(
    raw: asyncpg.Connection, tenant_id: uuid.UUID, groups: Sequence[Person]
) -> dict[Key, uuid.UUID]:
    kinds: list[str] = []
    values: list[str] = []
    for person in groups:
        for kind, value in person[1]:
            kinds.append(kind)
            values.append(value)
    rows = await raw.fetch(_OWNERS, tenant_id, kinds, values)
    return {(row[0], row[1]): row[2] for row in rows}


async def _copy_keys(
    raw: asyncpg.Connection, job: Job, new: Sequence[Person], ids: Sequence[str]
) -> None:
    keys = sorted(
        (kind, value, lead_id)
        for person, lead_id in zip(new, ids, strict=True)
        for kind, value in person[1]
    )
    await raw.copy_records_to_table(
        "lead_keys",
        records=[(job.tenant_id, kind, value, lead_id) for kind, value, lead_id in keys],
        columns=_KEY_COLUMNS,
    )


async def _claim_keys(
    raw: asyncpg.Connection,
    job: Job,
    new: list[Person],
    ids: list[str],
    owners: dict[Key, uuid.UUID],
    merges: dict[uuid.UUID, list[Person]],
) -> tuple[list[Person], list[str]]:
    """The single-capture protocol, set-based: claim every key (ON CONFLICT waits for a
    concurrent holder, then skips); a person who lost a key merges into that key's lead (the
    oldest if several), and the keys it did claim move to that lead. Returns the people
    still new, with their ids; ``owners`` and ``merges`` are updated in place."""
    rows = sorted(
        (kind, value, lead_id)
        for person, lead_id in zip(new, ids, strict=True)
        for kind, value in person[1]
    )
    claimed = {
        (r[0], r[1])
        for r in await raw.fetch(
            _CLAIM_KEYS,
            job.tenant_id,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
        )
    }
    lost = [n for n, person in enumerate(new) if any(k not in claimed for k in person[1])]
    if not lost:
        return new, ids
    taken = [k for n in lost for k in new[n][1] if k not in claimed]
    owners.update(await _owners_of(raw, job.tenant_id, taken))
    moved: list[tuple[str, uuid.UUID]] = []
    for n in lost:
        target = min(owners[k] for k in new[n][1] if k not in claimed)
        merges.setdefault(target, []).append(new[n])
        moved.append((ids[n], target))
    await raw.execute(
        _MOVE_KEYS, [provisional for provisional, _ in moved], [target for _, target in moved]
    )
    keep = set(range(len(new))) - set(lost)
    return [new[n] for n in sorted(keep)], [ids[n] for n in sorted(keep)]


async def _owners_of(
    raw: asyncpg.Connection, tenant_id: uuid.UUID, keys: Sequence[Key]
) -> dict[Key, uuid.UUID]:
    rows = await raw.fetch(_OWNERS, tenant_id, [k for k, _ in keys], [v for _, v in keys])
    return {(row[0], row[1]): row[2] for row in rows}


def _lead_records(job: Job, new: Sequence[Person], ids: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    status = lead_pb2.LEAD_STATUS_NEW
    head = (job.tenant_id, job.owner_org_id, job.owner_org_path)
    for (lead, _, intents, score, grade, verification, note, _, _), lead_id in zip(
        new, ids, strict=True
    ):
        full_name, phone, email, company, province, city, source, open_id, union_id = lead
        yield (
            lead_id,
            *head,
            full_name,
            phone,
            email,
            company,
            province,
            city,
            source,
            status,
            open_id,
            union_id,
            len(intents),
            score,
            grade,
            verification,
            note,
        )


def _intent_records(
    job: Job,
    new: Sequence[Person],
    ids: Sequence[str],
    merges: dict[uuid.UUID, list[Person]],
) -> Iterator[tuple[Any, ...]]:
    tenant = job.tenant_id
    for person, lead_id in zip(new, ids, strict=True):
        for n, (source, campaign, product) in enumerate(person[2]):
            yield (_new_id(), tenant, lead_id, source, campaign, product, n == 0)
    for target, people in merges.items():
        for person in people:
            for source, campaign, product in person[2]:
                yield (_new_id(), tenant, target, source, campaign, product, False)


@dataclass(frozen=True)
class _Merged:
    id: uuid.UUID
    owner_org_path: str
    source: str
    intent_count: int
    score: int
    grade: str


async def _merge(
    raw: asyncpg.Connection,
    job: Job,
    merges: dict[uuid.UUID, list[Person]],
    owners: dict[Key, uuid.UUID],
    scorer: Scorer,
) -> list[_Merged]:
    """Existing leads gain the slice's intents and fill the fields they lack; rescored."""
    if not merges:
        return []
    rows = await raw.fetch(_LOCK_TARGETS, list(merges))
    updates: list[tuple[Any, ...]] = []
    merged: list[_Merged] = []
    new_keys: list[tuple[str, str, uuid.UUID]] = []
    for row in rows:
        people = merges[row["id"]]
        profile = {name: row[name] for name in FILLABLE}
        intents = [intent for person in people for intent in person[2]]
        for lead, keys, *_ in people:
            for name in FILLABLE:
                if not profile[name]:
                    profile[name] = lead[LEAD_INDEX[name]]
            new_keys.extend((k, v, row["id"]) for k, v in keys if (k, v) not in owners)
        count = row["intent_count"] + len(intents)
        scored = scorer.score(
            LeadFacts(
                full_name=row["full_name"],
                source=row["source"],
                intent_count=count,
                campaign_responses=row["campaigns"] + sum(1 for i in intents if i[1]),
                product_interests=row["products"] + sum(1 for i in intents if i[2]),
                visits=row["visits"],
                **{name: profile[name] for name in FILLABLE if name != "union_id"},
            ),
            explain=False,
        )
        updates.append((row["id"], count, scored.score, scored.grade, profile))
        merged.append(
            _Merged(
                row["id"], row["owner_org_path"], row["source"], count, scored.score, scored.grade
            )
        )
    columns = ("company", "province", "city", "email", "phone", "open_id", "union_id")
    await raw.execute(
        _UPDATE_TARGETS,
        [u[0] for u in updates],
        [u[1] for u in updates],
        [u[2] for u in updates],
        [u[3] for u in updates],
        *([u[4][name] for u in updates] for name in columns),
    )
    if new_keys:
        # A key a concurrent capture took meanwhile stays with its lead (ON CONFLICT DO NOTHING).
        await raw.execute(
            _ADD_KEYS,
            job.tenant_id,
            [k for k, _, _ in new_keys],
            [v for _, v, _ in new_keys],
            [lead_id for _, _, lead_id in new_keys],
        )
    return merged


async def _created_events(
    conn: AsyncConnection, job: Job, new: Sequence[Person], ids: Sequence[str]
) -> None:
    source = LEAD_INDEX["source"]
    leads = [
        events_pb2.BatchLead(
            id=lead_id,
            source=lead[source],
            score=score,
            grade=grade,
            verification=verification,  # type: ignore[arg-type]
            intent_count=len(intents),
        )
        for (lead, _, intents, score, grade, verification, *_), lead_id in zip(
            new, ids, strict=True
        )
    ]
    for chunk in batches(leads):
        await add_event(
            conn,
            event_type="crm.leads.lead_batch.created.v1",
            payload=events_pb2.LeadBatchCreated(
                import_id=str(job.id),
                tenant_id=str(job.tenant_id),
                owner_org_id=str(job.owner_org_id),
                owner_org_path=job.owner_org_path,
                leads=chunk,
            ),
            tenant_id=job.tenant_id,
            org_path=job.owner_org_path,
            producer=PRODUCER,
        )


async def _merged_events(conn: AsyncConnection, job: Job, merged: Sequence[_Merged]) -> None:
    by_owner: dict[str, list[events_pb2.BatchLead]] = {}
    for m in merged:
        by_owner.setdefault(m.owner_org_path, []).append(
            events_pb2.BatchLead(
                id=str(m.id),
                source=m.source,
                score=m.score,
                grade=m.grade,
                intent_count=m.intent_count,
            )
        )
    for path, leads in by_owner.items():
        for chunk in batches(leads):
            await add_event(
                conn,
                event_type="crm.leads.lead_batch.merged.v1",
                payload=events_pb2.LeadBatchMerged(
                    import_id=str(job.id),
                    tenant_id=str(job.tenant_id),
                    owner_org_path=path,
                    leads=chunk,
                ),
                tenant_id=job.tenant_id,
                org_path=path,
                producer=PRODUCER,
            )


async def write_each(conn: AsyncConnection, job: Job, prepared: Prepared) -> Written:
    """For a tenant with its own de-duplication rules (fuzzy, windowed, scoped, reject or
    overwrite): every row goes through the single-capture path, in file order, each in its
    own savepoint — exactly the rules' semantics, at single-capture speed."""
    principal = Principal(
        tenant_id=job.tenant_id,
        subject=job.created_by,
        org_unit_id=job.owner_org_id,
        org_path=job.owner_org_path,
        # The importer needed a write role to upload; the job acts for them.
        roles=frozenset({ROLE_INTEGRATION}),
    )
    created = merged = 0
    errors = list(prepared.errors)
    for fields, _, intents, _, _, _, _, row_no, raw_row in prepared.groups:
        lead = NewLead(*fields)
        for intent in intents:
            try:
                async with conn.begin_nested():
                    captured = await capture(
                        conn=conn,
                        principal=principal,
                        lead=lead,
                        intent=NewIntent(*intent),
                        request_id=None,
                    )
            except DomainError as exc:
                violations = exc.violations or [FieldViolation("row", exc.message)]
                errors.append(
                    (
                        row_no,
                        [v.field for v in violations],
                        [v.description for v in violations],
                        list(raw_row),
                    )
                )
                continue
            if captured.outcome is Outcome.CREATED:
                created += 1
            else:
                merged += 1
    if errors:
        raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
        await raw.copy_records_to_table(
            "lead_import_errors",
            records=[(job.id, *error) for error in errors],
            columns=_ERROR_COLUMNS,
        )
    return Written(created=created, merged=merged, invalid=len(errors))
