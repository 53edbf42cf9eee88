"""A small OTLP/HTTP trace receiver for tests: it accepts
POST /v1/traces (protobuf, or JSON when the exporter sends JSON), decodes
ExportTraceServiceRequest with the opentelemetry-proto package, and keeps
every span with its resource attributes."""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _hex_ids_to_base64(node):
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON
    mapping expects base64."""
    if isinstance(node, list):
        return [_hex_ids_to_base64(x) for x in node]
    if isinstance(node, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode()
                    if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
                    else _hex_ids_to_base64(v))
                for k, v in node.items()}
    return node


class Span:
    """One received span, its ids as hex and its attributes as a dict."""

    def __init__(self, span, resource):
        self.name = span.name
        self.kind = span.kind
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_span_id = span.parent_span_id.hex()
        self.attributes = {a.key: _value(a.value) for a in span.attributes}
        self.resource = resource
        self.status_code = span.status.code
        self.start_ns = span.start_time_unix_nano
        self.end_ns = span.end_time_unix_nano

    def __repr__(self):
        return f"<Span {self.name} {self.attributes}>"


class OtlpReceiver:
    def __init__(self):
        self.spans = []
        self.requests = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = trace_service_pb2.ExportTraceServiceRequest()
                content_type = self.headers.get("Content-Type", "")
                if "json" in content_type:
                    json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), request)
                else:
                    request.ParseFromString(body)
                receiver._keep(self.path, content_type, request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _keep(self, path, content_type, request):
        with self._lock:
            self.requests.append((path, content_type))
            for rs in request.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append(Span(span, resource))

    def in_trace(self, trace_id):
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, trace_id, names, timeout=10):
        """The spans of `trace_id` once every name in `names` is among them."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.in_trace(trace_id)
            have = {s.name for s in spans}
            if set(names) <= have:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"spans {sorted(set(names) - have)} not received in trace {trace_id}; "
                    f"got {sorted(have)}; all: {[(s.name, s.trace_id) for s in self.spans][-8:]}")
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def dumps(spans):
    return json.dumps([(s.name, s.attributes) for s in spans], indent=1, default=str)
