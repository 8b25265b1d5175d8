"""FastAPI app factory: problem+json errors (RFC 9457), body-size limit, RED metrics,
/healthz, /readyz, /metrics, OpenAPI, the principal dependency, and trace context: a server
span per request while spans are recorded, else just the caller's trace joined."""

from __future__ import annotations

import functools
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from google.protobuf.descriptor import Descriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message as ProtoMessage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crm.common.v1 import money_pb2
from crm_platform import metrics, telemetry
from crm_platform.auth import Authenticator, Principal
from crm_platform.errors import DomainError, FieldViolation, PayloadTooLarge, describe, loc_to_field
from crm_platform.money import money_json
from crm_platform.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageRequest,
    page_of,
    page_request,
)
from crm_platform.validation import NUL, NUL_MESSAGE, InputModel, printable

log = logging.getLogger(__name__)
T = TypeVar("T")
PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://crm.example.dev/problems/"
MONEY_TYPE = money_pb2.Money.DESCRIPTOR.full_name

# Every string a request body carries is bounded, so oversized input is the field's 422 at
# the edge (and the bound is in the OpenAPI document) rather than a row too large for a
# btree index (~2.7 kB) failing as a 500, or an unbounded value stored.
IdText = Annotated[str, Field(max_length=64, description="A UUID.")]
CodeText = Annotated[str, Field(max_length=64)]
Text = Annotated[str, Field(max_length=200)]
SecretText = Annotated[str, Field(max_length=256)]


class ApiModel(InputModel):
    """Base of request bodies: unknown fields are errors, not silently dropped; a string that
    cannot be stored (a NUL, a lone surrogate) is its field's error (InputModel)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class MoneyIn(ApiModel):
    """Money in a REST body: the amount is a decimal string, not a JSON number, which most
    clients parse as a binary float that cannot hold most cent amounts exactly."""

    currency_code: str = Field(max_length=3, description="ISO 4217 code, e.g. CNY.")
    amount: str = Field(max_length=40, description='Decimal, e.g. "5000.00"; at most 2 places.')


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    reason: str
    violations: list[dict[str, str]] = []
    trace_id: str = ""


def _trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


def problem_response(
    status: int,
    title: str,
    detail: str,
    reason: str,
    violations: Sequence[FieldViolation] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=PROBLEM_BASE + reason.lower().replace("_", "-"),
        title=title,
        status=status,
        detail=detail,
        reason=reason,
        violations=[{"field": v.field, "description": v.description} for v in violations],
        trace_id=_trace_id(),
    )
    return JSONResponse(
        body.model_dump(), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    if exc.http_status == 503:
        headers = {"Retry-After": "1"}
    return problem_response(
        exc.http_status, exc.title, exc.message, exc.reason, exc.violations, headers
    )


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        msg = (
            next(e for e in errors if e.get("type") == "json_invalid")
            .get("ctx", {})
            .get("error", "")
        )
        return problem_response(
            400,
            "Malformed JSON",
            f"request body is not valid JSON: {msg}",
            "MALFORMED_JSON",
            [FieldViolation("body", "not valid JSON")],
        )
    violations = [
        FieldViolation(
            loc_to_field(e.get("loc", ())),
            "unknown field" if e.get("type") == "extra_forbidden" else str(e.get("msg", "invalid")),
        )
        for e in errors
    ]
    return problem_response(
        422, "Invalid request", describe(violations), "INVALID_ARGUMENT", violations
    )


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    reason = {404: "ROUTE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    return problem_response(exc.status_code, str(exc.detail), str(exc.detail), reason)


async def _on_unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "Internal error", "internal error; see trace id", "INTERNAL")


class BodyLimitMiddleware:
    """Rejects bodies over ``max_bytes`` with 413 before the app reads them whole.
    ``path_limits`` raise the limit for paths starting with a prefix (file uploads, which
    their handlers stream instead of buffering)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    def _limit(self, path: str) -> int:
        for prefix, limit in self.path_limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"]) if self.path_limits else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem_response(
            413,
            "Payload too large",
            f"request body exceeds {limit} bytes",
            "PAYLOAD_TOO_LARGE",
        )
        await response(scope, receive, send)


class NulInUrlMiddleware:
    """A NUL in the path or a query parameter (``%00``) is a 422 naming where it is, before
    any route sees it: no text column can store it. Bodies are checked by InputModel."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (NUL in scope["path"] or b"%00" in scope["query_string"]):
            query = scope["query_string"].decode("latin-1")
            violations = [
                FieldViolation(printable(name), NUL_MESSAGE)
                for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True)
                if NUL in name or NUL in value
            ]
            if NUL in scope["path"]:
                violations.insert(0, FieldViolation("path", NUL_MESSAGE))
            response = problem_response(
                422, "Invalid request", describe(violations), "INVALID_ARGUMENT", violations
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RedMetricsMiddleware:
    """Rate, errors, duration per route template. Pure ASGI: BaseHTTPMiddleware would add a
    task and a body copy to every request on the hot path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)


class TraceContextMiddleware:
    """Each request runs in the caller's trace (W3C ``traceparent``) or a new one, so its
    logs and the events it publishes are correlated. Used instead of OpenTelemetry's ASGI
    instrumentation while spans are not recorded: that one builds a span, its attributes
    and the route's name per request (~5 % of a capture's CPU) for nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._fields = {f.encode() for f in propagate.get_global_textmap().fields}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode(): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in self._fields
        }
        token = otel_context.attach(telemetry.incoming_context(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


class _App(FastAPI):
    """With ``join_trace``, TraceContextMiddleware wraps the whole stack, Starlette's error
    middleware included (as OpenTelemetry's does when instrumented): the log of an unhandled
    error carries the request's trace id too."""

    join_trace = False

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return TraceContextMiddleware(stack) if self.join_trace else stack


ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def create_app(
    *,
    title: str,
    routers: Sequence[APIRouter],
    authenticator: Authenticator,
    readiness: ReadinessCheck,
    max_body_bytes: int,
    version: str = "0.1.0",
    body_limits: Mapping[str, int] | None = None,
    traced: bool | None = None,
) -> FastAPI:
    """``traced`` (default: whether spans are recorded) instruments the app with
    OpenTelemetry, a server span per request."""
    app = _App(
        title=title,
        version=version,
        responses={"4XX": {"model": Problem}},
        # FastAPI's own telemetry stays off: the OpenTelemetry instrumentation below (or
        # TraceContextMiddleware) does that job, and both would cost twice.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.authenticator = authenticator
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unhandled)

    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes, path_limits=body_limits)
    app.add_middleware(NulInUrlMiddleware)
    # Added last, so outermost: 413s from the body limit are counted too.
    app.add_middleware(RedMetricsMiddleware)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        checks = await readiness()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render_latest()
        return Response(body, media_type=content_type)

    for router in routers:
        app.include_router(router)
    if telemetry.recording() if traced is None else traced:
        # No spans for each ASGI send/receive message: three extra spans per request, no
        # insight.
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="healthz,readyz,metrics", exclude_spans=["receive", "send"]
        )
    else:
        app.join_trace = True
    return app


async def _principal(request: Request) -> Principal:
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.authenticate(request.headers.get("authorization"))
    trace.get_current_span().set_attribute("crm.tenant_id", str(principal.tenant_id))
    return principal


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


def proto_json(message: ProtoMessage) -> dict[str, Any]:
    """REST bodies are the proto3 JSON mapping with proto field names: one representation
    for both transports, but for Money, which goes out in the shape clients send it."""
    body = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    if _holds_money(message.DESCRIPTOR):
        _money_as_decimal(message, body)
    return body


@functools.cache
def _holds_money(kind: Descriptor) -> bool:
    """Whether messages of this type can hold a Money at any depth: most cannot, and then
    their fields need no walk."""
    return _reaches_money(kind, frozenset())


def _reaches_money(kind: Descriptor, seen: frozenset[str]) -> bool:
    if kind.full_name == MONEY_TYPE:
        return True
    # Well-known types and maps hold none; a recursive type is looked at once.
    if kind.full_name in seen or kind.file.package == "google.protobuf":
        return False
    if kind.GetOptions().map_entry:
        return False
    inner = seen | {kind.full_name}
    return any(
        f.message_type is not None and _reaches_money(f.message_type, inner) for f in kind.fields
    )


def _money_as_decimal(message: ProtoMessage, body: dict[str, Any]) -> None:
    """Rewrites Money fields at any depth."""
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None or not _holds_money(kind):
            continue
        out = body[field.name]
        repeated = isinstance(out, list)
        items, outs = (list(value), out) if repeated else ([value], [out])
        if kind.full_name == MONEY_TYPE:
            amounts = [money_json(item) for item in items]
            body[field.name] = amounts if repeated else amounts[0]
        else:
            for item, item_out in zip(items, outs, strict=True):
                _money_as_decimal(item, item_out)


async def _page(
    page_size: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page (default 50).")
    ] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[str, Query(description="`next_page_token` of the previous page.")] = "",
) -> PageRequest:
    return page_request(page_size, page_token)


# The page a list endpoint was asked for (page_size, page_token query parameters).
CurrentPage = Annotated[PageRequest, Depends(_page)]


def paged(
    key: str, rows: Sequence[T], page: PageRequest, render: Callable[[T], dict[str, Any]]
) -> dict[str, Any]:
    """A list response: rows fetched with LIMIT size+1, rendered, plus the next token."""
    items, token = page_of(rows, page)
    return {key: [render(x) for x in items], "next_page_token": token}
