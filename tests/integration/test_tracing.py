"""One trace follows a lead from the REST request through SQL, the outbox, NATS and the
analytics consumer's transaction; one trace follows a lead conversion from REST through gRPC,
NATS and every service's consumer and SQL."""

from __future__ import annotations

import itertools

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conftest import Tenant, http_client
from crm_platform.runtime import Runtime
from crm_platform.testing.harness import eventually

pytestmark = pytest.mark.integration


async def test_lead_trace_spans_rest_sql_nats_and_consumer(
    leads: Runtime, analytics: Runtime, tenant: Tenant, span_exporter: InMemorySpanExporter
) -> None:
    async with http_client(leads) as c:
        r = await c.post(
            "/v1/leads",
            json={"full_name": "Traced", "email": "traced@example.com"},
            headers=tenant.auth("d1-rep"),
        )
        assert r.status_code == 201
    server = next(
        s
        for s in reversed(span_exporter.get_finished_spans())
        if s.kind == SpanKind.SERVER and s.name.startswith("POST /v1/leads")
    )
    trace_id = server.context.trace_id

    def in_trace() -> list[ReadableSpan]:
        return [s for s in span_exporter.get_finished_spans() if s.context.trace_id == trace_id]

    async def consumed() -> ReadableSpan:
        spans = in_trace()
        consumer = [
            s
            for s in spans
            if s.kind == SpanKind.CONSUMER
            and s.attributes
            and s.attributes.get("messaging.consumer.group.name") == "analytics-lead-created"
        ]
        assert consumer, [s.name for s in spans]
        return consumer[0]

    consumer = await eventually(consumed)
    spans = in_trace()
    by_id = {s.context.span_id: s for s in spans}
    # REST request wrote SQL (lead row + outbox row) inside the request's trace...
    assert any(
        s.attributes
        and s.attributes.get("db.system") == "postgresql"
        and _descends_from(s, server, by_id)
        for s in spans
    )
    # ...the consumer continues it from the NATS headers, and its transaction is a child.
    assert consumer.parent is not None
    assert any(
        s.attributes
        and s.attributes.get("db.system") == "postgresql"
        and _descends_from(s, consumer, by_id)
        for s in spans
    )
    assert consumer.attributes is not None
    assert consumer.attributes.get("crm.tenant_id") == tenant.id


def _descends_from(
    span: ReadableSpan, ancestor: ReadableSpan, by_id: dict[int, ReadableSpan]
) -> bool:
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


async def test_conversion_trace_crosses_rest_grpc_nats_consumers_and_sql(
    directory: Runtime,
    leads: Runtime,
    customers: Runtime,
    sales: Runtime,
    tenant: Tenant,
    span_exporter: InMemorySpanExporter,
) -> None:
    """An integration converts a lead with an API key: the leads REST span verifies the key
    over gRPC at the directory, then the saga's commands and replies carry the trace through
    NATS to the customers, sales and leads consumers, each with its own SQL."""
    async with http_client(directory) as c:
        r = await c.post(
            "/v1/api-keys",
            json={"org_unit_id": tenant.units["d1"]["id"], "display_name": "gw", "roles": ["rep"]},
            headers=tenant.auth("admin"),
        )
        assert r.status_code == 201, r.text
        api_key = {"Authorization": f"ApiKey {r.json()['secret']}"}
    async with http_client(leads) as c:
        r = await c.post(
            "/v1/leads",
            json={"full_name": "Traced Buyer", "company": "Trace Co", "phone": "+8613912345678"},
            headers=tenant.auth("d1-rep"),
        )
        assert r.status_code in (200, 201), r.text
        lead_id = r.json()["id"]
        c.timeout = 30
        r = await c.post(f"/v1/leads/{lead_id}:convert", json={"wait_seconds": 20}, headers=api_key)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "CONVERSION_STATE_COMPLETED", r.json()
    server = next(
        s
        for s in reversed(span_exporter.get_finished_spans())
        if s.kind == SpanKind.SERVER and s.name.startswith("POST /v1/leads/{lead_id}:convert")
    )
    trace_id = server.context.trace_id

    def in_trace() -> list[ReadableSpan]:
        return [s for s in span_exporter.get_finished_spans() if s.context.trace_id == trace_id]

    steps = (
        "customers-prepare-conversion",
        "leads-conversion-customer-prepared",
        "sales-create-conversion-opportunities",
        "leads-conversion-sales-completed",
    )

    async def all_steps() -> dict[str, ReadableSpan]:
        found = {
            str(s.attributes.get("messaging.consumer.group.name")): s
            for s in in_trace()
            if s.kind == SpanKind.CONSUMER and s.attributes
        }
        assert set(steps) <= set(found), sorted(found)
        return found

    consumers = await eventually(all_steps)
    spans = in_trace()
    by_id = {s.context.span_id: s for s in spans}
    # REST -> gRPC: the API key was verified at the directory inside the request's trace.
    grpc_server = [s for s in spans if s.kind == SpanKind.SERVER and "VerifyApiKey" in s.name]
    assert grpc_server and _descends_from(grpc_server[0], server, by_id)
    # -> NATS -> each service's consumer, each step caused by the one before, with its SQL.
    chain = [server, *(consumers[name] for name in steps)]
    for parent, child in itertools.pairwise(chain):
        assert _descends_from(child, parent, by_id), (parent.name, child.name)
    for name in steps:
        consumer = consumers[name]
        assert consumer.attributes is not None
        assert consumer.attributes.get("crm.tenant_id") == tenant.id
        # Each hop runs in the service its consumer belongs to.
        assert consumer.attributes.get("crm.service") == name.split("-")[0]
        assert any(
            s.attributes
            and s.attributes.get("db.system") == "postgresql"
            and _descends_from(s, consumer, by_id)
            for s in spans
        ), name
