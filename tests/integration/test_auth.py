"""Bearer-token authentication on a real `sipec serve tracker --auth-token-file F` process (no model needed):
calls without an accepted token get UNAUTHENTICATED and are logged without the token, health checking,
reflection and the metrics port stay open, the project's clients (make_channel, the orchestrator's stubs from
an endpoints file, `sipec health`) send the token."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from orchestrator.modules import ModuleSetupError, build_modules, read_endpoints
from sipec.api.convert import InstanceData, instance_to_proto
from sipec.serving.client import make_channel
from sipec.v1 import common_pb2, tracker_pb2, tracker_pb2_grpc
from tests.conftest import ROOT, ServerProcess, wait_until

READY = r"tracker: serving on port (\d+).*metrics on (\d+)"
TOKEN = "facility-a-3f9c2b7e61d04a58"
OTHER_TOKEN = "facility-b-0d1e2f3a4b5c6d7e"
WRONG = "wrong-token-aaaaaaaaaaaaaaaa"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# accepted tokens, one a line\n{TOKEN}\n\n{OTHER_TOKEN}\n")
    return path


@pytest.fixture(scope="module")
def server(token_file, tmp_path_factory):
    repo = tmp_path_factory.mktemp("empty-repo")
    env = {"SIPEC_AUTH_TOKEN_FILE": ""}   # only the flag turns authentication on here
    srv = ServerProcess(["serve", "tracker", "--model-repo", str(repo), "--port", "0", "--metrics-port", "0",
                         "--auth-token-file", str(token_file)], READY, env=env)
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def address(server):
    return f"localhost:{server.match.group(1)}"


def _track_request(frame: int = 0) -> tracker_pb2.TrackRequest:
    m = np.zeros((32, 32), bool)
    m[4:12, 4:12] = True
    req = tracker_pb2.TrackRequest(frame=common_pb2.FrameRef(video="v", index=frame))
    req.instances.append(instance_to_proto(InstanceData.from_mask(m, 1.0)))
    return req


def _calls(channel: grpc.Channel) -> dict:
    stub = tracker_pb2_grpc.TrackerStub(channel)
    return {
        "GetModelInfo": lambda: stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10),
        "Track": lambda: list(stub.Track(iter([_track_request(0), _track_request(1)]), timeout=10)),
    }


def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_no_token_is_unauthenticated_with_a_clear_message(address):
    with make_channel(address) as ch:
        for name, call in _calls(ch).items():
            code, details = _code(call)
            assert code == grpc.StatusCode.UNAUTHENTICATED, name
            assert f"/sipec.v1.Tracker/{name}" in details and "authorization: Bearer <token>" in details
            assert "no 'authorization' metadata" in details


def test_wrong_token_or_scheme_is_unauthenticated(address):
    with make_channel(address, token=WRONG) as ch:
        for name, call in _calls(ch).items():
            code, details = _code(call)
            assert code == grpc.StatusCode.UNAUTHENTICATED, name
            assert "not accepted" in details and WRONG not in details
    with grpc.insecure_channel(address) as ch:   # the right token, but not as 'Bearer <token>'
        stub = tracker_pb2_grpc.TrackerStub(ch)
        for metadata in ([("authorization", TOKEN)], [("authorization", f"Basic {TOKEN}")],
                         [("authorization", f"Bearer {TOKEN}x")], [("authorization", f"Bearer {TOKEN[:-1]}")]):
            code, _ = _code(lambda md=metadata: stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10,
                                                                  metadata=md))
            assert code == grpc.StatusCode.UNAUTHENTICATED, metadata


def test_right_tokens_are_accepted(address):
    for token in (TOKEN, OTHER_TOKEN):
        with make_channel(address, token=token) as ch:
            calls = _calls(ch)
            assert _code(calls["GetModelInfo"])[0] == grpc.StatusCode.OK
            responses = calls["Track"]()
            assert [r.frame.index for r in responses] == [0, 1]
            assert responses[0].instances[0].track_id == responses[1].instances[0].track_id > 0


def test_health_reflection_and_metrics_need_no_token(server, address):
    with grpc.insecure_channel(address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        names = {s.name for r in stream for s in r.list_services_response.service}
        assert "sipec.v1.Tracker" in names
    with make_channel(address) as ch:   # a refused call, counted by code on the metrics port
        _code(_calls(ch)["GetModelInfo"])
    body = urllib.request.urlopen(f"http://localhost:{server.match.group(2)}/metrics", timeout=10).read().decode()
    assert any('code="UNAUTHENTICATED"' in line and "GetModelInfo" in line for line in body.splitlines())


def test_refused_calls_are_logged_with_method_and_peer_never_the_token(server, address):
    with make_channel(address, token=WRONG) as ch:
        _code(_calls(ch)["Track"])
    assert wait_until(lambda: "method=/sipec.v1.Tracker/Track" in server.text(), timeout_s=10)
    refused = [line for line in server.text().splitlines() if "unauthenticated call refused" in line]
    assert refused and all("WARNING" in line and "peer=" in line and "method=" in line for line in refused)
    assert any("peer=ipv" in line for line in refused)   # gRPC's ipv4:/ipv6: peer string
    text = server.text()
    assert TOKEN not in text and OTHER_TOKEN not in text and WRONG not in text


def test_orchestrator_stubs_send_the_token_from_the_endpoints_file(address, token_file, tmp_path, monkeypatch):
    monkeypatch.delenv("SIPEC_AUTH_TOKEN_FILE", raising=False)
    (tmp_path / "tokens").write_text(token_file.read_text())
    (tmp_path / "endpoints.yaml").write_text(f"tracker: {address}\nauth_token_file: tokens\n")
    endpoints = read_endpoints(tmp_path / "endpoints.yaml")
    assert endpoints.sites[0].token_file == str(tmp_path / "tokens")   # relative to the endpoints file
    modules, servicers = build_modules(("tracker",), endpoints=endpoints)
    assert servicers == [] and modules.info["tracker"].module == "tracker"

    (tmp_path / "plain.yaml").write_text(f"tracker: {address}\n")
    with pytest.raises(ModuleSetupError, match="unauthenticated"):
        build_modules(("tracker",), endpoints=read_endpoints(tmp_path / "plain.yaml"))
    monkeypatch.setenv("SIPEC_AUTH_TOKEN_FILE", str(token_file))   # or the environment names the file
    modules, _ = build_modules(("tracker",), endpoints=read_endpoints(tmp_path / "plain.yaml"))
    assert "tracker" in modules


def test_sipec_health_cli(address, token_file):
    def health(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sipec", "health", address, *extra], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SIPEC_AUTH_TOKEN_FILE": ""})

    done = health()   # health is open: no token needed
    assert done.returncode == 0 and done.stdout.strip() == "SERVING", done.stderr[-2000:]
    done = health("--auth-token-file", str(token_file))
    assert done.returncode == 0 and done.stdout.strip() == "SERVING", done.stderr[-2000:]
    done = health("--auth-token-file", str(token_file) + ".missing")
    assert done.returncode != 0 and "token file not found" in done.stderr
