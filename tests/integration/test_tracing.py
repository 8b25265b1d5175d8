"""One trace follows a lead from the REST request through SQL, the outbox, NATS and the
analytics consumer's transaction."""

from __future__ import annotations

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
