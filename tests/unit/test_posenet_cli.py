"""`sipec train posenet` / `sipec evaluate posenet` end to end on a small synthetic video, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def _sipec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipec", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth-cli")
    subprocess.run([sys.executable, "-m", "sipec", "synth", "--out", str(out), "--animals", "1", "--frames", "20",
                    "--seed", "4", "--size", "192x160"], check=True, capture_output=True)
    return out


def test_train_then_evaluate_writes_metrics_and_predictions(synth_dir, tmp_path):
    import pandas as pd

    repo = tmp_path / "repo"
    r = _sipec("train", "posenet", "--data", str(synth_dir / "keypoints.slp"), "--out", str(repo), "--epochs", "1",
               "--input-size", "64", "--width", "8", "--test-fraction", "0.25", "--split", "last")
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads((repo / "posenet" / "1" / "assets" / "sipec.json").read_text())
    assert info["keypoint_names"][0] == "snout" and info["training"]["data"]["split"]["mode"] == "last"
    r = _sipec("evaluate", "posenet", "--model-repo", str(repo), "--json", str(tmp_path / "m.json"),
               "--predictions", str(tmp_path / "pred.csv"))
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_animals"] == 5 and metrics["n_keypoints"] > 0 and np.isfinite(metrics["rmse_px"])
    assert set(metrics["rmse_per_keypoint_px"]) == set(info["keypoint_names"])
    df = pd.read_csv(tmp_path / "pred.csv", header=[0, 1, 2, 3], index_col=0)
    assert len(df) == 5 and df.columns.get_level_values(3)[:3].tolist() == ["x", "y", "likelihood"]


def test_cli_errors_name_the_file_or_flag(tmp_path):
    r = _sipec("train", "posenet", "--data", str(tmp_path / "nope.slp"), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "nope.slp" in r.stderr and "not found" in r.stderr
    bad = tmp_path / "CollectedData_x.csv"
    bad.write_text("hello,world\n1,2\n3,4\n")
    r = _sipec("train", "posenet", "--data", str(bad), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "CollectedData_x.csv" in r.stderr
    r = _sipec("train", "posenet", "--data", str(bad), "--out", str(tmp_path / "r"), "--input-size", "100")
    assert r.returncode == 2 and "--input-size" in r.stderr
    r = _sipec("evaluate", "posenet", "--model-repo", str(tmp_path / "missing"))
    assert r.returncode == 2 and "--model-repo" in r.stderr
