"""OTel tracing (--enable-tracing --otlp-endpoint): one span per store, retrieve and lookup.

Spans are built from events on the bus's drain thread with the request's own start and end times
(`at` - duration .. `at`), so the request path pays only for its event. The tracer provider is the
server's own (never the process-global one) with resource `service.instance.id` = --instance-id.
opentelemetry-sdk and its OTLP gRPC exporter are the optional `otel` extra, imported only here; when
they are missing, `SpanExporterSubscriber.for_endpoint` raises `TracingUnavailable` naming the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmcache.domain.events import LookupPerformed, TransferCompleted

if TYPE_CHECKING:
    from types import ModuleType

    from lmcache.domain.events import StorageEvent

__all__ = ("SpanExporterSubscriber", "TracingUnavailable")

_EXTRA_HINT = "pip install 'lmcache[otel]'"


class TracingUnavailable(RuntimeError):
    """The OTel packages tracing needs are not installed."""


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "lmcache":
            raise
        raise TracingUnavailable(
            f"--enable-tracing needs the optional package {exc.name!r} (OpenTelemetry SDK and OTLP "
            f"exporter); install it with {_EXTRA_HINT}"
        ) from exc


class SpanExporterSubscriber:
    """Event-bus subscriber that turns finished requests into spans.

    Args:
        instance_id: `service.instance.id` of every span (--instance-id).
        exporter: An OTel `SpanExporter` (OTLP in production, in-memory in tests).
        batch: Export through a `BatchSpanProcessor` (True) or synchronously per span (tests).
    """

    name = "tracing"
    kinds: tuple[type, ...] = (TransferCompleted, LookupPerformed)

    def __init__(self, instance_id: str, exporter: Any, batch: bool = True) -> None:
        resources = _import("opentelemetry.sdk.resources")
        sdk_trace = _import("opentelemetry.sdk.trace")
        export = _import("opentelemetry.sdk.trace.export")
        self._trace = _import("opentelemetry.trace")
        resource = resources.Resource.create({"service.name": "lmcache", "service.instance.id": instance_id})
        self.provider = sdk_trace.TracerProvider(resource=resource)
        processor = export.BatchSpanProcessor(exporter) if batch else export.SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("lmcache.server")

    @classmethod
    def for_endpoint(cls, instance_id: str, endpoint: str) -> SpanExporterSubscriber:
        """Spans exported over OTLP/gRPC to `endpoint` (`http://` means plaintext)."""
        otlp = _import("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        return cls(instance_id, otlp.OTLPSpanExporter(endpoint=endpoint, timeout=5))

    def handle(self, event: StorageEvent, at: float) -> None:
        """Record one span ending at `at`."""
        if isinstance(event, TransferCompleted):
            name = f"lmcache.{event.kind.value}"
            attributes: dict[str, Any] = {
                "lmcache.request_id": event.request_id,
                "lmcache.model_name": event.model_name,
                "lmcache.tokens": event.tokens,
                "lmcache.bytes": event.nbytes,
                "lmcache.ok": event.ok,
            }
            ok = event.ok
        elif isinstance(event, LookupPerformed):
            name = "lmcache.lookup"
            attributes = {
                "lmcache.request_id": event.request_id,
                "lmcache.model_name": event.model_name,
                "lmcache.seq_len": event.seq_len,
                "lmcache.chunks": len(event.chunk_hashes),
            }
            ok = True
        else:
            return
        end = int(at * 1e9)
        start = end - int(event.duration_s * 1e9)
        span = self._tracer.start_span(
            name, kind=self._trace.SpanKind.SERVER, start_time=start, attributes=attributes
        )
        if not ok:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end(end_time=end)

    def close(self) -> None:
        """Flush pending spans and shut the exporter down."""
        self.provider.shutdown()
