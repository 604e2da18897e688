"""Client side: channels with the project's limits, TLS and bearer token, health checks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sipec.serving.auth import BearerTokenClientInterceptor
from sipec.serving.runtime import DEFAULT_MAX_MESSAGE_BYTES


@dataclass
class ClientTLS:
    """CA to verify the server; a client certificate and key for mutual TLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None   # override the name checked against the certificate

    def credentials(self) -> grpc.ChannelCredentials:
        read = (lambda p: Path(p).read_bytes() if p else None)  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                    tls: ClientTLS | None = None) -> list[tuple[str, Any]]:
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if tls is not None and tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return opts


def make_channel(address: str, tls: ClientTLS | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, token: str | None = None,
                 options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A channel to `address` (host:port; `dns:///name:port` for client-side round-robin over a headless Service).

    With `token`, every call carries `authorization: Bearer <token>` (a client interceptor, so it works on
    plaintext channels too, where gRPC refuses call credentials); see `sipec.serving.auth.client_token`.
    `options` are further gRPC channel arguments (e.g. reconnect backoff).
    """
    opts = [*channel_options(max_message_bytes, tls), *(options or [])]
    if address.startswith("dns:///"):
        opts.append(("grpc.lb_policy_name", "round_robin"))
    if tls is not None:
        channel = grpc.secure_channel(address, tls.credentials(), options=opts)
    else:
        channel = grpc.insecure_channel(address, options=opts)
    if token:
        channel = grpc.intercept_channel(channel, BearerTokenClientInterceptor(token))
    return channel


def health_status(channel: grpc.Channel, service: str = "", timeout_s: float = 2.0) -> str:
    """'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN' or 'UNREACHABLE'."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def wait_for_serving(channel: grpc.Channel, service: str = "", timeout_s: float = 60.0,
                     poll_s: float = 0.1) -> None:
    """Block until the health check says SERVING; TimeoutError naming the last status otherwise."""
    deadline = time.monotonic() + timeout_s
    status = "UNREACHABLE"
    while time.monotonic() < deadline:
        status = health_status(channel, service, timeout_s=max(0.1, min(2.0, deadline - time.monotonic())))
        if status == "SERVING":
            return
        time.sleep(poll_s)
    raise TimeoutError(f"service {service or '(server)'} not SERVING after {timeout_s:.0f} s (last: {status})")
