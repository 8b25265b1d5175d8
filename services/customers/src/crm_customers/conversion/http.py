"""Public REST of the tenant's customer matching rules (used by lead conversions)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from crm_customers.conversion import rules, service
from crm_platform.http import ApiModel, CodeText, CurrentPrincipal
from crm_platform.runtime import Runtime

PREFIX = "/v1/customer-match-rules"


class MatchRulesIn(ApiModel):
    keys: list[CodeText] = Field(
        max_length=10,
        description="Distinct keys tried in order: " + ", ".join(rules.KEYS) + ".",
    )


def _body(current: service.MatchRules) -> dict[str, Any]:
    return {
        "keys": list(current.keys),
        "version": current.version,
        "from_default": current.version == 0,
        "update_time": current.update_time.isoformat() if current.update_time else None,
    }


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix=PREFIX, tags=["customers"])

    @r.get("")
    async def get_customer_match_rules(principal: CurrentPrincipal) -> dict[str, Any]:
        """The keys a lead conversion matches existing customers on, in order (the default
        until a tenant admin sets them)."""
        async with rt.db.read() as conn:
            current = await service.get_rules(conn=conn, tenant_id=principal.tenant_id)
        return _body(current)

    @r.put("")
    async def put_customer_match_rules(
        body: MatchRulesIn, principal: CurrentPrincipal
    ) -> dict[str, Any]:
        """Replace the matching keys (tenant admins)."""
        keys = rules.validate_keys(body.keys)
        async with rt.db.unit_of_work() as conn:
            current = await service.put_rules(conn=conn, principal=principal, keys=keys)
        return _body(current)

    return r
