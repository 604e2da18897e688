"""`sipec deploy`: render a kustomize overlay, validate it, apply it to a cluster, wait for the rollouts.

    sipec deploy [--overlay gpu|cpu|gpu-facility|DIR] [--dry-run] [--render-to FILE] [--timeout-s 900]

1. render: `kubectl kustomize k8s/overlays/<overlay>` (kubectl's built-in kustomize);
2. validate: every built-in object against the Kubernetes OpenAPI schema of `--kubernetes-version`, strictly
   (unknown fields are errors), with kubernetes-validate when it is installed; custom resources (the
   prometheus-operator ServiceMonitor) against the small schemas in CUSTOM_RESOURCE_SCHEMAS;
3. apply: server-side apply through the Kubernetes Python client's dynamic client, in dependency order
   (Namespace first), field manager `sipec-deploy`; objects of an API the cluster does not serve (a CRD not
   installed) are skipped and named;
4. prune: delete what an earlier deploy applied (label app.kubernetes.io/managed-by=sipec-deploy) and this
   rendering no longer has, such as the public LoadBalancer of an earlier overlay (kinds in PRUNABLE);
   report every workload whose pods need a Secret the cluster lacks, by name, and do not wait for those;
5. wait: until every Deployment has rolled out like `kubectl rollout status` would say, failing early on
   ProgressDeadlineExceeded, naming the pods' waiting reasons (ImagePullBackOff, Unschedulable, ...);
6. report: one line per Deployment, and the addresses of LoadBalancer Services.

`--dry-run` stops after step 2 and needs no cluster. The cluster is reached through `Cluster`, a thin layer
over the Python client that tests replace with plain fakes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_KUBERNETES_VERSION = "1.30.0"
FIELD_MANAGER = "sipec-deploy"
# every object `sipec deploy` applies carries this label, so that a later deploy finds what it created
MANAGED_BY = ("app.kubernetes.io/managed-by", "sipec-deploy")
# kinds a deploy removes when the overlay no longer renders them (a public LoadBalancer of an earlier overlay).
# Never: Namespaces, PersistentVolumeClaims (data), Secrets (yours), ConfigMaps (old hashed ones keep
# `kubectl rollout undo` working), Jobs (batch runs).
PRUNABLE: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"), ("v1", "ServiceAccount"),
)

# the order objects are applied in; kinds not listed go last, in the order rendered
APPLY_ORDER: tuple[str, ...] = (
    "Namespace", "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment",
    "StatefulSet", "Job", "Pod", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "Ingress",
    "ServiceMonitor", "PodMonitor",
)

_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                   "namespace": {"type": "string"},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
}

# Custom resources are not in the Kubernetes OpenAPI schemas kubernetes-validate ships. These schemas cover
# the fields SIPEC uses, from prometheus-operator's ServiceMonitor CRD (monitoring.coreos.com/v1), strictly:
# a misspelt field is an error here too. Fields SIPEC does not use are refused until added.
CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"},
                                       "matchNames": {"type": "array", "items": {"type": "string"}}}},
                    "jobLabel": {"type": "string"},
                    "endpoints": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                            "properties": {
                                "port": {"type": "string"},
                                "targetPort": {"type": ["string", "integer"]},
                                "path": {"type": "string", "pattern": "^/"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {"type": "string", "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$"},
                                "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$"},
                                "honorLabels": {"type": "boolean"},
                            },
                        },
                    },
                },
            },
        },
    },
}


class DeployError(Exception):
    """A problem `sipec deploy` reports in one line (exit status 2)."""


# ---------------------------------------------------------------------------------------------- render
def default_k8s_dir() -> Path:
    """./k8s when run from a checkout, else the k8s/ beside this package's source tree."""
    here = Path("k8s")
    if (here / "overlays").is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "k8s"


def overlay_dir(overlay: str, k8s_dir: Path) -> Path:
    """An overlay by name (k8s/overlays/<name>) or any directory holding a kustomization.yaml."""
    as_path = Path(overlay)
    for candidate in (as_path, k8s_dir / "overlays" / overlay):
        if (candidate / "kustomization.yaml").is_file():
            return candidate
    known = sorted(p.name for p in (k8s_dir / "overlays").glob("*") if (p / "kustomization.yaml").is_file())
    raise DeployError(f"--overlay {overlay}: no kustomization.yaml there or in {k8s_dir / 'overlays' / overlay} "
                      f"(overlays: {', '.join(known) or 'none found'})")


def render(path: Path, kubectl: str = "kubectl", timeout_s: float = 120.0) -> str:
    """`kubectl kustomize PATH`: the overlay as one multi-document YAML text."""
    if shutil.which(kubectl) is None:
        raise DeployError(f"{kubectl} not found: install kubectl (its built-in kustomize renders the overlays)")
    try:
        proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"kubectl kustomize {path}: no answer after {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        raise DeployError(f"kubectl kustomize {path} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def parse_manifests(text: str, source: str = "rendered manifests") -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise DeployError(f"{source}: not valid YAML: {exc}") from exc
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind") \
                or not isinstance(d.get("metadata"), dict) or not d["metadata"].get("name"):
            raise DeployError(f"{source}: document {i + 1} lacks apiVersion, kind or metadata.name")
    return docs


def object_name(obj: dict[str, Any]) -> str:
    ns = obj["metadata"].get("namespace")
    return f"{obj['kind']}/{obj['metadata']['name']}" + (f" (namespace {ns})" if ns else "")


# -------------------------------------------------------------------------------------------- validate
@dataclass
class Validation:
    errors: list[str] = field(default_factory=list)
    builtin_checked: int = 0
    custom_checked: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_custom_resource(obj: dict[str, Any]) -> list[str]:
    """Errors of a custom resource against CUSTOM_RESOURCE_SCHEMAS ([] when valid); unknown kinds are errors."""
    import jsonschema

    schema = CUSTOM_RESOURCE_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
    if schema is None:
        return [f"{object_name(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
                "(neither built into Kubernetes nor in sipec.deploy.CUSTOM_RESOURCE_SCHEMAS)"]
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{object_name(obj)}: {'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


def is_custom_resource(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_RESOURCE_SCHEMAS


def validate(objects: Iterable[dict[str, Any]], kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> Validation:
    """Strict schema validation of every object (see the module docstring)."""
    result = Validation()
    try:
        from kubernetes_validate import utils as kv
    except ImportError:
        kv = None
        result.notes.append("built-in kinds not schema-checked: kubernetes-validate is not installed "
                            "(pip install kubernetes-validate)")
    try:
        import jsonschema  # noqa: F401 - comes with kubernetes-validate
        has_jsonschema = True
    except ImportError:
        has_jsonschema = False
        result.notes.append("custom resources not schema-checked: jsonschema is not installed")
    for obj in objects:
        if is_custom_resource(obj):
            if has_jsonschema:
                result.errors += validate_custom_resource(obj)
                result.custom_checked += 1
            continue
        if kv is None:
            continue
        try:
            kv.validate(obj, kubernetes_version, strict=True)
            result.builtin_checked += 1
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(top)"
            result.errors.append(f"{object_name(obj)}: {where}: {exc.message}")
        except kv.SchemaNotFoundError:
            result.errors.append(f"{object_name(obj)}: no schema for {obj['apiVersion']} {obj['kind']} (neither "
                                 "built into Kubernetes nor in sipec.deploy.CUSTOM_RESOURCE_SCHEMAS)")
        except kv.VersionNotSupportedError as exc:
            raise DeployError(f"--kubernetes-version {kubernetes_version}: kubernetes-validate has no schemas for "
                              f"it ({exc.message})") from exc
    return result


# ------------------------------------------------------------------------------------------------ apply
def apply_order(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {kind: i for i, kind in enumerate(APPLY_ORDER)}
    return sorted(objects, key=lambda o: rank.get(o["kind"], len(APPLY_ORDER)))  # stable: rendered order within


@dataclass
class DeploymentState:
    """What `kubectl rollout status` looks at, read from a Deployment."""

    namespace: str
    name: str
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 1                 # spec.replicas (the HPA's choice when one scales it)
    status_replicas: int = 0          # pods of every ReplicaSet
    updated: int = 0
    ready: int = 0
    available: int = 0
    conditions: list[tuple[str, str, str, str]] = field(default_factory=list)   # type, status, reason, message
    selector: dict[str, str] = field(default_factory=dict)

    def rollout(self) -> tuple[bool, str]:
        """(done, what it waits for); RolloutFailed when the Deployment gave up."""
        for ctype, _status, reason, message in self.conditions:
            if ctype == "Progressing" and reason == "ProgressDeadlineExceeded":
                raise RolloutFailed(f"{self.name}: progress deadline exceeded: {message}")
        if self.observed_generation < self.generation:
            return False, "waiting for the controller to see the new spec"
        if self.updated < self.replicas:
            return False, f"{self.updated} of {self.replicas} pods updated"
        if self.status_replicas > self.updated:
            return False, f"{self.status_replicas - self.updated} old pod(s) terminating"
        if self.available < self.updated:
            return False, f"{self.available} of {self.updated} updated pods available"
        return True, "rolled out"


class RolloutFailed(Exception):
    pass


def _deployment_state(dep: Any) -> DeploymentState:
    """A DeploymentState from the client's V1Deployment (attribute access, as the Python client returns it)."""
    meta, spec, status = dep.metadata, dep.spec, dep.status
    conditions = [(c.type, c.status, c.reason or "", c.message or "") for c in (status.conditions or [])]
    labels = (spec.selector.match_labels or {}) if spec.selector is not None else {}
    return DeploymentState(
        namespace=meta.namespace, name=meta.name, generation=meta.generation or 0,
        observed_generation=status.observed_generation or 0,
        replicas=1 if spec.replicas is None else spec.replicas, status_replicas=status.replicas or 0,
        updated=status.updated_replicas or 0, ready=status.ready_replicas or 0,
        available=status.available_replicas or 0, conditions=conditions, selector=dict(labels))


def _api_error(exc: Exception) -> str:
    """The message of a Kubernetes API error (ApiException.body is the Status object as JSON)."""
    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(exc)


class Cluster:
    """The Kubernetes API calls `sipec deploy` makes, over the official Python client.

    `dynamic` is a kubernetes.dynamic.DynamicClient, `apps` an AppsV1Api and `core` a CoreV1Api; tests pass
    plain fakes with the same few methods.
    """

    def __init__(self, dynamic: Any, apps: Any, core: Any) -> None:
        self.dynamic = dynamic
        self.apps = apps
        self.core = core

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Cluster:
        from kubernetes import client, config, dynamic
        from kubernetes.config.config_exception import ConfigException

        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
        except (ConfigException, FileNotFoundError) as exc:
            if kubeconfig or context:
                raise DeployError(f"kubeconfig: {exc}") from exc
            try:
                config.load_incluster_config()
            except ConfigException:
                raise DeployError(f"no cluster to deploy to: {exc} (set KUBECONFIG or --kubeconfig; "
                                  "--dry-run needs none)") from exc
        api = client.ApiClient()
        try:
            dyn = dynamic.DynamicClient(api)
        except Exception as exc:  # noqa: BLE001 - discovery failing means the API server is unreachable
            raise DeployError(f"cannot reach the Kubernetes API server: {_api_error(exc)}") from exc
        return cls(dyn, client.AppsV1Api(api), client.CoreV1Api(api))

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply of one object. LookupError when the cluster does not serve its kind."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            resource = self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError as exc:
            raise LookupError(f"{obj['apiVersion']} {obj['kind']}") from exc
        try:
            self.dynamic.server_side_apply(resource, body=obj, namespace=obj["metadata"].get("namespace"),
                                           field_manager=FIELD_MANAGER, force_conflicts=True)
        except Exception as exc:  # noqa: BLE001 - ApiException and transport errors: named below
            raise DeployError(f"applying {object_name(obj)}: {_api_error(exc)}") from exc

    def managed(self, api_version: str, kind: str, namespace: str) -> list[str]:
        """Names of the objects of a kind in a namespace that `sipec deploy` applied (its label); [] when the
        cluster does not serve the kind."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return []
        found = self.dynamic.get(resource, namespace=namespace, label_selector="=".join(MANAGED_BY))
        return sorted(item.metadata.name for item in found.items)

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        try:
            self.dynamic.delete(resource, name=name, namespace=namespace)
        except Exception as exc:  # noqa: BLE001 - named below
            raise DeployError(f"deleting {kind}/{name} (namespace {namespace}): {_api_error(exc)}") from exc

    def secret_exists(self, namespace: str, name: str) -> bool:
        try:
            self.core.read_namespaced_secret(name, namespace)
        except Exception as exc:  # noqa: BLE001 - 404 is the answer; other errors are raised
            if getattr(exc, "status", None) == 404:
                return False
            raise DeployError(f"reading Secret {name} (namespace {namespace}): {_api_error(exc)}") from exc
        return True

    def deployment(self, namespace: str, name: str) -> DeploymentState:
        return _deployment_state(self.apps.read_namespaced_deployment_status(name, namespace))

    def pod_problems(self, namespace: str, selector: dict[str, str]) -> list[str]:
        """Why pods of a Deployment are not running: waiting reasons and unschedulable messages."""
        if not selector:
            return []
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = self.core.list_namespaced_pod(namespace, label_selector=label_selector).items
        problems: set[str] = set()
        for pod in pods:
            for cond in pod.status.conditions or []:
                if cond.type == "PodScheduled" and cond.status == "False" and cond.reason:
                    problems.add(f"{cond.reason}: {cond.message or ''}".strip().rstrip(":"))
            statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
            for cs in statuses:
                waiting = cs.state.waiting if cs.state is not None else None
                if waiting is not None and waiting.reason not in (None, "ContainerCreating", "PodInitializing"):
                    problems.add(f"{cs.name}: {waiting.reason}" + (f" ({waiting.message})" if waiting.message else ""))
        return sorted(problems)

    def load_balancers(self, namespace: str) -> list[tuple[str, str]]:
        """(service, address or 'pending') of every LoadBalancer Service in the namespace."""
        out = []
        for svc in self.core.list_namespaced_service(namespace).items:
            if svc.spec.type != "LoadBalancer":
                continue
            ingress = (svc.status.load_balancer.ingress or []) if svc.status.load_balancer else []
            addrs = [i.ip or i.hostname for i in ingress if (i.ip or i.hostname)]
            out.append((svc.metadata.name, ", ".join(addrs) or "pending"))
        return out


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # kinds the cluster does not serve


def managed(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` with the label that marks it as applied by `sipec deploy`."""
    out = {**obj, "metadata": {**obj["metadata"], "labels": {**obj["metadata"].get("labels", {})}}}
    out["metadata"]["labels"][MANAGED_BY[0]] = MANAGED_BY[1]
    return out


def prune(cluster: Cluster, objects: list[dict[str, Any]], log: Callable[[str], None] = print) -> list[str]:
    """Delete what an earlier `sipec deploy` applied to these namespaces and this rendering no longer has (kinds
    in PRUNABLE only); the deleted objects' names."""
    rendered = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}
    namespaces = sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")})
    deleted = []
    for namespace in namespaces:
        for api_version, kind in PRUNABLE:
            for name in cluster.managed(api_version, kind, namespace):
                if (kind, namespace, name) in rendered:
                    continue
                cluster.delete(api_version, kind, name, namespace)
                deleted.append(f"{kind}/{name} (namespace {namespace})")
                log(f"pruned {kind}/{name} (namespace {namespace}): applied by an earlier deploy, not in this "
                    "overlay")
    return deleted


def secret_refs(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(Secret name, where) of every Secret a workload's pods need (optional references left out)."""
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec") if obj["kind"] != "Pod" else spec
    if not pod:
        return []
    refs = []
    for v in pod.get("volumes", []):
        if "secret" in v and not v["secret"].get("optional"):
            refs.append((v["secret"]["secretName"], f"volume {v['name']}"))
        for src in v.get("projected", {}).get("sources", []):
            if "secret" in src and not src["secret"].get("optional"):
                refs.append((src["secret"]["name"], f"volume {v['name']}"))
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                refs.append((ref["name"], f"container {c['name']} env {e['name']}"))
        for e in c.get("envFrom", []):
            ref = e.get("secretRef")
            if ref and not ref.get("optional"):
                refs.append((ref["name"], f"container {c['name']} envFrom"))
    refs += [(p["name"], "imagePullSecrets") for p in pod.get("imagePullSecrets", [])]
    return refs


def missing_secrets(cluster: Cluster, objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    """{workload: problems} for the workloads whose pods need a Secret the cluster does not have (and that
    this rendering does not create): their pods would wait in ContainerCreating until the deadline."""
    created = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects if o["kind"] == "Secret"}
    exists: dict[tuple[str, str], bool] = {}
    out: dict[str, list[str]] = {}
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job", "Pod"):
            continue
        namespace = obj["metadata"].get("namespace", "default")
        for name, where in secret_refs(obj):
            key = (namespace, name)
            if key in created:
                continue
            if key not in exists:
                exists[key] = cluster.secret_exists(namespace, name)
            if not exists[key]:
                out.setdefault(obj["metadata"]["name"], []).append(
                    f"Secret {name} (namespace {namespace}) is missing, needed by its {where}")
    return out


def apply_all(cluster: Cluster, objects: list[dict[str, Any]], log: Callable[[str], None] = print) -> ApplyResult:
    result = ApplyResult()
    for obj in apply_order([managed(o) for o in objects]):
        try:
            cluster.apply(obj)
        except LookupError as exc:
            result.skipped.append(object_name(obj))
            log(f"skipped {object_name(obj)}: the cluster does not serve {exc} (install its CRD, e.g. "
                "prometheus-operator for ServiceMonitor, then deploy again)")
            continue
        result.applied.append(object_name(obj))
    return result


def wait_for_rollouts(cluster: Cluster, deployments: list[tuple[str, str]], timeout_s: float = 900.0,
                      poll_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep,
                      log: Callable[[str], None] = print) -> dict[str, tuple[bool, str]]:
    """Poll every (namespace, name) Deployment until all rolled out, one failed, or the time is up.

    Returns {name: (rolled out, last word)}; a Deployment still pending at the deadline gets the reasons its
    pods give. Logs each change of a Deployment's state once.
    """
    deadline = clock() + timeout_s
    pending = dict.fromkeys(deployments, "not read yet")
    result: dict[str, tuple[bool, str]] = {}
    failed = False
    while pending and not failed:
        for key in list(pending):
            namespace, name = key
            try:
                done, what = cluster.deployment(namespace, name).rollout()
            except RolloutFailed as exc:
                result[name] = (False, str(exc))
                log(f"{name}: FAILED: {exc}")
                del pending[key]
                failed = True
                continue
            except Exception as exc:  # noqa: BLE001 - an unreadable Deployment is reported, not fatal at once
                done, what = False, f"cannot read it: {_api_error(exc)}"
            if done:
                result[name] = (True, what)
                log(f"{name}: {what}")
                del pending[key]
            elif what != pending[key]:
                log(f"{name}: {what}")
                pending[key] = what
        if pending and not failed:
            if clock() >= deadline:
                break
            sleep(poll_s)
    for (namespace, name), what in pending.items():
        try:
            problems = cluster.pod_problems(namespace, cluster.deployment(namespace, name).selector)
        except Exception:  # noqa: BLE001
            problems = []
        why = f"{what}; pods: {'; '.join(problems)}" if problems else what
        result[name] = (False, f"not rolled out after {timeout_s:.0f} s: {why}" if not failed else why)
    return result


def status_table(cluster: Cluster, deployments: list[tuple[str, str]],
                 outcome: dict[str, tuple[bool, str]] | None = None) -> str:
    rows = [("DEPLOYMENT", "READY", "UP-TO-DATE", "AVAILABLE", "STATUS")]
    for namespace, name in deployments:
        try:
            s = cluster.deployment(namespace, name)
            if outcome is not None and name in outcome:
                word = outcome[name][1]
            else:
                try:
                    word = s.rollout()[1]
                except RolloutFailed as exc:
                    word = str(exc)
            rows.append((name, f"{s.ready}/{s.replicas}", str(s.updated), str(s.available), word))
        except Exception as exc:  # noqa: BLE001
            rows.append((name, "?", "?", "?", _api_error(exc)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)


# -------------------------------------------------------------------------------------------------- CLI
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy", help="render a Kubernetes overlay (k8s/), validate, apply it and wait for the rollouts",
        description="Render k8s/overlays/OVERLAY with `kubectl kustomize`, validate every object strictly, apply "
                    "it by server-side apply (the current kubeconfig context), wait until every Deployment "
                    "rolled out, and print their status. --dry-run renders and validates only.")
    p.add_argument("--overlay", default="gpu", help="overlay name under k8s/overlays (gpu, cpu, gpu-facility) or a "
                                                    "directory with a kustomization.yaml (default gpu)")
    p.add_argument("--k8s-dir", type=Path, default=None, help="the k8s/ folder (default ./k8s, else the one "
                                                               "beside the installed sources)")
    p.add_argument("--dry-run", action="store_true", help="render and validate only: no cluster needed")
    p.add_argument("--render-to", type=Path, help="also write the rendered manifests to this file")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="wait this long for the rollouts (default 900)")
    p.add_argument("--no-wait", action="store_true", help="apply and return without waiting for the rollouts")
    p.add_argument("--no-prune", action="store_true",
                   help="keep what an earlier deploy applied and this overlay does not render (default: delete its "
                        "Deployments, Services, HPAs, PDBs, NetworkPolicies, ServiceMonitors and ServiceAccounts; "
                        "never Namespaces, volumes, Secrets or ConfigMaps)")
    p.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION,
                   help=f"schemas to validate against (default {DEFAULT_KUBERNETES_VERSION})")
    p.add_argument("--kubectl", default="kubectl", help="kubectl binary that renders (default kubectl)")
    p.set_defaults(func=run_deploy)


def run_deploy(args: argparse.Namespace, cluster: Cluster | None = None) -> int:
    from sipec.cli import CliError

    try:
        return _deploy(args, cluster)
    except DeployError as exc:
        raise CliError(str(exc)) from exc


def _deploy(args: argparse.Namespace, cluster: Cluster | None) -> int:
    k8s_dir = args.k8s_dir or default_k8s_dir()
    path = overlay_dir(args.overlay, k8s_dir)
    text = render(path, args.kubectl)
    objects = parse_manifests(text, f"kubectl kustomize {path}")
    if args.render_to:
        args.render_to.write_text(text)
    kinds: dict[str, int] = {}
    for o in objects:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    print(f"rendered {path}: {len(objects)} objects ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")
    report = validate(objects, args.kubernetes_version)
    for note in report.notes:
        print(f"note: {note}")
    if not report.ok:
        raise DeployError(f"{len(report.errors)} invalid object(s):\n  " + "\n  ".join(report.errors))
    print(f"valid: {report.builtin_checked} built-in objects against Kubernetes {args.kubernetes_version} "
          f"(strict), {report.custom_checked} custom resources against sipec's CRD schemas")
    if args.dry_run:
        print("dry run: nothing applied")
        return 0
    cluster = cluster or Cluster.connect(args.kubeconfig, args.context)
    applied = apply_all(cluster, objects)
    print(f"applied {len(applied.applied)} objects" + (f", skipped {len(applied.skipped)}" if applied.skipped else ""))
    if not args.no_prune:
        pruned = prune(cluster, objects)
        print(f"pruned {len(pruned)} object(s) an earlier deploy left" if pruned else "nothing to prune")
    deployments = [(o["metadata"].get("namespace", "default"), o["metadata"]["name"])
                   for o in objects if o["kind"] == "Deployment"]
    blocked = missing_secrets(cluster, objects)
    for name, problems in blocked.items():
        for problem in problems:
            print(f"{name}: {problem}: its pods wait in ContainerCreating until you create it (docs/deploy.md)",
                  file=sys.stderr)
    outcome = None
    if not args.no_wait and deployments:
        waiting = [d for d in deployments if d[1] not in blocked]
        outcome = wait_for_rollouts(cluster, waiting, timeout_s=args.timeout_s) if waiting else {}
        outcome.update({name: (False, "; ".join(problems)) for name, problems in blocked.items()
                        if any(name == d[1] for d in deployments)})
    elif blocked:
        outcome = {name: (False, "; ".join(problems)) for name, problems in blocked.items()}
    print(status_table(cluster, deployments, outcome))
    for namespace in sorted({ns for ns, _ in deployments}):
        for name, address in cluster.load_balancers(namespace):
            print(f"load balancer {name} (namespace {namespace}): {address}")
    if outcome is not None and not all(ok for ok, _ in outcome.values()):
        bad = [n for n, (ok, _) in outcome.items() if not ok]
        print(f"sipec deploy: not rolled out: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
