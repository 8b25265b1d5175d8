"""gRPC server bootstrap: grpc.aio with health, reflection and one interceptor that does
authentication, error mapping to rich status, and RED metrics; OpenTelemetry's server
interceptor only while spans are recorded (otherwise ours joins the caller's trace)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import trace

from crm_platform import metrics, telemetry
from crm_platform.auth import Authenticator, current_principal
from crm_platform.errors import DomainError, FieldViolation, InvalidArgument
from crm_platform.validation import proto_unstorable_paths

log = logging.getLogger(__name__)

# Servicer methods take this; the request/response type parameters add nothing there.
if TYPE_CHECKING:  # the runtime classes are not subscriptable
    GrpcContext = grpc.aio.ServicerContext[Any, Any]
    RpcHandler = grpc.RpcMethodHandler[Any, Any]
else:
    GrpcContext = grpc.aio.ServicerContext
    RpcHandler = grpc.RpcMethodHandler
# grpcio-health-checking ships no type information.
HealthServicer = Any

# Health and reflection are open; everything else needs credentials.
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


@dataclass(frozen=True)
class GrpcBinding:
    """One servicer: ``add`` is the generated ``add_XServicer_to_server``."""

    servicer: object
    add: Callable[[Any, grpc.aio.Server], None]
    full_name: str  # e.g. "crm.leads.v1.LeadService"
    # Methods callable without credentials (e.g. IssueToken).
    public_methods: frozenset[str] = frozenset()


def domain_error_status(exc: DomainError, domain: str) -> status_pb2.Status:
    details: list[Any] = [
        error_details_pb2.ErrorInfo(reason=exc.reason, domain=domain, metadata=exc.metadata)
    ]
    if exc.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=exc.grpc_code.value[0], message=exc.message, details=packed)


def _split(method: str) -> tuple[str, str]:
    _, service, name = method.split("/")
    return service, name


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        authenticator: Authenticator,
        *,
        domain: str,
        public: set[str],
        join_trace: bool = False,
    ) -> None:
        self._auth = authenticator
        self._domain = domain
        self._public = public
        # Without OpenTelemetry's interceptor in front, each call runs in the caller's
        # trace context (telemetry.incoming_context) for its logs and events.
        self._join_trace = join_trace

    @contextlib.asynccontextmanager
    async def _as_caller(self, context: GrpcContext, needs_auth: bool) -> AsyncIterator[None]:
        """The call in its caller's trace (see ``join_trace``) and as its principal."""
        md = dict(context.invocation_metadata() or ()) if needs_auth or self._join_trace else {}
        joined = otel_context.attach(telemetry.incoming_context(md)) if self._join_trace else None
        token = None
        try:
            if needs_auth:
                principal = await self._auth.authenticate(md.get("authorization"))
                token = current_principal.set(principal)
                trace.get_current_span().set_attribute("crm.tenant_id", str(principal.tenant_id))
            yield
        finally:
            if token is not None:
                current_principal.reset(token)
            if joined is not None:
                otel_context.detach(joined)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[RpcHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> RpcHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES) or not handler.unary_unary:
            return handler
        service, name = _split(method)
        needs_auth = method not in self._public
        inner: Any = handler.unary_unary

        async def wrapped(request: Any, context: GrpcContext) -> Any:
            metrics.GRPC_STARTED.labels(service, name).inc()
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                # The caller has given up already (the call waited in our queue): work
                # done now would be thrown away, so an overloaded server sheds it.
                metrics.GRPC_HANDLED.labels(service, name, "DEADLINE_EXCEEDED").inc()
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed in queue")
            try:
                async with self._as_caller(context, needs_auth):
                    _check_storable(request)
                    return await _uncancelled(inner(request, context))
            except DomainError as exc:
                code = exc.grpc_code
                await context.abort_with_status(  # type: ignore[attr-defined]
                    rpc_status.to_status(domain_error_status(exc, self._domain))
                )
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", method)
                span_ctx = trace.get_current_span().get_span_context()
                await context.abort_with_status(  # type: ignore[attr-defined]
                    rpc_status.to_status(
                        status_pb2.Status(
                            code=code_pb2.INTERNAL,
                            message=f"internal error (trace {span_ctx.trace_id:032x})",
                        )
                    )
                )
            finally:
                metrics.GRPC_HANDLED.labels(service, name, code.name).inc()
                metrics.GRPC_LATENCY.labels(service, name).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


@dataclass(frozen=True)
class _Undecodable:
    """A request body that is not the method's message (a string that is not UTF-8, a
    truncated or foreign message)."""

    error: str


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The method's deserializer, but a body that does not parse is handed to the handler as
    ``_Undecodable`` instead of raising: gRPC would answer INTERNAL (a server fault) and skip
    the RED metrics, where the caller sent a bad argument."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Undecodable(str(exc))

    return parse


def _check_storable(request: Any) -> None:
    """A NUL in any string of the request is INVALID_ARGUMENT naming the fields, as it is over
    REST: no text column can store one (proto3 strings may hold it)."""
    if isinstance(request, _Undecodable):
        raise InvalidArgument.from_violations(
            [FieldViolation("request", f"not a valid message of this method ({request.error})")]
        )
    if isinstance(request, ProtoMessage):
        violations = [FieldViolation(*found) for found in proto_unstorable_paths(request)]
        if violations:
            raise InvalidArgument.from_violations(violations)


async def _uncancelled(work: Awaitable[Any]) -> Any:
    """``work`` to its end even if the call is cancelled (its deadline passes, the client
    goes): cancelling a statement in flight makes asyncpg open a connection to send the
    cancel request and drops the pooled connection, so under load cancellations cost far
    more than letting short statements finish. A cancelled call's result is dropped."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_report_abandoned)
        raise


def _report_abandoned(task: asyncio.Future[Any]) -> None:
    # Nobody awaits an abandoned call's work any more: an unexpected failure is logged here
    # (a DomainError is an answer the caller no longer waits for).
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, DomainError):
        log.error("the work of a cancelled call failed", exc_info=exc)


def build_server(
    bindings: Sequence[GrpcBinding],
    authenticator: Authenticator,
    *,
    domain: str,
    traced: bool | None = None,
) -> tuple[grpc.aio.Server, HealthServicer]:
    """``traced`` (default: whether spans are recorded, ``telemetry.recording()``) puts
    OpenTelemetry's server interceptor in front, for a server span per call."""
    public = {f"/{b.full_name}/{m}" for b in bindings for m in b.public_methods}
    traced = telemetry.recording() if traced is None else traced
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if traced:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptors.append(aio_server_interceptor())  # type: ignore[no-untyped-call]
    interceptors.append(
        ServerInterceptor(authenticator, domain=domain, public=public, join_trace=not traced)
    )
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    for b in bindings:
        b.add(b.servicer, server)
        for method in b.servicer.__class__.__dict__:
            if method[:1].isupper():
                metrics.GRPC_HANDLED.labels(b.full_name, method, "OK")  # pre-initialise series
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.full_name for b in bindings]
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return server, health_servicer


async def set_serving(health_servicer: HealthServicer, names: Sequence[str], serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ["", *names]:
        await health_servicer.set(name, status)
