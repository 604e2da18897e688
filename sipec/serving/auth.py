"""Bearer-token authentication for calls between facilities.

Server side: `BearerTokenInterceptor` accepts a call only when its metadata carries
`authorization: Bearer <token>` with one of the accepted tokens (compared with `hmac.compare_digest`);
any other call ends with UNAUTHENTICATED and a warning naming the method and the peer (never the token).
Health checking (`grpc.health.v1.Health`) and server reflection stay open, so probes and `grpcurl list`
work without a token. Enabled by `--auth-token-file PATH` (or env `SIPEC_AUTH_TOKEN_FILE`) on every
`sipec serve ...`.

Client side: `BearerTokenClientInterceptor` adds the header to every call on a channel; gRPC refuses call
credentials on plaintext channels, so an interceptor works for both plaintext (localhost) and TLS.

Token file: one accepted token per line; blank lines and lines starting with '#' are ignored. A client uses
the first token of the file. Tokens are printable ASCII without spaces (they travel in an HTTP/2 header).

Rotation without restart: a server re-reads its token file when the file changes (checked at most once per
RELOAD_S on a call; a Kubernetes Secret mounted as a volume is updated in place). Add the new token as a line,
move the clients to it (a client reads the file when it starts), then remove the old line. A file that turns
unreadable or empty keeps the tokens read before, with a warning.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger("sipec.serving.auth")

TOKEN_FILE_ENV = "SIPEC_AUTH_TOKEN_FILE"
METADATA_KEY = "authorization"
SCHEME = "Bearer"
# reachable without a token: liveness/readiness probes and `grpcurl list`
OPEN_SERVICES: tuple[str, ...] = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
MIN_TOKEN_CHARS = 16


class TokenFileError(ValueError):
    """The token file is missing, empty or holds a token that cannot be sent as a header."""


def read_tokens(path: str | os.PathLike[str]) -> list[str]:
    """The tokens in `path`, one a line (blank lines and '#' comments skipped); TokenFileError if none."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenFileError(f"auth token file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"auth token file {p} cannot be read: {exc}") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if not token.isascii() or not token.isprintable() or " " in token:
            raise TokenFileError(f"auth token file {p}, line {number}: a token must be printable ASCII "
                                 "without spaces")
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenFileError(f"auth token file {p}, line {number}: token too short ({len(token)} characters; "
                                 f"use at least {MIN_TOKEN_CHARS}, e.g. `openssl rand -hex 32`)")
        tokens.append(token)
    if not tokens:
        raise TokenFileError(f"auth token file {p} holds no token (one token a line)")
    return tokens


def token_file_from_env() -> str | None:
    return os.environ.get(TOKEN_FILE_ENV) or None


def _service_of(method: str) -> str:
    # "/package.Service/Method" -> "package.Service"
    return method.lstrip("/").split("/", 1)[0]


def _deny_like(handler: grpc.RpcMethodHandler | None, deny: Callable[[grpc.ServicerContext], None]
               ) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as `handler` whose call runs `deny(context)` (which aborts)."""

    def unary(_request: Any, context: grpc.ServicerContext) -> None:
        deny(context)

    def stream(_request: Any, context: grpc.ServicerContext) -> Any:
        deny(context)
        yield  # pragma: no cover - deny aborts

    if handler is None:   # unknown method: still UNAUTHENTICATED (do not reveal what exists)
        return grpc.unary_unary_rpc_method_handler(unary)
    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream, **kw)
    return grpc.unary_unary_rpc_method_handler(unary, **kw)


RELOAD_S = 2.0   # a server looks at its token file's modification at most this often


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()   # follows symlinks: a Secret volume swaps the `..data` link to a new file
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuse calls without `authorization: Bearer <accepted token>` (UNAUTHENTICATED), except OPEN_SERVICES.
    Made `from_file`, it follows changes of the file (token rotation without restart)."""

    def __init__(self, tokens: Iterable[str], open_services: Iterable[str] = OPEN_SERVICES,
                 source: str = "") -> None:
        self._tokens = [t.encode("utf-8") for t in tokens]
        if not self._tokens:
            raise ValueError("BearerTokenInterceptor needs at least one token")
        self._open = frozenset(open_services)
        self.source = source   # for logs: where the tokens came from (a path), never the tokens
        self.refused = 0       # calls refused so far
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BearerTokenInterceptor:
        stamp = _file_stamp(Path(path))   # before reading: a change in between is seen at the next look
        out = cls(read_tokens(path), source=str(path))
        out._path, out._stamp, out._checked = Path(path), stamp, time.monotonic()
        return out

    def _follow_file(self) -> None:
        """Re-read the token file if it changed since the last look (at most once per RELOAD_S)."""
        now = time.monotonic()
        if self._path is None or now - self._checked < RELOAD_S:
            return
        with self._lock:
            if now - self._checked < RELOAD_S:
                return
            self._checked = now
            stamp = _file_stamp(self._path)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                tokens = read_tokens(self._path)
            except TokenFileError as exc:
                log.warning("token file changed but cannot be used; the tokens read before stay accepted",
                            extra={"source": self.source, "error": str(exc)})
                return
            self._tokens = [t.encode("utf-8") for t in tokens]
            log.info("token file re-read", extra={"source": self.source, "tokens": len(tokens)})

    def _check(self, metadata: Iterable[Any] | None) -> str | None:
        """None if the metadata carries an accepted token, else why not (never quoting the token)."""
        values = [v for k, v in (metadata or ()) if k.lower() == METADATA_KEY]
        if not values:
            return "no 'authorization' metadata"
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != SCHEME.lower() or not token.strip():
            return "'authorization' metadata is not 'Bearer <token>'"
        given = token.strip().encode("utf-8")
        self._follow_file()
        ok = False
        for accepted in self._tokens:   # compare with every token: timing does not tell which matched
            ok |= hmac.compare_digest(given, accepted)
        return None if ok else "the bearer token is not accepted"

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if _service_of(method) in self._open:
            return continuation(handler_call_details)
        reason = self._check(handler_call_details.invocation_metadata)
        if reason is None:
            return continuation(handler_call_details)
        message = (f"{method}: unauthenticated ({reason}); send metadata 'authorization: Bearer <token>' with a "
                   "token this server accepts (sipec: --auth-token-file or env SIPEC_AUTH_TOKEN_FILE)")

        def deny(context: grpc.ServicerContext) -> None:
            # the peer is known only inside the call (HandlerCallDetails has none)
            with self._lock:
                self.refused += 1
            peer = context.peer()
            log.warning("unauthenticated call refused", extra={"method": method, "peer": peer, "reason": reason})
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return _deny_like(continuation(handler_call_details), deny)


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                           "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


class BearerTokenClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call (works on plaintext and TLS channels)."""

    def __init__(self, token: str) -> None:
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise ValueError("a bearer token must be non-empty printable ASCII without spaces")
        self._header = (METADATA_KEY, f"{SCHEME} {token}")

    def __repr__(self) -> str:   # never print the token
        return "BearerTokenClientInterceptor(token=***)"

    def _details(self, d: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [(k, v) for k, v in (d.metadata or ()) if k.lower() != METADATA_KEY]
        metadata.append(self._header)
        return _CallDetails(d.method, d.timeout, metadata, d.credentials, getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def client_token(token: str | None = None, token_file: str | os.PathLike[str] | None = None,
                 use_env: bool = True) -> str | None:
    """The token a client sends: `token`, else the first of `token_file`, else of $SIPEC_AUTH_TOKEN_FILE."""
    if token:
        return token
    path = token_file or (token_file_from_env() if use_env else None)
    return read_tokens(path)[0] if path else None
