"""The Kubernetes manifests (k8s/): rendered, strictly validated, consistent; and the checks themselves catch
what they claim to (each check is also run on a deliberately broken copy). The same code is `make k8s-check`
(scripts/k8s_check.py). Needs kubectl (its kustomize) and kubernetes-validate; no cluster, no network."""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")


def _load_checker():
    spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "scripts" / "k8s_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["k8s_check"] = module
    spec.loader.exec_module(module)
    return module


kc = _load_checker()


def _rendered(overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(kc.render(ROOT / "k8s" / "overlays" / overlay)) if d]


@pytest.fixture(scope="module")
def gpu_objects() -> list[dict]:
    return _rendered("gpu")


@pytest.fixture(scope="module")
def cpu_objects() -> list[dict]:
    return _rendered("cpu")


def _find(objects: list[dict], kind: str, name: str) -> dict:
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise KeyError(f"{kind}/{name}")


def _container(dep: dict, name: str) -> dict:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == name)


# ------------------------------------------------------------------------------------- the real thing
def test_every_kustomization_is_found():
    names = {str(p.relative_to(ROOT / "k8s")) for p in kc.kustomizations()}
    assert {"base", "overlays/gpu", "overlays/cpu", "overlays/gpu-facility", "batch", "monitoring", "tools"} <= names
    assert "components/facility-gateway" not in names   # a Component renders through the overlays using it


@needs_kubectl
@pytest.mark.parametrize("path", kc.kustomizations(), ids=lambda p: str(p.relative_to(ROOT / "k8s")))
def test_kustomization_renders_validates_strictly_and_is_consistent(path):
    errors, summary = kc.check_kustomization(path)
    assert not errors, summary + "\n" + "\n".join(errors)


def test_dockerfiles_parse_and_share_their_builder_stage():
    assert kc.check_all_dockerfiles() == []


@needs_kubectl
def test_overlays_differ_where_they_should(gpu_objects, cpu_objects):
    for name in ("segnet", "idnet", "posenet", "behavenet"):
        gpu_tfs = _container(_find(gpu_objects, "Deployment", name), "tfserving")
        cpu_tfs = _container(_find(cpu_objects, "Deployment", name), "tfserving")
        assert gpu_tfs["image"].endswith("-gpu") and gpu_tfs["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert "nvidia.com/gpu" not in cpu_tfs["resources"]["limits"]
        assert "--tensorflow_intra_op_parallelism=4" in cpu_tfs["args"]
        gpu_batching = _find_batching(gpu_objects, name)
        assert gpu_batching != _find_batching(cpu_objects, name)
    tracker = _container(_find(gpu_objects, "Deployment", "tracker"), "tfserving")
    assert not tracker["image"].endswith("-gpu")   # the depth model stays on the CPU


def _find_batching(objects: list[dict], module: str) -> str:
    dep = _find(objects, "Deployment", module)
    cm = kc.volume_config_maps(dep["spec"]["template"]["spec"], "tfserving-config")[0]
    return _find(objects, "ConfigMap", cm)["data"]["batching.config"]


@needs_kubectl
def test_module_services_are_headless_and_named_in_the_endpoints(gpu_objects):
    endpoints = yaml.safe_load(_find(gpu_objects, "ConfigMap", "sipec-endpoints")["data"]["endpoints.yaml"])
    for module, address in endpoints.items():
        assert address.startswith("dns:///") and f"{module}.sipec.svc.cluster.local" in address
        assert _find(gpu_objects, "Service", module)["spec"]["clusterIP"] == "None"


# ------------------------------------------------------------------- the checks catch what they claim
@needs_kubectl
def test_strict_schema_validation_rejects_an_unknown_field_and_a_wrong_type(gpu_objects):
    dep = copy.deepcopy(_find(gpu_objects, "Deployment", "segnet"))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    report = kc.validate_schemas(yaml.safe_dump(dep), [dep])
    assert report.errors and "imagePullPolicyy" in " ".join(report.errors)
    dep = copy.deepcopy(_find(gpu_objects, "HorizontalPodAutoscaler", "segnet"))
    dep["spec"]["maxReplicas"] = "eight"
    assert kc.validate_schemas(yaml.safe_dump(dep), [dep]).errors


@needs_kubectl
def test_custom_resources_are_checked_by_our_schema_and_unknown_kinds_fail(gpu_objects):
    sm = copy.deepcopy(_find(gpu_objects, "ServiceMonitor", "sipec-modules"))
    assert kc.validate_schemas(yaml.safe_dump(sm), [sm]).errors == []
    sm["spec"]["endpoints"][0]["intervall"] = "15s"
    assert any("intervall" in e for e in kc.validate_schemas(yaml.safe_dump(sm), [sm]).errors)
    cert = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "x"}, "spec": {}}
    errors = kc.validate_schemas(yaml.safe_dump(cert), [cert]).errors
    assert errors and "Certificate" in errors[0]


def test_probe_and_service_ports_must_exist(gpu_objects):
    objects = copy.deepcopy(gpu_objects)
    dep = _find(objects, "Deployment", "posenet")
    _container(dep, "posenet")["readinessProbe"]["grpc"]["port"] = 50099
    _container(dep, "tfserving")["livenessProbe"]["httpGet"]["port"] = "rest"
    errors = kc.check_ports_and_probes(objects)
    assert any("50099" in e for e in errors) and any("'rest'" in e for e in errors)
    _find(objects, "Service", "idnet")["spec"]["ports"][0]["targetPort"] = "grcp"
    assert any("grcp" in e for e in kc.check_services(objects))
    _find(objects, "Service", "tracker")["spec"]["selector"] = {"app.kubernetes.io/name": "trackr"}
    assert any("matches no workload" in e for e in kc.check_services(objects))


def test_module_wiring_mismatches_are_caught(gpu_objects):
    objects = copy.deepcopy(gpu_objects)
    module = _container(_find(objects, "Deployment", "behavenet"), "behavenet")
    module["args"] = [a.replace("--features-model=behavenet-features", "--features-model=behavenet-feats")
                      for a in module["args"]]
    tfs = _container(_find(objects, "Deployment", "segnet"), "tfserving")
    tfs["readinessProbe"]["httpGet"]["path"] = "/v1/models/segnett"
    tfs["args"] = [a for a in tfs["args"] if not a.startswith("--monitoring_config_file")]
    seg = _container(_find(objects, "Deployment", "segnet"), "segnet")
    seg["args"] = [a.replace("localhost:8500", "localhost:9500") for a in seg["args"]]
    errors = "\n".join(kc.check_module_wiring(objects))
    assert "behavenet-feats" in errors and "segnett" in errors
    assert "--monitoring_config_file" in errors and "localhost:9500" in errors


def test_model_versions_are_pinned_and_the_module_asks_for_them(gpu_objects):
    """One video, one version: TF Serving serves one pinned version and the module's Predict calls name it."""
    assert kc.check_module_wiring(gpu_objects) == [] and kc.check_tfserving_configs(gpu_objects) == []
    objects = copy.deepcopy(gpu_objects)
    idnet = _container(_find(objects, "Deployment", "idnet"), "idnet")
    idnet["args"] = [a for a in idnet["args"] if not a.startswith("--model-version")]
    beh = _container(_find(objects, "Deployment", "behavenet"), "behavenet")
    beh["args"] = [a.replace("--features-model-version=1", "--features-model-version=2") for a in beh["args"]]
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("tfserving-posenet"))
    cm["data"]["models.config"] = cm["data"]["models.config"].replace("specific { versions: 1 }",
                                                                      "latest { num_versions: 1 }")
    errors = "\n".join(kc.check_module_wiring(objects) + kc.check_tfserving_configs(objects))
    assert "--model-version None but TF Serving pins idnet version 1" in errors
    assert "--features-model-version 2 but TF Serving pins behavenet-features version 1" in errors
    assert "posenet: needs model_platform tensorflow and a specific version policy" in errors


def test_endpoints_must_name_headless_services_and_their_ports(gpu_objects):
    objects = copy.deepcopy(gpu_objects)
    cm = _find(objects, "ConfigMap", "sipec-endpoints")
    cm["data"]["endpoints.yaml"] = cm["data"]["endpoints.yaml"].replace(":50053", ":50059")
    _find(objects, "Service", "segnet")["spec"]["clusterIP"] = "10.0.0.7"
    errors = "\n".join(kc.check_endpoints(objects))
    assert "no port 50059" in errors and "headless" in errors


def test_images_need_a_pinned_tag_and_a_dockerfile(gpu_objects):
    objects = copy.deepcopy(gpu_objects)
    _container(_find(objects, "Deployment", "idnet"), "idnet")["image"] = "sipec/idnet:latest"
    _container(_find(objects, "Deployment", "posenet"), "posenet")["image"] = "sipec/posenet2:0.1.0"
    _container(_find(objects, "Deployment", "segnet"), "tfserving")["image"] = "tensorflow/serving:latest-gpu"
    errors = "\n".join(kc.check_images(objects))
    assert "sipec/idnet:latest" in errors and "services/posenet2/Dockerfile" in errors
    assert "tensorflow/serving:latest-gpu" in errors


def test_the_modules_batch_fits_tf_servings_batching(cpu_objects):
    assert kc.check_module_wiring(cpu_objects) == []
    objects = copy.deepcopy(cpu_objects)
    _container(_find(objects, "Deployment", "idnet"), "idnet")["args"] += ["--batch-size", "64"]   # max_batch_size 32
    errors = "\n".join(kc.check_module_wiring(objects))
    assert "--batch-size 64: Predict calls of 64 items, above TF Serving's max_batch_size 32" in errors
    objects = copy.deepcopy(cpu_objects)
    _container(_find(objects, "Deployment", "posenet"), "posenet")["args"] += ["--batch-size", "0"]   # whole requests
    assert "give --max-batch" in "\n".join(kc.check_module_wiring(objects))
    _container(_find(objects, "Deployment", "posenet"), "posenet")["args"] += ["--max-batch", "16"]
    assert kc.check_module_wiring(objects) == []


def test_liveness_asks_the_process_and_readiness_the_service(gpu_objects):
    assert kc.check_ports_and_probes(gpu_objects) == []
    objects = copy.deepcopy(gpu_objects)
    c = _container(_find(objects, "Deployment", "segnet"), "segnet")
    del c["livenessProbe"]["grpc"]["service"]            # the overall status: follows the model backend
    c["readinessProbe"]["grpc"]["service"] = ""
    errors = "\n".join(kc.check_ports_and_probes(objects))
    assert "livenessProbe.grpc.service is ''; use 'liveness'" in errors and "readinessProbe.grpc.service" in errors


def test_every_namespaced_object_names_the_namespace(gpu_objects):
    assert kc.check_namespaces(gpu_objects) == []
    objects = copy.deepcopy(gpu_objects)
    del _find(objects, "Deployment", "segnet")["metadata"]["namespace"]    # what gpu-facility rendered before
    _find(objects, "Service", "idnet")["metadata"]["namespace"] = "default"
    errors = "\n".join(kc.check_namespaces(objects))
    assert "Deployment/segnet has no namespace" in errors and "several namespaces: default, sipec" in errors
    assert not any("Namespace/" in e for e in kc.check_namespaces(objects))   # cluster-scoped kinds need none


def test_security_settings_are_required(gpu_objects):
    objects = copy.deepcopy(gpu_objects)
    dep = _find(objects, "Deployment", "orchestrator")
    dep["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")
    _container(dep, "orchestrator")["securityContext"]["readOnlyRootFilesystem"] = False
    del _container(_find(objects, "Deployment", "tracker"), "tfserving")["resources"]["limits"]
    errors = "\n".join(kc.check_security(objects))
    assert "runAsNonRoot" in errors and "readOnlyRootFilesystem" in errors and "memory limit" in errors


def test_gpu_only_where_meant(gpu_objects, cpu_objects):
    assert kc.uses_gpus(gpu_objects) and not kc.uses_gpus(cpu_objects)
    assert kc.check_gpu(gpu_objects) == [] and kc.check_gpu(cpu_objects) == []
    objects = copy.deepcopy(gpu_objects)
    _container(_find(objects, "Deployment", "tracker"), "tracker")["resources"]["limits"]["nvidia.com/gpu"] = "1"
    del _container(_find(objects, "Deployment", "posenet"), "tfserving")["resources"]["limits"]["nvidia.com/gpu"]
    _container(_find(objects, "Deployment", "idnet"), "tfserving")["image"] = "tensorflow/serving:2.21.0"
    errors = "\n".join(kc.check_gpu(objects))
    assert "Deployment/tracker" in errors and "asks for a GPU" in errors
    assert "Deployment/posenet container tfserving: needs one GPU" in errors and "is not the -gpu build" in errors


def _site_overlay(tmp_path: Path, text: str) -> Path:
    """A lab's own overlay on top of the shipped gpu one, outside the repository, named as docs/deploy.md shows."""
    site = tmp_path / "mysite"
    site.mkdir()
    base = os.path.relpath(ROOT / "k8s" / "overlays" / "gpu", site)
    (site / "kustomization.yaml").write_text(text.replace("BASE", base))
    return site


DIGEST = "sha256:" + "0123456789abcdef" * 4


ROLLOUT = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [BASE]
configMapGenerator:
- name: tfserving-idnet
  behavior: merge
  files: [models.config=idnet-models.config]
patches:
- target: {kind: Deployment, name: idnet}
  patch: |-
    - {op: replace, path: /spec/template/spec/containers/1/args/8, value: --model-version=2}
"""


@needs_kubectl
def test_the_documented_rollout_of_a_new_model_version_renders_consistent(tmp_path):
    """docs/deploy.md's site overlay that rolls IdNet out to version 2: TF Serving's config and the module's flag
    change together (a new hashed ConfigMap: a rollout that `kubectl rollout undo` reverses); the config alone
    is caught."""
    text = (ROOT / "k8s" / "base" / "tfserving" / "idnet" / "models.config").read_text()
    site = _site_overlay(tmp_path, ROLLOUT)
    (site / "idnet-models.config").write_text(text.replace("specific { versions: 1 }", "specific { versions: 2 }"))
    errors, _ = kc.check_kustomization(site)
    assert errors == []
    objects = [d for d in yaml.safe_load_all(kc.render(site)) if d]
    assert "--model-version=2" in _container(_find(objects, "Deployment", "idnet"), "idnet")["args"]
    (site / "kustomization.yaml").write_text(ROLLOUT.replace("BASE", os.path.relpath(
        ROOT / "k8s" / "overlays" / "gpu", site)).split("patches:")[0])
    errors, _ = kc.check_kustomization(site)
    assert any("--model-version 1 but TF Serving pins idnet version 2" in e for e in errors)


@needs_kubectl
def test_a_site_overlay_with_digests_and_mig_slices_is_accepted(tmp_path):
    """What docs/deploy.md recommends: a site overlay not named gpu*, images pinned by digest, MIG slices for the
    smaller networks. The checker judged GPU use by the overlay's name and wanted tags before."""
    site = _site_overlay(tmp_path, f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [BASE]
images:
- {{name: sipec/segnet, newName: registry.example.org/lab/sipec/segnet, digest: {DIGEST}}}
- {{name: sipec/idnet, newName: registry.example.org/lab/sipec/idnet, newTag: 0.1.0, digest: {DIGEST}}}
- {{name: tensorflow/serving, digest: {DIGEST}}}
patches:
- target: {{kind: Deployment, name: idnet}}
  patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: idnet}}
    spec:
      template:
        spec:
          containers:
          - name: tfserving
            resources:
              limits: {{nvidia.com/gpu: null, nvidia.com/mig-1g.10gb: 1}}
              requests: {{nvidia.com/gpu: null, nvidia.com/mig-1g.10gb: 1}}
""")
    errors, summary = kc.check_kustomization(site)
    assert errors == [] and summary.endswith("consistent")
    objects = [d for d in yaml.safe_load_all(kc.render(site)) if d]
    idnet = _container(_find(objects, "Deployment", "idnet"), "tfserving")
    assert kc.gpu_limits(idnet) == {"nvidia.com/mig-1g.10gb": 1} and idnet["image"].endswith(DIGEST)
    idnet["resources"]["limits"]["nvidia.com/mig-1g.10gb"] = 2
    _container(_find(objects, "Deployment", "tracker"), "tfserving")["resources"]["limits"]["nvidia.com/mig-1g.5gb"] = 1
    errors = "\n".join(kc.check_gpu(objects))
    assert "Deployment/idnet container tfserving: needs one GPU" in errors
    assert "tracker container tfserving: asks" in errors
    assert kc.check_images(objects) == []
    _container(_find(objects, "Deployment", "segnet"), "segnet")["image"] = "registry.example.org/sipec/segnet"
    assert "pinned by a tag (not latest) or a digest" in "\n".join(kc.check_images(objects))


def test_autoscaling_needs_a_served_metric_and_a_target(gpu_objects):
    objects = copy.deepcopy(gpu_objects)
    hpa = _find(objects, "HorizontalPodAutoscaler", "segnet")
    hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] = "requests_per_second"
    _find(objects, "HorizontalPodAutoscaler", "idnet")["spec"]["scaleTargetRef"]["name"] = "idnett"
    _find(objects, "Deployment", "posenet")["spec"]["replicas"] = 3
    errors = "\n".join(kc.check_autoscaling(objects, kc.adapter_metric_names()))
    assert "requests_per_second" in errors and "idnett" in errors and "must not set replicas" in errors


def test_modules_scale_on_their_duty_cycle_and_hand_streams_over_when_they_stop(gpu_objects):
    """Calls in flight count open video streams, not load (#20): the networks scale on their model backend's
    duty cycle, the tracker on its container's CPU; a stopping module ends its streams at once."""
    assert kc.check_autoscaling(gpu_objects, kc.adapter_metric_names()) == []
    objects = copy.deepcopy(gpu_objects)
    _find(objects, "HorizontalPodAutoscaler", "posenet")["spec"]["metrics"][0]["pods"]["metric"]["name"] = \
        "sipec_grpc_calls_in_flight"                       # what the manifests had before
    _find(objects, "HorizontalPodAutoscaler", "tracker")["spec"]["metrics"][0]["containerResource"][
        "container"] = "trackr"
    idnet = _container(_find(objects, "Deployment", "idnet"), "idnet")
    idnet["args"] = [a for a in idnet["args"] if not a.startswith("--drain-streams-s")]
    errors = "\n".join(kc.check_autoscaling(objects, kc.adapter_metric_names()) + kc.check_module_wiring(objects))
    assert "HPA/posenet: a network module scales on sipec_backend_duty_cycle" in errors
    assert "container trackr is not in Deployment/tracker" in errors
    assert "Deployment/idnet container idnet: a module ends its streams when it stops" in errors


def test_batch_job_has_one_index_per_video_and_spares_evicted_pods():
    objects = [d for d in yaml.safe_load_all(kc.render(ROOT / "k8s" / "batch")) if d] if shutil.which("kubectl") \
        else pytest.skip("kubectl not installed")
    assert kc.check_jobs(objects) == []
    job = _find(objects, "Job", "sipec-analyze")
    job["spec"]["completions"] = 9
    del job["spec"]["podFailurePolicy"]
    errors = "\n".join(kc.check_jobs(objects))
    assert "env VIDEOS=4 must equal completions=9" in errors and "videos.txt lists 4 video(s)" in errors
    assert "Ignore on DisruptionTarget" in errors


def test_dockerfile_checks_catch_common_mistakes(tmp_path):
    (tmp_path / "services" / "demo").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")
    bad = tmp_path / "services" / "demo" / "Dockerfile"
    bad.write_text(
        "FROM python:3.11-slim AS builder\n"
        "COPY pyproject.toml missing.txt ./\n"
        "RUN pip install -r requirements.txt && \\\n"
        "    echo done\n"
        "FROM python:3.11-slim\n"
        "COPY --from=build /opt/venv /opt/venv\n"
        "EXPOSE 50051\n"
        "CMD sipec serve demo\n")
    errors = "\n".join(kc.check_dockerfile(bad, {50051, 9090}, "demo", root=tmp_path))
    for expected in ("ARG BASE", "FROM ${BASE}", "missing.txt", "--no-cache-dir", "--from=build", "USER 10001",
                     "gen_protos", "9090", "ENTRYPOINT", "JSON array"):
        assert expected in errors, expected


def test_dockerfile_parser_joins_continuations_and_drops_comments():
    ins = kc.parse_dockerfile("# c\nARG BASE=x\nRUN a \\\n  # inside\n  b\nCMD [\"x\"]\n")
    assert [(i.keyword, i.value) for i in ins] == [("ARG", "BASE=x"), ("RUN", "a    b"), ("CMD", '["x"]')]
    with pytest.raises(ValueError):
        kc.parse_dockerfile("RUN a \\\n")


# ---------------------------------------------------------------------------- the batch shard script
def _run_indexes(tmp_path: Path, videos: str, indexes: int, expected: int | None = None,
                 exit_code: int = 0) -> tuple[list[list[str]], list[int]]:
    """Run k8s/batch/analyze-shard.sh for every index with a fake `sipec` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.txt"
    fake = bin_dir / "sipec"
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit {exit_code}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "videos.txt").write_text(videos)
    codes = []
    for index in range(indexes):
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_COMPLETION_INDEX": str(index),
               "VIDEOS": str(indexes if expected is None else expected), "RUN_NAME": "run-7",
               "VIDEOS_FILE": str(tmp_path / "videos.txt"), "VIDEOS_ROOT": "/v", "RESULTS_ROOT": "/r",
               "SIPEC_CONFIG_DIR": "/cfg"}
        proc = subprocess.run(["sh", str(ROOT / "k8s" / "batch" / "analyze-shard.sh")], env=env,
                              capture_output=True, text=True, timeout=30, check=False)
        codes.append(proc.returncode)
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return calls, codes


def test_index_script_gives_every_video_its_own_index_and_folder(tmp_path):
    videos = "# header\nlab-a/cage-1/a.mp4\n\nlab-a/cage-1/a.avi\nc.mp4\n# skipped.mp4\nlab-b/d.mp4\nlab-b/e.mp4"
    calls, codes = _run_indexes(tmp_path, videos, indexes=5)
    assert codes == [0] * 5
    assert [c[2] for c in calls] == [f"/v/{v}" for v in ("lab-a/cage-1/a.mp4", "lab-a/cage-1/a.avi", "c.mp4",
                                                         "lab-b/d.mp4", "lab-b/e.mp4")]
    call = calls[0]
    assert call[:2] == ["--log-format=json", "analyze"]
    assert call[call.index("--out") + 1] == "/r/run-7/lab-a/cage-1"
    assert call[call.index("--folder-names") + 1] == "file"        # a.mp4 and a.avi: folders a.mp4/ and a.avi/
    assert call[call.index("--services") + 1] == "/cfg/endpoints.yaml" and "--resume" in call
    assert calls[2][calls[2].index("--out") + 1] == "/r/run-7"


def test_index_script_passes_on_the_exit_status_and_checks_the_count(tmp_path):
    calls, codes = _run_indexes(tmp_path, "a.mp4\nb.mp4\n", indexes=2, exit_code=3)
    assert codes == [3, 3] and len(calls) == 2        # bad input: the podFailurePolicy fails the index at once
    other = tmp_path / "other"
    other.mkdir()
    calls, codes = _run_indexes(other, "a.mp4\nb.mp4\nc.mp4\n", indexes=2)
    assert codes == [2, 2] and calls == []            # VIDEOS=2 but three listed: nothing runs


def test_tfserving_config_files_are_parsed_as_tf_servings_own_messages(gpu_objects):
    objects = copy.deepcopy(gpu_objects)
    assert kc.check_tfserving_configs(objects) == []
    dep = _find(objects, "Deployment", "segnet")
    cm = _find(objects, "ConfigMap", kc.volume_config_maps(dep["spec"]["template"]["spec"], "tfserving-config")[0])
    cm["data"]["batching.config"] = cm["data"]["batching.config"].replace("num_batch_threads", "num_batch_thread")
    cm["data"]["monitoring.config"] = cm["data"]["monitoring.config"].replace("/monitoring/", "/metrics/")
    cm["data"]["models.config"] = cm["data"]["models.config"].replace("model_platform", "platform")
    errors = "\n".join(kc.check_tfserving_configs(objects))
    assert 'no field named "num_batch_thread"' in errors and "Prometheus must be enabled" in errors
    assert 'no field named "platform"' in errors
