"""Customer 360: the local profile (with its lifecycle stage), contacts and history plus the
customer's open opportunities and recent orders (won opportunities; sales), open tickets
(service-desk) and the campaign touches and best score of the leads converted into it
(leads), fetched concurrently over gRPC, each under its own deadline. A dependency that is
slow or down leaves its section empty and is named in ``partial``: the view degrades, it
never fails because of a neighbour."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from crm.customers.v1 import customer_service_pb2
from crm.leads.v1 import lead_pb2, lead_service_pb2, lead_service_pb2_grpc
from crm.sales.v1 import opportunity_pb2, sales_service_pb2, sales_service_pb2_grpc
from crm.servicedesk.v1 import service_desk_service_pb2, service_desk_service_pb2_grpc, ticket_pb2
from crm_customers.customer import service
from crm_customers.customer.mapping import customer_to_proto, field_change_to_proto
from crm_customers.settings import Settings
from crm_platform.auth import Principal
from crm_platform.grpc_client import auth_metadata
from crm_platform.http import proto_json
from crm_platform.runtime import Runtime

TIMELINE_LIMIT = 50
RECENT_ORDERS = 10
CAMPAIGN_TOUCHES = 20
REMOTE_PAGE = 100
_WON = opportunity_pb2.OPPORTUNITY_STAGE_WON
_CLOSED_TICKETS = {ticket_pb2.TICKET_STATUS_RESOLVED, ticket_pb2.TICKET_STATUS_CLOSED}

Json = dict[str, Any]
Entry = customer_service_pb2.Customer360.TimelineEntry
Touch = customer_service_pb2.Customer360.CampaignTouch


async def _section(
    name: str, call: Callable[[], Awaitable[list[Message]]]
) -> tuple[str, list[Message], str]:
    """(name, items, reason): reason is empty when the call succeeded."""
    try:
        return name, await call(), ""
    except grpc.aio.AioRpcError as exc:
        return name, [], f"{exc.code().name}: {exc.details() or ''}".strip()
    except (TimeoutError, OSError) as exc:
        return name, [], f"UNAVAILABLE: {exc}"


async def assemble_proto(
    *, rt: Runtime, principal: Principal, authorization: str, customer_id: uuid.UUID
) -> customer_service_pb2.Customer360:
    """The view as its proto, for both transports (REST renders it with ``to_json``)."""
    settings = rt.settings
    assert isinstance(settings, Settings)
    md = auth_metadata(authorization)
    deadline = settings.customer360_deadline_seconds
    cid = str(customer_id)

    async def opportunities() -> list[Message]:
        stub = sales_service_pb2_grpc.OpportunityServiceStub(rt.channel(settings.sales_grpc_target))
        resp = await stub.ListOpportunities(
            sales_service_pb2.ListOpportunitiesRequest(customer_id=cid, page_size=REMOTE_PAGE),
            metadata=md,
            timeout=deadline,
        )
        # Open ones and orders (won); lost ones are not part of the view.
        return [o for o in resp.opportunities if o.stage != opportunity_pb2.OPPORTUNITY_STAGE_LOST]

    async def tickets() -> list[Message]:
        stub = service_desk_service_pb2_grpc.TicketServiceStub(
            rt.channel(settings.service_desk_grpc_target)
        )
        resp = await stub.ListTickets(
            service_desk_service_pb2.ListTicketsRequest(customer_id=cid, page_size=REMOTE_PAGE),
            metadata=md,
            timeout=deadline,
        )
        return [t for t in resp.tickets if t.status not in _CLOSED_TICKETS]

    async def converted_leads() -> list[Message]:
        # The leads service applies the caller's visibility: a lead the caller cannot see
        # never comes back, so neither do its touches nor its score.
        stub = lead_service_pb2_grpc.LeadServiceStub(rt.channel(settings.leads_grpc_target))
        resp = await stub.ListLeads(
            lead_service_pb2.ListLeadsRequest(customer_id=cid, page_size=REMOTE_PAGE),
            metadata=md,
            timeout=deadline,
        )
        return list(resp.leads)

    async with rt.db.read() as conn:
        # A customer the caller cannot see is a 404 before any fan-out; once it is known
        # visible, the remote sections run while the contacts and history are read.
        row = await service.visible(conn=conn, principal=principal, customer_id=customer_id)
        remote = asyncio.gather(
            _section("opportunities", opportunities),
            _section("tickets", tickets),
            _section("leads", converted_leads),
        )
        try:
            contacts, history = await service.contacts_and_history(
                conn=conn, customer=row, history_size=TIMELINE_LIMIT
            )
        except BaseException:
            remote.cancel()
            raise
    results = await remote
    view = customer_service_pb2.Customer360(customer=customer_to_proto(row, contacts))
    timeline: list[Entry] = []
    for change in history:
        ch = field_change_to_proto(change)
        timeline.append(
            Entry(
                time=ch.change_time,
                kind="field_change",
                ref=ch.id,
                summary=f"{ch.field} changed",
            )
        )
    _merge_remote(view, results, timeline)
    view.partial = bool(view.missing_parts)
    # Newest first.
    timeline.sort(key=lambda e: (e.time.seconds, e.time.nanos), reverse=True)
    view.timeline.extend(timeline[:TIMELINE_LIMIT])
    return view


def _merge_remote(
    view: customer_service_pb2.Customer360,
    results: Sequence[tuple[str, list[Message], str]],
    timeline: list[Entry],
) -> None:
    """The remote sections into ``view`` and their entries into ``timeline``."""
    orders: list[opportunity_pb2.Opportunity] = []
    leads: list[lead_pb2.Lead] = []
    for name, items, reason in results:
        if reason:
            view.missing_parts.append(name)
            view.partial_reasons[name] = reason
        for item in items:
            if isinstance(item, lead_pb2.Lead):
                leads.append(item)
                continue
            if isinstance(item, opportunity_pb2.Opportunity) and item.stage == _WON:
                orders.append(item)
                kind, title = "order_won", item.title
            elif isinstance(item, opportunity_pb2.Opportunity):
                view.open_opportunities.append(item)
                kind, title = "opportunity_created", item.title
            else:
                assert isinstance(item, ticket_pb2.Ticket)
                view.open_tickets.append(item)
                kind, title = "ticket_created", item.subject
            timeline.append(Entry(time=item.create_time, kind=kind, ref=item.id, summary=title))
    orders.sort(key=lambda o: (o.update_time.seconds, o.update_time.nanos), reverse=True)
    view.recent_orders.extend(orders[:RECENT_ORDERS])
    touches = campaign_touches(leads)
    view.campaign_touches.extend(touches)
    timeline.extend(
        Entry(time=t.time, kind="campaign_touch", ref=t.intent_id, summary=t.campaign)
        for t in touches
    )
    if best := best_score(leads):
        view.score.CopyFrom(best)


def campaign_touches(leads: list[lead_pb2.Lead]) -> list[Touch]:
    """One touch per intent with a campaign, newest first, at most ``CAMPAIGN_TOUCHES``."""
    touches = [
        Touch(
            campaign=i.campaign,
            source=i.source,
            product_interest=i.product_interest,
            lead_id=lead.id,
            intent_id=i.id,
            time=i.occur_time,
        )
        for lead in leads
        for i in lead.intents
        if i.campaign
    ]
    touches.sort(key=lambda t: (t.time.seconds, t.time.nanos), reverse=True)
    return touches[:CAMPAIGN_TOUCHES]


def best_score(leads: list[lead_pb2.Lead]) -> customer_service_pb2.Customer360.LeadScore | None:
    """The highest score; on a tie the first lead, the newest (leads come newest first)."""
    if not leads:
        return None
    best = max(leads, key=lambda lead: lead.score)  # max keeps the first of equals
    return customer_service_pb2.Customer360.LeadScore(
        score=best.score, grade=best.grade, lead_id=best.id
    )


def to_json(view: customer_service_pb2.Customer360) -> Json:
    """The REST body: ``partial`` lists the missing sections, ``partial_reasons`` says why."""
    return {
        "customer": proto_json(view.customer),
        "open_opportunities": [proto_json(o) for o in view.open_opportunities],
        "open_tickets": [proto_json(t) for t in view.open_tickets],
        "recent_orders": [proto_json(o) for o in view.recent_orders],
        "campaign_touches": [proto_json(t) for t in view.campaign_touches],
        "score": proto_json(view.score) if view.HasField("score") else None,
        "timeline": [proto_json(e) for e in view.timeline],
        "partial": list(view.missing_parts),
        "partial_reasons": dict(view.partial_reasons),
    }


async def assemble(
    *, rt: Runtime, principal: Principal, authorization: str, customer_id: uuid.UUID
) -> Json:
    return to_json(
        await assemble_proto(
            rt=rt, principal=principal, authorization=authorization, customer_id=customer_id
        )
    )
