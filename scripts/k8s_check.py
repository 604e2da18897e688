"""`make k8s-check`: render every kustomization under k8s/, validate it strictly, check that its parts agree.

For each kustomization (k8s/base, k8s/overlays/*, k8s/batch, k8s/monitoring, k8s/tools; components are
rendered through the overlays that use them):

1. `kubectl kustomize DIR`, piped to `kubernetes-validate --strict -k 1.30.0 -`: every built-in object
   against the Kubernetes 1.30 OpenAPI schema, unknown fields being errors. kubernetes-validate has no
   schema for custom resources and only WARNs about them ("Couldn't find schema"); such a warning passes
   only for the kinds in sipec.deploy.CUSTOM_RESOURCE_SCHEMAS (the prometheus-operator ServiceMonitor), and
   those objects are checked against that schema instead. Any other warning, error or failure fails.
2. Consistency of the rendered objects (`consistency_errors`): probes and Services name ports their
   containers expose; module flags, TF Serving's model config, probe paths and the endpoints file agree;
   every image is pinned and every SIPEC image has its Dockerfile, whose EXPOSE, CMD and stages fit;
   TF Serving's config files parse as its own protobuf messages;
   security settings; HPAs scale on a metric the prometheus-adapter rules serve; GPU only where meant.

Exit status 0 when everything passes, 1 otherwise (each problem on its own line). The same functions run in
tests/unit/test_k8s.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sipec.deploy import CUSTOM_RESOURCE_SCHEMAS, parse_manifests, validate_custom_resource  # noqa: E402
from sipec.serving.model_config import parse_model_config, served_versions  # noqa: E402
from sipec.serving.runtime import LIVENESS  # noqa: E402

K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.30.0"
# images not built here, pinned to a version and/or a digest, from any registry (a site may mirror them); the gpu
# overlay's TF Serving is the -gpu build of the same one
_DIGEST = r"(?:@sha256:[0-9a-f]{64})"
EXTERNAL_IMAGES = re.compile(rf"^(?:.+/)?tensorflow/serving(?::\d+\.\d+\.\d+(-gpu)?{_DIGEST}?|{_DIGEST})$")
SIPEC_IMAGE = re.compile(rf"^(?:.+/)?sipec/([a-z0-9-]+)(?::([A-Za-z0-9_.-]+))?({_DIGEST})?$")
# a whole GPU or a MIG slice of one (the GPU Operator's mixed strategy names them nvidia.com/mig-<g>g.<mem>gb)
GPU_RESOURCE = re.compile(r"^nvidia\.com/(gpu|mig-\d+g\.\d+gb(\.me)?)$")
TFSERVING_REQUIRED_FLAGS = ("--model_config_file=", "--enable_batching=", "--batching_parameters_file=",
                            "--monitoring_config_file=", "--port=8500", "--rest_api_port=8501")
WORKLOAD_KINDS = ("Deployment", "Job", "Pod")
SHIPPED_GPU_OVERLAYS = ("gpu", "gpu-facility")
BUSY_METRIC = "sipec_backend_duty_cycle"
TFSERVING_METRICS_PATH = "/monitoring/prometheus/metrics"
_WARN_CRD = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+) for kubernetes version")


def kustomizations(k8s: Path = K8S) -> list[Path]:
    """Every directory under k8s/ with a kustomization.yaml that is not a Component, sorted."""
    out = []
    for path in sorted(k8s.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind") != "Component":
            out.append(path.parent)
    return out


def render(path: Path) -> str:
    proc = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed: {proc.stderr.strip()}")
    return proc.stdout


def kubernetes_validate_bin() -> str:
    beside = Path(sys.executable).parent / "kubernetes-validate"
    found = str(beside) if beside.is_file() else shutil.which("kubernetes-validate")
    if not found:
        raise RuntimeError("kubernetes-validate not found: `make setup` installs it (the dev extra)")
    return found


@dataclass
class SchemaReport:
    errors: list[str] = field(default_factory=list)
    builtin: int = 0
    custom: int = 0


def validate_schemas(text: str, objects: list[dict[str, Any]], version: str = KUBERNETES_VERSION) -> SchemaReport:
    """Pipe the rendered text to `kubernetes-validate --strict`, then check the custom resources it skipped."""
    report = SchemaReport()
    cmd = [kubernetes_validate_bin(), "--strict", "-k", version, "--quiet", "-"]
    proc = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=300, check=False)
    skipped: set[tuple[str, str]] = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if not line:
            continue
        m = _WARN_CRD.search(line)
        if line.startswith("WARN") and m and (m.group(2), m.group(1)) in CUSTOM_RESOURCE_SCHEMAS:
            skipped.add((m.group(2), m.group(1)))
            continue
        report.errors.append(f"kubernetes-validate: {line}")
    if proc.returncode != 0 and not report.errors:
        report.errors.append(f"kubernetes-validate exited with status {proc.returncode}")
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCE_SCHEMAS:
            report.errors += validate_custom_resource(obj)
            report.custom += 1
        else:
            report.builtin += 1
    missing = skipped - {(o["apiVersion"], o["kind"]) for o in objects}
    report.errors += [f"kubernetes-validate skipped {k} {v}, which is not in the rendered objects" for v, k in missing]
    return report


# ------------------------------------------------------------------------------------- object helpers
def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "Deployment":
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "Job":
        return obj["spec"]["template"]["spec"]
    return None


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def where(obj: dict[str, Any], container: dict[str, Any] | None = None) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}" + (f" container {container['name']}" if container else "")


def port_matches(port: Any, container: dict[str, Any]) -> bool:
    return any(port in (p.get("name"), p.get("containerPort")) for p in container.get("ports", []))


def flag(args: list[str], name: str) -> str | None:
    """The value of --name=VALUE (or --name VALUE) in a container's args."""
    for i, a in enumerate(args):
        if a.startswith(f"{name}="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None


def config_maps(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}


def volume_config_maps(spec: dict[str, Any], volume_name: str) -> list[str]:
    for v in spec.get("volumes", []):
        if v["name"] != volume_name:
            continue
        if "configMap" in v:
            return [v["configMap"]["name"]]
        if "projected" in v:
            return [s["configMap"]["name"] for s in v["projected"]["sources"] if "configMap" in s]
    return []


def mounted_file(spec: dict[str, Any], container: dict[str, Any], objects: list[dict[str, Any]],
                 path: str) -> str | None:
    """The content of file `path` as this container sees it, when it comes from a ConfigMap volume."""
    cms = config_maps(objects)
    for m in container.get("volumeMounts", []):
        prefix = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        key = path[len(prefix):]
        for cm in volume_config_maps(spec, m["name"]):
            data = cms.get(cm, {}).get("data", {})
            if key in data:
                return data[key]
    return None


def textproto_models(text: str) -> dict[str, str]:
    """name -> base_path of the models of a TF Serving model config file ({} when it does not parse)."""
    try:
        config = parse_tfserving_config("models.config", text)
    except ValueError:
        return {}
    return {c.name: c.base_path for c in config.model_config_list.config}


# TF Serving's config files are text protobufs. ModelServerConfig comes with tensorflow-serving-api; the
# batching and monitoring messages do not, so these mirror TF Serving's own definitions
# (servables/tensorflow/session_bundle_config.proto BatchingParameters, config/monitoring_config.proto), with
# the same field names, numbers and types: a misspelt or mistyped field fails to parse here as it would there.
# (name, number, type, repeated); a type starting with "." is a message.
_MIRROR_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "BatchingParameters": [
        ("max_batch_size", 1, ".google.protobuf.Int64Value", False),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", False),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", False),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value", False),
        ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
        ("allowed_batch_sizes", 6, "int64", True),
        ("pad_variable_length_inputs", 7, "bool", False),
    ],
    "PrometheusConfig": [("enable", 1, "bool", False), ("path", 2, "string", False)],
    "MonitoringConfig": [("prometheus_config", 1, ".sipec_k8s_check.PrometheusConfig", False)],
}
_mirror_classes: dict[str, Any] = {}


def _mirror(name: str) -> Any:
    """A new, empty message of one of _MIRROR_MESSAGES."""
    if not _mirror_classes:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

        fd = descriptor_pb2.FieldDescriptorProto
        scalar = {"int64": fd.TYPE_INT64, "bool": fd.TYPE_BOOL, "string": fd.TYPE_STRING}
        pool = descriptor_pool.DescriptorPool()
        pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
        file = descriptor_pb2.FileDescriptorProto(name="sipec_k8s_check.proto", package="sipec_k8s_check",
                                                  dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
        for message, fields in _MIRROR_MESSAGES.items():
            m = file.message_type.add(name=message)
            for field_name, number, type_name, repeated in fields:
                f = m.field.add(name=field_name, number=number,
                                label=fd.LABEL_REPEATED if repeated else fd.LABEL_OPTIONAL)
                if type_name.startswith("."):
                    f.type, f.type_name = fd.TYPE_MESSAGE, type_name
                else:
                    f.type = scalar[type_name]
        pool.Add(file)
        for message in _MIRROR_MESSAGES:
            _mirror_classes[message] = message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"sipec_k8s_check.{message}"))
    return _mirror_classes[name]()


def parse_tfserving_config(key: str, text: str) -> Any:
    """A TF Serving config file (models.config, batching.config or monitoring.config) parsed into its
    message; ValueError naming the problem when it does not parse."""
    from google.protobuf import text_format

    if key == "models.config":
        return parse_model_config(text, key)
    if key == "batching.config":
        message = _mirror("BatchingParameters")
    elif key == "monitoring.config":
        message = _mirror("MonitoringConfig")
    else:
        raise ValueError(f"{key}: not a TF Serving config file")
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ValueError(f"{key}: {exc}") from exc
    return message


def check_tfserving_configs(objects: list[dict[str, Any]]) -> list[str]:
    """Every TF Serving config file in a ConfigMap parses as TF Serving's message, with sensible values."""
    errors = []
    for cm in config_maps(objects).values():
        for key, text in cm.get("data", {}).items():
            if key not in ("models.config", "batching.config", "monitoring.config"):
                continue
            where_ = f"ConfigMap/{cm['metadata']['name']} {key}"
            try:
                msg = parse_tfserving_config(key, text)
            except ValueError as exc:
                errors.append(f"{where_}: {exc}")
                continue
            if key == "models.config":
                configs = msg.model_config_list.config
                if not configs:
                    errors.append(f"{where_}: no model in model_config_list")
                for c in configs:
                    if c.model_platform != "tensorflow" or not c.model_version_policy.HasField("specific"):
                        errors.append(f"{where_}: {c.name}: needs model_platform tensorflow and a specific version "
                                      "policy (one pinned version)")
            elif key == "batching.config":
                if msg.max_batch_size.value < 1 or msg.num_batch_threads.value < 1:
                    errors.append(f"{where_}: max_batch_size and num_batch_threads must be at least 1")
                sizes = list(msg.allowed_batch_sizes)
                if sizes and (sizes != sorted(sizes) or sizes[-1] != msg.max_batch_size.value):
                    errors.append(f"{where_}: allowed_batch_sizes must increase and end at max_batch_size")
            elif not msg.prometheus_config.enable or msg.prometheus_config.path != TFSERVING_METRICS_PATH:
                errors.append(f"{where_}: Prometheus must be enabled at {TFSERVING_METRICS_PATH} (the ServiceMonitor "
                              "scrapes it)")
    return errors


# ------------------------------------------------------------------------------------ consistency
def check_ports_and_probes(objects: list[dict[str, Any]]) -> list[str]:
    """Every probe names a port its own container exposes; gRPC probes use a port number."""
    errors = []
    for obj in workloads(objects):
        for c in containers(pod_spec(obj)):
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                for action in ("grpc", "httpGet", "tcpSocket"):
                    if action in probe and not port_matches(probe[action]["port"], c):
                        errors.append(f"{where(obj, c)}: {kind}.{action}.port {probe[action]['port']!r} is not a "
                                      "port this container exposes")
            if obj["kind"] == "Deployment" and c in pod_spec(obj)["containers"] \
                    and not (c.get("readinessProbe") and c.get("livenessProbe")):
                errors.append(f"{where(obj, c)}: needs a readinessProbe and a livenessProbe")
            # a SIPEC gRPC server: liveness and startup ask the process (`liveness`), never the overall status,
            # which follows the model backend (a slow model load or a TF Serving restart would get a healthy
            # container killed); readiness asks the service itself
            for kind in ("startupProbe", "livenessProbe"):
                service = (c.get(kind) or {}).get("grpc", {}).get("service", "")
                if "grpc" in (c.get(kind) or {}) and service != LIVENESS:
                    errors.append(f"{where(obj, c)}: {kind}.grpc.service is {service!r}; use {LIVENESS!r} (the "
                                  "process, not the model backend)")
            if "grpc" in (c.get("readinessProbe") or {}) and not c["readinessProbe"]["grpc"].get("service"):
                errors.append(f"{where(obj, c)}: readinessProbe.grpc.service is empty; name the service")
    return errors


def check_services(objects: list[dict[str, Any]]) -> list[str]:
    """Every Service selects pods, and each of its ports targets a port one of their containers exposes."""
    errors = []
    for svc in (o for o in objects if o["kind"] == "Service"):
        selector = svc["spec"].get("selector", {})
        pods = [w for w in workloads(objects) if selects(selector, pod_labels(w))]
        if not pods:
            errors.append(f"Service/{svc['metadata']['name']}: selector {selector} matches no workload")
            continue
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in pods:
                if not any(port_matches(target, c) for c in pod_spec(w)["containers"]):
                    errors.append(f"Service/{svc['metadata']['name']} port {port.get('name', port['port'])}: "
                                  f"targetPort {target!r} is not exposed by {where(w)}")
    return errors


def _batch_fits(dep: dict[str, Any], module: dict[str, Any], tfs: dict[str, Any], batching: str | None) -> list[str]:
    """The module sends Predict calls of exactly `--batch-size` items (sipec/serving/batching.py): TF Serving's
    batching must accept that many in one request (at most max_batch_size; it pads up to the next of
    allowed_batch_sizes, which end at max_batch_size), or real TF Serving refuses every call. (The config mirror
    has no enable_large_batch_splitting field, so a config cannot turn splitting on unnoticed.)"""
    if batching is None:
        return []
    from sipec.serving.batching import DEFAULT_BATCH_SIZE

    args = module.get("args", [])
    given = flag(args, "--batch-size")
    batch = DEFAULT_BATCH_SIZE if given is None else int(given)
    what = f"--batch-size {batch}"
    if batch == 0:   # no fixed calls: one Predict per request, up to --max-batch items
        if flag(args, "--max-batch") is None:
            return [f"{where(dep, module)}: --batch-size 0 sends whole requests; give --max-batch so that it can be "
                    "checked against TF Serving's max_batch_size"]
        batch, what = int(flag(args, "--max-batch")), f"--batch-size 0 with --max-batch {flag(args, '--max-batch')}"
    msg = parse_tfserving_config("batching.config", batching)
    largest = msg.max_batch_size.value
    if batch > largest:
        return [f"{where(dep, module)}: {what}: Predict calls of {batch} items, above TF Serving's max_batch_size "
                f"{largest}: every one would be refused"]
    return []


def _versions_pinned(dep: dict[str, Any], module: dict[str, Any], tfs: dict[str, Any], config: str) -> list[str]:
    """Every model of the pod's TF Serving config pins one version, and the module asks for that version
    (--model-version, --features-model-version): one video is never analysed by two versions, and a rollout
    of a new version is a change of the pod template that `kubectl rollout undo` reverses."""
    try:
        versions = served_versions(config)
    except ValueError as exc:
        return [f"{where(dep, tfs)}: {exc}"]
    errors = []   # a model that follows the newest version is reported by check_tfserving_configs
    args = module.get("args", [])
    for name_flag, version_flag in (("--model-name", "--model-version"),
                                    ("--features-model", "--features-model-version")):
        name = flag(args, name_flag)
        if not name or not versions.get(name):
            continue
        asked = flag(args, version_flag)
        if asked != str(versions[name]):
            errors.append(f"{where(dep, module)}: {version_flag} {asked} but TF Serving pins {name} version "
                          f"{versions[name]}: give {version_flag}={versions[name]}")
    return errors


def check_module_wiring(objects: list[dict[str, Any]]) -> list[str]:
    """The module's flags, its ports, TF Serving's flags, model config and probe paths agree."""
    errors = []
    for dep in (o for o in objects if o["kind"] == "Deployment"):
        spec = pod_spec(dep)
        cs = {c["name"]: c for c in spec["containers"]}
        tfs = cs.get("tfserving")
        for c in spec["containers"]:
            args = c.get("args", [])
            if "serve" not in args:
                continue
            port = flag(args, "--port")
            if port is None or not port_matches(int(port), c):
                errors.append(f"{where(dep, c)}: --port {port} is not a container port")
            drain, grace = flag(args, "--drain-streams-s"), flag(args, "--grace-s")
            if "orchestrator" not in args and (drain is None or grace is None or float(drain) > float(grace)):
                errors.append(f"{where(dep, c)}: a module ends its streams when it stops (--drain-streams-s, at most "
                              f"--grace-s; got {drain} and {grace}), so the orchestrator resumes at another pod "
                              "at once instead of when the grace period ends")
            metrics = flag(args, "--metrics-port")
            if metrics is None or not port_matches(int(metrics), c) or not port_matches("metrics", c):
                errors.append(f"{where(dep, c)}: --metrics-port {metrics} must be its port named metrics")
            if flag(args, "--backend") != "tfserving":
                continue
            if tfs is None:
                errors.append(f"{where(dep, c)}: --backend=tfserving but no tfserving container in the pod")
                continue
            address = flag(args, "--tfserving") or ""
            host, _, tport = address.rpartition(":")
            if host != "localhost" or not tport.isdigit() or not port_matches(int(tport), tfs):
                errors.append(f"{where(dep, c)}: --tfserving {address!r} is not localhost:<a tfserving port>")
            targs = tfs.get("args", [])
            for required in TFSERVING_REQUIRED_FLAGS:
                if not any(a.startswith(required) for a in targs):
                    errors.append(f"{where(dep, tfs)}: missing {required}")
            config_path = flag(targs, "--model_config_file") or ""
            models = textproto_models(mounted_file(spec, tfs, objects, config_path) or "")
            if not models:
                errors.append(f"{where(dep, tfs)}: no model config at {config_path} (from a ConfigMap)")
                continue
            for path_flag in ("--batching_parameters_file", "--monitoring_config_file"):
                if mounted_file(spec, tfs, objects, flag(targs, path_flag) or "") is None:
                    errors.append(f"{where(dep, tfs)}: {path_flag} names no file of a mounted ConfigMap")
            errors += _batch_fits(dep, c, tfs, mounted_file(spec, tfs, objects,
                                                            flag(targs, "--batching_parameters_file") or ""))
            wanted = [flag(args, "--model-name"), flag(args, "--features-model")]
            for name in filter(None, wanted):
                if name not in models:
                    errors.append(f"{where(dep, c)}: model {name!r} is not in TF Serving's config ({sorted(models)})")
            errors += _versions_pinned(dep, c, tfs, mounted_file(spec, tfs, objects, config_path) or "")
            for name, base in models.items():
                if base != f"/models/{name}":
                    errors.append(f"{where(dep, tfs)}: model {name} base_path {base} is not /models/{name}")
            if not any(m["mountPath"] == "/models" for m in tfs.get("volumeMounts", [])):
                errors.append(f"{where(dep, tfs)}: the model repository is not mounted at /models")
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = (tfs.get(kind) or {}).get("httpGet")
                if get is None:
                    errors.append(f"{where(dep, tfs)}: {kind} must be an httpGet on /v1/models/<name>")
                    continue
                m = re.fullmatch(r"/v1/models/([A-Za-z0-9_.-]+)", get.get("path", ""))
                if not m or m.group(1) not in models:
                    errors.append(f"{where(dep, tfs)}: {kind} path {get.get('path')} names no served model")
    return errors


def check_endpoints(objects: list[dict[str, Any]]) -> list[str]:
    """endpoints.yaml: each module at dns:///<headless Service>.<namespace>.svc.cluster.local:<its gRPC port>."""
    errors = []
    for cm in config_maps(objects).values():
        text = cm.get("data", {}).get("endpoints.yaml")
        if text is None:
            continue
        from sipec.serving.stubs import SERVICES

        endpoints = yaml.safe_load(text)
        if isinstance(endpoints, dict) and "sites" in endpoints:
            # several sites: this cluster's own addresses (dns:///) are checked, the partners' cannot be
            endpoints = {m: a for site in (endpoints["sites"] or {}).values() if isinstance(site, dict)
                         for m, a in (site.get("modules") or {}).items() if str(a).startswith("dns:///")}
        elif set(endpoints) != set(SERVICES):
            errors.append(f"ConfigMap/{cm['metadata']['name']}: modules {sorted(endpoints)} != {sorted(SERVICES)}")
        for module, address in endpoints.items():
            m = re.fullmatch(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address)
            if not m:
                errors.append(f"endpoints.yaml {module}: {address!r} is not dns:///<svc>.<ns>.svc.cluster.local:<port>")
                continue
            name, namespace, port = m.group(1), m.group(2), int(m.group(3))
            svc = next((o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == name), None)
            if svc is None:
                errors.append(f"endpoints.yaml {module}: no Service {name}")
                continue
            if svc["metadata"].get("namespace") != namespace:
                errors.append(f"endpoints.yaml {module}: Service {name} is in {svc['metadata'].get('namespace')}, "
                              f"not {namespace}")
            if svc["spec"].get("clusterIP") != "None":
                errors.append(f"endpoints.yaml {module}: Service {name} must be headless for round-robin")
            if not any(p["port"] == port for p in svc["spec"]["ports"]):
                errors.append(f"endpoints.yaml {module}: Service {name} has no port {port}")
    return errors


def check_pipeline_config(objects: list[dict[str, Any]]) -> list[str]:
    from orchestrator.config import ConfigError, parse_config

    errors = []
    for cm in config_maps(objects).values():
        text = cm.get("data", {}).get("pipeline.yaml")
        if text is not None:
            try:
                parse_config(yaml.safe_load(text), f"ConfigMap/{cm['metadata']['name']} pipeline.yaml")
            except ConfigError as exc:
                errors.append(str(exc))
    return errors


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                  "StorageClass", "PersistentVolume", "APIService", "IngressClass", "RuntimeClass",
                  "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}


def check_namespaces(objects: list[dict[str, Any]]) -> list[str]:
    """Every namespaced object names its namespace, and one rendering uses one: otherwise `kubectl apply` puts it in
    the caller's current namespace (often `default`) and `sipec deploy` stops part-way ("Namespace is required")."""
    errors = []
    used = sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")})
    for o in objects:
        if o["kind"] not in CLUSTER_SCOPED and not o["metadata"].get("namespace"):
            errors.append(f"{o['kind']}/{o['metadata']['name']} has no namespace (the others: {', '.join(used)}); "
                          "set `namespace:` in the kustomization that adds it")
    if len(used) > 1:
        errors.append(f"objects in several namespaces: {', '.join(used)}")
    return errors


def check_security(objects: list[dict[str, Any]]) -> list[str]:
    """Non-root, read-only root filesystem, no privilege escalation, requests and limits, no API token."""
    errors = []
    for obj in workloads(objects):
        spec = pod_spec(obj)
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            errors.append(f"{where(obj)}: pod securityContext needs runAsNonRoot: true and a runAsUser")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            errors.append(f"{where(obj)}: pod securityContext needs seccompProfile RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            errors.append(f"{where(obj)}: automountServiceAccountToken must be false")
        for c in containers(spec):
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False \
                    or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{where(obj, c)}: needs readOnlyRootFilesystem, no privilege escalation, "
                              "capabilities drop ALL")
            res = c.get("resources", {})
            if not {"cpu", "memory"} <= set(res.get("requests", {})) or "memory" not in res.get("limits", {}):
                errors.append(f"{where(obj, c)}: needs cpu and memory requests and a memory limit")
            if not any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])):
                errors.append(f"{where(obj, c)}: read-only root filesystem but no writable /tmp")
    return errors


def adapter_metric_names(k8s: Path = K8S) -> set[str]:
    config = yaml.safe_load((k8s / "monitoring" / "adapter-config.yaml").read_text())
    return {rule["name"]["as"] for rule in config.get("rules", [])}


def check_autoscaling(objects: list[dict[str, Any]], metric_names: set[str]) -> list[str]:
    """HPAs target existing Deployments on metrics the adapter serves; PDBs select workloads; an
    HPA-scaled Deployment leaves `replicas` to it; every Deployment has a PDB."""
    errors = []
    deps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    scaled = set()
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if target["kind"] != "Deployment" or target["name"] not in deps:
            errors.append(f"HPA/{hpa['metadata']['name']}: targets no Deployment here ({target})")
        scaled.add(target["name"])
        dep = deps.get(target["name"])
        deep = dep is not None and dep["metadata"].get("labels", {}).get("sipec.io/deep-network") == "true"
        names = []
        for metric in hpa["spec"].get("metrics", []):
            if metric["type"] == "Pods":
                names.append(metric["pods"]["metric"]["name"])
                if names[-1] not in metric_names:
                    errors.append(f"HPA/{hpa['metadata']['name']}: metric {names[-1]} is not "
                                  f"served by k8s/monitoring/adapter-config.yaml ({sorted(metric_names)})")
            if metric["type"] == "ContainerResource" and dep is not None and metric["containerResource"][
                    "container"] not in {c["name"] for c in containers(pod_spec(dep))}:
                errors.append(f"HPA/{hpa['metadata']['name']}: container {metric['containerResource']['container']}"
                              f" is not in Deployment/{target['name']}")
        if deep and names != [BUSY_METRIC]:
            errors.append(f"HPA/{hpa['metadata']['name']}: a network module scales on {BUSY_METRIC} (its model "
                          f"backend's duty cycle), not on {names or 'resources'}: calls in flight count open video "
                          "streams, not load")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            errors.append(f"HPA/{hpa['metadata']['name']}: minReplicas above maxReplicas")
    for name, dep in deps.items():
        if name in scaled and "replicas" in dep["spec"]:
            errors.append(f"Deployment/{name}: scaled by an HPA, so it must not set replicas")
        if name not in scaled and "replicas" not in dep["spec"]:
            errors.append(f"Deployment/{name}: sets no replicas and no HPA scales it")
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for pdb in pdbs:
        sel = pdb["spec"]["selector"]["matchLabels"]
        if not any(selects(sel, pod_labels(w)) for w in workloads(objects)):
            errors.append(f"PDB/{pdb['metadata']['name']}: selects no pods")
    for name, dep in deps.items():
        if not any(selects(p["spec"]["selector"]["matchLabels"], pod_labels(dep)) for p in pdbs):
            errors.append(f"Deployment/{name}: no PodDisruptionBudget")
    return errors


def gpu_limits(container: dict[str, Any]) -> dict[str, Any]:
    """The container's GPU limits: whole GPUs (nvidia.com/gpu) and MIG slices (nvidia.com/mig-1g.10gb ...)."""
    return {k: v for k, v in container.get("resources", {}).get("limits", {}).items() if GPU_RESOURCE.match(k)}


def _image_tag(image: str) -> str:
    """The tag of an image reference ('' when it is pinned by digest only)."""
    name = image.split("@", 1)[0]
    return name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""


def uses_gpus(objects: list[dict[str, Any]]) -> bool:
    """Whether a rendering is a GPU deployment: a deep network's TF Serving asks for a GPU or a MIG slice."""
    return any(c["name"] == "tfserving" and gpu_limits(c)
               for obj in workloads(objects)
               if obj["metadata"].get("labels", {}).get("sipec.io/deep-network") == "true"
               for c in containers(pod_spec(obj)))


def check_gpu(objects: list[dict[str, Any]]) -> list[str]:
    """A GPU deployment (any deep network's TF Serving asks for a GPU; whatever the overlay is called): every
    deep-network TF Serving gets one GPU or one MIG slice, the GPU build (tag ``-gpu``; an image pinned by digest
    alone is taken as given), the toleration and a node selector; nothing else asks for a GPU. A CPU deployment:
    no GPU at all."""
    errors = []
    gpu = uses_gpus(objects)
    for obj in workloads(objects):
        spec = pod_spec(obj)
        deep = obj["metadata"].get("labels", {}).get("sipec.io/deep-network") == "true"
        for c in containers(spec):
            limits = gpu_limits(c)
            tag = _image_tag(c["image"])
            if gpu and deep and c["name"] == "tfserving":
                if len(limits) != 1 or str(next(iter(limits.values()))) != "1":
                    errors.append(f"{where(obj, c)}: needs one GPU (nvidia.com/gpu: 1 or one MIG slice such as "
                                  f"nvidia.com/mig-1g.10gb: 1), has {limits or 'none'}")
                if tag and not tag.endswith("-gpu"):
                    errors.append(f"{where(obj, c)}: image {c['image']} is not the -gpu build")
                if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])) \
                        or not spec.get("nodeSelector"):
                    errors.append(f"{where(obj)}: a GPU pod needs the nvidia.com/gpu toleration and a nodeSelector")
            elif limits or tag.endswith("-gpu"):
                errors.append(f"{where(obj, c)}: asks for a GPU, which only deep-network TF Serving in a GPU "
                              "deployment should")
    return errors


def check_network_policies(objects: list[dict[str, Any]]) -> list[str]:
    errors = []
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    if any(o["kind"] == "Deployment" for o in objects) and not any(
            p["spec"]["podSelector"] == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies):
        errors.append("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
    for obj in workloads(objects):
        for c in pod_spec(obj)["containers"]:
            for port in c.get("ports", []):
                if port.get("name") != "metrics" or not policies:
                    continue
                if not any(selects(p["spec"]["podSelector"].get("matchLabels", {}), pod_labels(obj))
                           and any(pp.get("port") in ("metrics", port["containerPort"])
                                   for rule in p["spec"].get("ingress", []) for pp in rule.get("ports", []))
                           for p in policies):
                    errors.append(f"{where(obj, c)}: no NetworkPolicy lets Prometheus reach its metrics port")
    for pol in policies:
        selector = pol["spec"]["podSelector"].get("matchLabels", {})
        pods = [w for w in workloads(objects) if not selector or selects(selector, pod_labels(w))]
        for rule in pol["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port["port"], str) and not any(
                        port_matches(port["port"], c) for w in pods for c in pod_spec(w)["containers"]):
                    errors.append(f"NetworkPolicy/{pol['metadata']['name']}: port {port['port']} is on no pod it "
                                  "selects")
    return errors


def check_service_monitors(objects: list[dict[str, Any]]) -> list[str]:
    errors = []
    services = [o for o in objects if o["kind"] == "Service"]
    for sm in (o for o in objects if o["kind"] == "ServiceMonitor"):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        chosen = [s for s in services if selects(sel, s["metadata"].get("labels", {}))]
        if not chosen:
            errors.append(f"ServiceMonitor/{sm['metadata']['name']}: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            if not any(p.get("name") == ep.get("port") for s in chosen for p in s["spec"]["ports"]):
                errors.append(f"ServiceMonitor/{sm['metadata']['name']}: port {ep.get('port')} is on no Service "
                              "it selects")
    return errors


def check_jobs(objects: list[dict[str, Any]]) -> list[str]:
    errors = []
    for job in (o for o in objects if o["kind"] == "Job"):
        spec = job["spec"]
        if spec.get("completionMode") != "Indexed":
            errors.append(f"Job/{job['metadata']['name']}: must be an Indexed Job")
        name = job["metadata"]["name"]
        rules = spec.get("podFailurePolicy", {}).get("rules", [])
        if not any(r.get("action") == "Ignore" and any(c.get("type") == "DisruptionTarget"
                                                       for c in r.get("onPodConditions", [])) for r in rules):
            errors.append(f"Job/{name}: needs a podFailurePolicy rule Ignore on DisruptionTarget (evictions and "
                          "drains must not use up a video's retries)")
        if "backoffLimitPerIndex" not in spec:
            errors.append(f"Job/{name}: needs backoffLimitPerIndex (retries per video, not for the whole Job)")
        for c in pod_spec(job)["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if env.get("VIDEOS") != str(spec.get("completions")):
                errors.append(f"Job/{name}: env VIDEOS={env.get('VIDEOS')} must equal "
                              f"completions={spec.get('completions')} (one index per video)")
            listed = mounted_file(pod_spec(job), c, objects, "/etc/sipec/videos.txt")
            if listed is not None:
                count = sum(1 for line in listed.splitlines() if line and not line.startswith("#"))
                if count != spec.get("completions"):
                    errors.append(f"Job/{name}: videos.txt lists {count} video(s), completions is "
                                  f"{spec.get('completions')}: one index per video")
            for arg in c.get("command", [])[1:]:
                if arg.startswith("/etc/") and mounted_file(pod_spec(job), c, objects, arg) is None:
                    errors.append(f"{where(job, c)}: runs {arg}, which no mounted ConfigMap provides")
    return errors


# ------------------------------------------------------------------------------------- Dockerfiles
@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    out: list[Instruction] = []
    buf = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue   # comment lines inside a continued instruction are dropped by Docker too
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, value = buf.strip().partition(" ")
        if not re.fullmatch(r"[A-Za-z]+", keyword):
            raise ValueError(f"line {start}: not an instruction: {buf.strip()[:60]!r}")
        out.append(Instruction(keyword.upper(), value.strip(), start))
        buf = ""
    if buf:
        raise ValueError("the last instruction ends with a line continuation")
    return out


KNOWN_INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD",
                      "SHELL", "LABEL", "HEALTHCHECK", "VOLUME", "STOPSIGNAL", "ONBUILD"}


def dockerfile_for(image: str, root: Path = ROOT) -> Path | None:
    """services/<name>/Dockerfile or <name>/Dockerfile (the orchestrator) for image .../sipec/<name>:<tag>."""
    m = SIPEC_IMAGE.match(image)
    if not m:
        return None
    for candidate in (root / "services" / m.group(1) / "Dockerfile", root / m.group(1) / "Dockerfile"):
        if candidate.is_file():
            return candidate
    return None


def builder_section(text: str) -> str:
    """The text from `ARG BASE` to the runtime stage: the same in every SIPEC Dockerfile."""
    start = text.index("ARG BASE=")
    end = text.index("# ---- runtime")
    return text[start:end]


def _exec_form(value: str) -> list[str] | None:
    """The JSON array of an exec-form ENTRYPOINT/CMD/SHELL, or None for the shell form."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed) else None


def check_dockerfile(path: Path, expose: set[int], service: str, root: Path = ROOT) -> list[str]:
    rel = path.relative_to(root)
    try:
        ins = parse_dockerfile(path.read_text())
    except ValueError as exc:
        return [f"{rel}: {exc}"]
    errors = [f"{rel}:{i.line}: unknown instruction {i.keyword}" for i in ins if i.keyword not in KNOWN_INSTRUCTIONS]
    if not ins or ins[0].keyword != "ARG" or not ins[0].value.startswith("BASE="):
        errors.append(f"{rel}: must start with ARG BASE=<CPU base image> (the GPU build passes a CUDA base)")
    stages: list[str] = []
    for i in ins:
        if i.keyword == "FROM":
            words = i.value.split()
            if not words or words[0] != "${BASE}":
                errors.append(f"{rel}:{i.line}: FROM {i.value}: every stage builds FROM ${{BASE}}")
            stages.append(words[2] if len(words) == 3 and words[1].upper() == "AS" else "")
        if i.keyword == "COPY":
            words = shlex.split(i.value)
            from_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            if from_stage is not None:
                if from_stage not in stages[:-1]:
                    errors.append(f"{rel}:{i.line}: COPY --from={from_stage}: no earlier stage of that name")
            else:
                for src in paths[:-1]:
                    if not (root / src).exists():
                        errors.append(f"{rel}:{i.line}: COPY {src}: not in the repository (the build context)")
        if i.keyword == "RUN" and "pip install" in i.value:
            for cmd in re.findall(r"pip install[^;&|]*", i.value):
                if "--no-cache-dir" not in cmd:
                    errors.append(f"{rel}:{i.line}: `{cmd.strip()}` without --no-cache-dir")
        if i.keyword in ("ENTRYPOINT", "CMD", "SHELL") and _exec_form(i.value) is None:
            errors.append(f"{rel}:{i.line}: {i.keyword} must be a JSON array of strings (exec form)")
    if len(stages) < 2:
        errors.append(f"{rel}: must be multi-stage (a builder stage, then the runtime)")
    final = ins[max(n for n, i in enumerate(ins) if i.keyword == "FROM"):] if stages else []
    users = [i.value for i in final if i.keyword == "USER"]
    if not users or users[-1].split(":")[0] != "10001":
        errors.append(f"{rel}: the final stage must run as USER 10001")
    if not any(i.keyword == "RUN" and "scripts/gen_protos.py" in i.value for i in ins):
        errors.append(f"{rel}: must generate the gRPC stubs (python scripts/gen_protos.py)")
    exposed = {int(p.split("/")[0]) for i in ins if i.keyword == "EXPOSE" for p in i.value.split()}
    if not expose <= exposed:
        errors.append(f"{rel}: EXPOSE {sorted(exposed)} lacks {sorted(expose - exposed)} (ports of the manifests)")
    entry = [_exec_form(i.value) for i in final if i.keyword == "ENTRYPOINT"]
    cmd = [_exec_form(i.value) or [] for i in final if i.keyword == "CMD"]
    if not entry or entry[-1] != ["sipec"]:
        errors.append(f'{rel}: ENTRYPOINT must be ["sipec"] (the manifests pass its arguments)')
    if not cmd or "serve" not in cmd[-1] or cmd[-1][cmd[-1].index("serve") + 1:][:1] != [service]:
        errors.append(f"{rel}: CMD must run `sipec serve {service}`")
    return errors


def check_images(objects: list[dict[str, Any]], root: Path = ROOT) -> list[str]:
    """Every image is pinned; SIPEC images have their Dockerfile, exposing the ports the manifests use."""
    errors = []
    ports: dict[Path, set[int]] = {}
    services: dict[Path, str] = {}
    for obj in workloads(objects):
        for c in containers(pod_spec(obj)):
            image = c["image"]
            if EXTERNAL_IMAGES.match(image):
                continue
            m = SIPEC_IMAGE.match(image)
            if not m or not (m.group(3) or m.group(2) not in (None, "latest")):
                errors.append(f"{where(obj, c)}: image {image!r} is neither sipec/<service> pinned by a tag (not "
                              "latest) or a digest nor an allowed external image")
                continue
            dockerfile = dockerfile_for(image, root)
            if dockerfile is None:
                errors.append(f"{where(obj, c)}: image {image}: no services/{m.group(1)}/Dockerfile or "
                              f"{m.group(1)}/Dockerfile")
                continue
            ports.setdefault(dockerfile, set()).update(p["containerPort"] for p in c.get("ports", []))
            services[dockerfile] = m.group(1)
    for dockerfile, expose in sorted(ports.items()):
        errors += check_dockerfile(dockerfile, expose, services[dockerfile], root)
    return errors


def check_all_dockerfiles(root: Path = ROOT) -> list[str]:
    """Every SIPEC Dockerfile parses and shares the builder stage with the others."""
    files = sorted(root.glob("services/*/Dockerfile")) + sorted(root.glob("orchestrator/Dockerfile"))
    errors = []
    sections: dict[str, list[str]] = {}
    for f in files:
        rel = str(f.relative_to(root))
        try:
            parse_dockerfile(f.read_text())
            sections.setdefault(builder_section(f.read_text()), []).append(rel)
        except ValueError as exc:
            errors.append(f"{rel}: {exc}")
    if len(sections) > 1:
        groups = "; ".join(", ".join(v) for v in sections.values())
        errors.append(f"the Dockerfiles' builder stages differ (keep them identical): {groups}")
    service = [f.parent.name for f in files]
    for name in ("segnet", "idnet", "posenet", "behavenet", "tracker", "orchestrator"):
        if name not in service:
            errors.append(f"no Dockerfile for {name}")
    return errors


def consistency_errors(objects: list[dict[str, Any]], root: Path = ROOT,
                       metric_names: set[str] | None = None) -> list[str]:
    if metric_names is None:
        metric_names = adapter_metric_names(root / "k8s")
    return (check_namespaces(objects) + check_ports_and_probes(objects) + check_services(objects)
            + check_module_wiring(objects)
            + check_tfserving_configs(objects) + check_endpoints(objects) + check_pipeline_config(objects)
            + check_security(objects)
            + check_autoscaling(objects, metric_names) + check_gpu(objects)
            + check_network_policies(objects) + check_service_monitors(objects) + check_jobs(objects)
            + check_images(objects, root))


def check_kustomization(path: Path) -> tuple[list[str], str]:
    """(problems, one-line summary) of one kustomization directory."""
    text = render(path)
    objects = parse_manifests(text, f"kubectl kustomize {path}")
    schemas = validate_schemas(text, objects)
    errors = schemas.errors + consistency_errors(objects)
    if path.parent.name == "overlays" and path.name in SHIPPED_GPU_OVERLAYS and not uses_gpus(objects):
        errors.append(f"{path.name}: the shipped GPU overlay renders no GPU for the deep networks")
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    summary = (f"{rel}: {len(objects)} objects; {schemas.builtin} built-in (kubernetes-validate --strict, "
               f"Kubernetes {KUBERNETES_VERSION}), {schemas.custom} custom resources (sipec CRD schemas); "
               + ("consistent" if not errors else f"{len(errors)} problem(s)"))
    return errors, summary


def main() -> int:
    if shutil.which("kubectl") is None:
        print("k8s-check: kubectl not found (it renders the kustomizations)", file=sys.stderr)
        return 1
    problems = check_all_dockerfiles()
    for path in kustomizations():
        try:
            errors, summary = check_kustomization(path)
        except Exception as exc:  # noqa: BLE001 - reported as a failure of this kustomization
            errors, summary = [f"{path}: {exc}"], f"{path}: FAILED"
        print(f"k8s-check: {summary}")
        problems += errors
    for p in problems:
        print(f"k8s-check: FAIL: {p}", file=sys.stderr)
    if problems:
        print(f"k8s-check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("k8s-check: all kustomizations valid and consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
