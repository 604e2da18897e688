"""The one gRPC server factory every SIPEC service uses.

A `ServiceRuntime` gives each service, without code of its own:
- `grpc.health.v1` health checking: each registered service starts NOT_SERVING and is switched to
  SERVING by the service once its model is loaded (`set_serving`); the overall status ("") follows; the name
  `liveness` is SERVING from the moment the server answers, whatever the model backend does (Kubernetes'
  liveness and startup probes ask it: a slow model load or a restarting TF Serving must not get a healthy
  process killed; readiness asks the service's own name);
- server reflection (grpcurl and grpc_cli can list and call every RPC);
- Prometheus metrics on a side HTTP port (see `sipec.serving.metrics`);
- a configurable maximum message size (larger messages are refused with RESOURCE_EXHAUSTED by gRPC);
- optional TLS, or mutual TLS when a client CA is given;
- optional bearer-token authentication (`auth_token_file`, see `sipec.serving.auth`): calls without an
  accepted token get UNAUTHENTICATED; health checking and reflection stay open for probes;
- graceful shutdown on SIGTERM/SIGINT: health turns NOT_SERVING at once, new calls are refused, calls in
  flight get `grace_s` seconds to finish; with `drain_streams_s`, streams end earlier, at their next answer,
  with UNAVAILABLE "draining" (a client such as the orchestrator then resumes at another replica);
- structured logs of start, stop and the bound ports.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sipec.serving.auth import BearerTokenInterceptor
from sipec.serving.metrics import MetricsInterceptor, ServiceMetrics

LIVENESS = "liveness"   # health name of the process itself (see the module doc)

log = logging.getLogger("sipec.serving")

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class TLSConfig:
    """Server certificate and key (PEM files); a client CA turns on mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        for name, path in (("certificate", self.cert), ("key", self.key), ("client CA", self.client_ca)):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"TLS {name} file not found: {path}")
        ca = Path(self.client_ca).read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(Path(self.key).read_bytes(), Path(self.cert).read_bytes())],
            root_certificates=ca, require_client_auth=ca is not None)


@dataclass
class ServerConfig:
    port: int = 0                       # 0: pick a free port
    host: str = "[::]"
    metrics_port: int | None = None     # None: no metrics endpoint; 0: pick a free port
    metrics_host: str = "0.0.0.0"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_workers: int = 16
    max_concurrent_rpcs: int | None = None   # beyond this, calls get RESOURCE_EXHAUSTED
    grace_s: float = 10.0
    # on a stop, open streams end at their next answer with UNAVAILABLE once this many seconds have passed
    # (None: they run until the grace period ends): the client resumes at another replica at once instead of
    # being cut off when the grace period ends
    drain_streams_s: float | None = None
    max_connection_age_ms: int = 300_000
    tls: TLSConfig | None = None
    auth_token_file: Path | None = None   # accepted bearer tokens, one a line (sipec.serving.auth)
    interceptors: list[grpc.ServerInterceptor] = field(default_factory=list)

    def channel_options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # close each connection after 5 minutes (calls in flight may finish): clients then reconnect and
            # their round-robin picks up pods the autoscaler added
            ("grpc.max_connection_age_ms", self.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", 2**31 - 1),
        ]


class ServiceRuntime:
    """A gRPC server with health, reflection, metrics, TLS and graceful shutdown."""

    def __init__(self, name: str, config: ServerConfig | None = None) -> None:
        self.name = name
        self.config = config or ServerConfig()
        self.metrics = ServiceMetrics(name)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._services: list[str] = []
        self._serving: dict[str, bool] = {}
        self._stopped = threading.Event()
        self._done = threading.Event()   # set when stop() has finished (drained, metrics closed, logged)
        self.draining_since: float | None = None   # time.monotonic() of the stop, None while serving
        interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor(self.metrics, self._stream_must_end)]
        self.auth: BearerTokenInterceptor | None = None
        if self.config.auth_token_file is not None:
            # after the metrics interceptor: refused calls are counted with code UNAUTHENTICATED
            self.auth = BearerTokenInterceptor.from_file(self.config.auth_token_file)
            interceptors.append(self.auth)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.config.max_workers,
                                       thread_name_prefix=f"{name}-rpc"),
            interceptors=[*interceptors, *self.config.interceptors],
            options=self.config.channel_options(),
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port: int | None = None
        self.metrics_port: int | None = None

    @property
    def server(self) -> grpc.Server:
        return self._server

    def add_service(self, add_to_server: Callable[[Any, grpc.Server], None], servicer: Any,
                    service_name: str) -> None:
        """Register a servicer (`add_XServicer_to_server`, instance, full name like 'sipec.v1.SegNet')."""
        add_to_server(servicer, self._server)
        self._services.append(service_name)
        self.health.set(service_name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def set_serving(self, serving: bool = True, service_name: str | None = None) -> None:
        """Mark one registered service (or all) SERVING or NOT_SERVING; "" follows the services."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        names = [service_name] if service_name else list(self._services)
        for n in names:
            self.health.set(n, status)
        for n in names:
            self._serving[n] = serving
        overall = all(self._serving.get(n, False) for n in self._services) if self._services else serving
        self.health.set("", health_pb2.HealthCheckResponse.SERVING if overall
                        else health_pb2.HealthCheckResponse.NOT_SERVING)

    def start(self) -> int:
        """Bind, enable reflection, start serving and the metrics endpoint; returns the gRPC port."""
        names = [*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self._server)
        address = f"{self.config.host}:{self.config.port}"
        if self.config.tls is not None:
            self.port = self._server.add_secure_port(address, self.config.tls.credentials())
        else:
            self.port = self._server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"{self.name}: could not bind {address}")
        self._server.start()
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve_http(self.config.metrics_port, self.config.metrics_host)
        log.info("%s listening", self.name, extra={"service": self.name, "port": self.port,
                                                    "metrics_port": self.metrics_port,
                                                    "tls": self.config.tls is not None,
                                                    "auth": "bearer" if self.auth is not None else "none"})
        return self.port

    def _stream_must_end(self) -> bool:
        """Whether a streaming call should end now (a stop began more than drain_streams_s ago)."""
        since, after = self.draining_since, self.config.drain_streams_s
        return since is not None and after is not None and time.monotonic() - since >= after

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, let calls in flight finish within the grace period (streams: within
        ``drain_streams_s``, then they end at their next answer with UNAVAILABLE), then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.draining_since = time.monotonic()
        grace = self.config.grace_s if grace_s is None else grace_s
        self.health.enter_graceful_shutdown()
        log.info("%s draining", self.name, extra={"service": self.name, "grace_s": grace})
        self._server.stop(grace).wait()
        self.metrics.stop_http()
        log.info("%s stopped", self.name, extra={"service": self.name})
        self._done.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT start a graceful stop (main thread only)."""

        def handler(signum: int, _frame: Any) -> None:
            log.info("%s got %s", self.name, signal.Signals(signum).name)
            threading.Thread(target=self.stop, name=f"{self.name}-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def wait(self) -> None:
        """Until the server terminates, then until a stop in progress has finished (so its logs are out)."""
        self._server.wait_for_termination()
        if self._stopped.is_set():
            self._done.wait(timeout=self.config.grace_s + 5)

    def serve_forever(self) -> None:
        if self.port is None:
            self.start()
        self.install_signal_handlers()
        self.wait()
