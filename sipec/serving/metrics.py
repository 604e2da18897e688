"""Prometheus metrics for every gRPC service, collected by a server interceptor.

Exposed on a side HTTP port (``/metrics``) so probes and scrapers never compete with model traffic:
- ``sipec_grpc_requests_total{service,method,code}``: finished calls by status code;
- ``sipec_grpc_request_seconds{service,method}``: latency histogram (whole call; streams: whole stream);
- ``sipec_grpc_in_flight{service,method}``: calls being handled now;
- ``sipec_grpc_stream_messages_total{service,method,direction}``: messages on streaming calls;
- ``sipec_batch_size{service,model}``: items per backend call, observed by the services.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """The metric families of one server, in their own registry (several servers may share a process)."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("sipec_grpc_requests", "Finished gRPC calls by status code",
                                ("service", "method", "code"), registry=self.registry)
        self.latency = Histogram("sipec_grpc_request_seconds", "gRPC call latency",
                                 ("service", "method"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("sipec_grpc_in_flight", "gRPC calls being handled",
                               ("service", "method"), registry=self.registry)
        self.stream_messages = Counter("sipec_grpc_stream_messages", "Messages on streaming calls",
                                       ("service", "method", "direction"), registry=self.registry)
        self.batch_size = Histogram("sipec_batch_size", "Items per model backend call",
                                    ("service", "model"), buckets=BATCH_BUCKETS, registry=self.registry)
        self.backend_busy = Counter(
            "sipec_backend_busy_seconds", "Seconds spent in model backend calls; its rate is the module's duty "
            "cycle (1: a call always in progress), the load the HPAs scale on", ("service", "model"),
            registry=self.registry)
        self._http: Any = None

    def observe_batch(self, model: str, size: int, seconds: float = 0.0) -> None:
        self.batch_size.labels(self.service, model).observe(size)
        if seconds > 0:
            self.backend_busy.labels(self.service, model).inc(seconds)

    def serve_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Start the side HTTP server for /metrics; returns the bound port (0 picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _status_name(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code() if hasattr(context, "code") else None
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts, times and tracks in-flight calls of every RPC the server handles; and ends a streaming call at
    its next answer with UNAVAILABLE when ``must_end()`` says the server is draining."""

    def __init__(self, metrics: ServiceMetrics, must_end: Callable[[], bool] | None = None) -> None:
        self.metrics = metrics
        self.must_end = must_end or (lambda: False)

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        m = self.metrics
        labels = (m.service, method)

        def finish(start: float, context: grpc.ServicerContext, failed: bool) -> None:
            m.in_flight.labels(*labels).dec()
            m.latency.labels(*labels).observe(time.perf_counter() - start)
            m.requests.labels(m.service, method, _status_name(context, failed)).inc()

        def count_in(requests: Iterator) -> Iterator:
            counter = m.stream_messages.labels(m.service, method, "in")
            for r in requests:
                counter.inc()
                yield r

        def wrap_unary_response(behavior: Callable, streaming_in: bool) -> Callable:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                start = time.perf_counter()
                m.in_flight.labels(*labels).inc()
                failed = True
                try:
                    result = behavior(count_in(request) if streaming_in else request, context)
                    failed = False
                    return result
                finally:
                    finish(start, context, failed)

            return wrapped

        def wrap_stream_response(behavior: Callable, streaming_in: bool) -> Callable:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator:
                start = time.perf_counter()
                m.in_flight.labels(*labels).inc()
                out = m.stream_messages.labels(m.service, method, "out")
                failed = True
                try:
                    for response in behavior(count_in(request) if streaming_in else request, context):
                        out.inc()
                        yield response
                        if self.must_end():
                            context.abort(grpc.StatusCode.UNAVAILABLE, f"{m.service} is draining (shutting down "
                                          "or scaled down): call again, another replica takes over")
                    failed = False
                finally:
                    finish(start, context, failed)

            return wrapped

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap_unary_response(handler.unary_unary, False),
                handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap_unary_response(handler.stream_unary, True),
                handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream_response(handler.unary_stream, False),
                handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            wrap_stream_response(handler.stream_stream, True),
            handler.request_deserializer, handler.response_serializer)
