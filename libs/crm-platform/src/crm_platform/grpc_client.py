"""gRPC client channels with deadlines and gRPC's built-in retry policy, the principal
forwarded in metadata and the trace context propagated (by OpenTelemetry's interceptors while
spans are recorded, else by ``CallDefaults`` alone)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from opentelemetry import propagate
from opentelemetry.propagators.textmap import Setter

from crm_platform import telemetry

# Retries are done by gRPC itself (service config), only for codes that are safe to retry.
_RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class CallDefaults(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Every outbound call gets a deadline, even when the caller forgot one; with
    ``propagate``, also the current trace context in its metadata (the job OpenTelemetry's
    client interceptor does when spans are recorded, without its span per call)."""

    def __init__(self, seconds: float, *, propagate: bool = False) -> None:
        self._seconds = seconds
        self._propagate = propagate

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        changes: dict[str, Any] = {}
        if client_call_details.timeout is None:
            changes["timeout"] = self._seconds
        if self._propagate:
            metadata = grpc.aio.Metadata(*tuple(client_call_details.metadata or ()))
            propagate.inject(metadata, setter=_METADATA_SETTER)
            changes["metadata"] = metadata
        if changes:
            # ClientCallDetails is a namedtuple at runtime; the stubs do not say so.
            client_call_details = client_call_details._replace(**changes)  # type: ignore[attr-defined]
        return await continuation(client_call_details, request)


class _MetadataSetter(Setter[grpc.aio.Metadata]):
    def set(self, carrier: grpc.aio.Metadata, key: str, value: str) -> None:
        carrier[key] = value


_METADATA_SETTER = _MetadataSetter()


def insecure_channel(
    target: str, *, default_timeout: float = 5.0, traced: bool | None = None
) -> grpc.aio.Channel:
    """``traced`` (default: whether spans are recorded) puts OpenTelemetry's client
    interceptors in, for a client span per call."""
    traced = telemetry.recording() if traced is None else traced
    interceptors: list[Any] = []
    if traced:
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        interceptors.extend(aio_client_interceptors())  # type: ignore[no-untyped-call]
    interceptors.append(CallDefaults(default_timeout, propagate=not traced))
    return grpc.aio.insecure_channel(
        target,
        interceptors=interceptors,
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _RETRY_SERVICE_CONFIG),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


def auth_metadata(authorization: str) -> Sequence[tuple[str, str]]:
    return (("authorization", authorization),)
