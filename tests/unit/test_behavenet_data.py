"""BehaveNet data: crops (individual, interacting pairs), labelled-video folders, scoring helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.behavenet.crops import (
    CropSettings,
    individual_crop,
    interacting_pairs,
    joint_com,
    masks_touch,
    pair_subject,
)
from services.behavenet.data import INDIVIDUAL, PAIR, extract_crops, open_labelled_video
from services.behavenet.evaluate import (
    combine_individual_and_pairs,
    evaluate_predictions,
    format_report,
    shuffled_label_chance,
)


def _square(x0: int, size: int = 10, shape: tuple[int, int] = (60, 80)) -> tuple[np.ndarray, tuple]:
    m = np.zeros(shape, bool)
    m[20:20 + size, x0:x0 + size] = True
    return m, (float(x0), 20.0, float(x0 + size), 20.0 + size)


def test_dilated_masks_overlap_makes_a_pair():
    a, box_a = _square(10)            # columns 10..19
    b, box_b = _square(30)            # columns 30..39: 10 empty columns between, 11 pixels from edge to edge
    assert masks_touch(a, box_a, b, box_b, 6)          # each grows by 6 (to column 25, from column 24): overlap
    assert not masks_touch(a, box_a, b, box_b, 5)      # to column 24 and from column 25: side by side, no overlap
    c, box_c = _square(60)
    assert interacting_pairs([a, b, c], [box_a, box_b, box_c], 6) == [(0, 1)]
    assert interacting_pairs([a, b, c], [box_a, box_b, box_c], 21) == [(0, 1), (0, 2), (1, 2)]
    assert joint_com((10.0, 0.0), 100, (20.0, 10.0), 300) == (17.5, 7.5)
    assert pair_subject(5, 2) == "2+5" and pair_subject("12", "3") == "3+12"


def test_individual_crop_is_centred_on_the_com():
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[40:50, 60:70] = 255
    crop = individual_crop(frame, (65.0, 45.0), CropSettings(input_size=20, crop_px=20))
    assert crop.shape == (20, 20, 3)
    ys, xs = np.nonzero(crop[:, :, 0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (5, 14, 5, 14)


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory):
    from sipec.synth.config import SynthConfig
    from sipec.synth.pipeline import generate

    out = tmp_path_factory.mktemp("bn-data") / "v"
    generate(SynthConfig(animals=3, frames=150, seed=4, width=320, height=240), out)
    return out


def test_crops_and_pair_labels_of_a_synth_video(synth_video):
    from sipec.synth.reader import SynthDataset

    video = open_labelled_video(synth_video)
    behaviours = video.behaviours
    assert behaviours[0] == "none" and "social_grooming" in behaviours
    settings = CropSettings(input_size=24, crop_px=64, pair_crop_px=96, dilation_px=4)
    data = extract_crops(video, behaviours, settings)
    assert data.crops.shape[1:] == (24, 24, 3) and data.crops.dtype == np.uint8
    ds = SynthDataset(synth_video)
    labels, partners = ds.behaviour_matrix()
    # every visible animal of every frame has an individual crop with its own label
    visible = sum(1 for f in range(150) for i in ds.instances(f) if i.area >= 50)
    assert len(data.rows(INDIVIDUAL)) == visible
    for seq in data.sequences:
        assert np.all(np.diff(seq.frames) == 1)              # sequences break where a subject is not seen
        if seq.kind == INDIVIDUAL:
            np.testing.assert_array_equal(seq.labels, labels[seq.frames, int(seq.subject)])
    # pair crops: social_grooming exactly when both groom each other, else 'none'
    social = behaviours.index("social_grooming")
    pairs = [s for s in data.sequences if s.kind == PAIR]
    assert pairs, "the video should have touching animals"
    for seq in pairs:
        a, b = (int(x) for x in seq.subject.split("+"))
        mutual = (labels[seq.frames, a] == social) & (partners[seq.frames, a] == b) & (partners[seq.frames, b] == a)
        np.testing.assert_array_equal(seq.labels, np.where(mutual, social, behaviours.index("none")))
    np.testing.assert_array_equal(data.labels[data.rows()], np.concatenate([s.labels for s in data.sequences]))
    # one subject's rows are contiguous
    assert [s.start for s in data.sequences] == list(np.cumsum([0] + [len(s) for s in data.sequences[:-1]]))


def test_folder_without_labels_or_video_is_refused(tmp_path, synth_video):
    with pytest.raises(FileNotFoundError, match="expected video.mp4 or exactly one video file"):
        open_labelled_video(tmp_path)
    (tmp_path / "video.mp4").write_bytes((synth_video / "video.mp4").read_bytes())
    with pytest.raises(FileNotFoundError, match="no behaviour labels"):
        open_labelled_video(tmp_path)
    # a single-animal video labelled per frame, no masks: the whole frame is the crop
    pd.DataFrame({"video": "video.mp4", "frame": range(150), "identity": 0, "identity_name": "m",
                  "behaviour": ["walking"] * 75 + ["none"] * 75, "partner": -1, "partner_name": ""}
                 ).to_csv(tmp_path / "behaviour.csv", index=False)
    video = open_labelled_video(tmp_path)
    data = extract_crops(video, ["none", "walking"], CropSettings(input_size=32), max_frames=20)
    assert data.crops.shape == (20, 32, 32, 3) and data.labels.tolist() == [1] * 20


def test_scores_chance_and_pair_combination(synth_video):
    video = open_labelled_video(synth_video)
    data = extract_crops(video, video.behaviours, CropSettings(input_size=24, crop_px=64, pair_crop_px=96,
                                                               dilation_px=4))
    c = len(data.behaviours)
    perfect = np.eye(c, dtype=np.float32)[data.labels]
    report = evaluate_predictions(data, {"perfect": perfect}, social=["social_grooming"])
    ind = report["models"]["perfect"]["individual"]
    assert ind["macro_f1"] == 1.0 and ind["accuracy"] == 1.0
    assert report["models"]["perfect"]["pair"]["macro_f1"] == 1.0
    assert report["models"]["perfect"]["combined"]["macro_f1"] == 1.0
    assert ind["shuffled_label_chance"]["macro_f1_mean"] < 0.6
    assert all(v is None or v > 0.99 for v in ind["pearson_over_time"].values())
    assert "| **individual** macro-F1 | 1.000 |" in format_report(report)
    # a pair crop classified as social makes both its animals social in that frame
    ind_rows, pair_rows = data.rows(INDIVIDUAL), data.rows(PAIR)
    social = data.behaviours.index("social_grooming")
    none_pred = np.zeros(len(ind_rows), np.int64)
    pair_pred = np.full(len(pair_rows), social)
    combined = combine_individual_and_pairs(data, none_pred, pair_pred, [social])
    members = {(m, int(f)) for s in data.sequences if s.kind == PAIR for m in s.subject.split("+") for f in s.frames}
    assert members
    position = 0
    for s in data.sequences:
        if s.kind != INDIVIDUAL:
            continue
        for f in s.frames:
            assert combined[position] == (social if (s.subject, int(f)) in members else 0)
            position += 1
    # chance of constant predictions against shifted labels equals their own score
    y = np.array([0, 0, 1, 1, 2, 2, 0, 0], np.int64)
    chance = shuffled_label_chance(y, np.zeros_like(y), [(0, 8)], repeats=5)
    assert chance["macro_f1_sd"] == pytest.approx(0.0, abs=1e-12)


def test_folder_labelled_with_via_segments(tmp_path, synth_video):
    import json

    (tmp_path / "video.mp4").write_bytes((synth_video / "video.mp4").read_bytes())   # 150 frames at 30 fps
    project = {"project": {"vid_list": ["1"]}, "config": {},
               "attribute": {"1": {"aname": "TEMPORAL-SEGMENTS", "type": 4,
                                   "options": {"a": "walking", "b": "rearing"}}},
               "file": {"1": {"fid": "1", "fname": "video.mp4", "type": 4}}, "view": {"1": {"fid_list": ["1"]}},
               "metadata": {"1_x": {"vid": "1", "z": [1.0, 2.0], "xy": [], "av": {"1": "a"}},
                            "1_y": {"vid": "1", "z": [4.0, 4.5], "xy": [], "av": {"1": "b"}}}}
    (tmp_path / "mouse.via.json").write_text(json.dumps(project))
    video = open_labelled_video(tmp_path)
    assert video.num_frames == 150 and len(video.labels) == 150
    data = extract_crops(video, ["none", "walking", "rearing"], CropSettings(input_size=32))
    assert len(data) == 150 and [s.subject for s in data.sequences] == ["0"]
    assert np.bincount(data.labels, minlength=3).tolist() == [150 - 30 - 15, 30, 15]
    assert data.labels[30:60].tolist() == [1] * 30 and data.labels[120:135].tolist() == [2] * 15
