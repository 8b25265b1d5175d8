"""Customer 360: the local profile (with its lifecycle stage), contacts and history plus the
customer's open opportunities and recent orders (won opportunities; sales) and open tickets
(service-desk), fetched concurrently over gRPC, each
under its own deadline. A dependency that is slow or down leaves its section empty and is
named in ``partial``: the view degrades, it never fails because of a neighbour."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from crm.customers.v1 import customer_service_pb2
from crm.sales.v1 import opportunity_pb2, sales_service_pb2, sales_service_pb2_grpc
from crm.servicedesk.v1 import service_desk_service_pb2, service_desk_service_pb2_grpc, ticket_pb2
from crm_customers.customer import service
from crm_customers.customer.mapping import customer_to_proto, field_change_to_proto
from crm_customers.settings import Settings
from crm_platform.auth import Principal
from crm_platform.grpc_client import auth_metadata
from crm_platform.http import proto_json
from crm_platform.pagination import PageRequest
from crm_platform.runtime import Runtime

TIMELINE_LIMIT = 50
RECENT_ORDERS = 10
REMOTE_PAGE = 100
_WON = opportunity_pb2.OPPORTUNITY_STAGE_WON
_CLOSED_TICKETS = {ticket_pb2.TICKET_STATUS_RESOLVED, ticket_pb2.TICKET_STATUS_CLOSED}

Json = dict[str, Any]
Entry = customer_service_pb2.Customer360.TimelineEntry


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
    # Local first: a customer the caller cannot see is a 404 before any fan-out.
    async with rt.db.read() as conn:
        row, contacts = await service.get(conn=conn, principal=principal, customer_id=customer_id)
        history = await service.history_page(
            conn=conn,
            principal=principal,
            customer_id=customer_id,
            contact_id=None,
            page=PageRequest(size=TIMELINE_LIMIT, after=None),
        )
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

    results = await asyncio.gather(
        _section("opportunities", opportunities), _section("tickets", tickets)
    )
    view = customer_service_pb2.Customer360(customer=customer_to_proto(row, contacts))
    timeline: list[Entry] = []
    orders: list[opportunity_pb2.Opportunity] = []
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
    for name, items, reason in results:
        if reason:
            view.missing_parts.append(name)
            view.partial_reasons[name] = reason
        for item in items:
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
    view.partial = bool(view.missing_parts)
    # Newest first.
    timeline.sort(key=lambda e: (e.time.seconds, e.time.nanos), reverse=True)
    view.timeline.extend(timeline[:TIMELINE_LIMIT])
    return view


def to_json(view: customer_service_pb2.Customer360) -> Json:
    """The REST body: ``partial`` lists the missing sections, ``partial_reasons`` says why."""
    return {
        "customer": proto_json(view.customer),
        "open_opportunities": [proto_json(o) for o in view.open_opportunities],
        "open_tickets": [proto_json(t) for t in view.open_tickets],
        "recent_orders": [proto_json(o) for o in view.recent_orders],
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
