"""Errors that carry the gRPC status code a caller should see, with a message a person can act on."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

log = logging.getLogger("sipec.serving")


class ServingError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidInput(ServingError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServingError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(ServingError):
    code = grpc.StatusCode.UNAVAILABLE


class TooLarge(ServingError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ServingError):
    code = grpc.StatusCode.FAILED_PRECONDITION


F = TypeVar("F", bound=Callable[..., Any])

# Status messages travel in HTTP/2 headers, which clients refuse beyond 16 KiB (the call then fails with a
# RESOURCE_EXHAUSTED that says nothing of the request); a message that echoes a giant input is cut.
MAX_STATUS_MESSAGE_CHARS = 2000


def clip_message(message: str, limit: int = MAX_STATUS_MESSAGE_CHARS) -> str:
    """`message`, cut to `limit` characters with a note of how much was left out."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]} ... ({len(message) - limit} more characters)"


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, ServingError):
        context.abort(exc.code, clip_message(str(exc)))
    if isinstance(exc, ValueError):  # conversion errors: ValueErrors naming the field, with their own .code
        code = getattr(exc, "code", None)
        context.abort(code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.INVALID_ARGUMENT,
                      clip_message(str(exc)))
    incident = uuid.uuid4().hex[:12]
    log.exception("internal error in %s", method, extra={"incident": incident})
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the server log")


def grpc_errors(fn: F) -> F:
    """Turn ServingError/ValueError raised by a unary servicer method into a gRPC status."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except grpc.RpcError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, none kills the server
            if _is_abort(exc):
                raise
            _abort(context, exc, fn.__qualname__)

    return wrapper  # type: ignore[return-value]


def grpc_stream_errors(fn: F) -> F:
    """The same for servicer methods that return a stream of responses."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except grpc.RpcError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _is_abort(exc):
                raise
            _abort(context, exc, fn.__qualname__)

    return wrapper  # type: ignore[return-value]


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises a bare Exception after setting the status; let it through untouched
    return type(exc) is Exception and not exc.args
