"""Identity, behaviour and 3D-position CSVs; atomic writes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sipec.data.atomic import atomic_path, write_text_atomic
from sipec.data.labels import (
    BEHAVIOUR_COLUMNS,
    IDENTITY_COLUMNS,
    behaviour_sequences,
    read_behaviour_csv,
    read_identity_csv,
    write_behaviour_csv,
    write_identity_csv,
)
from sipec.data.positions import read_positions_csv, write_positions_csv


def test_identity_round_trip(tmp_path):
    rows = [{"video": "v.mp4", "frame": f, "track_id": t, "identity": t, "identity_name": f"animal_{t}",
             "x1": 1.0 + f, "y1": 2.0, "x2": 30.0, "y2": 40.5} for f in range(3) for t in range(2)]
    path = tmp_path / "identities.csv"
    write_identity_csv(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(IDENTITY_COLUMNS)
    df = read_identity_csv(path)
    assert len(df) == 6
    assert df["identity"].dtype.kind == "i" and df["x1"].dtype.kind == "f"
    assert df.loc[5, "identity_name"] == "animal_1" and df.loc[5, "y2"] == 40.5


def test_identity_errors_name_file_and_problem(tmp_path):
    path = tmp_path / "i.csv"
    path.write_text("video,frame,identity\nv,0,1\n")
    with pytest.raises(ValueError, match="missing columns track_id"):
        read_identity_csv(path)
    path.write_text(",".join(IDENTITY_COLUMNS) + "\nv,0,0,0,a,5,5,5,9\n")
    with pytest.raises(ValueError, match="row 2 has an empty box"):
        read_identity_csv(path)
    path.write_text(",".join(IDENTITY_COLUMNS) + "\nv,zero,0,0,a,1,1,5,9\n")
    with pytest.raises(ValueError, match="column 'frame' must hold int"):
        read_identity_csv(path)


def test_behaviour_round_trip_and_sequences(tmp_path):
    rows = []
    for f in range(4):
        rows.append({"video": "v.mp4", "frame": f, "identity": 0, "identity_name": "NA", "behaviour": "walking",
                     "partner": -1, "partner_name": ""})
        social = f >= 2
        rows.append({"video": "v.mp4", "frame": f, "identity": 1, "identity_name": "b",
                     "behaviour": "social_grooming" if social else "none", "partner": 0 if social else -1,
                     "partner_name": "NA" if social else ""})
    path = tmp_path / "behaviour.csv"
    write_behaviour_csv(path, rows[::-1])
    df = read_behaviour_csv(path, ["none", "walking", "social_grooming"])
    assert list(df.columns) == list(BEHAVIOUR_COLUMNS)
    assert df["identity_name"].iloc[-1] == "NA"  # a name like NA is not read as missing
    seqs = behaviour_sequences(df, ["none", "walking", "social_grooming"])
    assert [(s.video, s.identity) for s in seqs] == [("v.mp4", 0), ("v.mp4", 1)]
    np.testing.assert_array_equal(seqs[1].frames, [0, 1, 2, 3])
    np.testing.assert_array_equal(seqs[1].labels, [0, 0, 2, 2])
    np.testing.assert_array_equal(seqs[1].partners, [-1, -1, 0, 0])
    with pytest.raises(ValueError, match="unknown behaviours social_grooming, walking"):
        read_behaviour_csv(path, ["none"])


def test_positions_round_trip_with_hidden_animals(tmp_path):
    rows = [{"video": "v.mp4", "frame": 0, "identity": 0, "identity_name": "a", "x": 0.1, "y": 0.2, "z": 0.01,
             "u": 10.5, "v": 20.25, "area": 300, "visible": 1},
            {"video": "v.mp4", "frame": 0, "identity": 1, "identity_name": "b", "x": 0.3, "y": 0.4, "z": 0.0,
             "u": math.nan, "v": math.nan, "area": 0, "visible": 0}]
    path = tmp_path / "p.csv"
    write_positions_csv(path, rows)
    df = read_positions_csv(path)
    assert df.loc[0, "u"] == pytest.approx(10.5) and df.loc[0, "z"] == pytest.approx(0.01)
    assert np.isnan(df.loc[1, "u"]) and df.loc[1, "visible"] == 0


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_text_atomic(target, "whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]
