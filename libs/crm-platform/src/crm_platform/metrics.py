"""Prometheus metric families shared by every service, each declared once here.

Conventions (checked by `promtool check metrics` in tests/deploy/test_monitoring.py): snake_case,
base units (`_seconds`), `_total` on counters, help text on every family, no service name in
the name (the `job`/`service` target labels say which service) and bounded labels only: route
templates, never raw paths; never a tenant, lead or org id. Dashboards and alerts in
deploy/helm/crm/ use these names; renaming one is a breaking change for them."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# No `<name>_created` gauge beside every counter and histogram series: it doubles the series
# count and nothing here reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]

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
# Mean writes per group-commit transaction (crm_platform.group_commit) = the ratio of rates.
GROUP_COMMIT_WRITES = Counter(
    "crm_group_commit_writes_total", "Writes submitted through a group commit.", ["group"]
)
GROUP_COMMIT_TRANSACTIONS = Counter(
    "crm_group_commit_transactions_total", "Group-commit transactions (groups) run.", ["group"]
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
POOL_EXHAUSTED = Counter(
    "crm_db_pool_exhausted",
    "Requests refused with 503/UNAVAILABLE because no database connection freed up in time.",
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "crm_outbox_oldest_pending_seconds", "Age of the oldest unpublished outbox event."
)


# Business flow. Label values are pre-initialised so dashboards and rate() see zeros rather
# than missing series.
LEAD_CAPTURE_OUTCOMES = ("created", "merged", "rejected")
LEADS_CAPTURED = Counter(
    "crm_leads_captured_total",
    "Lead captures, by outcome (created|merged|rejected).",
    ["outcome"],
)
for _outcome in LEAD_CAPTURE_OUTCOMES:
    LEADS_CAPTURED.labels(_outcome)
# A slow import shows here which side holds it up: "prepare" is the writer waiting for the
# worker processes (parse, validate, score), "write" one slice's transaction (COPY, merges,
# events). Slices are import_slice_rows rows (20,000 by default).
IMPORT_SLICE_PHASES = ("prepare", "write")
IMPORT_SLICE = Histogram(
    "crm_import_slice_seconds",
    "Bulk import slices by phase (prepare: waiting for the workers; write: its transaction).",
    ["phase"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
for _phase in IMPORT_SLICE_PHASES:
    IMPORT_SLICE.labels(_phase)
LEADS_DISTRIBUTED = Counter(
    "crm_leads_distributed_total", "Leads assigned to an org unit or user by distribution."
)
LEADS_CONVERTED = Counter(
    "crm_leads_converted_total", "Leads converted into a customer, contact and opportunity."
)
SAGA_OUTCOMES = Counter(
    "crm_saga_outcomes_total",
    "Sagas ended, by saga and outcome (completed|failed).",
    ["saga", "outcome"],
)
SAGA_INSTANCES = Gauge(
    "crm_saga_instances", "Sagas not yet ended, by saga and state.", ["saga", "state"]
)
for _outcome in ("completed", "failed"):
    SAGA_OUTCOMES.labels("lead_conversion", _outcome)
SLA_KINDS = ("lead_first_contact", "lead_follow_up", "ticket_first_response", "ticket_resolution")
SLA_BREACHES = Counter("crm_sla_breaches_total", "SLA targets missed, by SLA.", ["sla"])
for _sla in SLA_KINDS:
    SLA_BREACHES.labels(_sla)


def count_captures(outcomes: Iterable[str]) -> None:
    """Count lead captures; `outcomes` are outcome names in any case (`CREATED`, `merged`)."""
    for outcome in outcomes:
        LEADS_CAPTURED.labels(outcome.lower()).inc()


def render_latest() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
