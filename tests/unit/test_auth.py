"""sipec.serving.auth without a service process: token files, the server interceptor on every kind of RPC
(in-process gRPC server on localhost), the client interceptor, the CLI flag."""

from __future__ import annotations

import argparse
from concurrent import futures

import grpc
import pytest

from sipec.cli import CliError
from sipec.serving.auth import (
    BearerTokenClientInterceptor,
    BearerTokenInterceptor,
    TokenFileError,
    client_token,
    read_tokens,
)
from sipec.serving.cli import add_server_arguments, server_config_from_args
from sipec.serving.client import make_channel

TOKEN = "0123456789abcdef-token"


def test_read_tokens_skips_blanks_and_comments(tmp_path):
    f = tmp_path / "tokens"
    f.write_text(f"# facility A\n{TOKEN}\n\n  second-token-0123456789  \n")
    assert read_tokens(f) == [TOKEN, "second-token-0123456789"]
    assert client_token(token_file=f) == TOKEN


@pytest.mark.parametrize("text, match", [
    ("", "holds no token"), ("# only a comment\n", "holds no token"), ("short\n", "too short"),
    ("has a space in it 0123456789\n", "printable ASCII"), ("tökén-0123456789abcdef\n", "printable ASCII"),
])
def test_bad_token_files_are_refused(tmp_path, text, match):
    f = tmp_path / "tokens"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(TokenFileError, match=match) as info:
        read_tokens(f)
    assert "0123456789" not in str(info.value)   # the message never quotes a token
    with pytest.raises(TokenFileError, match="not found"):
        read_tokens(tmp_path / "missing")


def test_client_token_from_env(tmp_path, monkeypatch):
    f = tmp_path / "tokens"
    f.write_text(TOKEN + "\n")
    monkeypatch.setenv("SIPEC_AUTH_TOKEN_FILE", str(f))
    assert client_token() == TOKEN
    assert client_token(use_env=False) is None
    assert client_token("explicit-token-0123456789") == "explicit-token-0123456789"
    assert "0123" not in repr(BearerTokenClientInterceptor(TOKEN))
    with pytest.raises(ValueError):
        BearerTokenClientInterceptor("two words")


def test_cli_flag_and_env(tmp_path, monkeypatch):
    f = tmp_path / "tokens"
    f.write_text(TOKEN + "\n")
    monkeypatch.delenv("SIPEC_AUTH_TOKEN_FILE", raising=False)

    def parse(*argv: str) -> argparse.Namespace:
        p = argparse.ArgumentParser()
        add_server_arguments(p, default_port=0)
        return p.parse_args(list(argv))

    assert server_config_from_args(parse()).auth_token_file is None
    assert server_config_from_args(parse("--auth-token-file", str(f))).auth_token_file == f
    with pytest.raises(CliError, match="--auth-token-file: auth token file not found"):
        server_config_from_args(parse("--auth-token-file", str(tmp_path / "nope")))
    monkeypatch.setenv("SIPEC_AUTH_TOKEN_FILE", str(f))
    assert server_config_from_args(parse()).auth_token_file == f


def _echo_server(interceptor: grpc.ServerInterceptor) -> tuple[grpc.Server, int]:
    ident = (lambda b: b)  # noqa: E731 - raw bytes in and out
    handlers = {
        "UU": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req),
        "US": grpc.unary_stream_rpc_method_handler(lambda req, ctx: iter([req, req])),
        "SU": grpc.stream_unary_rpc_method_handler(lambda reqs, ctx: b"".join(reqs)),
        "SS": grpc.stream_stream_rpc_method_handler(lambda reqs, ctx: iter(list(reqs))),
    }
    handlers = {k: h._replace(request_deserializer=ident, response_serializer=ident) for k, h in handlers.items()}
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[interceptor])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", handlers)])
    port = server.add_insecure_port("localhost:0")
    server.start()
    return server, port


def _call_all(channel: grpc.Channel) -> dict[str, grpc.StatusCode]:
    out = {}
    calls = {
        "UU": lambda: channel.unary_unary("/test.Echo/UU")(b"x", timeout=5),
        "US": lambda: list(channel.unary_stream("/test.Echo/US")(b"x", timeout=5)),
        "SU": lambda: channel.stream_unary("/test.Echo/SU")(iter([b"a", b"b"]), timeout=5),
        "SS": lambda: list(channel.stream_stream("/test.Echo/SS")(iter([b"a", b"b"]), timeout=5)),
        "unknown": lambda: channel.unary_unary("/test.Echo/Nope")(b"x", timeout=5),
    }
    for name, call in calls.items():
        try:
            call()
            out[name] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            out[name] = exc.code()
    return out


def test_interceptor_guards_every_kind_of_rpc(caplog):
    interceptor = BearerTokenInterceptor([TOKEN])
    server, port = _echo_server(interceptor)
    try:
        with make_channel(f"localhost:{port}") as ch:
            assert set(_call_all(ch).values()) == {grpc.StatusCode.UNAUTHENTICATED}
        with make_channel(f"localhost:{port}", token=TOKEN) as ch:
            codes = _call_all(ch)
        assert codes == {"UU": grpc.StatusCode.OK, "US": grpc.StatusCode.OK, "SU": grpc.StatusCode.OK,
                         "SS": grpc.StatusCode.OK, "unknown": grpc.StatusCode.UNIMPLEMENTED}
        assert interceptor.refused == 5
    finally:
        server.stop(None)
    assert TOKEN not in caplog.text


def test_a_server_follows_its_token_file_rotation_without_restart(tmp_path, monkeypatch, caplog):
    """Add the new token, move the clients, remove the old one: the running server follows each step; a file
    that turns empty keeps the tokens read before (a broken rotation must not lock every client out)."""
    import os

    from sipec.serving import auth

    monkeypatch.setattr(auth, "RELOAD_S", 0.0)
    new = "fedcba9876543210-new-token"
    f = tmp_path / "tokens"
    f.write_text(f"{TOKEN}\n")
    interceptor = BearerTokenInterceptor.from_file(f)
    server, port = _echo_server(interceptor)

    def code(token: str) -> grpc.StatusCode:
        with make_channel(f"localhost:{port}", token=token) as ch:
            return _call_all(ch)["UU"]

    def rewrite(text: str, step: int) -> None:
        f.write_text(text)
        os.utime(f, ns=(step * 10**9, step * 10**9))   # a distinct modification time even within one tick

    try:
        assert code(TOKEN) == grpc.StatusCode.OK and code(new) == grpc.StatusCode.UNAUTHENTICATED
        rewrite(f"{TOKEN}\n{new}\n", 1)
        assert code(TOKEN) == grpc.StatusCode.OK and code(new) == grpc.StatusCode.OK
        rewrite(f"{new}\n", 2)
        assert code(TOKEN) == grpc.StatusCode.UNAUTHENTICATED and code(new) == grpc.StatusCode.OK
        rewrite("", 3)
        assert code(new) == grpc.StatusCode.OK
        assert "cannot be used" in caplog.text
    finally:
        server.stop(None)
    assert TOKEN not in caplog.text and new not in caplog.text
