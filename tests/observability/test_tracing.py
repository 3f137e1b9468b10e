"""OpenTelemetry traces: a real server exports over OTLP/HTTP to a receiver run here.

The receiver decodes the protobuf export requests with OpenTelemetry's own message types.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.support import serve_http, sh_task, wait_until

trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="the otel extra is not installed",
)

SPANS: list[dict[str, Any]] = []
LOCK = threading.Lock()


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = trace_service.ExportTraceServiceRequest()
        request.ParseFromString(body)
        with LOCK:
            for resource_spans in request.resource_spans:
                service = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }.get("service.name")
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        attrs = {}
                        for a in s.attributes:
                            v = a.value
                            attrs[a.key] = v.string_value or v.int_value or v.bool_value
                        SPANS.append(
                            {
                                "name": s.name,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex(),
                                "attrs": attrs,
                                "service": service,
                            }
                        )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve_http(_Receiver) as receiver:
        srv = Server(
            tmp_path_factory.mktemp("tracing") / "data",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_SERVICE_NAME": "jobgate-test",
            },
        ).start()
        yield srv
        srv.stop()


def spans_named(name: str) -> list[dict[str, Any]]:
    with LOCK:
        return [s for s in SPANS if s["name"] == name]


def test_a_job_is_one_trace_from_dispatch_to_its_end(server: Server) -> None:
    r = httpx.post(server.url + "/ga4gh/tes/v1/tasks", json=sh_task("echo traced"))
    task_id = r.json()["id"]
    trace_id = uuid.UUID(task_id).hex

    def job_spans() -> set[str]:
        with LOCK:
            return {s["name"] for s in SPANS if s["trace_id"] == trace_id}

    wait_until(lambda: "dispatch" in job_spans(), 30, "the job's dispatch span")
    assert {"dispatch", "backend submit", "wait for the backend"} <= job_spans()
    with LOCK:
        mine = [s for s in SPANS if s["trace_id"] == trace_id]
    root = next(s for s in mine if s["name"] == "dispatch")
    assert root["attrs"]["jobgate.job.id"] == task_id
    assert root["attrs"]["backend"] == "local"
    assert root["service"] == "jobgate-test"
    for child in mine:
        if child is not root:
            assert child["parent"] == root["span_id"], child

    # Each HTTP request is a span of its own, named by method and route template.
    def posts() -> list[dict[str, Any]]:
        return [
            s
            for s in spans_named("POST /ga4gh/tes/v1/tasks")
            if s["attrs"].get("http.response.status_code") == 200
        ]

    wait_until(lambda: len(posts()) >= 1, 10, "the request's span")
    assert posts()[0]["attrs"]["http.route"] == "/ga4gh/tes/v1/tasks"
    assert all(s["trace_id"] != trace_id for s in posts())
