"""Customer and contact use cases (SQLAlchemy Core). Keyword-only functions taking the
connection; they never commit. Contacts have no owner columns: every access goes through a
customer the caller can see."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.customers.v1 import events_pb2
from crm_customers.conversion.rules import match_name
from crm_customers.customer import contact_rules, history, rules, schema
from crm_customers.customer.contact_rules import ContactFields, NewContact
from crm_customers.customer.mapping import contact_to_proto, customer_to_proto
from crm_customers.customer.models import contacts, customers
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal, visible_to
from crm_platform.errors import EtagMismatch, NotFound
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest
from crm_platform.protos import etag

PRODUCER = "customers"


async def create(
    *,
    conn: AsyncConnection,
    principal: Principal,
    kind: int | str,
    profile: Mapping[str, Any],
    custom_values: Mapping[str, object],
    contact_fields: Sequence[ContactFields],
    parent_id: uuid.UUID | None,
    request_id: uuid.UUID | None,
    phone_region: str,
    now: datetime,
) -> tuple[Any, list[Any]]:
    """Insert the customer owned by the caller's org unit, under ``parent_id`` (an account
    the caller can see) or as a root, together with its contacts and their created events.
    A repeated request_id returns the first customer and publishes nothing (race-free:
    unique index)."""
    principal.require_any(WRITE_ROLES)
    definitions = await schema.definitions(conn=conn, tenant_id=principal.tenant_id)
    customer = rules.validate_new_customer(
        kind=kind,
        profile=profile,
        custom_values=custom_values,
        definitions=definitions,
        contacts=contact_fields,
        phone_region=phone_region,
        now=now,
    )
    parent_path = None
    if parent_id is not None:
        parent = await _visible_customer(conn, principal, parent_id)
        rules.check_depth(parent.account_path, 1)
        parent_path = parent.account_path
    customer_id = new_id()
    row, created = await records.insert_once(
        conn,
        customers,
        {
            "id": customer_id,
            **records.owned_by(principal),
            "kind": customer.kind,
            **customer.profile,
            "match_name": match_name(customer.profile["display_name"]),
            "custom_fields": customer.custom_fields,
            "parent_id": parent_id,
            "account_path": rules.child_path(parent_path, customer_id),
        },
        request_id=request_id,
    )
    if not created:
        return row, await _contacts_of(conn, row)
    contact_rows = await _insert_contacts(conn, row, customer.contacts)
    await _event(
        conn,
        row,
        "crm.customers.customer.created.v1",
        events_pb2.CustomerCreated(customer=customer_to_proto(row, contact_rows)),
    )
    for contact in contact_rows:
        await _event(
            conn,
            row,
            "crm.customers.contact.created.v1",
            events_pb2.ContactCreated(contact=contact_to_proto(contact)),
        )
    return row, contact_rows


async def get(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID
) -> tuple[Any, list[Any]]:
    row = await _visible_customer(conn, principal, customer_id)
    return row, await _contacts_of(conn, row)


async def visible(*, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID) -> Any:
    """The customer if the caller can see it (NotFound otherwise), without its contacts."""
    return await _visible_customer(conn, principal, customer_id)


async def contacts_and_history(
    *, conn: AsyncConnection, customer: Any, history_size: int
) -> tuple[list[Any], Sequence[Any]]:
    """A visible customer's contacts and its newest field changes (the 360's local part)."""
    contact_rows = await _contacts_of(conn, customer)
    changes = await history.page_of(
        conn=conn,
        customer_id=customer.id,
        contact_id=None,
        page=PageRequest(size=history_size, after=None),
    )
    return contact_rows, changes


async def list_visible(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    """Newest first (UUIDv7 ids are time-ordered), keyset-paged. Rows only: contacts are
    unbounded per customer, so they come with a single customer (get)."""
    return await records.visible_page(conn, customers, principal, page)


async def list_children(
    *, conn: AsyncConnection, principal: Principal, parent_id: uuid.UUID, page: PageRequest
) -> list[Any]:
    """The visible direct children of a visible account, newest first, keyset-paged."""
    await _visible_customer(conn, principal, parent_id)
    stmt = (
        sa.select(customers)
        .where(customers.c.parent_id == parent_id, visible_to(customers, principal))
        .order_by(customers.c.id.desc())
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(customers.c.id < page.after)
    return list((await conn.execute(stmt)).all())


def _check_etag(row: Any, expected: str, kind: str) -> None:
    if expected and expected.strip('"').removeprefix("W/").strip('"') != etag(row.id, row.version):
        raise EtagMismatch(
            f"the {kind} changed since it was read; read it again",
            reason=f"{kind.upper()}_ETAG_MISMATCH",
            metadata={kind: str(row.id)},
        )


async def _conditional_update(
    conn: AsyncConnection, table: sa.Table, row: Any, values: Mapping[str, Any], kind: str
) -> Any:
    """UPDATE only if nobody changed the row since it was read (same version)."""
    updated = (
        await conn.execute(
            table.update()
            .where(table.c.id == row.id, table.c.version == row.version)
            .values(**values, version=table.c.version + 1, update_time=sa.func.now())
            .returning(*table.c)
        )
    ).first()
    if updated is None:
        _check_etag(row, "-", kind)  # always a mismatch: report it like an If-Match one
    return updated


async def update(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    patch: Mapping[str, Any],
    paths: Sequence[str],
    expected_etag: str,
    phone_region: str,
) -> tuple[Any, list[Any]]:
    """Change the masked fields, record each change in the history and publish
    crm.customers.customer.updated.v1. Nothing changed: nothing written."""
    principal.require_any(WRITE_ROLES)
    row = await _visible_customer(conn, principal, customer_id)
    _check_etag(row, expected_etag, "customer")
    definitions = await schema.definitions(conn=conn, tenant_id=principal.tenant_id)
    plan = rules.plan_update(
        current=row._mapping,
        patch=patch,
        paths=paths,
        definitions=definitions,
        phone_region=phone_region,
    )
    if plan.values:
        values = dict(plan.values)
        if "display_name" in values:
            values["match_name"] = match_name(values["display_name"])
        row = await _conditional_update(conn, customers, row, values, "customer")
        await history.record(
            conn=conn, customer=row, contact_id=None, changes=plan.changes, actor=principal.subject
        )
        await _event(
            conn,
            row,
            "crm.customers.customer.updated.v1",
            events_pb2.CustomerUpdated(
                customer=customer_to_proto(row), changed_fields=sorted(plan.changes)
            ),
        )
    return row, await _contacts_of(conn, row)


async def _subtree_depth(conn: AsyncConnection, node: Any) -> int:
    slashes = sa.func.length(customers.c.account_path) - sa.func.length(
        sa.func.replace(customers.c.account_path, "/", "")
    )
    deepest = (
        await conn.execute(
            sa.select(sa.func.max(slashes)).where(
                customers.c.tenant_id == node.tenant_id,
                customers.c.account_path.startswith(node.account_path, autoescape=True),
            )
        )
    ).scalar_one()
    return int(deepest) - int(node.account_path.count("/")) + 1


async def move(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    new_parent_id: uuid.UUID | None,
    expected_etag: str,
) -> tuple[Any, list[Any]]:
    """Re-parent an account (None: make it a root). Every account path of its sub-hierarchy
    is rewritten in one set-based UPDATE."""
    principal.require_any(WRITE_ROLES)
    # One mover per tenant at a time: two crossing moves (A under B, B under A) would each
    # pass the cycle check on a snapshot and together make a cycle.
    await conn.execute(
        sa.select(
            sa.func.pg_advisory_xact_lock(
                sa.func.hashtextextended(f"customers-tree:{principal.tenant_id}", 0)
            )
        )
    )
    node = await _visible_customer(conn, principal, customer_id)
    _check_etag(node, expected_etag, "customer")
    parent = (
        None if new_parent_id is None else await _visible_customer(conn, principal, new_parent_id)
    )
    if new_parent_id == node.id:
        parent_path: str | None = node.account_path  # reported as the cycle it would be
    else:
        parent_path = None if parent is None else parent.account_path
    rules.check_move(node.account_path, parent_path, await _subtree_depth(conn, node))
    if node.parent_id == new_parent_id:
        return node, await _contacts_of(conn, node)
    old_prefix, new_prefix = node.account_path, rules.child_path(parent_path, node.id)
    # Descendants' resources change too (account_path), so their etags move on.
    await conn.execute(
        customers.update()
        .where(
            customers.c.tenant_id == node.tenant_id,
            customers.c.account_path.startswith(old_prefix, autoescape=True),
        )
        .values(
            account_path=new_prefix + sa.func.substr(customers.c.account_path, len(old_prefix) + 1),
            version=customers.c.version + 1,
        )
    )
    row = (
        await conn.execute(
            customers.update()
            .where(customers.c.id == node.id)
            .values(parent_id=new_parent_id, update_time=sa.func.now())
            .returning(*customers.c)
        )
    ).one()
    old_parent = str(node.parent_id) if node.parent_id else ""
    new_parent = str(new_parent_id) if new_parent_id else ""
    await history.record(
        conn=conn,
        customer=row,
        contact_id=None,
        changes={"parent_id": (old_parent or None, new_parent or None)},
        actor=principal.subject,
    )
    await _event(
        conn,
        row,
        "crm.customers.customer.moved.v1",
        events_pb2.CustomerMoved(
            customer=customer_to_proto(row),
            old_parent_id=old_parent,
            new_parent_id=new_parent,
            old_account_path=old_prefix,
            new_account_path=new_prefix,
        ),
    )
    return row, await _contacts_of(conn, row)


async def history_page(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    contact_id: uuid.UUID | None,
    page: PageRequest,
) -> Sequence[Any]:
    customer = await _visible_customer(conn, principal, customer_id)
    if contact_id is not None:
        await contact_of(conn, customer, contact_id)
    return await history.page_of(
        conn=conn, customer_id=customer.id, contact_id=contact_id, page=page
    )


async def create_contact(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    fields: ContactFields,
    reports_to_id: uuid.UUID | None,
    request_id: uuid.UUID | None,
    phone_region: str,
    now: datetime,
) -> Any:
    """Add a contact to a customer the caller can see, optionally reporting to another of
    its contacts. A repeated request_id returns the first contact and publishes nothing."""
    principal.require_any(WRITE_ROLES)
    contact = contact_rules.validate_new_contact(fields, phone_region=phone_region, now=now)
    customer = await _visible_customer(conn, principal, customer_id, lock=True)
    if reports_to_id is not None:
        contact_rules.check_reports_to(None, reports_to_id, await _managers(conn, customer))
    return await _add_contact(conn, customer, contact, reports_to_id, request_id)


async def add_contact_to_locked(
    *,
    conn: AsyncConnection,
    customer: Any,
    fields: ContactFields,
    request_id: uuid.UUID | None,
    phone_region: str,
    now: datetime,
) -> Any:
    """``create_contact`` (no manager) for a customer row the caller has already found
    visible and locked in this transaction (a conversion step): no second lookup."""
    contact = contact_rules.validate_new_contact(fields, phone_region=phone_region, now=now)
    return await _add_contact(conn, customer, contact, None, request_id)


async def _add_contact(
    conn: AsyncConnection,
    customer: Any,
    contact: Any,
    reports_to_id: uuid.UUID | None,
    request_id: uuid.UUID | None,
) -> Any:
    row, created = await records.insert_once(
        conn,
        contacts,
        {**_contact_values(customer, contact), "reports_to_id": reports_to_id},
        request_id=request_id,
    )
    if not created:
        return row
    await _touch(conn, customer)
    await _event(
        conn,
        customer,
        "crm.customers.contact.created.v1",
        events_pb2.ContactCreated(contact=contact_to_proto(row)),
    )
    return row


async def get_contact(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, contact_id: uuid.UUID
) -> Any:
    customer = await _visible_customer(conn, principal, customer_id)
    return await contact_of(conn, customer, contact_id)


async def list_contacts(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, page: PageRequest
) -> list[Any]:
    """In creation order (UUIDv7 ids), keyset-paged."""
    customer = await _visible_customer(conn, principal, customer_id)
    stmt = (
        sa.select(contacts)
        .where(contacts.c.customer_id == customer.id)
        .order_by(contacts.c.id)
        .limit(page.size + 1)
    )
    if page.after is not None:
        stmt = stmt.where(contacts.c.id > page.after)
    return list((await conn.execute(stmt)).all())


async def update_contact(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    contact_id: uuid.UUID,
    patch: ContactFields,
    reports_to_id: uuid.UUID | None,
    paths: Sequence[str],
    expected_etag: str,
    phone_region: str,
    now: datetime,
) -> Any:
    """Change the masked fields of a contact, record the history and publish
    crm.customers.contact.updated.v1. Nothing changed: nothing written."""
    principal.require_any(WRITE_ROLES)
    # The customer's row lock serialises reports-to changes, so two cannot form a cycle.
    customer = await _visible_customer(conn, principal, customer_id, lock=True)
    row = await contact_of(conn, customer, contact_id)
    _check_etag(row, expected_etag, "contact")
    values = contact_rules.plan_update(
        current=row._mapping, patch=patch, paths=paths, phone_region=phone_region, now=now
    )
    if "reports_to_id" in paths:
        if reports_to_id is not None:
            contact_rules.check_reports_to(row.id, reports_to_id, await _managers(conn, customer))
        values["reports_to_id"] = reports_to_id
    changes = contact_rules.changes(row._mapping, values)
    if not changes:
        return row
    row = await _conditional_update(conn, contacts, row, values, "contact")
    await _touch(conn, customer)
    await history.record(
        conn=conn, customer=customer, contact_id=row.id, changes=changes, actor=principal.subject
    )
    await _event(
        conn,
        customer,
        "crm.customers.contact.updated.v1",
        events_pb2.ContactUpdated(contact=contact_to_proto(row), changed_fields=sorted(changes)),
    )
    return row


async def _touch(conn: AsyncConnection, customer: Any) -> None:
    """Contacts are part of the customer resource, so its etag must change with them."""
    await conn.execute(
        customers.update()
        .where(customers.c.id == customer.id)
        .values(version=customers.c.version + 1, update_time=sa.func.now())
    )


async def _visible_customer(
    conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID, *, lock: bool = False
) -> Any:
    """A customer outside the caller's subtree is reported as missing, so existence never
    leaks."""
    if not lock:
        return await records.get_visible(conn, customers, principal, customer_id, kind="customer")
    row = (
        await conn.execute(
            sa.select(customers)
            .where(customers.c.id == customer_id, visible_to(customers, principal))
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound(
            f"customer {customer_id} not found",
            reason="CUSTOMER_NOT_FOUND",
            metadata={"customer": str(customer_id)},
        )
    return row


async def contact_of(conn: AsyncConnection, customer: Any, contact_id: uuid.UUID) -> Any:
    row = (
        await conn.execute(
            sa.select(contacts).where(
                contacts.c.id == contact_id, contacts.c.customer_id == customer.id
            )
        )
    ).first()
    if row is None:
        raise NotFound(
            f"contact {contact_id} not found",
            reason="CONTACT_NOT_FOUND",
            metadata={"contact": str(contact_id)},
        )
    return row


async def _managers(conn: AsyncConnection, customer: Any) -> dict[uuid.UUID, uuid.UUID | None]:
    stmt = sa.select(contacts.c.id, contacts.c.reports_to_id).where(
        contacts.c.customer_id == customer.id
    )
    return {r.id: r.reports_to_id for r in await conn.execute(stmt)}


async def _contacts_of(conn: AsyncConnection, customer: Any) -> list[Any]:
    """In creation order (UUIDv7 ids)."""
    stmt = sa.select(contacts).where(contacts.c.customer_id == customer.id).order_by(contacts.c.id)
    return list((await conn.execute(stmt)).all())


def _contact_values(customer: Any, contact: NewContact) -> dict[str, Any]:
    return {
        "id": new_id(),
        "tenant_id": customer.tenant_id,
        "customer_id": customer.id,
        **contact.values(),
    }


async def _insert_contacts(
    conn: AsyncConnection, customer: Any, new: Sequence[NewContact]
) -> list[Any]:
    if not new:
        return []
    result = await conn.execute(
        insert(contacts).returning(*contacts.c, sort_by_parameter_order=True),
        [_contact_values(customer, c) for c in new],
    )
    return list(result.all())


async def _event(conn: AsyncConnection, customer: Any, subject: str, payload: Message) -> None:
    await add_event(
        conn,
        event_type=subject,
        payload=payload,
        tenant_id=customer.tenant_id,
        org_path=customer.owner_org_path,
        producer=PRODUCER,
    )
