"""Tracing of a running server: spans reach an OTLP/gRPC collector; without the extra it refuses to start."""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from benchmarks.server_process import ServerProcess
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.integration.server.conftest import Engine, free_port, hit_chunks, key, run_server, tokens_for
from tests.integration.telemetry.conftest import port_flags

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BLOCKS = list(range(8, 40))


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP trace receiver that keeps every export request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> Iterator[tuple[dict[str, str], Any]]:
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        yield resource, span


def test_spans_for_store_lookup_and_retrieve_reach_the_collector() -> None:
    collector = Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    tracing = ["--enable-tracing", "--otlp-endpoint", f"http://127.0.0.1:{port}", "--instance-id", "node-42"]
    try:
        with run_server(*port_flags(free_port()), *tracing) as srv, srv.client() as c:
            engine = Engine(c)
            engine.register()
            tokens = tokens_for(3)
            assert c.store(key(tokens, "s", end=512), 1000, [BLOCKS], b"")[1]
            assert hit_chunks(c, tokens, "r") == 2
            assert c.retrieve(key(tokens, "r", end=512), 1000, [BLOCKS], b"", 0)[1]
            engine.close()
        # the server flushes its spans when it stops
    finally:
        receiver.stop(None)
    spans = list(collector.spans())
    names = sorted(span.name for _, span in spans)
    assert names == ["lmcache.lookup", "lmcache.retrieve", "lmcache.store"]
    assert all(resource["service.instance.id"] == "node-42" for resource, _ in spans)
    for _, span in spans:
        attributes = {a.key: a.value for a in span.attributes}
        assert attributes["lmcache.model_name"].string_value == "m"
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    store = next(span for _, span in spans if span.name == "lmcache.store")
    assert {a.key: a.value.int_value for a in store.attributes}["lmcache.tokens"] == 512


def test_tracing_without_the_otel_extra_fails_naming_it(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")  # an opentelemetry without the SDK, as without lmcache[otel]
    env = {"PYTHONPATH": str(tmp_path / "shadow")}
    server = ServerProcess("--enable-tracing", "--otlp-endpoint", "http://127.0.0.1:4317", env=env)
    code = server.start(wait=False).wait_exit(120)
    assert code == 2, server.log()
    assert "--enable-tracing needs the optional package" in server.log()
    assert "pip install 'lmcache[otel]'" in server.log()
