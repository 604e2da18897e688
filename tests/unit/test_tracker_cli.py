"""`sipec evaluate tracker`, `sipec evaluate depth3d`, `sipec train depth3d`: results and error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sipec.cli import main
from sipec.reports.density import density_map, density_maps
from sipec.synth.config import SynthConfig
from sipec.synth.pipeline import generate


@pytest.fixture(scope="module")
def synth_top(tmp_path_factory):
    out = tmp_path_factory.mktemp("top")
    generate(SynthConfig(animals=4, frames=200, seed=3, width=320, height=240), out)
    return out


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_evaluate_tracker_on_synth_with_and_without_simulated_idnet(synth_top, tmp_path, capsys):
    report, tracks = tmp_path / "report.json", tmp_path / "tracks.json"
    code, out, _ = run(capsys, "evaluate", "tracker", "--gt", str(synth_top), "--out", str(report),
                       "--save-pred", str(tracks), "--density-dir", str(tmp_path / "density"))
    assert code == 0 and "| track ids |" in out and "identities: none" in out
    r = json.loads(report.read_text())
    assert r["tracks"]["frames"] == 200 and r["tracks"]["gt_detections"] == 800
    assert r["tracks"]["misses"] == 0 and r["tracks"]["false_positives"] == 0   # oracle detections
    assert r["tracks"]["idf1"] > 0.8 and r["identities"] is None
    assert sorted(p.name for p in (tmp_path / "density").iterdir()) == [
        f"density_track_{t}.png" for t in sorted(range(1, r["tracks"]["hyp_tracks"] + 1), key=str)]
    # the saved tracks, scored again through --pred, give the same numbers
    code, out, _ = run(capsys, "evaluate", "tracker", "--gt", str(synth_top / "annotations.json"),
                       "--pred", str(tracks), "--out", str(tmp_path / "again.json"))
    assert code == 0 and json.loads((tmp_path / "again.json").read_text())["tracks"] == r["tracks"]
    # simulated IdNet at 80% per frame: smoothing over 30 frames beats raw per-frame identities
    scores = {}
    for window in (1, 30):
        out_json = tmp_path / f"ids{window}.json"
        code, out, _ = run(capsys, "evaluate", "tracker", "--gt", str(synth_top), "--simulated-idnet-accuracy", "0.8",
                           "--identity-window", str(window), "--out", str(out_json))
        assert code == 0 and "SIMULATED IdNet" in out and "| identities |" in out
        scores[window] = json.loads(out_json.read_text())
    assert 0.7 < scores[1]["identity_accuracy"] < 0.9
    assert scores[30]["identity_accuracy"] > scores[1]["identity_accuracy"] + 0.05
    assert scores[30]["identities"]["id_switches"] < scores[1]["identities"]["id_switches"]


def test_evaluate_tracker_on_the_flies_clip_with_derived_masks(shared_data, tmp_path, capsys):
    report = tmp_path / "flies.json"
    code, out, _ = run(capsys, "evaluate", "tracker", "--gt", str(shared_data / "sleap-flies-clip"), "--frames", "60",
                       "--out", str(report))
    assert code == 0 and "DERIVED" in out
    r = json.loads(report.read_text())
    assert r["tracks"]["frames"] == 60 and r["tracks"]["gt_tracks"] == 2
    assert r["tracks"]["gt_detections"] == 120 and r["tracks"]["idf1"] > 0.9
    assert any("derived" in n for n in r["notes"])


def test_evaluate_depth3d_cli(tmp_path, capsys, tmp_path_factory):
    out = tmp_path_factory.mktemp("persp-cli")
    generate(SynthConfig(animals=3, frames=150, seed=4, width=320, height=240, camera="perspective"), out)
    code, text, _ = run(capsys, "evaluate", "depth3d", "--positions", str(out / "positions_3d.csv"), "--folds", "5",
                        "--isomap-rows", "200", "--out", str(tmp_path / "d.json"))
    assert code == 0 and "relative to the room" in text and "mean position" in text
    r = json.loads((tmp_path / "d.json").read_text())
    assert r["folds"] == 5 and np.all(np.array(r["cv_rmse"][:2]) < np.array(r["cv_rmse_mean_baseline"][:2]))


def test_cli_errors_name_the_file_and_the_problem(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    code, _, err = run(capsys, "train", "depth3d", "--positions", str(missing), "--out", str(tmp_path / "repo"))
    assert code == 2 and f"--positions: {missing}: file not found" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,identity,x,y\n0,0,1,2\n")
    code, _, err = run(capsys, "evaluate", "depth3d", "--positions", str(bad))
    assert code == 2 and "missing column(s) z, u, v, area" in err and str(bad) in err
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(tmp_path / "none.json"))
    assert code == 2 and "--gt" in err and "none.json" in err
    notjson = tmp_path / "tracks.json"
    notjson.write_text("{not json")
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(tmp_path / "none.json"), "--pred", str(notjson))
    assert code == 2 and "--gt" in err
    code, _, err = run(capsys, "train", "depth3d", "--positions", str(bad), "--out", str(tmp_path / "r"),
                       "--model-name", "../x")
    assert code == 2 and "--model-name" in err


def test_bad_predictions_file(synth_top, tmp_path, capsys):
    notjson = tmp_path / "tracks.json"
    notjson.write_text("{not json")
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(synth_top), "--pred", str(notjson), "--frames", "5")
    assert code == 2 and f"--pred: {notjson}: not valid JSON" in err
    notjson.write_text(json.dumps([{"frame_index": 0}]))
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(synth_top), "--pred", str(notjson), "--frames", "5")
    assert code == 2 and "entry 0 is not a tracked instance" in err


def test_density_maps(tmp_path):
    rng = np.random.default_rng(0)
    left = np.column_stack([rng.normal(45, 4, 500), rng.normal(65, 4, 500)])
    right = np.column_stack([rng.normal(150, 5, 500), rng.normal(60, 5, 500)])
    maps = density_maps({"a/left": left, "right": right}, (200, 120), tmp_path, bin_px=10)
    for dmap, path in maps.values():
        assert dmap.shape == (12, 20) and dmap.sum() == pytest.approx(1.0)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert maps["a/left"][1].name == "density_a_left.png"
    # the mass is where the animal was
    assert np.unravel_index(np.argmax(maps["a/left"][0]), (12, 20)) == (6, 4)
    assert maps["right"][0][:, :10].sum() < 0.01
    assert density_map(np.empty((0, 2)), (200, 120)).sum() == 0.0
