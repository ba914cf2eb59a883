"""An OTLP/HTTP trace receiver in a thread: what a collector would get from a gateway.

``POST /v1/traces`` bodies are decoded with the official ``opentelemetry-proto`` messages
(``ExportTraceServiceRequest``) into flat ``ReceivedSpan`` records; ids are lower-case hex as
they appear in ``traceparent``. ``mode = "hang"`` makes it accept requests and never answer
(a collector that hangs), until ``stop``.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.net import poll_until

KINDS = {Span.SPAN_KIND_SERVER: "SERVER", Span.SPAN_KIND_CLIENT: "CLIENT",
         Span.SPAN_KIND_INTERNAL: "INTERNAL"}
STATUSES = {Status.STATUS_CODE_UNSET: "UNSET", Status.STATUS_CODE_OK: "OK",
            Status.STATUS_CODE_ERROR: "ERROR"}


@dataclass
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    status: str
    status_message: str
    service: str
    scope: str
    start_ns: int
    end_ns: int
    trace_state: str = ""
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    name=span.name, kind=KINDS.get(span.kind, str(span.kind)),
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    status=STATUSES[span.status.code], status_message=span.status.message,
                    service=str(resource.get("service.name", "")),
                    scope=scope_spans.scope.name, start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano, trace_state=span.trace_state,
                    resource=resource))
    return spans


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.mode = "ok"  # or "hang"
        self.lock = threading.Lock()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.requests += 1
                if receiver.mode == "hang":
                    receiver.released.wait(60)
                    return
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                ok = self.path == "/v1/traces"
                if ok:
                    spans = decode(body)
                    with receiver.lock:
                        receiver.spans.extend(spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="otlp-receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def received(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.received() if s.trace_id == trace_id]

    def wait_trace(self, trace_id: str, count: int, timeout: float = 15.0
                   ) -> list[ReceivedSpan]:
        """The spans of ``trace_id`` once there are at least ``count`` of them."""
        return poll_until(lambda: (spans := self.trace(trace_id)) and len(spans) >= count
                          and spans, timeout, interval=0.05,
                          message=f"{count} span(s) of trace {trace_id}")
