"""Handlers of the events lifecycle stages are derived from. The consumer runner owns the
transaction and the inbox (a redelivered event is never counted twice); these decode the
payload and record the order or activity."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.leads.v1 import events_pb2 as leads_events
from crm.sales.v1 import events_pb2 as sales_events
from crm.sales.v1 import opportunity_pb2
from crm.servicedesk.v1 import events_pb2 as servicedesk_events
from crm_customers.lifecycle import rules, service
from crm_platform.consumers import BatchHandler
from crm_platform.events import PoisonMessage, ReceivedEvent

OPPORTUNITY_CREATED = "crm.sales.opportunity.created.v1"
TICKET_CREATED = "crm.servicedesk.ticket.created.v1"
LEAD_CONVERTED = "crm.leads.lead.converted.v1"

# Payload -> (customer id, whether it is a won order).
Extract = Callable[[Message], tuple[str, bool]]


def _opportunity(payload: Message) -> tuple[str, bool]:
    if not isinstance(payload, sales_events.OpportunityCreated):
        raise PoisonMessage(f"not an OpportunityCreated: {type(payload).__name__}")
    opp = payload.opportunity
    return opp.customer_id, opp.stage == opportunity_pb2.OPPORTUNITY_STAGE_WON


def _ticket(payload: Message) -> tuple[str, bool]:
    if not isinstance(payload, servicedesk_events.TicketCreated):
        raise PoisonMessage(f"not a TicketCreated: {type(payload).__name__}")
    return payload.ticket.customer_id, False


def _lead_converted(payload: Message) -> tuple[str, bool]:
    if not isinstance(payload, leads_events.LeadConverted):
        raise PoisonMessage(f"not a LeadConverted: {type(payload).__name__}")
    return payload.customer_id, False


EXTRACTORS: dict[str, Extract] = {
    OPPORTUNITY_CREATED: _opportunity,
    TICKET_CREATED: _ticket,
    LEAD_CONVERTED: _lead_converted,
}


def handler(event_type: str, thresholds: rules.Thresholds) -> BatchHandler:
    """A fetch of ``event_type`` events, set-based (``ConsumerSpec.batched``)."""
    extract = EXTRACTORS[event_type]

    async def on_events(conn: AsyncConnection, events: Sequence[ReceivedEvent]) -> None:
        now = datetime.now(UTC)
        reports = []
        for event in events:
            customer_id, won_order = extract(event.payload)
            envelope = event.envelope
            occurred = (
                envelope.occurred_at.ToDatetime(UTC) if envelope.HasField("occurred_at") else now
            )
            reports.append(
                service.Report(
                    cause=service.Cause(
                        tenant_id=uuid.UUID(envelope.tenant_id),
                        correlation_id=envelope.correlation_id,
                        causation_id=envelope.id,
                    ),
                    customer_id=customer_id,
                    won_order=won_order,
                    # Never in the future: a producer's fast clock must not hold a
                    # customer active.
                    occurred_at=min(occurred, now),
                )
            )
        await service.record_many(conn=conn, reports=reports, now=now, thresholds=thresholds)

    return on_events
