"""Receivers for tests that run a whole agent (module-scoped): real OTLP collectors over
HTTP/protobuf and gRPC, and an HTTP recorder for webhooks, serving the observe tests'
OtlpReceiver and Recorder."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.unit.observe.conftest import OtlpReceiver, Recorder


@contextlib.contextmanager
def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def otlp_collector() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP collector on a free loopback port, decoding every span it gets."""
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not receiver.gate.is_set():
                with receiver.arrived:
                    receiver.held += 1
                    receiver.arrived.notify_all()
                receiver.gate.wait(120)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            receiver.content_types.append(self.headers.get("Content-Type", ""))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            receiver.add(body)
            out = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    with _serve(Handler) as port:
        receiver.port = port
        yield receiver


@contextlib.contextmanager
def grpc_collector() -> Iterator[OtlpReceiver]:
    """An OTLP/gRPC collector (the real TraceService over grpcio) on a free loopback port,
    decoding every span it gets; `receiver.endpoint` is its http:// address."""
    import grpc  # noqa: PLC0415 - a dependency of the gRPC exporter, so always there
    from opentelemetry.proto.collector.trace.v1 import (  # noqa: PLC0415
        trace_service_pb2_grpc,
    )

    receiver = OtlpReceiver()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 - the protobuf service's name
            receiver.content_types.append("grpc")
            receiver.add(request.SerializeToString())
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    receiver.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver
    finally:
        server.stop(0)


@contextlib.contextmanager
def webhook_recorder() -> Iterator[Recorder]:
    """An HTTP server keeping every POSTed body and its headers, answering the Recorder's
    scripted codes (then 200), and holding requests open while its `hang` is set."""
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rec.cond:
                rec.bodies.append(body)
                rec.headers.append(dict(self.headers.items()))
                code = rec.codes.pop(0) if rec.codes else 200
                if rec.hang.is_set():
                    rec.hanging += 1
                rec.cond.notify_all()
            if rec.hang.is_set():
                rec.release.wait(60)
            reply = json.dumps({"code": code}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    with _serve(Handler) as port:
        rec.port = port
        try:
            yield rec
        finally:
            rec.release.set()  # a hung request must not hold the server's shutdown
