"""Build the pipeline's module stubs: in-process from a model repository, or gRPC from an endpoints file.

In-process, each module's servicer is made by `services.<module>.service.create_servicer(model_repo)`, the
same class `sipec serve <module>` runs; over gRPC, `endpoints.yaml` maps module names to addresses
(`host:port`, or `dns:///name.namespace.svc:port` for client-side round-robin over a headless Service).

Services started with `--auth-token-file` want a bearer token: the endpoints file may name the token file
(`auth_token_file: PATH`, relative to the endpoints file), else env `SIPEC_AUTH_TOKEN_FILE` is used; the first
token of the file is sent on every call (see `sipec.serving.auth`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.pipeline import ModuleSet
from sipec.serving.stubs import grpc_stub, open_in_process

AUTH_TOKEN_FILE_KEY = "auth_token_file"   # the one key of an endpoints file that is not a module


class ModuleSetupError(Exception):
    pass


def read_endpoints(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ModuleSetupError(f"{path}: endpoints file not found (start the services with `sipec up`, or "
                               "write module: host:port lines)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ModuleSetupError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ModuleSetupError(f"{path}: expected lines of `module: host:port`")
    token_file = data.get(AUTH_TOKEN_FILE_KEY)
    if token_file and not Path(token_file).is_absolute():
        data[AUTH_TOKEN_FILE_KEY] = str(path.parent / token_file)
    return data


def endpoints_token(endpoints: dict[str, str]) -> str | None:
    """The bearer token for the services: first token of the endpoints' `auth_token_file`, else of
    $SIPEC_AUTH_TOKEN_FILE, else None (no authentication)."""
    from sipec.serving.auth import TokenFileError, client_token

    try:
        return client_token(token_file=endpoints.get(AUTH_TOKEN_FILE_KEY))
    except TokenFileError as exc:
        raise ModuleSetupError(str(exc)) from None


def build_modules(modules: tuple[str, ...], model_repo: Path | None = None,
                  endpoints: dict[str, str] | None = None) -> tuple[ModuleSet, list[Any]]:
    """The ModuleSet, plus the in-process servicers to close when done."""
    stubs: dict[str, Any] = {}
    servicers: list[Any] = []
    token = endpoints_token(endpoints) if endpoints is not None else None
    try:
        for name in modules:
            if endpoints is not None:
                if name not in endpoints or name == AUTH_TOKEN_FILE_KEY:
                    known = ", ".join(k for k in endpoints if k != AUTH_TOKEN_FILE_KEY)
                    raise ModuleSetupError(f"no endpoint for module {name!r} (endpoints: {known})")
                stubs[name] = grpc_stub(name, endpoints[name], token=token)
                continue
            if model_repo is None:
                raise ModuleSetupError("in-process analysis needs --models REPO")
            try:
                servicer, stubs[name] = open_in_process(name, model_repo)
            except ModuleNotFoundError as exc:
                raise ModuleSetupError(f"module {name!r} is not built in this installation") from exc
            servicers.append(servicer)
        try:
            return ModuleSet(stubs), servicers
        except Exception as exc:
            raise ModuleSetupError(_explain(exc, model_repo, endpoints)) from exc
    except BaseException:
        for s in servicers:
            s.close()
        raise


def _explain(exc: Exception, model_repo: Path | None, endpoints: dict[str, str] | None) -> str:
    detail = exc.details() if hasattr(exc, "details") and callable(exc.details) else str(exc)
    where = f"model repository {model_repo}" if endpoints is None else "the services in the endpoints file"
    return f"a module could not answer GetModelInfo from {where}: {detail}"
