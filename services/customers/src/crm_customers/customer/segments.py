"""Tags on customers and dynamic segments over them. Keyword-only functions taking the
connection; they never commit. A customer's tags are reached through a customer the
caller can see; a segment is a tenant-wide definition whose members are always limited to
the caller's visible customers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_customers.customer import schema, segment_rules, tagging
from crm_customers.customer.models import customer_tags, customers, segments, tags
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal, visible_to
from crm_platform.errors import EtagMismatch, FailedPrecondition, NotFound, PermissionDenied
from crm_platform.ids import new_id
from crm_platform.pagination import PageRequest
from crm_platform.protos import etag


async def _customer(conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID) -> Any:
    return await records.get_visible(conn, customers, principal, customer_id, kind="customer")


async def tags_of(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID
) -> list[Any]:
    customer = await _customer(conn, principal, customer_id)
    return await _tags_of(conn, customer.id)


async def _tags_of(conn: AsyncConnection, customer_id: uuid.UUID) -> list[Any]:
    """name, kind, source, tagged_by, tag_time of the customer's tags, by name."""
    stmt = (
        sa.select(
            tags.c.name,
            tags.c.kind,
            customer_tags.c.source,
            customer_tags.c.tagged_by,
            customer_tags.c.tag_time,
        )
        .select_from(customer_tags.join(tags, tags.c.id == customer_tags.c.tag_id))
        .where(customer_tags.c.customer_id == customer_id)
        .order_by(tags.c.name)
    )
    return list((await conn.execute(stmt)).all())


async def _ensure_tags(
    conn: AsyncConnection, tenant_id: uuid.UUID, names: Sequence[str], kind: str, actor: str
) -> list[Any]:
    """The tenant's tags of these names, creating missing ones with ``kind`` (race-free:
    unique (tenant_id, name))."""
    await conn.execute(
        insert(tags)
        .values(
            [
                {
                    "id": new_id(),
                    "tenant_id": tenant_id,
                    "name": n,
                    "kind": kind,
                    "created_by": actor,
                }
                for n in names
            ]
        )
        .on_conflict_do_nothing(index_elements=[tags.c.tenant_id, tags.c.name])
    )
    stmt = sa.select(tags).where(tags.c.tenant_id == tenant_id, tags.c.name.in_(names))
    return list((await conn.execute(stmt)).all())


async def _attach(
    conn: AsyncConnection, customer_id: uuid.UUID, rows: Sequence[Any], source: str, actor: str
) -> None:
    await conn.execute(
        insert(customer_tags)
        .values(
            [
                {"customer_id": customer_id, "tag_id": t.id, "source": source, "tagged_by": actor}
                for t in rows
            ]
        )
        .on_conflict_do_nothing()
    )


def _system_tag_error(name: str, action: str) -> PermissionDenied:
    return PermissionDenied(
        f"tag {name!r} is a system tag: only the system can {action} it",
        reason="SYSTEM_TAG_PROTECTED",
        metadata={"tag": name},
    )


async def add_tags(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, names: Sequence[str]
) -> list[Any]:
    """Attach manual tags (created on first use); already attached ones are left as they
    are. A system tag's name: 403 SYSTEM_TAG_PROTECTED, nothing attached."""
    principal.require_any(WRITE_ROLES)
    normalised = tagging.normalise_all(names)
    customer = await _customer(conn, principal, customer_id)
    rows = await _ensure_tags(
        conn, principal.tenant_id, normalised, tagging.MANUAL, principal.subject
    )
    for row in rows:
        if row.kind == tagging.SYSTEM:
            raise _system_tag_error(row.name, "attach")
    await _attach(conn, customer.id, rows, tagging.MANUAL, principal.subject)
    return await _tags_of(conn, customer.id)


async def remove_tag(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, name: str
) -> list[Any]:
    """Detach a manual tag. Not attached: 404 CUSTOMER_TAG_NOT_FOUND; attached by the
    system: 403 SYSTEM_TAG_PROTECTED."""
    principal.require_any(WRITE_ROLES)
    (normalised,) = tagging.normalise_all([name], field="name")
    customer = await _customer(conn, principal, customer_id)
    attached = (
        await conn.execute(
            sa.select(tags.c.id, tags.c.kind, customer_tags.c.source)
            .select_from(customer_tags.join(tags, tags.c.id == customer_tags.c.tag_id))
            .where(customer_tags.c.customer_id == customer.id, tags.c.name == normalised)
        )
    ).first()
    if attached is None:
        raise NotFound(
            f"customer {customer.id} has no tag {normalised!r}",
            reason="CUSTOMER_TAG_NOT_FOUND",
            metadata={"customer": str(customer.id), "tag": normalised},
        )
    if tagging.SYSTEM in (attached.kind, attached.source):
        raise _system_tag_error(normalised, "remove")
    await conn.execute(
        customer_tags.delete().where(
            customer_tags.c.customer_id == customer.id, customer_tags.c.tag_id == attached.id
        )
    )
    return await _tags_of(conn, customer.id)


async def apply_system_tags(
    *,
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    customer_id: uuid.UUID,
    names: Sequence[str],
    actor: str,
) -> list[Any]:
    """The system's own tagging (rules, lifecycle jobs); never reachable by users. A name
    already used by a manual tag: FailedPrecondition."""
    normalised = tagging.normalise_all(names)
    rows = await _ensure_tags(conn, tenant_id, normalised, tagging.SYSTEM, actor)
    manual = [r.name for r in rows if r.kind != tagging.SYSTEM]
    if manual:
        raise FailedPrecondition(
            f"tags {manual} are manual tags",
            reason="TAG_KIND_CONFLICT",
            metadata={"tag": manual[0]},
        )
    await _attach(conn, customer_id, rows, tagging.SYSTEM, actor)
    return await _tags_of(conn, customer_id)


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
    return row, await member_count(conn=conn, principal=principal, segment=row)


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
