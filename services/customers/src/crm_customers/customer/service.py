"""Customer and contact persistence and queries (SQLAlchemy Core). Keyword-only functions
taking the connection; they never commit. Contacts have no owner columns: every access goes
through a customer the caller can see."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.customers.v1 import events_pb2
from crm_customers.customer.mapping import contact_to_proto, customer_to_proto
from crm_customers.customer.models import contacts, customers
from crm_customers.customer.rules import NewContact, NewCustomer
from crm_platform import records
from crm_platform.auth import WRITE_ROLES, Principal
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest

PRODUCER = "customers"


async def create(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer: NewCustomer,
    request_id: uuid.UUID | None,
) -> tuple[Any, list[Any]]:
    """Insert the customer owned by the caller's org unit together with its contacts and
    their created events. A repeated request_id returns the first customer and publishes
    nothing (race-free: unique index)."""
    principal.require_any(WRITE_ROLES)
    row, created = await records.insert_once(
        conn,
        customers,
        {
            "id": new_id(),
            **records.owned_by(principal),
            "kind": customer.kind,
            "display_name": customer.display_name,
            "tax_id": customer.tax_id,
            "phone": customer.phone,
            "email": customer.email,
            "province": customer.province,
            "city": customer.city,
        },
        request_id=request_id,
    )
    if not created:
        return row, await _contacts_of(conn, row)
    contact_rows = await _insert_contacts(conn, row, customer.contacts)
    await add_event(
        conn,
        event_type="crm.customers.customer.created.v1",
        payload=events_pb2.CustomerCreated(customer=customer_to_proto(row, contact_rows)),
        tenant_id=row.tenant_id,
        org_path=row.owner_org_path,
        producer=PRODUCER,
    )
    for contact in contact_rows:
        await _contact_created(conn, row, contact)
    return row, contact_rows


async def get(
    *, conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID
) -> tuple[Any, list[Any]]:
    row = await _visible_customer(conn, principal, customer_id)
    return row, await _contacts_of(conn, row)


async def list_visible(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    """Newest first (UUIDv7 ids are time-ordered), keyset-paged. Rows only: contacts are
    unbounded per customer, so they come with a single customer (get)."""
    return await records.visible_page(conn, customers, principal, page)


async def create_contact(
    *,
    conn: AsyncConnection,
    principal: Principal,
    customer_id: uuid.UUID,
    contact: NewContact,
    request_id: uuid.UUID | None,
) -> Any:
    """Add a contact to a customer the caller can see. A repeated request_id returns the
    first contact and publishes nothing."""
    principal.require_any(WRITE_ROLES)
    customer = await _visible_customer(conn, principal, customer_id)
    row, created = await records.insert_once(
        conn,
        contacts,
        _contact_values(customer, contact),
        request_id=request_id,
    )
    if not created:
        return row
    # Contacts are part of the customer resource, so its etag must change with them.
    await conn.execute(
        customers.update()
        .where(customers.c.id == customer.id)
        .values(version=customers.c.version + 1, update_time=sa.func.now())
    )
    await _contact_created(conn, customer, row)
    return row


async def _visible_customer(
    conn: AsyncConnection, principal: Principal, customer_id: uuid.UUID
) -> Any:
    """A customer outside the caller's subtree is reported as missing, so existence never
    leaks."""
    return await records.get_visible(conn, customers, principal, customer_id, kind="customer")


async def _contacts_of(conn: AsyncConnection, customer: Any) -> list[Any]:
    """In creation order (UUIDv7 ids)."""
    stmt = sa.select(contacts).where(contacts.c.customer_id == customer.id).order_by(contacts.c.id)
    return list((await conn.execute(stmt)).all())


def _contact_values(customer: Any, contact: NewContact) -> dict[str, Any]:
    return {
        "id": new_id(),
        "tenant_id": customer.tenant_id,
        "customer_id": customer.id,
        "full_name": contact.full_name,
        "title": contact.title,
        "phone": contact.phone,
        "email": contact.email,
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


async def _contact_created(conn: AsyncConnection, customer: Any, contact: Any) -> None:
    await add_event(
        conn,
        event_type="crm.customers.contact.created.v1",
        payload=events_pb2.ContactCreated(contact=contact_to_proto(contact)),
        tenant_id=customer.tenant_id,
        org_path=customer.owner_org_path,
        producer=PRODUCER,
    )
