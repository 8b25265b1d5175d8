"""gRPC client channels with deadlines and gRPC's built-in retry policy, and the principal
forwarded in metadata."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

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


class DefaultDeadline(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Every outbound call gets a deadline, even when the caller forgot one."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if client_call_details.timeout is None:
            # ClientCallDetails is a namedtuple at runtime; the stubs do not say so.
            client_call_details = client_call_details._replace(timeout=self._seconds)  # type: ignore[attr-defined]
        return await continuation(client_call_details, request)


def insecure_channel(target: str, *, default_timeout: float = 5.0) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        interceptors=[DefaultDeadline(default_timeout)],  # type: ignore[list-item]
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _RETRY_SERVICE_CONFIG),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


def auth_metadata(authorization: str) -> Sequence[tuple[str, str]]:
    return (("authorization", authorization),)
