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


@pytest.mark.slow
def test_train_then_evaluate_writes_metrics_and_predictions(synth_dir, tmp_path):
    import pandas as pd

    repo = tmp_path / "repo"
    r = _sipec("train", "posenet", "--data", str(synth_dir / "keypoints.slp"), "--out", str(repo), "--epochs", "1",
               "--input-size", "64", "--width", "8", "--test-fraction", "0.25", "--split", "last", "--loss", "bce")
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads((repo / "posenet" / "1" / "assets" / "sipec.json").read_text())
    assert info["loss"]["kind"] == "bce"            # the paper's cross-entropy: heatmaps in [0, 1]
    assert info["keypoint_names"][0] == "snout" and info["training"]["data"]["split"]["mode"] == "last"
    assert info["crop"]["center"] == "box" and info["crop"]["side_px"] > 0 and info["crop"]["input_px"] == 64
    assert info["left_right_pairs"] == [[1, 2]]          # left_ear / right_ear: mirrored together
    r = _sipec("evaluate", "posenet", "--model-repo", str(repo), "--json", str(tmp_path / "m.json"),
               "--predictions", str(tmp_path / "pred.csv"))
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_animals"] == 5 and metrics["n_keypoints"] > 0 and np.isfinite(metrics["rmse_px"])
    assert set(metrics["rmse_per_keypoint_px"]) == set(info["keypoint_names"])
    df = pd.read_csv(tmp_path / "pred.csv", header=[0, 1, 2, 3], index_col=0)
    assert len(df) == 5 and df.columns.get_level_values(3)[:3].tolist() == ["x", "y", "likelihood"]



@pytest.mark.slow
def test_mask_centred_training_and_nwb_predictions_of_the_last_frames(synth_dir, tmp_path):
    """Crops centred on the masks' centres of mass (the synth folder's COCO segmentation), recorded in the
    metadata and reused by evaluate; the held-out frames are the last ones (15..19), so the NWB written from them
    starts at frame 15, stamped frame / fps."""
    import pynwb

    repo = tmp_path / "repo"
    r = _sipec("train", "posenet", "--data", str(synth_dir), "--out", str(repo), "--epochs", "1", "--input-size",
               "64", "--width", "8", "--test-fraction", "0.25", "--split", "last", "--step", "3", "--batch-size", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "crops centred on mask" in r.stdout     # the default where the labels have masks
    info = json.loads((repo / "posenet" / "1" / "assets" / "sipec.json").read_text())
    assert info["crop"]["center"] == "mask" and info["training"]["data"]["format"] == "coco"
    data = info["training"]["data"]
    assert (data["train"], data["test"], data["step"]) == (5, 5, 3)   # frames 0, 3, .., 12 of the first 15
    r = _sipec("evaluate", "posenet", "--model-repo", str(repo), "--json", str(tmp_path / "m.json"),
               "--predictions", str(tmp_path / "pred.nwb"))
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["crop"] == {"center": "mask", "side_px": info["crop"]["side_px"]} and metrics["n_animals"] == 5
    fps = float(json.loads((synth_dir / "summary.json").read_text())["fps"])     # what the video header says
    with pynwb.NWBHDF5IO(str(tmp_path / "pred.nwb"), "r") as io:
        module = next(iter(io.read().processing.values()))
        pose = next(iter(module.data_interfaces.values()))
        s = pose.pose_estimation_series[info["keypoint_names"][0]]
        t = s.timestamps[:] if s.timestamps is not None else s.starting_time + np.arange(s.data.shape[0]) / s.rate
    np.testing.assert_allclose(t, np.arange(15, 20) / fps, rtol=1e-4)

def test_cli_errors_name_the_file_or_flag(tmp_path):
    r = _sipec("train", "posenet", "--data", str(tmp_path / "nope.slp"), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "nope.slp" in r.stderr and "not found" in r.stderr
    bad = tmp_path / "CollectedData_x.csv"
    bad.write_text("hello,world\n1,2\n3,4\n")
    r = _sipec("train", "posenet", "--data", str(bad), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "CollectedData_x.csv" in r.stderr
    r = _sipec("train", "posenet", "--data", str(bad), "--out", str(tmp_path / "r"), "--input-size", "100")
    assert r.returncode == 2 and "--input-size" in r.stderr
    r = _sipec("train", "posenet", "--data", str(bad), "--out", str(tmp_path / "r"), "--input-size", "big")
    assert r.returncode == 2 and "--input-size" in r.stderr and "or auto" in r.stderr
    r = _sipec("evaluate", "posenet", "--model-repo", str(tmp_path / "missing"))
    assert r.returncode == 2 and "--model-repo" in r.stderr
    r = _sipec("evaluate", "posenet", "--model-repo", str(tmp_path), "--predictions", str(tmp_path / "p.txt"))
    assert r.returncode == 2 and "--predictions" in r.stderr and ".nwb" in r.stderr


def test_mask_crops_on_data_without_masks_is_a_cli_error(shared_data, tmp_path):
    r = _sipec("train", "posenet", "--data", str(shared_data / "dlc-reaching-mouse"), "--out", str(tmp_path / "r"),
               "--crop-center", "mask")
    assert r.returncode == 2 and "dlc-reaching-mouse" in r.stderr and "needs masks" in r.stderr


def test_protocol_flag_errors(synth_dir, tmp_path):
    r = _sipec("evaluate", "posenet")
    assert r.returncode == 2 and "--model-repo" in r.stderr and "--folds" in r.stderr
    r = _sipec("evaluate", "posenet", "--folds", "3")
    assert r.returncode == 2 and "--data" in r.stderr
    r = _sipec("evaluate", "posenet", "--data", str(synth_dir), "--folds", "3", "--train-options", "--split last")
    assert r.returncode == 2 and "--split" in r.stderr and "set by the protocol" in r.stderr
    r = _sipec("evaluate", "posenet", "--data", str(synth_dir), "--train-sizes", "3,x")
    assert r.returncode == 2 and "--train-sizes" in r.stderr
    r = _sipec("evaluate", "posenet", "--data", str(synth_dir), "--folds", "2", "--work", str(tmp_path / "w"),
               "--train-options", "--epochs 1 --no-such-flag")
    assert r.returncode == 2 and "--train-options" in r.stderr and "no-such-flag" in r.stderr


@pytest.mark.slow
def test_folds_and_train_sizes_train_evaluate_plot_and_resume(synth_dir, tmp_path):
    """--folds 2 and --train-sizes 3,8: four `sipec train posenet` runs in --work, their test metrics, mean +-
    s.e.m., the ablation plot; a second call reuses every finished run."""
    work, out = tmp_path / "work", tmp_path / "cv.json"
    args = ("evaluate", "posenet", "--data", str(synth_dir / "keypoints.slp"), "--folds", "2", "--train-sizes",
            "3,8", "--test-fraction", "0.25", "--train-options", "--epochs 1 --input-size 64 --width 8 "
            "--batch-size 2", "--work", str(work), "--json", str(out))
    r = _sipec(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [f["fold"] for f in res["folds"]] == [1, 2]
    assert sum(f["test_images"] for f in res["folds"]) == 20          # every frame tested once
    s = res["folds_summary"]["rmse_px"]
    assert s["n"] == 2 and s["sem"] == pytest.approx(abs(res["folds"][0]["rmse_px"] - res["folds"][1]["rmse_px"]) / 2)
    assert [(t["train_size"], t["train_animals"], t["test_images"]) for t in res["train_sizes"]] == [(3, 3, 5),
                                                                                                   (8, 8, 5)]
    assert res["peak"]["size"] in (3, 8)
    assert [t["epochs"] for t in res["train_sizes"]] == [5, 2]     # as many steps as the 15 pool images' 1 epoch
    assert (tmp_path / "cv.png").is_file() and (tmp_path / "cv.svg").is_file()
    info = json.loads((work / "fold2of2" / "1" / "assets" / "sipec.json").read_text())
    assert info["training"]["data"]["split"]["mode"] == "block:1/2"
    r = _sipec(*args)
    assert r.returncode == 0 and r.stdout.count("reusing the finished run") == 4
    assert not (work / "fold2of2" / "2").exists()
    assert json.loads(out.read_text())["folds"] == res["folds"]
