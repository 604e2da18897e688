"""Faults with real processes: a module service killed in the middle of a video.

`sipec analyze --services local` loses the SegNet service mid-video (SIGKILL); the orchestrator keeps the frames it
completed, retries with backoff, and once SegNet is back (restarted on the same port) resumes after the last
completed frame. The results table equals an uninterrupted in-process run's: no row lost, none duplicated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ServerProcess
from tests.e2e.common import sipec as _sipec
from tests.e2e.common import synth_with_segnet

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 400


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return synth_with_segnet(tmp_path_factory.mktemp("faults"), frames=FRAMES, seed=3,
                             extra_config="retries: 6\nretry_backoff_s: 0.5\n")


def test_killed_module_service_is_retried_and_the_video_resumes_without_lost_or_duplicated_rows(setup):
    d = setup
    video = d / "synth" / "video.mp4"
    _sipec("analyze", str(video), "--models", str(d / "models"), "--out", str(d / "reference"), "--config",
           str(d / "pipeline.yaml"), "--quiet")
    reference = pq.read_table(d / "reference" / "video" / "results.parquet")
    assert reference.num_rows > 0

    state = d / "state"
    _sipec("up", "--models", str(d / "models"), "--modules", "segnet,tracker", "--state-dir", str(state))
    restarted = None
    try:
        segnet = next(s for s in json.loads((state / "services.json").read_text()) if s["name"] == "segnet")
        out = d / "grpc"
        proc = subprocess.Popen([sys.executable, "-m", "sipec", "analyze", str(video), "--services", "local",
                                 "--state-dir", str(state), "--out", str(out), "--config", str(d / "pipeline.yaml"),
                                 "--quiet"], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        progress = out / "video" / "progress.json"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:   # wait for the first checkpoint, then strike
            if progress.is_file() and json.loads(progress.read_text())["last_completed_frame"] >= 9:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the analysis ended before the fault could be injected"
        killed_at = json.loads(progress.read_text())["last_completed_frame"]
        os.kill(segnet["pid"], signal.SIGKILL)
        time.sleep(1.0)   # the orchestrator notices and starts backing off
        restarted = ServerProcess(["serve", "segnet", "--model-repo", str(d / "models"), "--port",
                                   str(segnet["port"])], ready=r"segnet: serving on port (\d+)")
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        assert "taken up again" in stdout and "unavailable" in stderr.lower()
        assert killed_at < FRAMES - 1
        table = pq.read_table(out / "video" / "results.parquet")
        frames = table.column("frame").to_pylist()
        assert sorted(set(frames)) == sorted(set(reference.column("frame").to_pylist()))
        assert table.drop(["video"]).equals(reference.drop(["video"]))
        summary = json.loads((out / "video" / "summary.json").read_text())
        assert summary["frames_analysed"] == FRAMES and summary["resumed_from_frame"] > 0
    finally:
        if restarted is not None:
            restarted.terminate()
        _sipec("down", "--state-dir", str(state), check=False)
