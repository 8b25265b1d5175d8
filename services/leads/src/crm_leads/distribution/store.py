"""The distribution documents: a unit's rules (append-only versions) and a child's profile
(one row, replaced), who may read and change them, and reading a subtree's documents for the
engine. Keyword-only functions taking the connection; they never commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.distribution.models import distribution_profiles, distribution_rules
from crm_leads.distribution.rules import (
    DistributionRules,
    Profile,
    check_targets,
    document_json,
)
from crm_leads.orgtree import service as orgtree
from crm_platform.auth import ROLE_ADMIN, ROLE_MANAGER, Principal
from crm_platform.errors import FailedPrecondition, NotFound, PermissionDenied
from crm_platform.versioned import append_version

EDITOR_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER})


@dataclass(frozen=True)
class StoredRules:
    version: int  # 0: none stored (no automatic distribution)
    rules: DistributionRules
    author: str = ""
    create_time: datetime | None = None


@dataclass(frozen=True)
class StoredProfile:
    version: int  # 0: none stored (the unit is not a target of its parent's rules)
    profile: Profile | None
    author: str = ""
    update_time: datetime | None = None


async def visible_unit(*, conn: AsyncConnection, principal: Principal, unit_id: uuid.UUID) -> Any:
    """The replicated unit if it is in the caller's subtree (else NotFound, as for a missing
    one: other units' existence never leaks)."""
    unit = await orgtree.get(conn=conn, unit_id=unit_id)
    if unit is None or not principal.can_see(unit.tenant_id, unit.path):
        raise NotFound(
            f"org unit {unit_id} not found",
            reason="ORG_UNIT_NOT_FOUND",
            metadata={"org_unit": str(unit_id)},
        )
    return unit


def require_editor(principal: Principal, unit: Any) -> None:
    """Tenant administrators, or managers whose subtree contains ``unit``."""
    if ROLE_ADMIN in principal.roles:
        return
    if ROLE_MANAGER in principal.roles and principal.can_see(unit.tenant_id, unit.path):
        return
    raise PermissionDenied(
        "only tenant administrators and managers above the org unit may change its "
        "distribution documents",
        reason="DISTRIBUTION_EDITOR_REQUIRED",
    )


async def get_rules(*, conn: AsyncConnection, unit: Any) -> StoredRules:
    row = (
        await conn.execute(
            sa.select(distribution_rules)
            .where(
                distribution_rules.c.tenant_id == unit.tenant_id,
                distribution_rules.c.org_unit_id == unit.id,
            )
            .order_by(distribution_rules.c.version.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return StoredRules(0, DistributionRules())
    # Stored documents were validated when they were put.
    return StoredRules(
        row.version,
        DistributionRules.model_validate(row.document),
        row.created_by,
        row.create_time,
    )


async def put_rules(
    *, conn: AsyncConnection, principal: Principal, unit: Any, rules: DistributionRules
) -> StoredRules:
    """Store ``rules`` as the unit's next version; every listed target must be a child of
    the unit in the replica (InvalidArgument naming ``rules.N.targets.M.unit_id``)."""
    require_editor(principal, unit)
    children = await orgtree.children_of(conn=conn, unit_id=unit.id)
    check_targets(rules, frozenset(str(c.id) for c in children))
    row = await append_version(
        conn,
        distribution_rules,
        key={"tenant_id": unit.tenant_id, "org_unit_id": unit.id},
        values={"document": document_json(rules), "created_by": principal.subject},
        conflict="the distribution rules are being changed concurrently; retry",
        reason="DISTRIBUTION_RULES_CONFLICT",
    )
    return StoredRules(row.version, rules, principal.subject, row.create_time)


async def get_profile(*, conn: AsyncConnection, unit: Any) -> StoredProfile:
    row = (
        await conn.execute(
            sa.select(distribution_profiles).where(
                distribution_profiles.c.tenant_id == unit.tenant_id,
                distribution_profiles.c.org_unit_id == unit.id,
            )
        )
    ).first()
    if row is None:
        return StoredProfile(0, None)
    return StoredProfile(
        row.version, Profile.model_validate(row.document), row.updated_by, row.update_time
    )


async def put_profile(
    *, conn: AsyncConnection, principal: Principal, unit: Any, profile: Profile
) -> StoredProfile:
    """Replace the profile of ``unit``, kept by its parent: the editor must be above the
    parent (a dealer does not set its own capacity)."""
    if unit.parent_id is None:
        raise FailedPrecondition(
            "the root org unit has no parent to distribute to it",
            reason="ORG_UNIT_IS_ROOT",
            metadata={"org_unit": str(unit.id)},
        )
    parent = await orgtree.get(conn=conn, unit_id=unit.parent_id)
    require_editor(principal, parent if parent is not None else unit)
    table = distribution_profiles
    stmt = pg_insert(table).values(
        tenant_id=unit.tenant_id,
        org_unit_id=unit.id,
        document=document_json(profile),
        version=1,
        updated_by=principal.subject,
    )
    row = (
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.tenant_id, table.c.org_unit_id],
                set_={
                    "document": stmt.excluded.document,
                    "version": table.c.version + 1,
                    "updated_by": stmt.excluded.updated_by,
                    "update_time": sa.func.now(),
                },
            ).returning(table.c.version, table.c.update_time)
        )
    ).one()
    return StoredProfile(row.version, profile, principal.subject, row.update_time)


async def current_rules(
    *, conn: AsyncConnection, tenant_id: uuid.UUID, unit_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, DistributionRules]:
    """The current rules of those of ``unit_ids`` that have automatic rules (a current
    document with at least one rule)."""
    table = distribution_rules
    rows = await conn.execute(
        sa.select(table.c.org_unit_id, table.c.document)
        .where(table.c.tenant_id == tenant_id, table.c.org_unit_id.in_(list(unit_ids)))
        .order_by(table.c.org_unit_id, table.c.version.desc())
        .distinct(table.c.org_unit_id)
    )
    found = {row.org_unit_id: DistributionRules.model_validate(row.document) for row in rows}
    return {unit: rules for unit, rules in found.items() if rules.rules}


async def profiles(
    *, conn: AsyncConnection, tenant_id: uuid.UUID, unit_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Profile]:
    table = distribution_profiles
    rows = await conn.execute(
        sa.select(table.c.org_unit_id, table.c.document).where(
            table.c.tenant_id == tenant_id, table.c.org_unit_id.in_(list(unit_ids))
        )
    )
    return {row.org_unit_id: Profile.model_validate(row.document) for row in rows}


_UNITS_WITH_RULES = sa.text(
    "SELECT u.tenant_id, u.unit_id FROM unnest(:tenants, :units) AS u (tenant_id, unit_id) "
    "WHERE (SELECT jsonb_array_length(r.document -> 'rules') FROM distribution_rules r "
    "WHERE r.tenant_id = u.tenant_id AND r.org_unit_id = u.unit_id "
    "ORDER BY r.version DESC LIMIT 1) > 0"
).bindparams(
    sa.bindparam("tenants", type_=sa.ARRAY(sa.Uuid())),
    sa.bindparam("units", type_=sa.ARRAY(sa.Uuid())),
)


async def units_with_rules(
    *, conn: AsyncConnection, units: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """Which of the (tenant, unit) pairs distribute automatically (their latest rules
    document has rules): one backward primary-key probe per unit, no document parsed, in one
    statement (the capture consumers ask it once per fetch)."""
    if not units:
        return set()
    rows = await conn.execute(
        _UNITS_WITH_RULES, {"tenants": [t for t, _ in units], "units": [u for _, u in units]}
    )
    return {(row.tenant_id, row.unit_id) for row in rows}
