"""While spans are not recorded the HTTP and gRPC servers skip OpenTelemetry's
instrumentation, yet every call still runs in its caller's trace (or a new one), and gRPC
clients still send theirs: logs and published events stay correlated across services."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import httpx
from fastapi import APIRouter
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from crm_platform import grpc_client
from crm_platform.auth import Authenticator
from crm_platform.grpc_server import GrpcBinding, build_server
from crm_platform.http import create_app

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TRACEPARENT = f"00-{TRACE_ID:032x}-00f067aa0ba902b7-01"


def _authenticator() -> Authenticator:
    return Authenticator(jwks_url="http://127.0.0.1:9/jwks", issuer="x", audience="x")


def _current() -> tuple[str, bool]:
    span = trace.get_current_span()
    ctx = span.get_span_context()
    return (f"{ctx.trace_id:032x}" if ctx.is_valid else "", span.is_recording())


async def test_http_request_joins_the_callers_trace_or_starts_one() -> None:
    router = APIRouter()

    @router.get("/v1/trace")
    async def current() -> dict[str, Any]:
        trace_id, recording = _current()
        return {"trace_id": trace_id, "recording": recording}

    @router.get("/v1/broken")
    async def broken() -> dict[str, Any]:
        raise RuntimeError("a bug")

    async def ready() -> dict[str, bool]:
        return {}

    app = create_app(
        title="trace test",
        routers=[router],
        authenticator=_authenticator(),
        readiness=ready,
        max_body_bytes=1024,
        traced=False,
    )
    logged: list[str] = []

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(_current()[0])

    seen = Seen()
    logging.getLogger("crm_platform.http").addHandler(seen)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            joined = (await client.get("/v1/trace", headers={"traceparent": TRACEPARENT})).json()
            fresh = [(await client.get("/v1/trace")).json() for _ in range(2)]
            failed = await client.get("/v1/broken", headers={"traceparent": TRACEPARENT})
    finally:
        logging.getLogger("crm_platform.http").removeHandler(seen)
    # An unhandled error is answered (and logged) by Starlette's outermost error middleware:
    # its log still carries the request's trace.
    assert failed.status_code == 500
    assert logged == [f"{TRACE_ID:032x}"]
    assert joined == {"trace_id": f"{TRACE_ID:032x}", "recording": False}
    assert all(len(f["trace_id"]) == 32 and not f["recording"] for f in fresh)
    assert fresh[0]["trace_id"] != fresh[1]["trace_id"] != f"{TRACE_ID:032x}"
    # Nothing leaks into the test's own context.
    assert not trace.get_current_span().get_span_context().is_valid


async def test_grpc_call_carries_the_callers_trace_without_instrumentation() -> None:
    seen: list[tuple[str, bool]] = []
    metadata: list[dict[str, Any]] = []

    async def handle(request: bytes, context: Any) -> bytes:
        seen.append(_current())
        metadata.append(dict(context.invocation_metadata()))
        return request

    def add(_: object, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "crm.test.v1.TraceService",
                    {"Echo": grpc.unary_unary_rpc_method_handler(handle)},
                ),
            )
        )

    binding = GrpcBinding(
        servicer=object(),
        add=add,
        full_name="crm.test.v1.TraceService",
        public_methods=frozenset({"Echo"}),
    )
    server, _ = build_server([binding], _authenticator(), domain="test.crm", traced=False)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc_client.insecure_channel(f"127.0.0.1:{port}", traced=False)
    try:
        echo = channel.unary_unary("/crm.test.v1.TraceService/Echo")
        caller = SpanContext(
            TRACE_ID, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1)
        )
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(caller)))
        try:
            # The caller's own metadata travels with the trace context.
            assert await echo(b"joined", metadata=(("x-caller", "kept"),)) == b"joined"
        finally:
            otel_context.detach(token)
        assert await echo(b"fresh") == b"fresh"
    finally:
        await channel.close()
        await server.stop(None)
    assert seen[0] == (f"{TRACE_ID:032x}", False)
    assert metadata[0]["x-caller"] == "kept"
    assert metadata[0]["traceparent"].startswith(f"00-{TRACE_ID:032x}-")
    assert len(seen[1][0]) == 32 and seen[1][0] != seen[0][0]
