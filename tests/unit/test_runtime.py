"""The server factory: health transitions, metrics by status code, reflection, graceful drain, TLS."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sipec.serving.client import health_status, make_channel
from sipec.serving.errors import InvalidInput, grpc_errors, grpc_stream_errors
from sipec.serving.runtime import LIVENESS, ServerConfig, ServiceRuntime

SERVICE = "test.Echo"


class Echo:
    """A servicer over raw bytes: Echo returns the request, Slow sleeps first, Fail raises."""

    def __init__(self) -> None:
        self.started = threading.Event()

    @grpc_errors
    def Echo(self, request: bytes, context):
        return request

    @grpc_errors
    def Slow(self, request: bytes, context):
        self.started.set()
        time.sleep(1.0)
        return b"done:" + request

    @grpc_errors
    def Fail(self, request: bytes, context):
        raise InvalidInput("field 'x' must be positive")

    @grpc_errors
    def Crash(self, request: bytes, context):
        raise RuntimeError("boom")

    @grpc_stream_errors
    def Chunks(self, request: bytes, context):
        for b in request:
            if b == 0:
                raise InvalidInput("zero byte in stream")
            yield bytes([b])


    def Ticks(self, request: bytes, context):
        """request[0] answers, one every 0.1 s (a long stream, as a video's)."""
        for i in range(request[0]):
            time.sleep(0.1)
            yield bytes([i])


def add_echo(servicer: Echo, server: grpc.Server) -> None:
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name))
                for name in ("Echo", "Slow", "Fail", "Crash")}
    handlers["Chunks"] = grpc.unary_stream_rpc_method_handler(servicer.Chunks)
    handlers["Ticks"] = grpc.unary_stream_rpc_method_handler(servicer.Ticks)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture()
def runtime():
    rt = ServiceRuntime("echo", ServerConfig(port=0, host="127.0.0.1", metrics_port=0, grace_s=5))
    servicer = Echo()
    rt.add_service(add_echo, servicer, SERVICE)
    rt.start()
    rt.servicer = servicer
    yield rt
    rt.stop(0)


def _call(channel, method: str, payload: bytes = b"hi", stream: bool = False):
    if stream:
        return list(channel.unary_stream(f"/{SERVICE}/{method}")(payload, timeout=10))
    return channel.unary_unary(f"/{SERVICE}/{method}")(payload, timeout=10)


def test_health_follows_set_serving(runtime):
    ch = make_channel(f"127.0.0.1:{runtime.port}")
    assert health_status(ch, SERVICE) == "NOT_SERVING"
    assert health_status(ch, "") == "NOT_SERVING"
    runtime.set_serving(True)
    assert health_status(ch, SERVICE) == "SERVING" and health_status(ch, "") == "SERVING"
    runtime.set_serving(False, SERVICE)
    assert health_status(ch, SERVICE) == "NOT_SERVING" and health_status(ch, "") == "NOT_SERVING"


def test_liveness_is_the_process_not_the_backend(runtime):
    # Kubernetes' liveness and startup probes ask `liveness`: SERVING while the model is not (yet) loaded
    ch = make_channel(f"127.0.0.1:{runtime.port}")
    assert health_status(ch, LIVENESS) == "SERVING" and health_status(ch, SERVICE) == "NOT_SERVING"
    runtime.set_serving(True)
    runtime.set_serving(False)
    assert health_status(ch, LIVENESS) == "SERVING"


def test_errors_become_statuses_and_metrics_count_them(runtime):
    ch = make_channel(f"127.0.0.1:{runtime.port}")
    assert _call(ch, "Echo", b"abc") == b"abc"
    with pytest.raises(grpc.RpcError) as bad:
        _call(ch, "Fail")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'x'" in bad.value.details()
    with pytest.raises(grpc.RpcError) as crash:
        _call(ch, "Crash")
    assert crash.value.code() == grpc.StatusCode.INTERNAL and "incident" in crash.value.details()
    assert _call(ch, "Chunks", b"\x01\x02", stream=True) == [b"\x01", b"\x02"]
    with pytest.raises(grpc.RpcError) as streamed:
        _call(ch, "Chunks", b"\x01\x00", stream=True)
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    reg = runtime.metrics.registry

    def count(method: str, code: str) -> float:
        return reg.get_sample_value("sipec_grpc_requests_total",
                                    {"service": "echo", "method": method, "code": code}) or 0.0

    assert count("Echo", "OK") == 1
    assert count("Fail", "INVALID_ARGUMENT") == 1
    assert count("Crash", "INTERNAL") == 1
    assert count("Chunks", "OK") == 1 and count("Chunks", "INVALID_ARGUMENT") == 1
    assert reg.get_sample_value("sipec_grpc_stream_messages_total",
                                {"service": "echo", "method": "Chunks", "direction": "out"}) == 3
    assert reg.get_sample_value("sipec_grpc_in_flight", {"service": "echo", "method": "Echo"}) == 0
    assert reg.get_sample_value("sipec_grpc_request_seconds_count", {"service": "echo", "method": "Echo"}) == 1
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{runtime.metrics_port}/metrics", timeout=5).read().decode()
    assert 'sipec_grpc_requests_total{code="OK",method="Echo",service="echo"} 1.0' in body


def test_reflection_lists_services(runtime):
    ch = make_channel(f"127.0.0.1:{runtime.port}")
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_graceful_stop_drains_calls_in_flight(runtime):
    ch = make_channel(f"127.0.0.1:{runtime.port}")
    runtime.set_serving(True)
    result: dict = {}

    def slow() -> None:
        result["value"] = _call(ch, "Slow", b"x")

    t = threading.Thread(target=slow)
    t.start()
    assert runtime.servicer.started.wait(5)
    stopper = threading.Thread(target=runtime.stop, kwargs={"grace_s": 5})
    stopper.start()
    time.sleep(0.2)
    # health says NOT_SERVING while draining; the call in flight still finishes
    t.join(10)
    stopper.join(10)
    assert result.get("value") == b"done:x"
    with pytest.raises(grpc.RpcError) as after:
        _call(ch, "Echo")
    assert after.value.code() == grpc.StatusCode.UNAVAILABLE


def _ticks_across_a_stop(rt: ServiceRuntime, n: int) -> tuple[list[bytes], grpc.RpcError | None, float]:
    """Stream n ticks, stop the server after the third; (answers, the error the stream ended with, seconds from
    the stop to the end of the stream)."""
    ch = make_channel(f"127.0.0.1:{rt.port}")
    got, error, stopped_at = [], None, 0.0
    try:
        for item in ch.unary_stream(f"/{SERVICE}/Ticks")(bytes([n]), timeout=30):
            got.append(item)
            if len(got) == 3:
                stopped_at = time.monotonic()
                threading.Thread(target=rt.stop, kwargs={"grace_s": 10}, daemon=True).start()
    except grpc.RpcError as exc:
        error = exc
    ch.close()
    return got, error, time.monotonic() - stopped_at


def test_a_stop_ends_streams_at_their_next_answer_when_asked():
    """drain_streams_s: a stream outliving the drain ends with UNAVAILABLE 'draining' at its next answer (the
    orchestrator then resumes the video at another replica), instead of running into the grace period's end."""
    rt = ServiceRuntime("echo", ServerConfig(port=0, host="127.0.0.1", grace_s=10, drain_streams_s=0.3))
    rt.add_service(add_echo, Echo(), SERVICE)
    rt.start()
    got, error, seconds = _ticks_across_a_stop(rt, 100)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE and "draining" in error.details()
    assert 3 <= len(got) < 20 and seconds < 3.0
    rt.stop(0)
    # without it a stream shorter than the grace period finishes across the stop, as before
    rt = ServiceRuntime("echo", ServerConfig(port=0, host="127.0.0.1", grace_s=10))
    rt.add_service(add_echo, Echo(), SERVICE)
    rt.start()
    got, error, _ = _ticks_across_a_stop(rt, 10)
    assert error is None and len(got) == 10
    rt.stop(0)


def test_max_message_size_gives_resource_exhausted():
    rt = ServiceRuntime("echo", ServerConfig(port=0, host="127.0.0.1", max_message_bytes=1024))
    rt.add_service(add_echo, Echo(), SERVICE)
    rt.start()
    try:
        ch = make_channel(f"127.0.0.1:{rt.port}")
        with pytest.raises(grpc.RpcError) as info:
            _call(ch, "Echo", b"x" * 4096)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _call(ch, "Echo", b"small") == b"small"
    finally:
        rt.stop(0)


def test_calls_beyond_the_concurrency_limit_get_resource_exhausted_at_once():
    import argparse

    from sipec.serving.cli import add_server_arguments, server_config_from_args

    parser = argparse.ArgumentParser()
    add_server_arguments(parser, default_port=0)
    assert server_config_from_args(parser.parse_args([])).max_concurrent_rpcs == 16   # = --workers
    assert server_config_from_args(parser.parse_args(["--workers", "4"])).max_concurrent_rpcs == 4
    assert server_config_from_args(parser.parse_args(["--max-concurrent-rpcs", "0"])).max_concurrent_rpcs is None
    servicer = Echo()
    rt = ServiceRuntime("echo", server_config_from_args(parser.parse_args(["--port", "0", "--host", "127.0.0.1",
                                                                           "--max-concurrent-rpcs", "1"])))
    rt.add_service(add_echo, servicer, SERVICE)
    rt.start()
    try:
        ch = make_channel(f"127.0.0.1:{rt.port}")
        slow = ch.unary_unary(f"/{SERVICE}/Slow").future(b"a", timeout=10)
        assert servicer.started.wait(5)
        with pytest.raises(grpc.RpcError) as info:
            _call(ch, "Echo")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert slow.result() == b"done:a"
        assert _call(ch, "Echo", b"again") == b"again"   # the slot is free again
    finally:
        rt.stop(0)


def test_tls_and_mutual_tls(tmp_path):
    from sipec.serving.client import ClientTLS
    from sipec.serving.runtime import TLSConfig
    from tests.certs import make_ca_and_certs

    c = make_ca_and_certs(tmp_path)
    rt = ServiceRuntime("echo", ServerConfig(port=0, host="127.0.0.1",
                                             tls=TLSConfig(c["server_cert"], c["server_key"], c["ca_cert"])))
    rt.add_service(add_echo, Echo(), SERVICE)
    rt.start()
    try:
        good = make_channel(f"localhost:{rt.port}", ClientTLS(c["ca_cert"], c["client_cert"], c["client_key"]))
        assert _call(good, "Echo", b"secure") == b"secure"
        no_client_cert = make_channel(f"localhost:{rt.port}", ClientTLS(c["ca_cert"]))
        with pytest.raises(grpc.RpcError) as info:
            _call(no_client_cert, "Echo")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        plain = make_channel(f"localhost:{rt.port}")
        with pytest.raises(grpc.RpcError):
            _call(plain, "Echo")
    finally:
        rt.stop(0)
