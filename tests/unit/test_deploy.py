"""`sipec deploy`: --dry-run (render + strict validation, no cluster), and apply / rollout waiting / status
against a fake Kubernetes API made of plain Python objects (no network, no cluster)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from sipec import deploy
from sipec.cli import main

ROOT = Path(__file__).resolve().parents[2]
NS = SimpleNamespace   # stands for the Kubernetes client's model objects (attribute access)
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")


# ------------------------------------------------------------------------------------------ fakes
def deployment(name: str, *, generation: int = 2, observed: int = 2, replicas: int = 2, status_replicas: int = 2,
               updated: int = 2, ready: int = 2, available: int = 2, conditions: list | None = None,
               namespace: str = "sipec"):
    """What AppsV1Api.read_namespaced_deployment_status returns, as far as sipec deploy reads it."""
    return NS(metadata=NS(name=name, namespace=namespace, generation=generation),
              spec=NS(replicas=replicas, selector=NS(match_labels={"app.kubernetes.io/name": name})),
              status=NS(observed_generation=observed, replicas=status_replicas, updated_replicas=updated,
                        ready_replicas=ready, available_replicas=available,
                        conditions=[NS(type=t, status=s, reason=r, message=m) for t, s, r, m in (conditions or [])]))


class FakeResources:
    def __init__(self, served: set[str]) -> None:
        self.served = served

    def get(self, api_version: str, kind: str):
        if kind not in self.served:
            raise ResourceNotFoundError(f"No matches found for {{'api_version': '{api_version}', 'kind': '{kind}'}}")
        return NS(api_version=api_version, kind=kind)


class FakeDynamic:
    """kubernetes.dynamic.DynamicClient: resources.get, server_side_apply, get by label and delete. The cluster
    holds what was applied with the sipec-deploy label, and ``leftovers`` {(kind, namespace): [names]} that an
    earlier deploy applied."""

    def __init__(self, served: set[str], fail_on: str | None = None,
                 leftovers: dict[tuple[str, str], list[str]] | None = None) -> None:
        self.resources = FakeResources(served)
        self.applied: list[tuple[str, str, str | None, dict]] = []
        self.fail_on = fail_on
        self.managed = {k: list(v) for k, v in (leftovers or {}).items()}
        self.deleted: list[tuple[str, str, str]] = []

    def server_side_apply(self, resource, body=None, namespace=None, **kwargs):
        if body["metadata"]["name"] == self.fail_on:
            raise FakeApiException(422, '{"kind":"Status","message":"Deployment.apps \\"x\\" is invalid: spec"}')
        self.applied.append((resource.kind, body["metadata"]["name"], namespace, kwargs))
        if body["metadata"].get("labels", {}).get(deploy.MANAGED_BY[0]) == deploy.MANAGED_BY[1]:
            names = self.managed.setdefault((resource.kind, namespace), [])
            if body["metadata"]["name"] not in names:
                names.append(body["metadata"]["name"])
        return body

    def get(self, resource, namespace=None, label_selector=""):
        assert label_selector == "=".join(deploy.MANAGED_BY)
        return NS(items=[NS(metadata=NS(name=n)) for n in self.managed.get((resource.kind, namespace), [])])

    def delete(self, resource, name=None, namespace=None):
        self.managed[(resource.kind, namespace)].remove(name)
        self.deleted.append((resource.kind, name, namespace))


class FakeApiException(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"({status})")
        self.status = status
        self.body = body


class FakeApps:
    """AppsV1Api.read_namespaced_deployment_status, answering from a script of states per Deployment (the
    last state repeats)."""

    def __init__(self, script: dict[str, list]) -> None:
        self.script = script
        self.reads: dict[str, int] = {}

    def read_namespaced_deployment_status(self, name: str, namespace: str):
        n = self.reads.get(name, 0)
        self.reads[name] = n + 1
        states = self.script[name]
        return states[min(n, len(states) - 1)]


class FakeCore:
    def __init__(self, pods: list | None = None, services: list | None = None,
                 secrets: set[str] | None = None) -> None:
        self.pods = pods or []
        self.services = services or []
        self.secrets = secrets       # None: every Secret exists
        self.selectors: list[str] = []

    def read_namespaced_secret(self, name: str, namespace: str):
        if self.secrets is not None and name not in self.secrets:
            raise FakeApiException(404, f'{{"kind":"Status","message":"secrets \\"{name}\\" not found"}}')
        return NS(metadata=NS(name=name))

    def list_namespaced_pod(self, namespace: str, label_selector: str = ""):
        self.selectors.append(label_selector)
        return NS(items=self.pods)

    def list_namespaced_service(self, namespace: str):
        return NS(items=self.services)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def pod(waiting: str | None = None, message: str = "", unschedulable: str | None = None):
    cs = NS(name="tfserving", state=NS(waiting=NS(reason=waiting, message=message) if waiting else None))
    conditions = [NS(type="PodScheduled", status="False", reason="Unschedulable", message=unschedulable)] \
        if unschedulable else []
    return NS(status=NS(conditions=conditions, init_container_statuses=None, container_statuses=[cs]))


# ------------------------------------------------------------------------------------------ dry run
@needs_kubectl
@pytest.mark.parametrize("overlay", ["gpu", "cpu", "gpu-facility"])
def test_dry_run_renders_and_validates_every_overlay(overlay, capsys, tmp_path):
    out = tmp_path / "rendered.yaml"
    assert main(["deploy", "--dry-run", "--overlay", overlay, "--k8s-dir", str(ROOT / "k8s"),
                 "--render-to", str(out)]) == 0
    text = capsys.readouterr().out
    assert "valid:" in text and "(strict)" in text and "dry run: nothing applied" in text
    assert "2 custom resources" in text
    assert "kind: Deployment" in out.read_text()


@needs_kubectl
def test_dry_run_refuses_an_invalid_overlay_and_names_the_object(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "kustomization.yaml").write_text("resources: [cm.yaml, sm.yaml]\n")
    (bad / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\nbogus: 1\n")
    (bad / "sm.yaml").write_text("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: m}\n"
                                 "spec: {selector: {}, endpoints: [{port: metrics, intervall: 5s}]}\n")
    assert main(["deploy", "--dry-run", "--overlay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "2 invalid object(s)" in err and "ConfigMap/x" in err and "bogus" in err
    assert "ServiceMonitor/m" in err and "intervall" in err


def test_unknown_overlay_lists_the_known_ones(capsys):
    assert main(["deploy", "--dry-run", "--overlay", "tpu", "--k8s-dir", str(ROOT / "k8s")]) == 2
    err = capsys.readouterr().err
    assert "--overlay tpu" in err and "cpu, gpu, gpu-facility" in err


def test_missing_kubectl_is_named(capsys):
    assert main(["deploy", "--dry-run", "--overlay", "gpu", "--k8s-dir", str(ROOT / "k8s"),
                 "--kubectl", "no-such-kubectl-here"]) == 2
    assert "no-such-kubectl-here not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ apply
def _objects() -> list[dict]:
    return [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "sm", "namespace": "s"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "segnet", "namespace": "s"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "s"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "s"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "segnet", "namespace": "s"}},
    ]


def test_apply_is_server_side_in_dependency_order_and_skips_unserved_kinds():
    dyn = FakeDynamic(served={"Namespace", "ConfigMap", "Service", "Deployment"})
    logs: list[str] = []
    result = deploy.apply_all(deploy.Cluster(dyn, FakeApps({}), FakeCore()), _objects(), log=logs.append)
    assert [(k, n) for k, n, _, _ in dyn.applied] == [("Namespace", "s"), ("ConfigMap", "cm"), ("Service", "segnet"),
                                                      ("Deployment", "segnet")]
    assert all(kw == {"field_manager": "sipec-deploy", "force_conflicts": True} for _, _, _, kw in dyn.applied)
    assert dyn.applied[1][2] == "s" and dyn.applied[0][2] is None
    assert result.skipped == ["ServiceMonitor/sm (namespace s)"]
    assert "does not serve monitoring.coreos.com/v1 ServiceMonitor" in logs[0]


def test_an_api_error_names_the_object_and_the_servers_message():
    dyn = FakeDynamic(served={"Namespace", "ConfigMap", "Service", "Deployment"}, fail_on="segnet")
    with pytest.raises(deploy.DeployError, match=r"applying Service/segnet \(namespace s\): Deployment.apps"):
        deploy.apply_all(deploy.Cluster(dyn, FakeApps({}), FakeCore()), _objects(), log=lambda _: None)


# --------------------------------------------------------------------------------------- rollouts
def test_rollout_state_follows_kubectl_rollout_status():
    state = deploy._deployment_state
    assert state(deployment("a", observed=1)).rollout() == (False, "waiting for the controller to see the new spec")
    assert state(deployment("a", updated=1)).rollout() == (False, "1 of 2 pods updated")
    assert state(deployment("a", status_replicas=3)).rollout() == (False, "1 old pod(s) terminating")
    assert state(deployment("a", available=1)).rollout() == (False, "1 of 2 updated pods available")
    assert state(deployment("a")).rollout() == (True, "rolled out")
    with pytest.raises(deploy.RolloutFailed, match="progress deadline"):
        state(deployment("a", updated=1, conditions=[("Progressing", "False", "ProgressDeadlineExceeded",
                                                       "ReplicaSet has timed out progressing")])).rollout()


def test_wait_until_every_deployment_rolled_out():
    apps = FakeApps({"segnet": [deployment("segnet", observed=1), deployment("segnet", updated=1),
                                deployment("segnet")],
                     "tracker": [deployment("tracker", available=0), deployment("tracker")]})
    clock, logs = FakeClock(), []
    out = deploy.wait_for_rollouts(deploy.Cluster(None, apps, FakeCore()), [("sipec", "segnet"), ("sipec", "tracker")],
                                   timeout_s=60, poll_s=2, clock=clock, sleep=clock.sleep, log=logs.append)
    assert out == {"segnet": (True, "rolled out"), "tracker": (True, "rolled out")}
    assert clock.now == 4.0                          # three polls of segnet, two sleeps
    assert "segnet: 1 of 2 pods updated" in logs


def test_wait_fails_early_on_a_progress_deadline():
    stuck = deployment("segnet", updated=1, conditions=[("Progressing", "False", "ProgressDeadlineExceeded", "slow")])
    apps = FakeApps({"segnet": [stuck], "idnet": [deployment("idnet", available=0)]})
    clock = FakeClock()
    out = deploy.wait_for_rollouts(deploy.Cluster(None, apps, FakeCore()), [("sipec", "segnet"), ("sipec", "idnet")],
                                   timeout_s=600, clock=clock, sleep=clock.sleep, log=lambda _: None)
    assert out["segnet"][0] is False and "progress deadline exceeded" in out["segnet"][1]
    assert out["idnet"][0] is False and clock.now == 0.0     # no waiting once one failed


def test_timeout_reports_why_the_pods_are_not_running():
    core = FakeCore(pods=[pod(waiting="ImagePullBackOff", message="sipec/segnet:0.1.0 not found"),
                          pod(unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")])
    apps = FakeApps({"segnet": [deployment("segnet", available=0)]})
    clock = FakeClock()
    out = deploy.wait_for_rollouts(deploy.Cluster(None, apps, core), [("sipec", "segnet")], timeout_s=10, poll_s=3,
                                   clock=clock, sleep=clock.sleep, log=lambda _: None)
    ok, why = out["segnet"]
    assert not ok and "not rolled out after 10 s" in why
    assert "tfserving: ImagePullBackOff (sipec/segnet:0.1.0 not found)" in why
    assert "Insufficient nvidia.com/gpu" in why
    assert core.selectors == ["app.kubernetes.io/name=segnet"]
    assert clock.now >= 10


def test_status_table_and_load_balancers():
    apps = FakeApps({"segnet": [deployment("segnet", ready=1, available=1)],
                     "orchestrator": [deployment("orchestrator")]})
    svc = NS(metadata=NS(name="orchestrator-facility-lb"), spec=NS(type="LoadBalancer"),
             status=NS(load_balancer=NS(ingress=[NS(ip="198.51.100.7", hostname=None)])))
    cluster = deploy.Cluster(None, apps, FakeCore(services=[svc, NS(metadata=NS(name="x"), spec=NS(type="ClusterIP"))]))
    table = deploy.status_table(cluster, [("sipec", "segnet"), ("sipec", "orchestrator")])
    lines = table.splitlines()
    assert lines[0].split() == ["DEPLOYMENT", "READY", "UP-TO-DATE", "AVAILABLE", "STATUS"]
    assert lines[1].split()[:4] == ["segnet", "1/2", "2", "1"] and "updated pods available" in lines[1]
    assert lines[2].split()[:4] == ["orchestrator", "2/2", "2", "2"] and lines[2].endswith("rolled out")
    assert cluster.load_balancers("sipec") == [("orchestrator-facility-lb", "198.51.100.7")]


# ------------------------------------------------------------------------------------ whole command
def _args(**kw) -> argparse.Namespace:
    base = dict(overlay="cpu", k8s_dir=ROOT / "k8s", dry_run=False, render_to=None, kubeconfig=None, context=None,
                timeout_s=5.0, no_wait=False, no_prune=False, kubernetes_version=deploy.DEFAULT_KUBERNETES_VERSION,
                kubectl="kubectl")
    base.update(kw)
    return argparse.Namespace(**base)


@needs_kubectl
def test_deploy_applies_the_overlay_waits_and_reports(capsys):
    names = ["orchestrator", "segnet", "idnet", "posenet", "behavenet", "tracker"]
    apps = FakeApps({n: [deployment(n, observed=1), deployment(n)] for n in names})
    dyn = FakeDynamic(served={"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service",
                              "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"})
    code = deploy.run_deploy(_args(), cluster=deploy.Cluster(dyn, apps, FakeCore()))
    out = capsys.readouterr().out
    assert code == 0
    assert dyn.applied[0][:2] == ("Namespace", "sipec")
    assert {n for k, n, _, _ in dyn.applied if k == "Deployment"} == set(names)
    assert "applied 42 objects, skipped 2" in out        # the two ServiceMonitors: no prometheus-operator here
    for n in names:
        assert f"{n}: rolled out" in out
    assert out.count("rolled out") >= 2 * len(names)     # the waiting log and the status table


@needs_kubectl
def test_deploy_exits_1_when_a_rollout_fails(capsys):
    names = ["orchestrator", "segnet", "idnet", "posenet", "behavenet", "tracker"]
    script = {n: [deployment(n)] for n in names}
    script["segnet"] = [deployment("segnet", updated=1, conditions=[
        ("Progressing", "False", "ProgressDeadlineExceeded", "ReplicaSet segnet-7f has timed out progressing")])]
    dyn = FakeDynamic(served={"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service",
                              "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy",
                              "ServiceMonitor"})
    code = deploy.run_deploy(_args(overlay="gpu"), cluster=deploy.Cluster(dyn, FakeApps(script), FakeCore()))
    captured = capsys.readouterr()
    assert code == 1
    assert "not rolled out: segnet" in captured.err and "timed out progressing" in captured.out


def test_validation_names_unknown_kinds_and_says_what_it_could_not_check(monkeypatch):
    cert = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"}, "spec": {}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    report = deploy.validate([cm, cert])
    assert report.builtin_checked == 1 and len(report.errors) == 1 and "Certificate/c" in report.errors[0]
    monkeypatch.setitem(sys.modules, "kubernetes_validate", None)     # as where only the runtime deps are installed
    report = deploy.validate([cm])
    assert report.ok and report.builtin_checked == 0 and "kubernetes-validate is not installed" in report.notes[0]


@needs_kubectl
def test_a_deploy_prunes_what_an_earlier_overlay_left_and_keeps_data_and_secrets(capsys):
    """gpu-facility, then gpu: the facility's public LoadBalancer, Deployment, PDB and NetworkPolicy are removed;
    volumes, Secrets and ConfigMaps are never pruned; --no-prune keeps everything."""
    names = ["orchestrator", "segnet", "idnet", "posenet", "behavenet", "tracker"]
    served = {"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment",
              "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"}
    left = {("Service", "sipec"): ["orchestrator-facility"], ("Deployment", "sipec"): ["orchestrator-facility"],
            ("PodDisruptionBudget", "sipec"): ["orchestrator-facility"],
            ("NetworkPolicy", "sipec"): ["orchestrator-facility"], ("PersistentVolumeClaim", "sipec"): ["old-data"],
            ("ConfigMap", "sipec"): ["tfserving-idnet-old"]}
    dyn = FakeDynamic(served=served, leftovers=left)
    apps = FakeApps({n: [deployment(n)] for n in names})
    assert deploy.run_deploy(_args(overlay="gpu"), cluster=deploy.Cluster(dyn, apps, FakeCore())) == 0
    out = capsys.readouterr().out
    assert sorted((k, n) for k, n, _ in dyn.deleted) == [
        ("Deployment", "orchestrator-facility"), ("NetworkPolicy", "orchestrator-facility"),
        ("PodDisruptionBudget", "orchestrator-facility"), ("Service", "orchestrator-facility")]
    assert "pruned Service/orchestrator-facility (namespace sipec)" in out and "pruned 4 object(s)" in out
    assert all(kw["field_manager"] == "sipec-deploy" for *_, kw in dyn.applied)
    dyn = FakeDynamic(served=served, leftovers=left)
    assert deploy.run_deploy(_args(overlay="gpu", no_prune=True),
                             cluster=deploy.Cluster(dyn, FakeApps({n: [deployment(n)] for n in names}),
                                                    FakeCore())) == 0
    assert dyn.deleted == []


@needs_kubectl
def test_pods_waiting_for_a_missing_secret_are_named_at_once(capsys):
    """gpu-facility needs the facility TLS Secrets: without them the deploy names them and the Deployment that
    waits for them, and fails without waiting for the deadline."""
    names = ["orchestrator", "orchestrator-facility", "segnet", "idnet", "posenet", "behavenet", "tracker"]
    dyn = FakeDynamic(served={"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Service",
                              "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"})
    apps = FakeApps({n: [deployment(n)] for n in names})
    code = deploy.run_deploy(_args(overlay="gpu-facility", timeout_s=900.0),
                             cluster=deploy.Cluster(dyn, apps, FakeCore(secrets=set())))
    captured = capsys.readouterr()
    assert code == 1
    assert "orchestrator-facility: Secret" in captured.err and "is missing, needed by its volume" in captured.err
    assert "not rolled out: orchestrator-facility" in captured.err
    assert apps.reads["orchestrator-facility"] == 1 < apps.reads["segnet"]   # the status table only: never waited for
