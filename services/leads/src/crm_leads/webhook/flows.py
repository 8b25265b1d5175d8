"""Receiving a delivery: authenticate it by its signature, map the platform's payload, and
capture the lead, in one unit of work so a delivery is recorded only with its capture."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from crm_leads.lead import service as lead_service
from crm_leads.tenantsettings import service as tenant_settings
from crm_leads.webhook import mappers, rules, service, signature
from crm_platform import metrics
from crm_platform.db import Database
from crm_platform.errors import AlreadyExists


@dataclass(frozen=True)
class Delivery:
    source_id: str  # as given in the URL
    signature: str | None
    timestamp: str | None
    body: bytes


async def receive(
    db: Database, delivery: Delivery, *, now: float, tolerance: int, default_region: str
) -> lead_service.Captured:
    # Checks that need no secret come first: junk costs no database round trip.
    signed, timestamp = signature.check_headers(
        delivery.signature, delivery.timestamp, now=now, tolerance=tolerance
    )
    try:
        source_id = uuid.UUID(delivery.source_id)
    except ValueError:
        raise service.source_not_found(delivery.source_id) from None
    async with db.unit_of_work() as conn:
        source = await service.enabled_source(conn=conn, source_id=source_id)
        digest = signature.verify(source.secret, signed, timestamp, delivery.body)
        # Through the cache on this connection: no extra round trip in the steady state.
        settings = await tenant_settings.CACHE.current(conn, source.tenant_id)
        region = settings.settings.phone_region or default_region
        # Pure: a payload that cannot become a lead is refused before anything is written.
        lead, intent, event_id = mappers.to_capture(
            source.platform, mappers.parse_json(delivery.body), region=region
        )
        await service.record_delivery(conn=conn, source_id=source.id, signature=digest)
        try:
            captured = await lead_service.capture(
                conn=conn,
                principal=rules.capturing_principal(source),
                lead=lead,
                intent=intent,
                request_id=rules.request_id(source.id, event_id, delivery.body),
            )
        except AlreadyExists as exc:
            # Only a platform event id reused for another person gets here (a body-derived
            # key repeats only with the same person); say so in the platform's terms.
            if exc.reason != "IDEMPOTENCY_KEY_REUSED":
                raise
            raise AlreadyExists(
                f"event id {event_id!r} was already delivered for another person",
                reason="WEBHOOK_EVENT_ID_REUSED",
            ) from exc
    metrics.count_captures([captured.outcome.name])
    return captured
