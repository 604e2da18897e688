"""BehaveNet labels: VIA 3 temporal segments to per-frame labels; ethograms and bout statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from services.behavenet.via import read_via_segments, via_frame_labels
from sipec.data.labels import BEHAVIOUR_COLUMNS, read_behaviour_csv
from sipec.reports.ethogram import bout_statistics, bouts, plot_ethogram, write_bout_statistics_csv

# A VIA 3 project as VIA's video annotator saves it: one video, one temporal-segment attribute
# whose options are the behaviours, three segments (times in seconds) and one spatial region to ignore.
VIA_PROJECT = {
    "project": {"pid": "__VIA_PROJECT_ID__", "rev": "__VIA_PROJECT_REV_ID__", "pname": "mouse", "vid_list": ["1"]},
    "config": {"file": {"loc_prefix": {"1": "", "2": "", "3": "", "4": ""}}, "ui": {}},
    "attribute": {
        "1": {"aname": "behaviour", "anchor_id": "FILE1_Z2_XY0", "type": 4, "desc": "",
              "options": {"0": "walking", "1": "rearing", "2": "grooming"}, "default_option_id": ""},
        "2": {"aname": "note", "anchor_id": "FILE1_Z1_XY1", "type": 1, "desc": "", "options": {},
              "default_option_id": ""},
    },
    "file": {"1": {"fid": "1", "fname": "mouse.mp4", "type": 4, "loc": 1, "src": ""}},
    "view": {"1": {"fid_list": ["1"]}},
    "metadata": {
        "1_aaaa": {"vid": "1", "flg": 0, "z": [0.2, 0.5], "xy": [], "av": {"1": "0"}},
        "1_bbbb": {"vid": "1", "flg": 0, "z": [0.5, 0.7], "xy": [], "av": {"1": "1"}},
        "1_cccc": {"vid": "1", "flg": 0, "z": [0.9, 1.0], "xy": [], "av": {"1": "2"}},
        "1_dddd": {"vid": "1", "flg": 0, "z": [0.3], "xy": [2, 10, 10, 40, 40], "av": {"2": "nose"}},
    },
}


def test_via_segments_become_per_frame_labels(tmp_path):
    path = tmp_path / "via.json"
    path.write_text(json.dumps(VIA_PROJECT))
    segs = read_via_segments(path)
    assert [(s.video, s.start_s, s.end_s, s.value) for s in segs] == [
        ("mouse.mp4", 0.2, 0.5, "walking"), ("mouse.mp4", 0.5, 0.7, "rearing"), ("mouse.mp4", 0.9, 1.0, "grooming")]
    df = via_frame_labels(path, fps=10, num_frames=12)
    assert list(df.columns) == list(BEHAVIOUR_COLUMNS)
    # frame i is at i/10 s; a segment covers start <= t < end
    assert df["behaviour"].tolist() == ["none", "none", "walking", "walking", "walking", "rearing", "rearing",
                                        "none", "none", "grooming", "none", "none"]
    assert (df["video"] == "mouse.mp4").all() and (df["partner"] == -1).all()
    assert df["frame"].tolist() == list(range(12))
    # the length defaults to the end of the last segment; the table is a valid behaviour CSV
    assert len(via_frame_labels(path, fps=10)) == 10
    df.to_csv(tmp_path / "behaviour.csv", index=False)
    assert len(read_behaviour_csv(tmp_path / "behaviour.csv")) == 12


def test_via_overlapping_segments_and_bad_files_are_refused(tmp_path):
    project = json.loads(json.dumps(VIA_PROJECT))
    project["metadata"]["1_eeee"] = {"vid": "1", "flg": 0, "z": [0.6, 0.95], "xy": [], "av": {"1": "2"}}
    path = tmp_path / "overlap.json"
    path.write_text(json.dumps(project))
    with pytest.raises(ValueError, match=r"frame 6 .*1_bbbb .*rearing.*1_eeee .*grooming"):
        via_frame_labels(path, fps=10)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_via_segments(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a VIA 3 project"):
        read_via_segments(tmp_path / "other.json")
    with pytest.raises(ValueError, match="no temporal segment uses attribute 'pose'"):
        via_frame_labels(tmp_path / "overlap.json", fps=10, attribute="pose")


def test_bouts_and_statistics_of_a_hand_made_sequence(tmp_path):
    behaviours = ["none", "walking", "grooming"]
    #         t:  0  1  2  3  4  5  6  7  8  9
    animal_a = [0, 1, 1, 1, 0, 2, 2, 1, 1, 0]
    animal_b = [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    assert [(b.behaviour, b.start, b.length) for b in bouts(animal_a)] == [
        (0, 0, 1), (1, 1, 3), (0, 4, 1), (2, 5, 2), (1, 7, 2), (0, 9, 1)]
    assert [(b.behaviour, b.start, b.length) for b in bouts([-1, -1, 1])] == [(1, 2, 1)]  # unlabelled: no bout
    table = bout_statistics({"a": animal_a, "b": animal_b}, behaviours, fps=2.0)
    rows = {(r.individual, r.behaviour): r for r in table.itertuples()}
    walk = rows[("a", "walking")]
    assert (walk.bouts, walk.total_s, walk.mean_bout_s, walk.latency_s) == (2, 2.5, 1.25, 0.5)
    groom = rows[("a", "grooming")]
    assert (groom.bouts, groom.total_s, groom.mean_bout_s, groom.latency_s) == (1, 1.0, 1.0, 2.5)
    assert rows[("a", "none")].bouts == 3 and rows[("a", "none")].total_s == 1.5
    never = rows[("b", "walking")]
    assert never.bouts == 0 and never.total_s == 0 and math.isnan(never.latency_s)
    assert rows[("b", "grooming")].total_s == 5.0 and rows[("b", "grooming")].latency_s == 0.0

    csv = tmp_path / "bouts.csv"
    write_bout_statistics_csv(csv, table)
    back = pd.read_csv(csv)
    assert list(back.columns) == ["individual", "behaviour", "bouts", "total_s", "mean_bout_s", "latency_s"]
    assert len(back) == 6
    png = plot_ethogram({"a": np.array(animal_a), "b": np.array(animal_b)}, behaviours, 2.0,
                        tmp_path / "ethogram.png", title="test")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    with pytest.raises(ValueError, match="fps must be positive"):
        bout_statistics({"a": animal_a}, behaviours, fps=0)
