"""A bidirectional stream driven from the orchestrator: requests go in through a bounded queue, responses
come out in a consumer thread (to a callback, or to a queue for request/response lock-step).

Works the same over a gRPC stub method and an in-process stub method (both take a request iterator and
return a response iterator).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_END = object()


class StreamFailed(Exception):
    """The stream ended with an error; `cause` is the grpc.RpcError (or other exception)."""

    def __init__(self, name: str, cause: BaseException) -> None:
        detail = cause.details() if hasattr(cause, "details") and callable(cause.details) else str(cause)
        code = cause.code().name if hasattr(cause, "code") and callable(cause.code) else type(cause).__name__
        super().__init__(f"{name} stream failed: {code}: {detail}")
        self.cause = cause


class BidiStream:
    def __init__(self, name: str, method: Callable[..., Iterator[Any]],
                 on_response: Callable[[Any], None] | None = None,
                 max_pending: int = 64, timeout_s: float | None = None) -> None:
        self.name = name
        self._requests: queue.Queue = queue.Queue(maxsize=max_pending)
        self._responses: queue.Queue = queue.Queue()
        self._on_response = on_response
        self.error: StreamFailed | None = None
        self.sent = 0
        self.received = 0
        self._closed = False
        self._call = method(self._iterate(), timeout=timeout_s) if timeout_s else method(self._iterate())
        self._thread = threading.Thread(target=self._consume, name=f"stream-{name}", daemon=True)
        self._thread.start()

    def _iterate(self) -> Iterator[Any]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item

    def _consume(self) -> None:
        try:
            for response in self._call:
                self.received += 1
                if self._on_response is not None:
                    self._on_response(response)
                else:
                    self._responses.put(response)
        except BaseException as exc:  # noqa: BLE001 - handed to the orchestrator's thread
            self.error = StreamFailed(self.name, exc)
        finally:
            self._responses.put(_END)

    def send(self, request: Any) -> None:
        """Queue a request; blocks while the queue is full (backpressure), but never past a failure or cancel."""
        while True:
            if self.error is not None:
                raise self.error
            if self._closed:
                raise RuntimeError(f"{self.name} stream already closed")
            try:
                self._requests.put(request, timeout=0.1)
                break
            except queue.Full:
                continue
        self.sent += 1

    def recv(self, timeout_s: float | None = None) -> Any:
        """Next response (lock-step use); None at the end of the stream; StreamFailed on error."""
        try:
            item = self._responses.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no response within {timeout_s} s") from None
        if item is _END:
            self._responses.put(_END)
            if self.error is not None:
                raise self.error
            return None
        return item

    def close(self, wait_s: float = 600.0) -> None:
        """End the request side and wait until every response has been handled."""
        if not self._closed:
            self._closed = True
            while True:   # a call that died no longer drains the queue: do not wait on it forever
                try:
                    self._requests.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if self.error is not None or not self._thread.is_alive():
                        break
        self._thread.join(wait_s)
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Abort the call; never blocks (a dead call no longer drains the request queue, so make room)."""
        self._closed = True
        if hasattr(self._call, "cancel"):
            self._call.cancel()
        while True:
            try:
                self._requests.put_nowait(_END)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._requests.get_nowait()
