"""OpenTelemetry tracing and JSON logging, switched on by settings (environment)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping, Sequence

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from pythonjsonlogger.json import JsonFormatter

from crm_platform.config import BaseServiceSettings

_provider: TracerProvider | None = None
_ids = RandomIdGenerator()


class _TraceContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else ""
        record.span_id = f"{ctx.span_id:016x}" if ctx.is_valid else ""
        return True


def configure_logging(settings: BaseServiceSettings) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_TraceContextFilter())
    if settings.log_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s",
                static_fields={"service": settings.service_name},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(trace_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


class RecordWhenConsumed(Sampler):
    """The configured sampler (``OTEL_TRACES_SAMPLER``, default parent-based always-on), but
    only while a span processor is installed (an OTLP exporter, a test's collector): with
    none, recording a span costs ~170 µs of Python per SQL statement for nothing. Unrecorded
    spans still carry trace ids, so logs and event headers stay correlated."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner
        self.consumed = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if not self.consumed:
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RecordWhenConsumed{{{self._inner.get_description()}}}"


_sampler: RecordWhenConsumed | None = None


def recording() -> bool:
    """Whether spans are recorded (something consumes them): instrumentation whose spans
    are only ever leaves (SQL statements) need not run otherwise."""
    return _sampler is not None and _sampler.consumed


def init_tracing(
    settings: BaseServiceSettings, extra_processors: tuple[SpanProcessor, ...] = ()
) -> trace.Tracer:
    """Install one global tracer provider per process (several in-process services in tests
    share it; consumer spans name their service in the ``crm.service`` attribute)."""
    global _provider, _sampler
    if _provider is None:
        _sampler = RecordWhenConsumed(_get_from_env_or_default())
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.namespace": "crm",
                "service.version": settings.service_version,
                "deployment.environment.name": settings.deployment_environment,
            }
        )
        _provider = TracerProvider(resource=resource, sampler=_sampler)
        if settings.otel_exporter_otlp_endpoint:
            _sampler.consumed = True
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint))
            )
        trace.set_tracer_provider(_provider)
    for processor in extra_processors:
        _provider.add_span_processor(processor)
        assert _sampler is not None
        _sampler.consumed = True
    return trace.get_tracer(f"crm.{settings.service_name}")


def incoming_context(carrier: Mapping[str, str]) -> context.Context:
    """The context an incoming call runs in when its spans are not recorded (the HTTP and
    gRPC servers skip OpenTelemetry's instrumentation then: it costs ~100 µs a call for
    spans nobody keeps): the caller's trace, from its W3C headers, or a new one. Either way
    the call's logs and the events it publishes carry a trace id, as when recorded."""
    ctx = propagate.extract(carrier)
    if trace.get_current_span(ctx).get_span_context().is_valid:
        return ctx
    fresh = SpanContext(_ids.generate_trace_id(), _ids.generate_span_id(), is_remote=False)
    return trace.set_span_in_context(NonRecordingSpan(fresh), ctx)


def inject_headers(
    carrier: MutableMapping[str, str], trace_context: context.Context | None = None
) -> MutableMapping[str, str]:
    """Write W3C trace context of the current span (or of ``trace_context``) into message
    headers."""
    propagate.inject(carrier, context=trace_context)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    return propagate.extract(dict(headers or {}))
