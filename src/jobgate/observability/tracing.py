"""Optional OpenTelemetry traces, exported over OTLP/HTTP when the environment asks for it.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set
and the ``otel`` extra is installed (``pip install 'jobgate[otel]'``); the exporter reads
the other standard ``OTEL_*`` variables itself (headers, timeout, ``OTEL_SERVICE_NAME``).
Off, every call here is a no-op costing one global read.

Traces: one per HTTP request (``HTTP <method> <route>``), and one per job whose trace id is
the job's UUID, so every span of a job - dispatch, stage in, backend submit, the wait for
its end, stage out - lands in the same trace, across gateway restarts and replicas (the
dispatch span carries ``jobgate.job.id``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None


def configure() -> bool:
    """Set up the exporter if the environment asks for one; whether tracing is on."""
    global _tracer
    if _tracer is not None:
        return True
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed "
            "(pip install 'jobgate[otel]'): no traces"
        )
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "jobgate")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("jobgate")
    log.info("OpenTelemetry traces go to the OTLP endpoint of the environment")
    return True


def shutdown() -> None:
    """Flush and stop the exporter (at service stop)."""
    global _tracer
    if _tracer is None:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def span(name: str, **attributes: str | int | float | bool) -> Iterator[Any]:
    """A span under the current one (none when tracing is off: yields None)."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


@contextlib.contextmanager
def job_span(job_id: str, name: str, **attributes: str | int | float | bool) -> Iterator[Any]:
    """A span in the job's own trace (trace id: the job's UUID), the root of what follows."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    try:
        trace_id = uuid.UUID(job_id).int
    except ValueError:  # ids not made here (none today): a trace of its own
        trace_id = uuid.uuid4().int
    parent = SpanContext(
        trace_id=trace_id,
        span_id=uuid.uuid4().int & ((1 << 64) - 1) or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    attrs = {"jobgate.job.id": job_id, **attributes}
    with _tracer.start_as_current_span(name, context=context, attributes=attrs) as current:
        yield current
