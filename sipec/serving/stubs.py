"""Module stubs: the same stub interface over gRPC or in-process.

A caller (the orchestrator, `sipec evaluate tracker --idnet-repo`) only speaks the contract (protos/sipec/v1).
A module is reached either through its generated gRPC stub (a service on localhost or in a cluster), or
in-process through `InProcessStub`, which calls the very servicer object a `sipec serve <module>` process would
run, with the same request and response messages. The two paths therefore give the same results by
construction; only transport differs. `open_in_process` finds a module's servicer by name
(`services.<module>.service.create_servicer`), as `sipec.cli` finds its commands: nothing imports a module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from sipec.serving.client import ClientTLS, make_channel

SERVICES = {  # module -> (proto module, service name)
    "segnet": ("segnet", "SegNet"),
    "idnet": ("idnet", "IdNet"),
    "posenet": ("posenet", "PoseNet"),
    "behavenet": ("behavenet", "BehaveNet"),
    "tracker": ("tracker", "Tracker"),
}


class InProcessRpcError(grpc.RpcError):
    """What a servicer's `context.abort` raises in-process: carries code() and details() like a real call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class InProcessContext:
    """The part of grpc.ServicerContext that servicers use, for direct calls."""

    def __init__(self, timeout_s: float | None = None) -> None:
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._deadline = time.monotonic() + timeout_s if timeout_s else None
        self._callbacks: list[Callable[[], None]] = []
        self._active = True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details
        raise InProcessRpcError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def is_active(self) -> bool:
        return self._active

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple:
        return ()

    def peer(self) -> str:
        return "in-process"

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._callbacks.append(callback)
        return True

    def done(self) -> None:
        self._active = False
        for cb in self._callbacks:
            cb()

    def check(self) -> None:
        """A servicer that set a non-OK code without aborting still fails the call, as over gRPC."""
        if self._code not in (None, grpc.StatusCode.OK):
            raise InProcessRpcError(self._code, self._details)


class InProcessStub:
    """Stub-like object whose methods call `servicer` directly, for every RPC of `service_descriptor`."""

    def __init__(self, servicer: Any, service_descriptor: Any) -> None:
        self.servicer = servicer
        self._lock = threading.Lock()
        for method in service_descriptor.methods:
            setattr(self, method.name, self._make(method.name, method.client_streaming, method.server_streaming))

    def _make(self, name: str, client_streaming: bool, server_streaming: bool) -> Callable[..., Any]:
        fn = getattr(self.servicer, name)

        def call(request: Any, timeout: float | None = None, **_: Any) -> Any:
            ctx = InProcessContext(timeout)
            if server_streaming:
                def responses() -> Iterator[Any]:
                    try:
                        yield from fn(request, ctx)
                        ctx.check()
                    finally:
                        ctx.done()
                return responses()
            try:
                result = fn(request, ctx)
                ctx.check()
                return result
            finally:
                ctx.done()

        call.__name__ = name
        return call


def descriptor(module: str) -> Any:
    import importlib

    proto, service = SERVICES[module]
    pb2 = importlib.import_module(f"sipec.v1.{proto}_pb2")
    return pb2.DESCRIPTOR.services_by_name[service]


def grpc_stub(module: str, address: str, tls: ClientTLS | None = None, token: str | None = None) -> Any:
    """The generated stub of `module` on a channel to `address` (dns:///host:port for round-robin); with
    `token`, every call carries `authorization: Bearer <token>`."""
    import importlib

    proto, service = SERVICES[module]
    pb2_grpc = importlib.import_module(f"sipec.v1.{proto}_pb2_grpc")
    channel = make_channel(address, tls, token=token)
    stub = getattr(pb2_grpc, f"{service}Stub")(channel)
    stub.channel = channel   # for close_stubs
    return stub


def close_stubs(stubs: Any) -> None:
    """Close the channels of the gRPC stubs among `stubs` (in-process stubs have none)."""
    for stub in stubs:
        channel = getattr(stub, "channel", None)
        if channel is not None:
            channel.close()


def in_process_stub(module: str, servicer: Any) -> InProcessStub:
    return InProcessStub(servicer, descriptor(module))


def open_in_process(module: str, model_repo: Any, *args: Any, **kwargs: Any) -> tuple[Any, InProcessStub]:
    """(servicer, stub) of `module` serving `model_repo` in this process: the servicer `sipec serve <module>`
    would run (`services.<module>.service.create_servicer(model_repo, *args, **kwargs)`). Close the servicer when
    done. ModuleNotFoundError when the module is not built in this installation."""
    import importlib

    if module not in SERVICES:
        raise ValueError(f"unknown module {module!r} (one of {', '.join(SERVICES)})")
    service = importlib.import_module(f"services.{module}.service")
    servicer = service.create_servicer(model_repo, *args, **kwargs)
    return servicer, in_process_stub(module, servicer)
