"""Public REST adapter for a tenant's lead settings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from crm_leads.settings import Settings
from crm_leads.tenantsettings import service
from crm_leads.tenantsettings.rules import LeadSettings, ServiceDefaults, effective
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.http import CurrentPrincipal
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime

Json = dict[str, Any]


def settings_json(current: service.CurrentSettings, defaults: ServiceDefaults) -> Json:
    values = effective(current.settings, defaults)
    out: Json = {
        "version": current.version,
        "settings": current.settings.model_dump(mode="json"),
        "effective": {
            "stale_lead_days": values.stale_lead_days,
            "phone_region": values.phone_region,
            "private_pool_cap": values.private_pool_cap,
            "reclaim_cooldown_hours": values.reclaim_cooldown_hours,
        },
        "from_default": list(values.from_default),
    }
    if current.update_time is not None:
        out["updated_by"] = current.updated_by
        out["update_time"] = timestamp(current.update_time).ToJsonString()
    return out


async def _admin(principal: CurrentPrincipal) -> Principal:
    # A dependency, so a non-administrator gets 403 before the body is validated.
    principal.require_any([ROLE_ADMIN])
    return principal


def router(rt: Runtime) -> APIRouter:
    assert isinstance(rt.settings, Settings)
    defaults = ServiceDefaults(rt.settings.stale_lead_days, rt.settings.default_phone_region)
    r = APIRouter(prefix="/v1/lead-settings", tags=["lead settings"])

    @r.get("")
    async def get_lead_settings(principal: CurrentPrincipal) -> Json:
        """The tenant's settings as stored (null: not set), the effective values, and which
        of them come from the service default. Version 0: never set."""
        async with rt.db.read() as conn:
            current = await service.latest(conn=conn, tenant_id=principal.tenant_id)
        return settings_json(current, defaults)

    @r.put("")
    async def put_lead_settings(
        body: LeadSettings, principal: Annotated[Principal, Depends(_admin)]
    ) -> Json:
        """Replace the tenant's settings (tenant administrators); null or omitted: the service
        default. Captures use them from now on (other replicas within seconds); the next
        stale-lead run closes by the new `stale_lead_days`."""
        return settings_json(await service.store(rt.db, principal, body), defaults)

    return r
