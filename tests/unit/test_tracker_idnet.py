"""`sipec evaluate tracker --idnet-repo`: identities from a trained IdNet through the IdNet service, in-process.

The IdNet here is untrained (built by the project's own builder at tiny size and exported with its metadata): the
test checks the path -- crops of every tracked instance go through IdentifyStream and come back as probabilities
that the tracker smooths into identities -- not the accuracy.
"""

from __future__ import annotations

import json

import pytest

from services.tracker.data import load_ground_truth
from sipec.cli import main

NAMES = ["animal_0", "animal_1"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("tid") / "s"
    assert main(["synth", "--out", str(out), "--animals", "2", "--frames", "30", "--seed", "2", "--size", "160x120",
                 "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def idnet_repo(tmp_path_factory):
    """A tiny untrained IdNet (T=1, 16 px input, 32 px crops) exported as `sipec train idnet` exports it."""
    import keras

    from services.idnet.export import export_idnet
    from services.idnet.masking import MaskSettings
    from services.idnet.model import NetworkConfig, build_frame_network, build_recurrent_head, build_recurrent_network

    keras.utils.set_random_seed(0)
    repo = tmp_path_factory.mktemp("tid-repo")
    config = NetworkConfig(input_size=16, t=1, num_identities=2, gru_units=4)
    _, features = build_frame_network(config)
    head = build_recurrent_head(config, features.output.shape[-1])
    export_idnet(build_recurrent_network(config, features, head), repo, "idnet", config, NAMES,
                 MaskSettings(input_size=16, crop_px=32))
    return repo


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_real_idnet_identities_end_to_end(synth, idnet_repo, tmp_path, capsys):
    report, tracks = tmp_path / "r.json", tmp_path / "tracks.json"
    code, out, err = run(capsys, "evaluate", "tracker", "--gt", str(synth), "--idnet-repo", str(idnet_repo),
                         "--out", str(report), "--save-pred", str(tracks))
    assert code == 0, err
    assert "IdNet" in out and "SIMULATED" not in out and "| identities |" in out and "IdentifyStream" in out
    r = json.loads(report.read_text())
    gt_instances = r["tracks"]["gt_detections"]
    assert r["tracks"]["frames"] == 30 and gt_instances > 0
    idn = r["config"]["idnet"]
    # every tracked instance (oracle detections: one per ground-truth instance) was sent and answered
    assert idn["crops"] == gt_instances and idn["identified"] == gt_instances and idn["errors"] == 0
    assert idn["t"] == 1 and idn["crop_px"] == 32 and idn["class_names"] == NAMES
    assert f"idnet alone (top class per crop, before smoothing): accuracy {idn['argmax_accuracy']:.4f}" in out
    saved = json.loads(tracks.read_text())
    assert len(saved) == gt_instances and all(row["identity"] in NAMES for row in saved)
    assert all(0.0 < row["identity_confidence"] <= 1.0 for row in saved)
    # the reported identity accuracy is the share of saved instances whose identity is the ground truth's (the
    # detections are the ground truth's own masks, so each saved box is one ground-truth instance's box); and no
    # identity is given to two animals of one frame
    truth = {}
    for fr in load_ground_truth(synth).frames:
        for (_, det), name in zip(fr.objects, fr.identities, strict=True):
            x1, y1, x2, y2 = det.box
            truth[(fr.frame, round(x1, 2), round(y1, 2))] = name
    hits = [truth[(row["frame_index"], row["bbox"][0], row["bbox"][1])] == row["identity"] for row in saved]
    assert r["identity_accuracy"] == pytest.approx(sum(hits) / len(hits), abs=1e-12)
    per_frame = {}
    for row in saved:
        per_frame.setdefault(row["frame_index"], []).append(row["identity"])
    assert all(len(set(names)) == len(names) for names in per_frame.values())
    # --start: only frames 20.. (the tracker starts there), e.g. the held-out end of a video
    code, out, err = run(capsys, "evaluate", "tracker", "--gt", str(synth), "--idnet-repo", str(idnet_repo),
                         "--start", "20", "--out", str(report))
    assert code == 0, err
    r = json.loads(report.read_text())
    assert r["tracks"]["frames"] == 10 and r["config"]["first_frame"] == 20 and r["config"]["last_frame"] == 29
    assert r["config"]["idnet"]["crops"] == r["tracks"]["gt_detections"] and "from frame 20" in out


def test_real_idnet_errors(synth, idnet_repo, tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(synth), "--idnet-repo", str(idnet_repo),
                       "--simulated-idnet-accuracy", "0.8")
    assert code == 2 and "mutually exclusive" in err
    missing = tmp_path / "no-repo"
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(synth), "--idnet-repo", str(missing))
    assert code == 2 and "--idnet-repo" in err and str(missing) in err
    empty = tmp_path / "empty-repo"
    empty.mkdir()
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(synth), "--idnet-repo", str(empty), "--frames", "3")
    assert code == 2 and "--idnet-repo" in err and str(empty) in err and "idnet" in err
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(synth), "--idnet-repo", str(idnet_repo),
                       "--idnet-model", "other", "--frames", "3")
    assert code == 2 and "'other'" in err and str(idnet_repo) in err
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(synth), "--start", "30")
    assert code == 2 and "--gt" in err and "no frame from index 30" in err


def test_real_idnet_needs_the_ground_truth_identities(tmp_path, idnet_repo, capsys, tmp_path_factory):
    other = tmp_path_factory.mktemp("tid-other") / "s"
    assert main(["synth", "--out", str(other), "--animals", "2", "--frames", "5", "--seed", "1", "--size", "160x120",
                 "--names", "ada,bob", "--quiet"]) == 0
    code, _, err = run(capsys, "evaluate", "tracker", "--gt", str(other), "--idnet-repo", str(idnet_repo))
    assert code == 2 and "ada, bob unknown to the model" in err and str(idnet_repo) in err
