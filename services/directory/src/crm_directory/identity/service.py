"""Users, API keys, logins. Keyword-only functions taking the connection; never commit."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.directory.v1 import events_pb2
from crm_directory.identity import rules
from crm_directory.mapping import user_to_proto
from crm_directory.models import api_keys, org_units, tenants, users
from crm_directory.org import rules as org_rules
from crm_directory.org.service import get_org_unit
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal
from crm_platform.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from crm_platform.ids import new_id
from crm_platform.outbox import add_event
from crm_platform.pagination import PageRequest

_hasher = PasswordHasher()
# Verifying against this keeps an unknown username as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

_user_view = sa.select(*users.c, org_units.c.path.label("org_path")).join(
    org_units, org_units.c.id == users.c.org_unit_id
)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, rules.validate_password(password))


async def insert_user(
    *,
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    org_unit_id: uuid.UUID,
    username: str,
    password_hash: str,
    display_name: str,
    email: str,
    roles: list[str],
) -> Any:
    user_id = new_id()
    try:
        async with conn.begin_nested():
            await conn.execute(
                users.insert().values(
                    id=user_id,
                    tenant_id=tenant_id,
                    org_unit_id=org_unit_id,
                    username=username,
                    display_name=display_name or username,
                    email=email,
                    password_hash=password_hash,
                    roles=roles,
                )
            )
    except IntegrityError:
        raise AlreadyExists(f"username {username!r} is taken", reason="USERNAME_TAKEN") from None
    row = (await conn.execute(_user_view.where(users.c.id == user_id))).one()
    await add_event(
        conn,
        event_type="crm.directory.user.created.v1",
        payload=events_pb2.UserCreated(user=user_to_proto(row)),
        tenant_id=tenant_id,
        org_path=row.org_path,
        producer="directory",
    )
    return row


async def create_user(
    *,
    conn: AsyncConnection,
    principal: Principal,
    org_unit_id: uuid.UUID,
    username: str,
    password: str,
    display_name: str,
    email: str,
    roles: list[str],
) -> Any:
    principal.require_any([ROLE_ADMIN, ROLE_MANAGER])
    rules.validate_username(username)
    granted = rules.validate_roles(roles)
    if ROLE_ADMIN in granted and ROLE_ADMIN not in principal.roles:
        raise PermissionDenied(
            "only a tenant admin can grant tenant_admin", reason="ROLE_ESCALATION"
        )
    org_rules.validate_display_name(display_name, required=False)
    rules.validate_email(email)
    unit = await get_org_unit(conn=conn, principal=principal, org_unit_id=org_unit_id)
    return await insert_user(
        conn=conn,
        tenant_id=unit.tenant_id,
        org_unit_id=unit.id,
        username=username,
        password_hash=await hash_password(password),
        display_name=display_name,
        email=email,
        roles=granted,
    )


def _visible_users(principal: Principal) -> sa.ColumnElement[bool]:
    return sa.and_(
        users.c.tenant_id == principal.tenant_id,
        org_units.c.path.startswith(principal.org_path, autoescape=True),
    )


async def get_user(*, conn: AsyncConnection, principal: Principal, user_id: uuid.UUID) -> Any:
    row = (
        await conn.execute(_user_view.where(users.c.id == user_id, _visible_users(principal)))
    ).first()
    if row is None:
        raise NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND")
    return row


async def list_users(
    *, conn: AsyncConnection, principal: Principal, page: PageRequest
) -> list[Any]:
    stmt = _user_view.where(_visible_users(principal)).order_by(users.c.id).limit(page.size + 1)
    if page.after is not None:
        stmt = stmt.where(users.c.id > page.after)
    return list((await conn.execute(stmt)).all())


async def deactivate_user(
    *, conn: AsyncConnection, principal: Principal, user_id: uuid.UUID
) -> Any:
    """Deactivate a user of the caller's subtree (tenant administrators): they can no longer
    log in (tokens already issued live until they expire), and
    ``crm.directory.user.deactivated.v1`` lets other services react (the leads service
    returns their held leads to the pool). An already deactivated user is 409."""
    principal.require_any([ROLE_ADMIN])
    current = await get_user(conn=conn, principal=principal, user_id=user_id)
    # Conditional: of two concurrent deactivations exactly one changes the row (and publishes).
    changed = (
        await conn.execute(
            users.update()
            .where(users.c.id == current.id, users.c.active)
            .values(active=False)
            .returning(users.c.id)
        )
    ).first()
    if changed is None:
        raise FailedPrecondition(
            f"user {user_id} is already deactivated",
            reason="USER_ALREADY_DEACTIVATED",
            metadata={"user": str(user_id)},
        )
    row = (await conn.execute(_user_view.where(users.c.id == current.id))).one()
    await add_event(
        conn,
        event_type="crm.directory.user.deactivated.v1",
        payload=events_pb2.UserDeactivated(user=user_to_proto(row), by=principal.subject),
        tenant_id=row.tenant_id,
        org_path=row.org_path,
        producer="directory",
    )
    return row


async def authenticate_user(
    *, conn: AsyncConnection, tenant_slug: str, username: str, password: str
) -> Principal:
    row = (
        await conn.execute(
            sa.select(users, org_units.c.path.label("org_path"))
            .join(org_units, org_units.c.id == users.c.org_unit_id)
            .join(tenants, tenants.c.id == users.c.tenant_id)
            .where(tenants.c.slug == tenant_slug, users.c.username == username, users.c.active)
        )
    ).first()
    try:
        await asyncio.to_thread(_hasher.verify, row.password_hash if row else _DUMMY_HASH, password)
    except (VerifyMismatchError, InvalidHashError):
        row = None
    if row is None:
        raise Unauthenticated("wrong tenant, username or password", reason="LOGIN_FAILED")
    return Principal(
        tenant_id=row.tenant_id,
        subject=str(row.id),
        org_unit_id=row.org_unit_id,
        org_path=row.org_path,
        roles=frozenset(row.roles),
    )


async def create_api_key(
    *,
    conn: AsyncConnection,
    principal: Principal,
    org_unit_id: uuid.UUID,
    display_name: str,
    roles: list[str],
) -> tuple[Any, str]:
    principal.require_any([ROLE_ADMIN, ROLE_MANAGER])
    org_rules.validate_display_name(display_name)
    granted = rules.api_key_roles(roles)
    if ROLE_ADMIN in granted and ROLE_ADMIN not in principal.roles:
        raise PermissionDenied(
            "only a tenant admin can grant tenant_admin", reason="ROLE_ESCALATION"
        )
    unit = await get_org_unit(conn=conn, principal=principal, org_unit_id=org_unit_id)
    secret, prefix, digest = rules.new_api_key()
    key_id = new_id()
    await conn.execute(
        api_keys.insert().values(
            id=key_id,
            tenant_id=unit.tenant_id,
            org_unit_id=unit.id,
            display_name=display_name,
            roles=granted,
            prefix=prefix,
            secret_sha256=digest,
        )
    )
    row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).one()
    return row, secret


async def resolve_api_key(*, conn: AsyncConnection, secret: str) -> Principal:
    row = (
        await conn.execute(
            sa.select(api_keys, org_units.c.path.label("org_path"))
            .join(org_units, org_units.c.id == api_keys.c.org_unit_id)
            .where(api_keys.c.secret_sha256 == rules.hash_api_key(secret), ~api_keys.c.revoked)
        )
    ).first()
    if row is None:
        raise Unauthenticated("unknown or revoked API key", reason="API_KEY_INVALID")
    return Principal(
        tenant_id=row.tenant_id,
        subject=f"apikey:{row.id}",
        org_unit_id=row.org_unit_id,
        org_path=row.org_path,
        roles=frozenset(row.roles),
    )
