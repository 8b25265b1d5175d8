"""gRPC client channels with deadlines and gRPC's built-in retry policy, and the principal
forwarded in metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence

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


def insecure_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _RETRY_SERVICE_CONFIG),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


def auth_metadata(authorization: str) -> Sequence[tuple[str, str]]:
    return (("authorization", authorization),)
