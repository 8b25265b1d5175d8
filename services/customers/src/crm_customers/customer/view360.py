"""Customer 360: the local profile, contacts and history plus the customer's open
opportunities (sales) and open tickets (service-desk), fetched concurrently over gRPC, each
under its own deadline. A dependency that is slow or down leaves its section empty and is
named in ``partial``: the view degrades, it never fails because of a neighbour."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.message import Message

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
REMOTE_PAGE = 100
_CLOSED_STAGES = {opportunity_pb2.OPPORTUNITY_STAGE_WON, opportunity_pb2.OPPORTUNITY_STAGE_LOST}
_CLOSED_TICKETS = {ticket_pb2.TICKET_STATUS_RESOLVED, ticket_pb2.TICKET_STATUS_CLOSED}

Json = dict[str, Any]


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


async def assemble(
    *, rt: Runtime, principal: Principal, authorization: str, customer_id: uuid.UUID
) -> Json:
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
        return [o for o in resp.opportunities if o.stage not in _CLOSED_STAGES]

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
    body: Json = {"customer": proto_json(customer_to_proto(row, contacts))}
    partial: list[str] = []
    reasons: dict[str, str] = {}
    timeline: list[Json] = []
    for change in history:
        ch = proto_json(field_change_to_proto(change))
        timeline.append(
            {
                "time": ch["change_time"],
                "kind": "field_change",
                "ref": ch["id"],
                "summary": f"{ch.get('field', '')} changed",
            }
        )
    for name, items, reason in results:
        body[f"open_{name}"] = [proto_json(i) for i in items]
        if reason:
            partial.append(name)
            reasons[name] = reason
        for item in items:
            j = proto_json(item)
            kind = "opportunity_created" if name == "opportunities" else "ticket_created"
            title = j.get("title") or j.get("subject") or ""
            timeline.append(
                {"time": j["create_time"], "kind": kind, "ref": j["id"], "summary": title}
            )
    # Newest first; RFC 3339 strings differ in fraction length, so compare parsed times.
    timeline.sort(key=lambda e: _ts(e["time"]), reverse=True)
    body["timeline"] = timeline[:TIMELINE_LIMIT]
    body["partial"] = partial
    body["partial_reasons"] = reasons
    return body


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
