"""Build the pipeline's module stubs: in-process from a model repository, or gRPC from an endpoints file.

In-process, each module's servicer is made by `services.<module>.service.create_servicer(model_repo)`, the
same class `sipec serve <module>` runs; over gRPC, the endpoints file (`sipec.serving.sites`: one site as
`sipec up` writes it, or several sites with their own tokens and certificates) says where each module runs
(`host:port`, or `dns:///name.namespace.svc:port` for client-side round-robin over a headless Service).

Services started with `--auth-token-file` want a bearer token: each site may name its token file
(`auth_token_file: PATH`, relative to the endpoints file), else env `SIPEC_AUTH_TOKEN_FILE` is used; the first
token of the file is sent on every call (see `sipec.serving.auth`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.pipeline import ModuleSet
from sipec.serving.sites import Endpoints, EndpointsError, NoSiteLeft, read_endpoints
from sipec.serving.stubs import close_stubs, grpc_stub, open_in_process

__all__ = ["Connector", "EndpointsError", "ModuleSetupError", "NoSiteLeft", "build_modules", "read_endpoints"]


class ModuleSetupError(Exception):
    """The pipeline's modules cannot be built or do not answer; the message says which and why (an endpoints
    file that cannot be used raises EndpointsError)."""


def build_modules(modules: tuple[str, ...], model_repo: Path | None = None, endpoints: Endpoints | None = None,
                  key: str = "") -> tuple[ModuleSet, list[Any]]:
    """The ModuleSet, plus the in-process servicers to close when done. With endpoints, each module comes from
    the site `Endpoints.assign` picks for the video `key`; `ModuleSet.served_by` names it."""
    stubs: dict[str, Any] = {}
    servicers: list[Any] = []
    served_by: dict[str, str] = {}
    if endpoints is None and model_repo is None:
        raise ModuleSetupError("in-process analysis needs --models REPO")
    try:
        if endpoints is not None:
            for name, site in endpoints.assign(modules, key).items():
                stubs[name] = grpc_stub(name, site.modules[name], site.tls, token=site.token())
                served_by[name] = site.name
        for name in modules if endpoints is None else ():
            try:
                servicer, stubs[name] = open_in_process(name, model_repo)
            except ModuleNotFoundError as exc:
                if exc.name not in (f"services.{name}", f"services.{name}.service"):
                    raise   # a dependency missing inside the module: its own message says which
                raise ModuleSetupError(f"module {name!r} is not built in this installation") from exc
            servicers.append(servicer)
        try:
            module_set = ModuleSet(stubs)
            module_set.served_by = served_by
            return module_set, servicers
        except Exception as exc:
            raise ModuleSetupError(_explain(exc, model_repo, endpoints)) from exc
    except BaseException:
        close_stubs(stubs.values())
        for s in servicers:
            s.close()
        raise


class Connector:
    """The modules for each video: in-process (one ModuleSet for all videos), or from the endpoints' sites, where
    a module whose site stops answering moves to the next site that has it (`failed`)."""

    def __init__(self, modules: tuple[str, ...], model_repo: Path | None = None,
                 endpoints: Endpoints | None = None) -> None:
        self.names = tuple(modules)
        self.endpoints = endpoints
        self._sets: dict[tuple, ModuleSet] = {}
        self.servicers: list[Any] = []
        self._local: ModuleSet | None = None
        if endpoints is None:
            self._local, self.servicers = build_modules(self.names, model_repo, None)

    def for_video(self, key: str) -> ModuleSet:
        """The ModuleSet for the video `key` (its output name); a site whose module does not answer at the start
        is marked down and the next one tried. NoSiteLeft when a module has no site left, ModuleSetupError when
        the only site does not answer, EndpointsError for an unusable token file."""
        if self._local is not None:
            return self._local
        assert self.endpoints is not None
        while True:
            assignment = {m: s.name for m, s in self.endpoints.assign(self.names, key).items()}
            k = tuple(sorted(assignment.items()))
            if k in self._sets:
                return self._sets[k]
            try:
                self._sets[k] = build_modules(self.names, None, self.endpoints, key)[0]
                return self._sets[k]
            except ModuleSetupError:
                if not self.endpoints.multi_site or not self.endpoints.mark_down(assignment):
                    raise

    def failed(self, modules: ModuleSet) -> list[tuple[str, str]]:
        """After a call found a module unavailable: the (site, module) pairs of `modules` that no longer answer,
        now marked down (empty with one site: the caller retries the same services)."""
        if self.endpoints is None or not self.endpoints.multi_site:
            return []
        return self.endpoints.mark_down(modules.served_by)

    def first_answering(self) -> ModuleSet:
        """The ModuleSet of the preferred sites that answer (the orchestrator service's connection); when every
        site of a module is down, all are tried again on the next call."""
        try:
            return self.for_video("")
        except NoSiteLeft:
            self.revive()
            raise

    def revive(self) -> None:
        """Forget which sites were down (every module had none left: try them all again after a backoff)."""
        if self.endpoints is not None:
            self.endpoints.down.clear()

    def close(self) -> None:
        for module_set in self._sets.values():
            close_stubs(module_set.stubs.values())
        for s in self.servicers:
            s.close()


def _explain(exc: Exception, model_repo: Path | None, endpoints: Endpoints | None) -> str:
    detail = exc.details() if hasattr(exc, "details") and callable(exc.details) else str(exc)
    where = f"model repository {model_repo}" if endpoints is None else "the services in the endpoints file"
    return f"a module could not answer GetModelInfo from {where}: {detail}"
