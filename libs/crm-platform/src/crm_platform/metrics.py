"""Prometheus metric families shared by every service (names follow Prometheus conventions;
no unbounded labels: never a tenant, lead or org id)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

GRPC_STARTED = Counter(
    "grpc_server_started_total", "RPCs started on the server.", ["grpc_service", "grpc_method"]
)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC on the server.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "http_server_requests_total", "HTTP requests handled.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "http_server_request_duration_seconds",
    "HTTP request latency.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter(
    "crm_events_published_total", "Events published to JetStream (acked).", ["subject"]
)
EVENTS_PUBLISH_ERRORS = Counter(
    "crm_events_publish_errors_total", "Failed publish attempts (retried by the relay)."
)
EVENTS_CONSUMED = Counter(
    "crm_events_consumed_total",
    "Events handled by consumers, by outcome (ack|nak|duplicate|dlq).",
    ["subject", "consumer", "outcome"],
)
EVENT_HANDLING = Histogram(
    "crm_event_handling_seconds",
    "Time to handle one event, including its transaction.",
    ["subject", "consumer"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_DEAD_LETTERED = Counter(
    "crm_events_dead_lettered_total", "Events sent to the dead-letter subject.", ["consumer"]
)
CONSUMER_PENDING = Gauge(
    "crm_consumer_pending_messages",
    "Messages not yet delivered to a durable consumer.",
    ["consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "crm_consumer_ack_pending_messages", "Messages delivered but not yet acked.", ["consumer"]
)
OUTBOX_PENDING = Gauge("crm_outbox_pending", "Outbox events not yet published.")
OUTBOX_OLDEST_SECONDS = Gauge(
    "crm_outbox_oldest_pending_seconds", "Age of the oldest unpublished outbox event."
)


def render_latest() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
