"""`make demo`'s own flow, at quick sizes: synth -> train all four networks -> `sipec up` -> `sipec analyze` over
gRPC -> `sipec down` -> `sipec evaluate analysis` -> TF Serving's client against `sipec serve model-server`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def test_quick_demo_runs_every_module_through_the_services_and_scores_them(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "sipec.demo", "--quick", "--out", str(out)], cwd=ROOT, text=True,
                       capture_output=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    folder = out / "analysis" / "video"
    files = {p.name for p in folder.iterdir()}
    assert {"results.parquet", "results.csv", "pose_dlc.h5", "pose_dlc.csv", "pose.slp", "pose.nwb", "annotated.mp4",
            "ethogram.png", "bouts.csv", "summary.json"} <= files
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["modules"] == ["segnet", "tracker", "idnet", "posenet", "behavenet"]
    assert summary["frames_analysed"] == 40
    table = pq.read_table(folder / "results.parquet")
    assert {"identity", "kp_snout_x", "behaviour", "social_behaviour", "p_walking"} <= set(table.column_names)
    scores = json.loads((out / "scores.json").read_text())
    assert {"segnet", "tracker", "idnet", "posenet", "behavenet"} <= set(scores)
    assert scores["tracker"]["gt_tracks"] == 2 and scores["segnet"]["gt_instances"] > 0
    # every module answered for the animals it saw: identities, keypoints and behaviours on the rows
    df = table.to_pandas()
    tracked = df[df["track_id"] > 0]
    assert len(tracked) > 0 and tracked["track_id"].nunique() <= 2          # --animals 2: at most two tracks
    all_tracked = int((tracked.groupby("frame")["track_id"].nunique() == 2).sum())
    assert summary["animals"] == 2 and summary["frames_with_all_animals"] == all_tracked
    assert summary["untracked_instances"] == int((df["track_id"] == 0).sum())
    assert scores["tracker"]["hyp_tracks"] == tracked["track_id"].nunique()   # untracked rows are no tracks
    # detections beyond the 2 animals of a frame get no track (track id 0)
    per_frame = df.groupby("frame").agg(n=("track_id", "size"), tracked=("track_id", lambda s: (s > 0).sum()),
                                        named=("identity", lambda s: s.notna().sum()))
    assert (per_frame["tracked"] == per_frame["n"].clip(upper=2)).all()
    assert tracked["behaviour"].notna().all() and df["kp_snout_x"].notna().any()
    # the tracker hands each of the 2 identities to one tracked animal per frame
    assert (per_frame["named"] == per_frame["tracked"]).all()
    assert "PredictionService.Predict(posenet" in r.stdout
