"""crm-leads: lead capture and lead queries."""

from __future__ import annotations

from pathlib import Path

from crm_leads.acceptance import http as acceptance_http
from crm_leads.activities import hooks as activity_hooks
from crm_leads.activities import http as activities_http
from crm_leads.api import grpc as grpc_api
from crm_leads.api import http as http_api
from crm_leads.api import routing_grpc
from crm_leads.assignment import http as assignment_http
from crm_leads.consumers import consumers
from crm_leads.conversion import http as conversion_http
from crm_leads.conversion import jobs as conversion_jobs
from crm_leads.conversion.waiters import ConversionWaiters, listener_dsn
from crm_leads.dedup import http as dedup_http
from crm_leads.distribution import http as distribution_http
from crm_leads.distribution import loads as distribution_loads
from crm_leads.imports import http as imports_http
from crm_leads.lead import hooks as lead_hooks
from crm_leads.lead import review
from crm_leads.lead.models import metadata
from crm_leads.scoring import rescore
from crm_leads.settings import Settings
from crm_leads.sla import alerts as sla_alerts
from crm_leads.sla import http as sla_http
from crm_leads.sla import jobs as sla_jobs
from crm_leads.sla import service as sla_service
from crm_leads.tenantsettings import http as settings_http
from crm_leads.webhook import http as webhook_http
from crm_platform.db import platform_metadata
from crm_platform.runtime import PeriodicJob, Runtime, ServiceDefinition
from crm_platform.runtime import main as run_main

# A logged follow-up, in the activity's transaction: re-arms the lead's SLA clock, resolves
# its open SLA alerts, and (a visit) re-scores it.
activity_hooks.FOLLOW_UP_HOOKS.extend(
    [sla_service.on_follow_up, sla_alerts.on_follow_up, rescore.on_follow_up]
)
# A lead given to a rep without an acceptance step starts its SLA clock there.
lead_hooks.ASSIGNED_HOOKS.append(sla_service.on_assigned)


def _jobs(rt: Runtime) -> list[PeriodicJob]:
    assert isinstance(rt.settings, Settings)
    days = rt.settings.stale_lead_days

    async def close_stale() -> int:
        return await review.close_stale(rt.db, older_than_days=days)

    runner = imports_http.runner(rt)

    async def fire_timers() -> object:
        return await sla_jobs.fire_due(rt.db)

    async def expire_conversions() -> object:
        return await conversion_jobs.expire_due(rt.db)

    async def refresh_loads() -> int:
        return await distribution_loads.refresh(rt.db)

    return [
        PeriodicJob("close-stale-leads", rt.settings.stale_check_seconds, close_stale),
        PeriodicJob(
            "conversion-deadlines",
            rt.settings.conversion_deadline_poll_seconds,
            expire_conversions,
        ),
        PeriodicJob(
            "distribution-loads",
            rt.settings.distribution_load_refresh_seconds,
            refresh_loads,
        ),
        PeriodicJob(
            "lead-imports",
            rt.settings.import_poll_seconds,
            runner.run_pending,
            wake=runner.wake,
        ),
        PeriodicJob("lead-timers", rt.settings.sla_timer_poll_seconds, fire_timers),
    ]


async def _on_start(rt: Runtime) -> None:
    waiters = ConversionWaiters(listener_dsn(rt.settings.db_url.get_secret_value()))
    waiters.start()
    rt.extras[conversion_http.WAITERS] = waiters


async def _on_stop(rt: Runtime) -> None:
    await rt.extras[conversion_http.WAITERS].stop()


def _body_limits(rt: Runtime) -> dict[str, int]:
    assert isinstance(rt.settings, Settings)
    return {imports_http.PREFIX: rt.settings.import_max_bytes}


DEFINITION = ServiceDefinition(
    name="leads",
    title="CRM Leads",
    settings_cls=Settings,
    migrations=Path(__file__).parent / "migrations",
    metadata=(metadata, platform_metadata),
    grpc=lambda rt: [*grpc_api.bindings(rt), *routing_grpc.bindings(rt)],
    http=lambda rt: [
        http_api.router(rt),
        http_api.pool_router(rt),
        http_api.scoring_router(rt),
        dedup_http.router(rt),
        webhook_http.router(rt),
        imports_http.router(rt),
        settings_http.router(rt),
        distribution_http.router(rt),
        acceptance_http.router(rt),
        sla_http.router(rt),
        assignment_http.router(rt),
        activities_http.router(rt),
        conversion_http.router(rt),
    ],
    on_start=_on_start,
    on_stop=_on_stop,
    jobs=_jobs,
    consumers=consumers,
    body_limits=_body_limits,
)


def main() -> None:
    run_main(DEFINITION)


if __name__ == "__main__":
    main()
