"""`sipec evaluate tracker --gt trajectories.csv --pred OUT/VIDEO`: tracks against a peer's trajectories."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.tracker.trajectories import load_trajectories, score_against_trajectories
from sipec.cli import main


def _write(tmp_path, identities: bool = False):
    """Two animals for 10 frames (animal 2 not placed in frame 3); a result whose track 7 follows animal 1 and
    whose animal 2 is tracked as track 8 until frame 4 and as track 9 after (a fragment)."""
    lines = ["time,x1,y1,x2,y2"]
    rows = []
    for f in range(10):
        a, b = (10.0 + f, 20.0), (100.0, 50.0 + 2 * f)
        lines.append(f"{f / 25:.3f},{a[0]},{a[1]}," + ("," if f == 3 else f"{b[0]},{b[1]}"))
        rows.append((f, 7, a[0] + 1.0, a[1]))
        rows.append((f, 8 if f <= 4 else 9, b[0], b[1] + 0.5))
    csv_path = tmp_path / "trajectories.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    folder = tmp_path / "video"
    folder.mkdir()
    cols = {"frame": [r[0] for r in rows], "track_id": [r[1] for r in rows], "com_x": [r[2] for r in rows],
            "com_y": [r[3] for r in rows]}
    if identities:   # IdNet named the fragments 8 and 9 as one animal, and track 7 the other; none in frame 0
        cols["identity"] = [None if r[0] == 0 else ("mouse_b" if r[1] == 7 else "mouse_a") for r in rows]
    pq.write_table(pa.table(cols), folder / "results.parquet")
    return csv_path, folder


def test_score_against_trajectories(tmp_path):
    csv_path, folder = _write(tmp_path)
    reference = load_trajectories(csv_path)
    assert len(reference) == 10 and len(reference[3]) == 1 and reference[0][1] == ("2", (100.0, 50.0))
    code = main(["evaluate", "tracker", "--gt", str(csv_path), "--pred", str(folder), "--out",
                 str(tmp_path / "s.json")])
    assert code == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert set(s) == {"track"}   # no identities in this result
    s = s["track"]
    assert s["tracks"] == 3 and s["animals"] == 2 and s["frames"] == 10
    assert s["misses"] == 0 and s["false_positives"] == 1 and s["id_switches"] == 1   # frame 3: track 8 unmatched
    # IDF1: animal 1 <-> track 7 in 10 frames, animal 2 <-> track 9 in 5 (of its 9): 2 x 15 / (19 + 20)
    assert s["idf1"] == pytest.approx(30 / 39)
    assert score_against_trajectories(reference, {}, 5.0)["tracks"] == 0


def test_identities_are_scored_beside_the_tracks(tmp_path, capsys):
    csv_path, folder = _write(tmp_path, identities=True)
    assert main(["evaluate", "tracker", "--gt", str(csv_path), "--pred", str(folder), "--out",
                 str(tmp_path / "s.json")]) == 0
    assert "| identity | 2 |" in capsys.readouterr().out
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["track"]["idf1"] == pytest.approx(30 / 39) and s["track"]["identity_accuracy"] < 1.0
    # by identity: one id per animal; frame 0 has none (2 misses), frame 3 one unmatched: IDF1 = 2 x 17 / (19 + 18)
    ident = s["identity"]
    assert ident["tracks"] == 2 and ident["id_switches"] == 0 and ident["identity_accuracy"] == pytest.approx(1.0)
    assert ident["misses"] == 2 and ident["idf1"] == pytest.approx(34 / 37)


def test_bad_trajectories_and_missing_pred_are_named(tmp_path, capsys):
    csv_path, folder = _write(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,x,y\n1,2,3\n")
    assert main(["evaluate", "tracker", "--gt", str(bad), "--pred", str(folder)]) == 2
    assert "bad.csv: expected idtracker.ai's trajectories.csv header" in capsys.readouterr().err
    assert main(["evaluate", "tracker", "--gt", str(csv_path)]) == 2
    assert "give it with --pred OUT/VIDEO" in capsys.readouterr().err
    assert main(["evaluate", "tracker", "--gt", str(csv_path), "--pred", str(tmp_path)]) == 2
    assert "results.parquet: not found" in capsys.readouterr().err
