"""`sipec serve ...` and `sipec health`: run services and check them.

Module services register their own `sipec serve <module>` through `SERVE_COMMANDS` as they land; the
flags every server shares (port, metrics port, message size, TLS, bearer-token auth, grace period) are defined
once here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

# `sipec serve <name>` beyond the modules: module path of a `register_serve(serve_subparsers)` function
SERVE_COMMANDS: tuple[str, ...] = ("orchestrator.service",)


def add_server_arguments(p: argparse.ArgumentParser, default_port: int) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--host", default="[::]", help="address to bind (default all interfaces)")
    g.add_argument("--port", type=int, default=default_port, help=f"gRPC port (default {default_port}; 0 = any free)")
    g.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this HTTP port (default: off; 0 = any free)")
    g.add_argument("--max-message-mb", type=float, default=64.0,
                   help="largest gRPC message accepted or sent, in MiB (default 64); larger: RESOURCE_EXHAUSTED")
    g.add_argument("--workers", type=int, default=16, help="RPC worker threads (default 16)")
    g.add_argument("--max-concurrent-rpcs", type=int, default=None,
                   help="calls (streams included) served at once; beyond it a call gets RESOURCE_EXHAUSTED at once "
                        "instead of waiting for a worker thread (default: --workers; 0 = no limit)")
    g.add_argument("--grace-s", type=float, default=10.0,
                   help="on SIGTERM, seconds given to calls in flight before stopping (default 10)")
    g.add_argument("--drain-streams-s", type=float, default=None,
                   help="on SIGTERM, seconds after which open streams end at their next answer with UNAVAILABLE "
                        "'draining', so that their clients resume at another replica at once (default: streams "
                        "run until --grace-s ends)")
    g.add_argument("--tls-cert", default=os.environ.get("SIPEC_TLS_CERT"),
                   help="server certificate (PEM); env SIPEC_TLS_CERT")
    g.add_argument("--tls-key", default=os.environ.get("SIPEC_TLS_KEY"), help="server key (PEM); env SIPEC_TLS_KEY")
    g.add_argument("--tls-client-ca", default=os.environ.get("SIPEC_TLS_CLIENT_CA"),
                   help="CA of client certificates: turns on mutual TLS; env SIPEC_TLS_CLIENT_CA")
    g.add_argument("--auth-token-file", default=os.environ.get("SIPEC_AUTH_TOKEN_FILE"),
                   help="accept only calls with metadata 'authorization: Bearer <token>', the tokens being this "
                        "file's lines; health checks and reflection stay open; env SIPEC_AUTH_TOKEN_FILE")


def server_config_from_args(args: argparse.Namespace):
    from sipec.cli import CliError
    from sipec.serving.runtime import ServerConfig, TLSConfig

    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise CliError("TLS needs both --tls-cert and --tls-key")
        for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                           ("--tls-client-ca", args.tls_client_ca)):
            if path and not Path(path).is_file():
                raise CliError(f"{flag}: file not found: {path}")
        tls = TLSConfig(Path(args.tls_cert), Path(args.tls_key),
                        Path(args.tls_client_ca) if args.tls_client_ca else None)
    if args.max_message_mb <= 0:
        raise CliError("--max-message-mb must be positive")
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.drain_streams_s is not None and not 0 <= args.drain_streams_s <= args.grace_s:
        raise CliError(f"--drain-streams-s must be between 0 and --grace-s ({args.grace_s:g}), "
                       f"not {args.drain_streams_s:g}")
    limit = args.workers if args.max_concurrent_rpcs is None else args.max_concurrent_rpcs
    if limit < 0:
        raise CliError("--max-concurrent-rpcs must be 0 (no limit) or positive")
    auth_token_file = None
    if getattr(args, "auth_token_file", None):
        from sipec.serving.auth import TokenFileError, read_tokens

        try:
            read_tokens(args.auth_token_file)   # fail at start with a clear message, not at the first call
        except TokenFileError as exc:
            raise CliError(f"--auth-token-file: {exc}") from None
        auth_token_file = Path(args.auth_token_file)
    return ServerConfig(port=args.port, host=args.host, metrics_port=args.metrics_port,
                        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
                        max_workers=args.workers, grace_s=args.grace_s, tls=tls, auth_token_file=auth_token_file,
                        max_concurrent_rpcs=limit or None, drain_streams_s=args.drain_streams_s)


def register(sub: argparse._SubParsersAction) -> None:
    import importlib

    serve = sub.add_parser("serve", help="run a service (model-server, ...)",
                           description="Run one SIPEC service in the foreground until SIGTERM/Ctrl-C.")
    serve_sub = serve.add_subparsers(dest="service", metavar="SERVICE")
    serve_sub.required = True

    ms = serve_sub.add_parser(
        "model-server", help="TF Serving's gRPC protocol (Predict, GetModelMetadata, GetModelStatus) from a repository",
        description="Serve every model of a TF-Serving-layout repository over TensorFlow Serving's gRPC protocol, "
                    "newest version of each, picking up new versions without a restart.")
    ms.add_argument("--model-repo", required=True, help="model repository: <repo>/<model>/<version>/saved_model.pb")
    ms.add_argument("--models", default=None, help="comma-separated model names to serve (default: all)")
    ms.add_argument("--poll-s", type=float, default=2.0,
                    help="seconds between repository scans for new versions (default 2; 0 = never)")
    ms.add_argument("--model-config-file", default=None,
                    help="TF Serving's model config (ModelServerConfig text, as k8s/base/tfserving/*/models.config): "
                         "the models to serve and each one's version policy, latest or specific { versions: N }")
    add_server_arguments(ms, default_port=8500)
    ms.set_defaults(func=run_model_server)

    for path in SERVE_COMMANDS:
        importlib.import_module(path).register_serve(serve_sub)
    from sipec.cli import module_clis

    for cli in module_clis():
        if hasattr(cli, "register_serve"):
            cli.register_serve(serve_sub)

    h = sub.add_parser("health", help="check a service's grpc.health.v1 status",
                       description="Print SERVING / NOT_SERVING / SERVICE_UNKNOWN / UNREACHABLE; "
                                   "exit 0 only on SERVING. With --endpoints: every module at every site "
                                   "(with the site's token and certificates), exit 0 when each module is "
                                   "SERVING at one site at least.")
    h.add_argument("address", nargs="?", help="host:port")
    h.add_argument("--endpoints", type=Path, help="an endpoints file (one site or several): ask every module there")
    h.add_argument("--service", default="", help="service name (default: the whole server)")
    h.add_argument("--wait", type=float, default=0.0, help="wait up to this many seconds for SERVING")
    h.add_argument("--auth-token-file", default=os.environ.get("SIPEC_AUTH_TOKEN_FILE"),
                   help="send the first token of this file as 'authorization: Bearer' (health checks are open on "
                        "SIPEC servers, but a gateway in front may ask for it); env SIPEC_AUTH_TOKEN_FILE")
    h.set_defaults(func=run_health)


def run_model_server(args: argparse.Namespace) -> int:
    from sipec.cli import CliError

    repo = Path(args.model_repo)
    if not repo.is_dir():
        raise CliError(f"--model-repo: directory not found: {repo}")
    config = server_config_from_args(args)
    from sipec.serving.model_server import ModelServer

    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else None
    if names:
        from sipec.serving.errors import InvalidInput
        from sipec.serving.repository import check_model_name

        try:
            for n in names:
                check_model_name(n)
        except InvalidInput as exc:
            raise CliError(f"--models: {exc}") from None
    pinned: dict[str, int] = {}
    if args.model_config_file:
        from sipec.serving.model_config import served_versions

        if names:
            raise CliError("give --models or --model-config-file, not both")
        try:
            versions = served_versions(Path(args.model_config_file).read_text(), args.model_config_file)
        except (OSError, ValueError) as exc:
            raise CliError(f"--model-config-file: {exc}") from None
        names = sorted(versions)
        pinned = {n: v for n, v in versions.items() if v}
    server = ModelServer(repo, config, names=names, poll_s=args.poll_s, pinned=pinned)
    server.runtime.install_signal_handlers()  # before the ready line: a SIGTERM right after it drains
    port = server.start()
    print(f"model-server: serving {', '.join(server.manager.model_names()) or 'no models yet'} "
          f"from {repo} on port {port}" + (f", metrics on {server.runtime.metrics_port}"
                                            if server.runtime.metrics_port else ""), flush=True)
    server.serve_forever()
    return 0


def run_health(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.serving.auth import TokenFileError, client_token
    from sipec.serving.client import health_status, make_channel, wait_for_serving

    if (args.address is None) == (args.endpoints is None):
        raise CliError("give an address or --endpoints FILE")
    if args.endpoints is not None:
        return _health_of_sites(args)

    try:
        token = client_token(token_file=args.auth_token_file, use_env=False)
    except TokenFileError as exc:
        raise CliError(f"--auth-token-file: {exc}") from None
    channel = make_channel(args.address, token=token)
    if args.wait > 0:
        with contextlib.suppress(TimeoutError):
            wait_for_serving(channel, args.service, timeout_s=args.wait)
    status = health_status(channel, args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def _health_of_sites(args: argparse.Namespace) -> int:
    """`sipec health --endpoints FILE`: one line per module and site, in the order sites are preferred; each site
    with its own certificates and token (`--auth-token-file` does not apply)."""
    from sipec.cli import CliError
    from sipec.serving.sites import EndpointsError, read_endpoints

    try:
        endpoints = read_endpoints(args.endpoints)
    except EndpointsError as exc:
        raise CliError(str(exc)) from None
    serving: dict[str, bool] = {}
    for module in sorted(endpoints.modules()):
        for site in endpoints.order(module):
            status = site.health(module, args.service, wait_s=args.wait)
            serving[module] = serving.get(module, False) or status == "SERVING"
            print(f"{module:10s} {site.name:16s} {site.modules[module]:32s} {status}")
    return 0 if all(serving.values()) else 1
