"""Endpoints: where each module's service runs, at one site or at several (facilities).

One site, the form `sipec up` writes:

    segnet: localhost:50051
    tracker: localhost:50055
    auth_token_file: token.txt          # optional (else $SIPEC_AUTH_TOKEN_FILE)

Several sites, each with its own addresses, bearer token and certificates:

    sites:
      lab-a:
        priority: 0                     # lower is preferred (default 0)
        weight: 2                       # sites of one priority share the videos by weight (default 1)
        auth_token_file: lab-a.token    # paths relative to this file
        tls: {ca: lab-a-ca.pem, cert: client.pem, key: client.key}   # optional; server_name: to override
        modules: {segnet: segnet.lab-a.example.org:443, tracker: tracker.lab-a.example.org:443}
      lab-b:
        priority: 1                     # takes over what lab-a cannot serve
        ...

Which site serves a module for a video: among the sites that have the module, those of the lowest priority
that are not down, and among them the one that weighted rendezvous hashing of the video's name picks (each
video goes to one site in proportion to the weights; the same video always to the same site; a site that goes
down moves only its own videos). A module that stops answering mid-video is marked down at its site, and the
video continues at the next site from its last completed frame (`orchestrator.analyze`). `sipec health
--endpoints FILE` asks every module at every site.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sipec.serving.client import ClientTLS

AUTH_TOKEN_FILE_KEY = "auth_token_file"   # the one key of a one-site endpoints file that is not a module
SITE_KEYS = {"priority", "weight", AUTH_TOKEN_FILE_KEY, "tls", "modules"}
TLS_KEYS = {"ca", "cert", "key", "server_name"}
DEFAULT_SITE = "default"


class EndpointsError(Exception):
    """An endpoints file that cannot be used, or a module with no site left; the message names the problem."""


class NoSiteLeft(EndpointsError):
    """Every site that has a module is marked down."""


@dataclass(frozen=True)
class Site:
    name: str
    modules: dict[str, str]            # module -> address
    priority: int = 0
    weight: float = 1.0
    token_file: str | None = None
    tls: ClientTLS | None = None

    def token(self) -> str | None:
        """The bearer token for this site: the first of its token file; for the one-site form without one, of
        $SIPEC_AUTH_TOKEN_FILE (a named site never gets the environment's token: it may be another facility's)."""
        from sipec.serving.auth import TokenFileError, client_token

        try:
            return client_token(token_file=self.token_file, use_env=self.name == DEFAULT_SITE)
        except TokenFileError as exc:
            raise EndpointsError(f"site {self.name}: {exc}") from None

    def health(self, module: str, service: str = "", timeout_s: float = 5.0, wait_s: float = 0.0) -> str:
        """grpc.health.v1 status of `module` at this site (SERVING, NOT_SERVING, ..., UNREACHABLE), over the site's
        TLS; health is open on SIPEC servers, the token is sent when it can be read (a gateway may ask for it).
        A site whose certificates cannot be read answers "ERROR: ..." instead of raising."""
        import contextlib

        from sipec.serving.client import health_status, make_channel, wait_for_serving

        try:
            token = self.token()
        except EndpointsError:
            token = None
        try:
            channel = make_channel(self.modules[module], self.tls, token=token)
        except (OSError, ValueError) as exc:
            return f"ERROR: {exc}"
        try:
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    wait_for_serving(channel, service, timeout_s=wait_s)
            return health_status(channel, service, timeout_s=timeout_s)
        finally:
            channel.close()


@dataclass
class Endpoints:
    path: Path
    sites: list[Site]
    down: set[tuple[str, str]] = field(default_factory=set)   # (site, module) found not answering

    @property
    def multi_site(self) -> bool:
        return len(self.sites) > 1

    def modules(self) -> set[str]:
        return {m for s in self.sites for m in s.modules}

    def order(self, module: str, key: str = "") -> list[Site]:
        """The sites that have `module`, in the order they are tried for the video `key`: by priority, then by
        weighted rendezvous hashing (highest -weight / ln(u) first, u uniform from a hash of key and site)."""
        def score(site: Site) -> float:
            digest = hashlib.sha256(f"{key}\0{site.name}".encode()).digest()
            u = (int.from_bytes(digest[:8], "big") + 0.5) / 2.0 ** 64
            return -site.weight / math.log(u)

        having = [s for s in self.sites if module in s.modules]
        return sorted(having, key=lambda s: (s.priority, -score(s), s.name))

    def assign(self, modules: tuple[str, ...] | list[str], key: str = "") -> dict[str, Site]:
        """The site that serves each module for the video `key`, skipping (site, module) pairs marked down;
        EndpointsError naming the module when none is left."""
        out = {}
        for m in modules:
            having = self.order(m, key)
            if not having:
                known = sorted(self.modules())
                raise EndpointsError(f"{self.path}: no endpoint for module {m!r} (endpoints: {', '.join(known)})")
            live = [s for s in having if (s.name, m) not in self.down]
            if not live:
                raise NoSiteLeft(f"{m}: no site left that answers (tried {', '.join(s.name for s in having)})")
            out[m] = live[0]
        return out

    def mark_down(self, served_by: dict[str, str], timeout_s: float = 5.0) -> list[tuple[str, str]]:
        """Ask each (module, site) pair of `served_by` for its health; mark those not SERVING down and return
        them (the caller moves their modules to the next site)."""
        sites = {s.name: s for s in self.sites}
        found = []
        for module, name in served_by.items():
            status = sites[name].health(module, timeout_s=timeout_s)
            if status != "SERVING":
                self.down.add((name, module))
                found.append((name, module))
        return found


def read_endpoints(path: str | Path) -> Endpoints:
    """Read an endpoints file of either form; EndpointsError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise EndpointsError(f"{path}: endpoints file not found (start the services with `sipec up`, or "
                             "write module: host:port lines)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EndpointsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EndpointsError(f"{path}: expected lines of `module: host:port`, or `sites:`")
    if "sites" not in data:
        if not all(isinstance(v, str) for v in data.values()):
            raise EndpointsError(f"{path}: expected lines of `module: host:port`")
        modules = {k: v for k, v in data.items() if k != AUTH_TOKEN_FILE_KEY}
        return Endpoints(path, [Site(DEFAULT_SITE, modules, token_file=_relative(path, data.get(AUTH_TOKEN_FILE_KEY)))])
    extra = set(data) - {"sites"}
    if extra:
        raise EndpointsError(f"{path}: with `sites:`, every module goes inside a site (found {', '.join(extra)})")
    sites_data = data["sites"]
    if not isinstance(sites_data, dict) or not sites_data:
        raise EndpointsError(f"{path}: `sites:` must map site names to their settings")
    return Endpoints(path, [_site(path, str(name), spec) for name, spec in sites_data.items()])


def _site(path: Path, name: str, spec: Any) -> Site:
    where = f"{path}: site {name}"
    if not isinstance(spec, dict):
        raise EndpointsError(f"{where}: expected priority, weight, auth_token_file, tls and modules")
    unknown = set(spec) - SITE_KEYS
    if unknown:
        raise EndpointsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(SITE_KEYS))})")
    modules = spec.get("modules")
    if not isinstance(modules, dict) or not modules or not all(isinstance(v, str) for v in modules.values()):
        raise EndpointsError(f"{where}: `modules:` must map module names to host:port")
    try:
        priority, weight = int(spec.get("priority", 0)), float(spec.get("weight", 1.0))
    except (TypeError, ValueError):
        raise EndpointsError(f"{where}: priority must be an integer and weight a number") from None
    if not weight > 0:
        raise EndpointsError(f"{where}: weight must be above 0, not {weight}")
    tls = None
    if spec.get("tls") is not None:
        t = spec["tls"]
        if not isinstance(t, dict) or set(t) - TLS_KEYS:
            raise EndpointsError(f"{where}: tls takes {', '.join(sorted(TLS_KEYS))}")
        for k in ("ca", "cert", "key"):
            if t.get(k) and not Path(_relative(path, t[k])).is_file():
                raise EndpointsError(f"{where}: tls {k} file not found: {_relative(path, t[k])}")
        if bool(t.get("cert")) != bool(t.get("key")):
            raise EndpointsError(f"{where}: a client certificate needs its key (tls cert and key)")
        tls = ClientTLS(*(Path(_relative(path, t[k])) if t.get(k) else None for k in ("ca", "cert", "key")),
                        server_name=t.get("server_name"))
    return Site(name, {str(k): v for k, v in modules.items()}, priority, weight,
                _relative(path, spec.get(AUTH_TOKEN_FILE_KEY)), tls)


def _relative(path: Path, value: Any) -> str | None:
    if not value:
        return None
    p = Path(str(value))
    return str(p if p.is_absolute() else path.parent / p)
