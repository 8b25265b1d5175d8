"""Small helpers for mapping rows to protos."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def etag(resource_id: uuid.UUID, version: int) -> str:
    return hashlib.sha256(f"{resource_id}:{version}".encode()).hexdigest()[:16]
