"""Faults with real processes: a module service, or the model server behind it, killed in the middle of a video.

`sipec analyze --services local` loses the SegNet service mid-video (SIGKILL); the orchestrator keeps the frames it
completed, retries with backoff, and once SegNet is back (restarted on the same port) resumes after the last
completed frame. The results table equals an uninterrupted in-process run's: no row lost, none duplicated.

`sipec analyze --services endpoints.yaml` with SegNet in front of a `sipec serve model-server`
(`--backend tfserving`) loses the model server mid-video (SIGKILL) while the SegNet process keeps running: SegNet
answers UNAVAILABLE and turns NOT_SERVING, the orchestrator retries, and once a new model server is up on the
same port it resumes after the last completed frame, with the same table as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sipec.serving.client import health_status, make_channel
from tests.conftest import ServerProcess, behind_model_server, start_model_server, wait_until
from tests.e2e.common import sipec as _sipec
from tests.e2e.common import synth_with_segnet

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return synth_with_segnet(tmp_path_factory.mktemp("faults"), frames=FRAMES, seed=3,
                             extra_config="retries: 6\nretry_backoff_s: 0.5\n")


@pytest.fixture(scope="module")
def reference(setup):
    """The results table of an uninterrupted in-process run of the same video and config."""
    d = setup
    _sipec("analyze", str(d / "synth" / "video.mp4"), "--models", str(d / "models"), "--out", str(d / "reference"),
           "--config", str(d / "pipeline.yaml"), "--quiet")
    table = pq.read_table(d / "reference" / "video" / "results.parquet")
    assert table.num_rows > 0
    return table


def _wait_for_checkpoint(proc: subprocess.Popen, progress: Path, frame: int) -> int:
    """Wait until the analysis has checkpointed `frame` (polling its progress.json); the last completed frame."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if progress.is_file() and json.loads(progress.read_text())["last_completed_frame"] >= frame:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the analysis ended before the fault could be injected"
    return json.loads(progress.read_text())["last_completed_frame"]


def _assert_same_as_reference(out: Path, reference) -> None:
    table = pq.read_table(out / "video" / "results.parquet")
    frames = table.column("frame").to_pylist()
    assert sorted(set(frames)) == sorted(set(reference.column("frame").to_pylist()))
    assert table.drop(["video"]).equals(reference.drop(["video"]))
    summary = json.loads((out / "video" / "summary.json").read_text())
    assert summary["frames_analysed"] == FRAMES and summary["resumed_from_frame"] > 0


def test_killed_module_service_is_retried_and_the_video_resumes_without_lost_or_duplicated_rows(setup, reference):
    d = setup
    video = d / "synth" / "video.mp4"
    state = d / "state"
    _sipec("up", "--models", str(d / "models"), "--modules", "segnet,tracker", "--state-dir", str(state))
    restarted = None
    try:
        segnet = next(s for s in json.loads((state / "services.json").read_text()) if s["name"] == "segnet")
        out = d / "grpc"
        proc = subprocess.Popen([sys.executable, "-m", "sipec", "analyze", str(video), "--services", "local",
                                 "--state-dir", str(state), "--out", str(out), "--config", str(d / "pipeline.yaml"),
                                 "--quiet"], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        killed_at = _wait_for_checkpoint(proc, out / "video" / "progress.json", 9)   # the first checkpoint, then strike
        os.kill(segnet["pid"], signal.SIGKILL)
        time.sleep(1.0)   # the orchestrator notices and starts backing off
        restarted = ServerProcess(["serve", "segnet", "--model-repo", str(d / "models"), "--port",
                                   str(segnet["port"])], ready=r"segnet: serving on port (\d+)")
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        assert "taken up again" in stdout and "unavailable" in stderr.lower()
        assert killed_at < FRAMES - 1
        _assert_same_as_reference(out, reference)
    finally:
        if restarted is not None:
            restarted.terminate()
        _sipec("down", "--state-dir", str(state), check=False)


def test_killed_model_server_behind_a_module_is_retried_and_the_video_resumes_without_lost_or_duplicated_rows(
        setup, reference):
    d = setup
    video = d / "synth" / "video.mp4"
    ready = r"segnet: serving on port (\d+)"
    restarted = tracker = proc = None
    with behind_model_server("segnet", d / "models", ready, "--backend-poll-s", "0.25",
                             "--backend-timeout-s", "10") as (ms, segnet):
        port = ms.match.group(1)
        health = make_channel(f"localhost:{segnet.match.group(1)}")
        try:
            tracker = ServerProcess(["serve", "tracker", "--model-repo", str(d / "models"), "--port", "0"],
                                    ready=r"tracker: serving on port (\d+)")
            assert wait_until(lambda: health_status(health) == "SERVING", timeout_s=60), segnet.text()
            endpoints = d / "endpoints.yaml"
            endpoints.write_text(f"segnet: localhost:{segnet.match.group(1)}\n"
                                 f"tracker: localhost:{tracker.match.group(1)}\n")
            out = d / "behind-model-server"
            proc = subprocess.Popen([sys.executable, "-m", "sipec", "analyze", str(video), "--services", str(endpoints),
                                     "--out", str(out), "--config", str(d / "pipeline.yaml"), "--quiet"],
                                    cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            killed_at = _wait_for_checkpoint(proc, out / "video" / "progress.json", 9)
            ms.kill()                                   # SIGKILL the model server; SegNet itself keeps running
            t0 = time.monotonic()
            assert wait_until(lambda: health_status(health) == "NOT_SERVING", timeout_s=5), segnet.text()
            time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))   # down for about 2 s
            assert health_status(health) == "NOT_SERVING" and segnet.proc.poll() is None
            assert proc.poll() is None, "the analysis ended while the model server was down"
            restarted = start_model_server(d / "models", port)
            assert restarted.match.group(1) == port
            down_s = time.monotonic() - t0
            stdout, stderr = proc.communicate(timeout=600)
            assert proc.returncode == 0, stderr[-3000:]
            assert "taken up again" in stdout and "unavailable" in stderr.lower()
            assert f"localhost:{port}" in stderr        # the retry names the model server that was missing
            assert killed_at < FRAMES - 1
            assert segnet.proc.poll() is None           # the module was never restarted
            assert health_status(health) == "SERVING"
            _assert_same_as_reference(out, reference)
            retries = re.search(r"taken up again (\d+) time", stdout).group(1)
            print(f"model server killed after frame {killed_at}, a new one ready {down_s:.1f} s later; "
                  f"the video was taken up again {retries} time(s)")
        finally:
            health.close()
            if proc is not None and proc.poll() is None:
                proc.kill()
            if tracker is not None:
                tracker.terminate()
            if restarted is not None:
                restarted.terminate()
    log = segnet.text()
    assert "not ready: health NOT_SERVING" in log and "ready: health SERVING" in log


def test_a_stopping_module_hands_its_stream_over_at_once_and_the_video_resumes_without_lost_or_duplicated_rows(
        setup, reference):
    """SIGTERM (a scale-down or a rollout) to a SegNet started with --drain-streams-s 0 and a 60 s grace period:
    it ends the video's stream at its next answer with UNAVAILABLE "draining" and exits within seconds, not when
    the grace period ends; the orchestrator resumes the video at the replacement, with the same table."""
    d = setup
    video = d / "synth" / "video.mp4"
    ready = r"segnet: serving on port (\d+)"
    segnet = tracker = restarted = proc = None
    try:
        segnet = ServerProcess(["serve", "segnet", "--model-repo", str(d / "models"), "--port", "0", "--grace-s",
                                "60", "--drain-streams-s", "0"], ready=ready)
        port = segnet.match.group(1)
        tracker = ServerProcess(["serve", "tracker", "--model-repo", str(d / "models"), "--port", "0"],
                                ready=r"tracker: serving on port (\d+)")
        endpoints = d / "endpoints-drain.yaml"
        endpoints.write_text(f"segnet: localhost:{port}\ntracker: localhost:{tracker.match.group(1)}\n")
        out = d / "drained"
        proc = subprocess.Popen([sys.executable, "-m", "sipec", "analyze", str(video), "--services", str(endpoints),
                                 "--out", str(out), "--config", str(d / "pipeline.yaml"), "--quiet"],
                                cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stopped_at = _wait_for_checkpoint(proc, out / "video" / "progress.json", 9)
        t0 = time.monotonic()
        segnet.proc.send_signal(signal.SIGTERM)
        segnet.proc.wait(30)                        # its only call, the stream, ended at once: nothing to wait for
        exit_s = time.monotonic() - t0
        assert proc.poll() is None, "the analysis ended while SegNet was down"
        restarted = ServerProcess(["serve", "segnet", "--model-repo", str(d / "models"), "--port", port],
                                  ready=ready)
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        assert "draining" in stderr and "taken up again" in stdout
        assert exit_s < 20, f"SegNet took {exit_s:.1f} s to stop: the stream ran into the grace period"
        assert stopped_at < FRAMES - 1
        _assert_same_as_reference(out, reference)
        print(f"SegNet stopped after frame {stopped_at} and exited {exit_s:.1f} s after SIGTERM (grace 60 s)")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for p in (segnet, tracker, restarted):
            if p is not None:
                p.terminate()


def test_two_sites_with_their_own_tokens_and_certificates_a_site_killed_mid_video_and_the_next_site_continues(
        setup, reference, tmp_path):
    """Two "sites" on localhost, each a SegNet and a tracker behind mutual TLS with its own CA and bearer token.
    The endpoints file prefers lab-a; its SegNet is killed (SIGKILL) mid-video and never comes back. The video
    continues at lab-b from its last completed frame, at once (no backoff), with the same table as an
    uninterrupted run; summary.json says which site served which module from which frame."""
    from tests.certs import make_ca_and_certs

    d = setup
    video = d / "synth" / "video.mp4"
    servers: dict[str, ServerProcess] = {}
    sites = {}
    proc = None
    try:
        for name in ("lab-a", "lab-b"):
            (tmp_path / name).mkdir()
            certs = make_ca_and_certs(tmp_path / name)
            token = tmp_path / name / "token"
            token.write_text(f"{name}-token-0123456789abcdef\n")
            tls = ["--tls-cert", str(certs["server_cert"]), "--tls-key", str(certs["server_key"]),
                   "--tls-client-ca", str(certs["ca_cert"]), "--auth-token-file", str(token)]
            for module in ("segnet", "tracker"):
                servers[f"{module}@{name}"] = ServerProcess(
                    ["serve", module, "--model-repo", str(d / "models"), "--port", "0", *tls],
                    ready=rf"{module}: serving on port (\d+)")
            sites[name] = {
                "priority": 0 if name == "lab-a" else 1, "auth_token_file": str(token),
                "tls": {"ca": str(certs["ca_cert"]), "cert": str(certs["client_cert"]),
                        "key": str(certs["client_key"])},
                "modules": {m: f"localhost:{servers[f'{m}@{name}'].match.group(1)}" for m in ("segnet", "tracker")}}
        endpoints = tmp_path / "sites.yaml"
        endpoints.write_text(json.dumps({"sites": sites}))      # JSON is YAML
        out = tmp_path / "out"
        proc = subprocess.Popen([sys.executable, "-m", "sipec", "analyze", str(video), "--services", str(endpoints),
                                 "--out", str(out), "--config", str(d / "pipeline.yaml"), "--quiet"],
                                cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        killed_at = _wait_for_checkpoint(proc, out / "video" / "progress.json", 9)
        servers["segnet@lab-a"].kill()
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        assert "next site" in stderr and "taken up again" not in stdout   # moved, not retried with backoff
        assert killed_at < FRAMES - 1
        _assert_same_as_reference(out, reference)
        summary = json.loads((out / "video" / "summary.json").read_text())
        first, *rest = summary["sites"]
        assert first == {"from_frame": 0, "modules": {"segnet": "lab-a", "tracker": "lab-a"}}
        assert rest and rest[-1]["modules"]["segnet"] == "lab-b" and rest[-1]["from_frame"] > killed_at
        assert "sites" not in summary["determined_by"]               # where it ran does not change the results
        health = _sipec("health", "--endpoints", str(endpoints), check=False)   # each site with its own TLS, token
        lines = {tuple(line.split()[:2]): line.split()[-1] for line in health.stdout.splitlines()}
        assert lines == {("segnet", "lab-a"): "UNREACHABLE", ("segnet", "lab-b"): "SERVING",
                         ("tracker", "lab-a"): "SERVING", ("tracker", "lab-b"): "SERVING"}, health.stdout
        assert health.returncode == 0      # every module still has a site that serves it
        print(f"lab-a's SegNet killed after frame {killed_at}; lab-b continued from frame {rest[-1]['from_frame']}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for s in servers.values():
            s.terminate()
