"""Tags on customers and dynamic segments over them. Keyword-only functions taking the
connection; they never commit. A customer's tags are reached through a customer the
caller can see; a segment is a tenant-wide definition whose members are always limited to
the caller's visible customers."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.customers.v1 import customer_pb2
from crm.customers.v1 import events_pb2 as customers_events
from crm_customers.customer import schema, segment_rules, service, tagging
from crm_customers.customer.models import (
    contact_tags,
    customer_tags,
    customers,
    segment_versions,
    segments,
    tags,
)
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal, visible_to
from crm_platform.errors import EtagMismatch, FailedPrecondition, NotFound, PermissionDenied
from crm_platform.ids import new_id
from crm_platform.outbox import NewEvent, add_event, add_events
from crm_platform.pagination import PageRequest
from crm_platform.protos import etag
from crm_platform.versioned import append_version

CUSTOMER_TAGGED = "crm.customers.customer.tagged.v1"
CUSTOMER_UNTAGGED = "crm.customers.customer.untagged.v1"
CONTACT_TAGGED = "crm.customers.contact.tagged.v1"
CONTACT_UNTAGGED = "crm.customers.contact.untagged.v1"


async def _customer(conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID) -> Any:
    return await records.get_visible(conn, customers, principal, customer_id, kind="customer")


@dataclass(frozen=True)
class _Target:
    """What tags are attached to: a customer, or one of its contacts (``contact_id``)."""

    customer: Any
    contact_id: uuid.UUID | None = None

    @property
    def link(self) -> sa.Table:
        return customer_tags if self.contact_id is None else contact_tags

    @property
    def key(self) -> sa.ColumnElement[bool]:
        if self.contact_id is None:
            customer_id: uuid.UUID = self.customer.id
            return customer_tags.c.customer_id == customer_id
        return contact_tags.c.contact_id == self.contact_id

    def row(self, tag_id: uuid.UUID, source: str, actor: str) -> dict[str, Any]:
        owner = (
            {"customer_id": self.customer.id}
            if self.contact_id is None
            else {"contact_id": self.contact_id}
        )
        return {**owner, "tag_id": tag_id, "source": source, "tagged_by": actor}

    def describe(self) -> str:
        if self.contact_id is None:
            return f"customer {self.customer.id}"
        return f"contact {self.contact_id}"

    def tagged(self, names: list[str], source: str, actor: str) -> tuple[str, Message]:
        kind = customer_pb2.TagKind.Value(f"TAG_KIND_{source.upper()}")
        cid = str(self.customer.id)
        if self.contact_id is None:
            return CUSTOMER_TAGGED, customers_events.CustomerTagged(
                customer_id=cid, tag_names=names, tagged_by=actor, source=kind
            )
        return CONTACT_TAGGED, customers_events.ContactTagged(
            customer_id=cid,
            contact_id=str(self.contact_id),
            tag_names=names,
            tagged_by=actor,
            source=kind,
        )

    def untagged(self, names: list[str], actor: str) -> tuple[str, Message]:
        cid = str(self.customer.id)
        if self.contact_id is None:
            return CUSTOMER_UNTAGGED, customers_events.CustomerUntagged(
                customer_id=cid, tag_names=names, untagged_by=actor
            )
        return CONTACT_UNTAGGED, customers_events.ContactUntagged(
            customer_id=cid, contact_id=str(self.contact_id), tag_names=names, untagged_by=actor
        )


async def _customer_target(
    conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID
) -> _Target:
    return _Target(await _customer(conn, principal, customer_id))


async def _contact_target(
    conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, contact_id: uuid.UUID
) -> _Target:
    """A contact of a customer the caller can see: the same visibility as its customer's
    tags (CUSTOMER_NOT_FOUND, then CONTACT_NOT_FOUND)."""
    customer = await _customer(conn, principal, customer_id)
    contact = await service.contact_of(conn, customer, contact_id)
    return _Target(customer, contact.id)


async def _publish(conn: AsyncConnection, target: _Target, event: tuple[str, Message]) -> None:
    subject, payload = event
    await add_event(
        conn,
        event_type=subject,
        payload=payload,
        tenant_id=target.customer.tenant_id,
        org_path=target.customer.owner_org_path,
        producer=service.PRODUCER,
    )


async def tags_of(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID
) -> list[Any]:
    return await _tags_of(conn, await _customer_target(conn, principal, customer_id))


async def contact_tags_of(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    contact_id: uuid.UUID,
) -> list[Any]:
    target = await _contact_target(conn, principal, customer_id, contact_id)
    return await _tags_of(conn, target)


async def _tags_of(conn: AsyncConnection, target: _Target) -> list[Any]:
    """name, kind, source, tagged_by, tag_time of the target's tags, by name."""
    link = target.link
    stmt = (
        sa.select(tags.c.name, tags.c.kind, link.c.source, link.c.tagged_by, link.c.tag_time)
        .select_from(link.join(tags, tags.c.id == link.c.tag_id))
        .where(target.key)
        .order_by(tags.c.name)
    )
    return list((await conn.execute(stmt)).all())


async def _ensure_tags(
    conn: AsyncConnection, tenant_id: uuid.UUID, names: Sequence[str], kind: str, actor: str
) -> list[Any]:
    """The tenant's tags of these names, creating missing ones with ``kind`` (race-free:
    unique (tenant_id, name))."""
    return await _ensure_tags_of(conn, [(tenant_id, n) for n in names], kind, actor)


async def _ensure_tags_of(
    conn: AsyncConnection, keys: Sequence[tuple[uuid.UUID, str]], kind: str, actor: str
) -> list[Any]:
    """The tags of these (tenant, name) keys, creating missing ones with ``kind``."""
    await conn.execute(
        insert(tags)
        .values(
            [
                {"id": new_id(), "tenant_id": t, "name": n, "kind": kind, "created_by": actor}
                for t, n in keys
            ]
        )
        .on_conflict_do_nothing(index_elements=[tags.c.tenant_id, tags.c.name])
    )
    stmt = sa.select(tags).where(sa.tuple_(tags.c.tenant_id, tags.c.name).in_(keys))
    return list((await conn.execute(stmt)).all())


async def _attach(
    conn: AsyncConnection, target: _Target, rows: Sequence[Any], source: str, actor: str
) -> None:
    """Attach the tags the target does not have yet; one tagged event naming those, in the
    order asked for (none if it had them all)."""
    link = target.link
    inserted = (
        await conn.execute(
            insert(link)
            .values([target.row(t.id, source, actor) for t in rows])
            .on_conflict_do_nothing()
            .returning(link.c.tag_id)
        )
    ).scalars()
    new = set(inserted)
    names = [t.name for t in rows if t.id in new]
    if names:
        await _publish(conn, target, target.tagged(names, source, actor))


def _system_tag_error(name: str, action: str) -> PermissionDenied:
    return PermissionDenied(
        f"tag {name!r} is a system tag: only the system can {action} it",
        reason="SYSTEM_TAG_PROTECTED",
        metadata={"tag": name},
    )


async def _add_manual(
    conn: AsyncConnection, principal: Principal, target: _Target, normalised: list[str]
) -> list[Any]:
    reserved = [n for n in normalised if n in tagging.RESERVED]
    if reserved:
        raise _system_tag_error(reserved[0], "attach")
    rows = await _ensure_tags(
        conn, principal.tenant_id, normalised, tagging.MANUAL, principal.subject
    )
    rows.sort(key=lambda r: normalised.index(r.name))
    for row in rows:
        if row.kind == tagging.SYSTEM:
            raise _system_tag_error(row.name, "attach")
    await _attach(conn, target, rows, tagging.MANUAL, principal.subject)
    return await _tags_of(conn, target)


async def add_tags(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, names: Sequence[str]
) -> list[Any]:
    """Attach manual tags (created on first use); already attached ones are left as they
    are. A system tag's name: 403 SYSTEM_TAG_PROTECTED, nothing attached."""
    principal.require_any(WRITE_ROLES)
    normalised = tagging.normalise_all(names)
    target = await _customer_target(conn, principal, customer_id)
    return await _add_manual(conn, principal, target, normalised)


async def add_contact_tags(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    contact_id: uuid.UUID,
    names: Sequence[str],
) -> list[Any]:
    """``add_tags`` for a contact of a visible customer."""
    principal.require_any(WRITE_ROLES)
    normalised = tagging.normalise_all(names)
    target = await _contact_target(conn, principal, customer_id, contact_id)
    return await _add_manual(conn, principal, target, normalised)


async def _remove_manual(
    conn: AsyncConnection, principal: Principal, target: _Target, normalised: str
) -> list[Any]:
    link = target.link
    attached = (
        await conn.execute(
            sa.select(tags.c.id, tags.c.kind, link.c.source)
            .select_from(link.join(tags, tags.c.id == link.c.tag_id))
            .where(target.key, tags.c.name == normalised)
        )
    ).first()
    if attached is not None and tagging.SYSTEM in (attached.kind, attached.source):
        raise _system_tag_error(normalised, "remove")
    removed = None
    if attached is not None:
        # Only the request that deletes the row reports it: no double event on a race.
        removed = (
            await conn.execute(
                link.delete()
                .where(target.key, link.c.tag_id == attached.id)
                .returning(link.c.tag_id)
            )
        ).first()
    if removed is None:
        what = "CUSTOMER" if target.contact_id is None else "CONTACT"
        raise NotFound(
            f"{target.describe()} has no tag {normalised!r}",
            reason=f"{what}_TAG_NOT_FOUND",
            metadata={
                what.lower(): str(target.contact_id or target.customer.id),
                "tag": normalised,
            },
        )
    await _publish(conn, target, target.untagged([normalised], principal.subject))
    return await _tags_of(conn, target)


async def remove_tag(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, name: str
) -> list[Any]:
    """Detach a manual tag. Not attached: 404 CUSTOMER_TAG_NOT_FOUND; attached by the
    system: 403 SYSTEM_TAG_PROTECTED."""
    principal.require_any(WRITE_ROLES)
    (normalised,) = tagging.normalise_all([name], field="name")
    target = await _customer_target(conn, principal, customer_id)
    return await _remove_manual(conn, principal, target, normalised)


async def remove_contact_tag(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    contact_id: uuid.UUID,
    name: str,
) -> list[Any]:
    """``remove_tag`` for a contact; not attached: 404 CONTACT_TAG_NOT_FOUND."""
    principal.require_any(WRITE_ROLES)
    (normalised,) = tagging.normalise_all([name], field="name")
    target = await _contact_target(conn, principal, customer_id, contact_id)
    return await _remove_manual(conn, principal, target, normalised)


async def apply_system_tags(
    *,
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    customer_id: uuid.UUID,
    names: Sequence[str],
    actor: str,
) -> list[Any]:
    """The system's own additive tagging of one customer; never reachable by users (the
    stage tags, one of a family at a time, go through ``replace_system_tags``). A name
    already used by a manual tag: FailedPrecondition."""
    normalised = tagging.normalise_all(names)
    customer = (
        await conn.execute(
            sa.select(customers).where(
                customers.c.id == customer_id, customers.c.tenant_id == tenant_id
            )
        )
    ).first()
    if customer is None:
        raise NotFound(
            f"customer {customer_id} not found",
            reason="CUSTOMER_NOT_FOUND",
            metadata={"customer": str(customer_id)},
        )
    rows = await _ensure_tags(conn, tenant_id, normalised, tagging.SYSTEM, actor)
    rows.sort(key=lambda r: normalised.index(r.name))
    manual = [r.name for r in rows if r.kind != tagging.SYSTEM]
    if manual:
        raise FailedPrecondition(
            f"tags {manual} are manual tags",
            reason="TAG_KIND_CONFLICT",
            metadata={"tag": manual[0]},
        )
    target = _Target(customer)
    await _attach(conn, target, rows, tagging.SYSTEM, actor)
    return await _tags_of(conn, target)


@dataclass(frozen=True)
class SystemTag:
    """The one tag of a family a customer is to carry (``replace_system_tags``); the
    correlation and causation go on the events it makes."""

    customer_id: uuid.UUID
    tenant_id: uuid.UUID
    org_path: str
    name: str
    correlation_id: str = ""
    causation_id: str = ""


async def replace_system_tags(
    *, conn: AsyncConnection, wanted: Sequence[SystemTag], family: Collection[str], actor: str
) -> None:
    """Make each customer carry exactly one system tag of ``family`` (normalised names, e.g.
    ``tagging.STAGE_TAGS``): its wanted one, attached if missing, the family's others
    detached, with one untagged and one tagged event per customer naming only what moved.
    Set-based: five statements however many customers (one entry each). The caller holds
    the customers' rows locked. A wanted name the tenant has as a manual tag (made before
    the name was reserved) is not attached: the customer is left with none of the family."""
    if not wanted:
        return
    # Sorted: concurrent batches create missing tags in one order, never deadlocking.
    keys = sorted({(w.tenant_id, w.name) for w in wanted})
    rows = await _ensure_tags_of(conn, keys, tagging.SYSTEM, actor)
    tag_ids = {(r.tenant_id, r.name): r.id for r in rows if r.kind == tagging.SYSTEM}
    want = (
        sa.func.unnest(
            sa.bindparam("w_customers", type_=ARRAY(UUID(as_uuid=True))),
            sa.bindparam("w_names", type_=ARRAY(sa.Text)),
        )
        .table_valued(sa.column("customer_id", UUID(as_uuid=True)), sa.column("name", sa.Text))
        .render_derived(name="want", with_types=False)
    )
    detached = await conn.execute(
        customer_tags.delete()
        .where(
            customer_tags.c.customer_id == want.c.customer_id,
            customer_tags.c.tag_id == tags.c.id,
            tags.c.kind == tagging.SYSTEM,
            tags.c.name.in_(sorted(family)),
            tags.c.name != want.c.name,
        )
        .returning(customer_tags.c.customer_id, tags.c.name),
        {"w_customers": [w.customer_id for w in wanted], "w_names": [w.name for w in wanted]},
    )
    untagged: dict[uuid.UUID, list[str]] = {}
    for row in detached:
        untagged.setdefault(row.customer_id, []).append(row.name)
    links = [
        {
            "customer_id": w.customer_id,
            "tag_id": tag_ids[(w.tenant_id, w.name)],
            "source": tagging.SYSTEM,
            "tagged_by": actor,
        }
        for w in wanted
        if (w.tenant_id, w.name) in tag_ids
    ]
    tagged: set[uuid.UUID] = set()
    if links:
        inserted = await conn.execute(
            insert(customer_tags)
            .values(links)
            .on_conflict_do_nothing()
            .returning(customer_tags.c.customer_id)
        )
        tagged = set(inserted.scalars())
    events = _system_tag_events(wanted, untagged, tagged, actor)
    await add_events(conn, events, producer=service.PRODUCER)


def _system_tag_events(
    wanted: Sequence[SystemTag],
    untagged: dict[uuid.UUID, list[str]],
    tagged: set[uuid.UUID],
    actor: str,
) -> list[NewEvent]:
    events: list[NewEvent] = []
    for w in wanted:
        payloads: list[tuple[str, Message]] = []
        if w.customer_id in untagged:
            payloads.append(
                (
                    CUSTOMER_UNTAGGED,
                    customers_events.CustomerUntagged(
                        customer_id=str(w.customer_id),
                        tag_names=sorted(untagged[w.customer_id]),
                        untagged_by=actor,
                    ),
                )
            )
        if w.customer_id in tagged:
            payloads.append(
                (
                    CUSTOMER_TAGGED,
                    customers_events.CustomerTagged(
                        customer_id=str(w.customer_id),
                        tag_names=[w.name],
                        tagged_by=actor,
                        source=customer_pb2.TAG_KIND_SYSTEM,
                    ),
                )
            )
        events += [
            NewEvent(subject, payload, w.tenant_id, w.org_path, w.correlation_id, w.causation_id)
            for subject, payload in payloads
        ]
    return events


async def list_tags(*, conn: AsyncConnection, principal: Principal, page: PageRequest) -> list[Any]:
    """The tenant's tags in creation order (UUIDv7 ids), keyset-paged."""
    stmt = (
        sa.select(tags)
        .where(tags.c.tenant_id == principal.tenant_id)
        .order_by(tags.c.id)
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(tags.c.id > page.after)
    return list((await conn.execute(stmt)).all())


# -- segments ---------------------------------------------------------------------------


def _members_clause(row: Any, principal: Principal) -> sa.ColumnElement[bool]:
    node = segment_rules.parse(row.rule)
    return sa.and_(
        visible_to(customers, principal), segment_rules.compile_rule(node, row.tenant_id)
    )


async def member_count(*, conn: AsyncConnection, principal: Principal, segment: Any) -> int:
    stmt = (
        sa.select(sa.func.count()).select_from(customers).where(_members_clause(segment, principal))
    )
    return int((await conn.execute(stmt)).scalar_one())


async def _valid_rule(conn: AsyncConnection, principal: Principal, rule: object) -> dict[str, Any]:
    current = await schema.get(conn=conn, principal=principal)
    node = segment_rules.parse(rule, custom_field_names={d.name for d in current.definitions})
    return segment_rules.to_document(node)


async def create_segment(
    *, conn: AsyncConnection, principal: Principal, display_name: str, rule: object
) -> tuple[Any, int]:
    principal.require_any(WRITE_ROLES)
    document = await _valid_rule(conn, principal, rule)
    row = (
        await conn.execute(
            segments.insert()
            .values(
                id=new_id(),
                tenant_id=principal.tenant_id,
                display_name=display_name,
                rule=document,
                created_by=principal.subject,
            )
            .returning(*segments.c)
        )
    ).one()
    await _append_version(conn, row, principal)
    return row, await member_count(conn=conn, principal=principal, segment=row)


async def _append_version(conn: AsyncConnection, row: Any, principal: Principal) -> None:
    """Record the segment's new name and rule as its next version: its ``version``, as the
    segment row is locked (created, or replaced FOR UPDATE) while this runs."""
    await append_version(
        conn,
        segment_versions,
        key={"segment_id": row.id},
        values={
            "tenant_id": row.tenant_id,
            "display_name": row.display_name,
            "rule": row.rule,
            "created_by": principal.subject,
        },
        conflict="the segment is being changed concurrently; retry",
        reason="SEGMENT_CONFLICT",
    )


async def _segment(
    conn: AsyncConnection, principal: Principal, segment_id: uuid.UUID, *, lock: bool = False
) -> Any:
    stmt = sa.select(segments).where(
        segments.c.id == segment_id, segments.c.tenant_id == principal.tenant_id
    )
    row = (await conn.execute(stmt.with_for_update() if lock else stmt)).first()
    if row is None:
        raise NotFound(
            f"segment {segment_id} not found",
            reason="SEGMENT_NOT_FOUND",
            metadata={"segment": str(segment_id)},
        )
    return row


async def get_segment(
    *, conn: AsyncConnection, principal: Principal, segment_id: uuid.UUID
) -> tuple[Any, int]:
    """The definition and how many of the caller's visible customers match it now."""
    row = await _segment(conn, principal, segment_id)
    return row, await member_count(conn=conn, principal=principal, segment=row)


async def replace_segment(
    *,
    conn: AsyncConnection,
    principal: Principal,
    segment_id: uuid.UUID,
    display_name: str,
    rule: object,
    expected_etag: str,
) -> tuple[Any, int]:
    """Replace the name and rule; ``expected_etag``, when given, must be current."""
    principal.require_any(WRITE_ROLES)
    document = await _valid_rule(conn, principal, rule)
    row = await _segment(conn, principal, segment_id, lock=True)
    if expected_etag and expected_etag.strip('"').removeprefix("W/").strip('"') != etag(
        row.id, row.version
    ):
        raise EtagMismatch(
            "the segment changed since it was read; read it again",
            reason="SEGMENT_ETAG_MISMATCH",
            metadata={"segment": str(row.id)},
        )
    row = (
        await conn.execute(
            segments.update()
            .where(segments.c.id == row.id)
            .values(
                display_name=display_name,
                rule=document,
                version=segments.c.version + 1,
                update_time=sa.func.now(),
            )
            .returning(*segments.c)
        )
    ).one()
    await _append_version(conn, row, principal)
    return row, await member_count(conn=conn, principal=principal, segment=row)


async def segment_members(
    *, conn: AsyncConnection, principal: Principal, segment_id: uuid.UUID, page: PageRequest
) -> list[Any]:
    """Matching visible customers in id order (UUIDv7: creation order), keyset-paged; the
    rule is evaluated by the database on every page."""
    row = await _segment(conn, principal, segment_id)
    stmt = (
        sa.select(customers)
        .where(_members_clause(row, principal))
        .order_by(customers.c.id)
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(customers.c.id > page.after)
    return list((await conn.execute(stmt)).all())


async def segment_versions_page(
    *, conn: AsyncConnection, principal: Principal, segment_id: uuid.UUID, page: PageRequest
) -> list[Any]:
    """Stored versions of a segment's name and rule, newest first, keyset-paged on the
    version number (``page.after``: see ``version_token_id``)."""
    row = await _segment(conn, principal, segment_id)
    stmt = (
        sa.select(segment_versions)
        .where(segment_versions.c.segment_id == row.id)
        .order_by(segment_versions.c.version.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(segment_versions.c.version < version_after(page.after))
    return list((await conn.execute(stmt)).all())


# Page tokens carry a UUID: a version number travels as the UUID of that integer.
def version_token_id(version: int) -> uuid.UUID:
    return uuid.UUID(int=version)


def version_after(after: uuid.UUID) -> int:
    return min(after.int, 2**31)
