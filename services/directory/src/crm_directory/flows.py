"""Use cases spanning the org and identity aggregates."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crm_directory.identity import rules as identity_rules
from crm_directory.identity.service import hash_password, insert_user
from crm_directory.org.service import create_tenant
from crm_directory.settings import Settings
from crm_platform.auth import ROLE_ADMIN
from crm_platform.errors import Unauthenticated


def check_bootstrap(settings: Settings, authorization: str | None) -> None:
    """Tenant creation is an operator action, guarded by the bootstrap token."""
    expected = settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else ""
    scheme, _, token = (authorization or "").partition(" ")
    if not expected or scheme.lower() != "bootstrap" or token.strip() != expected:
        raise Unauthenticated(
            "tenant creation needs 'Authorization: Bootstrap <token>'", reason="BOOTSTRAP_REQUIRED"
        )


async def onboard_tenant(
    *,
    conn: AsyncConnection,
    slug: str,
    display_name: str,
    default_region: str,
    admin_username: str,
    admin_password: str,
) -> tuple[Any, Any, Any]:
    """Tenant + HQ root unit + first admin, atomically."""
    identity_rules.validate_username(admin_username)
    password_hash = await hash_password(admin_password)
    tenant, root = await create_tenant(
        conn=conn, slug=slug, display_name=display_name, default_region=default_region or "CN"
    )
    admin = await insert_user(
        conn=conn,
        tenant_id=tenant.id,
        org_unit_id=root.id,
        username=admin_username,
        password_hash=password_hash,
        display_name="Administrator",
        email="",
        roles=[ROLE_ADMIN],
    )
    return tenant, root, admin
