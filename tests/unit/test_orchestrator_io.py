"""Orchestrator plumbing without networks: video decoding, checkpointed results, config, stream driver."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.config import ConfigError, load_config, parse_config
from orchestrator.results import ResultsWriter
from orchestrator.streams import BidiStream, StreamFailed
from sipec.video import FrameReader, VideoError, find_videos, probe


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([sys.executable, "-m", "sipec", "synth", "--out", str(out), "--animals", "2", "--frames", "60",
                    "--size", "160x120", "--seed", "4", "--quiet", "--overwrite"], check=True)
    return out / "video.mp4"


def test_reader_decodes_in_order_with_a_bounded_queue(clip):
    info = probe(clip)
    assert (info.frames, info.width, info.height) == (60, 160, 120)
    with FrameReader(clip, start=10, stop=25, queue_size=2) as reader:
        frames = list(reader)
    assert [f.index for f in frames] == list(range(10, 25))
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8
    assert frames[1].time_s == pytest.approx(11 / info.fps)
    assert reader.error is None and reader.decode_fps > 0


def test_truncated_and_garbage_videos_are_named(clip, tmp_path):
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    try:
        with FrameReader(truncated) as reader:
            n = sum(1 for _ in reader)
        assert n < 60 and reader.error is not None and "truncated.mp4" in str(reader.error)
    except VideoError as exc:  # the moov atom may be in the lost half: then it does not open at all
        assert "truncated.mp4" in str(exc)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VideoError, match="garbage.mp4: cannot open"):
        probe(garbage)
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty file"):
        probe(tmp_path / "empty.mp4")
    assert find_videos([tmp_path]) == sorted([garbage, truncated, tmp_path / "empty.mp4"])


SCHEMA = pa.schema([("frame", pa.int64()), ("track_id", pa.int32()), ("x", pa.float64())])


def _rows(i: int) -> list[dict]:
    return [{"frame": i, "track_id": t, "x": i + t / 10} for t in (1, 2)]


def test_results_resume_loses_and_duplicates_nothing(tmp_path):
    w = ResultsWriter(tmp_path, SCHEMA, chunk_frames=4)
    for i in range(10):  # interrupted after frame 9: frames 8-9 were never checkpointed
        w.add_frame(i, _rows(i))
    (tmp_path / "parts" / "part-00000008-00000009.parquet").write_bytes(b"half-written")  # a stray
    resumed = ResultsWriter(tmp_path, SCHEMA, chunk_frames=4, resume=True)
    assert resumed.next_frame == 8
    assert not (tmp_path / "parts" / "part-00000008-00000009.parquet").exists()
    for i in range(resumed.next_frame, 13):
        resumed.add_frame(i, _rows(i))
    resumed.finish()   # written part by part
    table = pq.read_table(tmp_path / "results.parquet")
    frames = table.column("frame").to_pylist()
    assert frames == [i for i in range(13) for _ in (1, 2)]
    assert table.equals(resumed.table()) and table.schema == SCHEMA
    assert resumed.table(columns=["track_id"]).column_names == ["track_id"]
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv) == 27 and csv[0] == '"frame","track_id","x"' and csv[1] == "0,1,0.1"
    assert json.loads((tmp_path / "progress.json").read_text())["finished"] is True
    with pytest.raises(ValueError, match="out of order"):
        resumed.add_frame(3, _rows(3))
    changed = pa.schema([("frame", pa.int64())])
    with pytest.raises(ValueError, match="columns changed"):
        ResultsWriter(tmp_path, changed, resume=True)


def test_config_validation_names_the_key(tmp_path):
    cfg = parse_config({"modules": ["segnet", "tracker", "posenet"], "segnet": {"min_score": 0.7},
                        "tracker": {"matching": "hungarian"}, "outputs": {"annotated_video": False}})
    assert cfg.modules == ("segnet", "tracker", "posenet") and cfg.min_score == 0.7
    assert cfg.outputs["annotated_video"] is False and cfg.pipeline_options().tracker == {"matching": "hungarian"}
    for bad, message in [({"modules": ["segnet", "flownet"]}, "unknown module.*flownet"),
                         ({"modules": ["tracker"]}, "must include segnet"),
                         ({"modules": ["segnet", "idnet"]}, "idnet needs the tracker"),
                         ({"segnet": {"min_score": "high"}}, "segnet.min_score"),
                         ({"colour": 1}, "unknown key.*colour"),
                         ({"tracker": {"matching": "magic"}}, "greedy or hungarian"),
                         ({"tracker": {"motion": "lstm"}}, "kalman or none"),
                         ({"tracker": {"animals": -1}}, "tracker.animals must be >= 0"),
                         ({"tracker": {"animals": 2.5}}, "tracker.animals: expected int"),
                         ({"tracker": {"max_distance": "far"}}, "tracker.max_distance"),
                         ({"tracker": {"identity_evidence": "vote"}}, "apart, restart or all"),
                         ({"tracker": {"low_score": 1.5}}, r"tracker.low_score must be in \[0, 1\] \(0: off\)"),
                         ({"tracker": {"new_track_score": "x"}}, "tracker.new_track_score: expected"),
                         ({"chunk_frames": 0}, "chunk_frames: must be positive")]:
        with pytest.raises(ConfigError, match=message):
            parse_config(bad, "p.yaml")
    every = {"matching": "greedy", "min_iou": 0.2, "max_lost_frames": 5, "identity_window": 9,
             "interaction_dilation": 3, "max_distance": 40.0, "motion": "none", "animals": 8,
             "identity_evidence": "apart", "new_track_score": 0.8}
    options = parse_config({"tracker": {**every, "low_score": 0.1}, "segnet": {"min_score": 0.6}}).pipeline_options()
    assert options.tracker == every   # every TrackerOptions field
    assert options.low_score == 0.1 and options.segnet_min_score == 0.1   # SegNet asked down to low_score
    from services.tracker.options import options_from_proto
    from sipec.v1 import tracker_pb2

    # no proto field left out: min_score is segnet.min_score, the line between high- and low-score instances
    assert set(every) | {"min_score"} == set(tracker_pb2.TrackerOptions.DESCRIPTOR.fields_by_name)
    sent = options_from_proto(options.tracker_options())
    assert sent.identity_evidence == "apart" and sent.min_score == pytest.approx(0.6)
    assert sent.new_track_score == pytest.approx(0.8)
    off = parse_config({"segnet": {"min_score": 0.6}}).pipeline_options()
    assert not off.second_pass and off.segnet_min_score == 0.6
    path = tmp_path / "p.yaml"
    path.write_text("modules: [segnet\n")
    with pytest.raises(ConfigError, match="p.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")


def test_bidi_stream_lock_step_callbacks_and_failure():
    def echo(requests, timeout=None):
        for r in requests:
            if r == "boom":
                raise RuntimeError("bad request")
            yield r.upper()

    s = BidiStream("echo", echo)
    s.send("a")
    assert s.recv(5) == "A"
    s.send("b")
    s.close()
    assert s.recv(5) == "B" and s.recv(5) is None
    got = []
    c = BidiStream("cb", echo, on_response=got.append)
    for x in "xyz":
        c.send(x)
    c.close()
    assert got == ["X", "Y", "Z"]
    f = BidiStream("fail", echo)
    f.send("boom")
    with pytest.raises(StreamFailed, match="fail stream failed.*bad request"):
        f.close()


def test_result_folder_names_stay_inside_out_and_never_collide():
    from pathlib import Path

    from orchestrator.analyze import output_names

    videos = [Path("a/cage 1.mp4"), Path("b/cage 1.mp4"), Path("x/...mp4"), Path("..mp4"), Path("c/.hidden.avi"),
              Path("d/ok-name_2.mkv")]
    names = output_names(videos)
    assert list(names.values()) == ["cage_1", "cage_1-2", "video", "video-2", "hidden", "ok-name_2"]
    assert all("/" not in n and not n.startswith(".") for n in names.values())


def test_bidi_stream_never_blocks_on_a_dead_call_with_a_full_request_queue():
    """A module killed mid-video: its call stops draining requests. Cancelling, closing and sending must return
    (with the failure) instead of waiting on the full queue forever."""
    import threading
    import time

    from orchestrator.streams import BidiStream, StreamFailed

    class Dead(Exception):
        pass

    started = threading.Event()

    def dying_call(requests):
        started.set()
        time.sleep(0.2)          # requests pile up, unread
        raise Dead("UNAVAILABLE: socket closed")
        yield  # pragma: no cover - a generator that never yields

    s = BidiStream("segnet", dying_call, max_pending=2)
    s.send(1)
    s.send(2)                    # the queue is now full
    started.wait(5)
    t0 = time.monotonic()
    with pytest.raises(StreamFailed, match="socket closed"):
        s.send(3)                # would block forever on a full queue; raises once the call has failed
    s.cancel()                   # would block forever too
    assert time.monotonic() - t0 < 5
    with pytest.raises(StreamFailed):
        s.close(wait_s=1)

    idle = BidiStream("tracker", lambda requests: iter(()), max_pending=1)   # ends at once, reads nothing
    idle.send(1)
    t0 = time.monotonic()
    idle.close(wait_s=1)
    assert time.monotonic() - t0 < 5


def test_track_summary_counts_gaps_track_lengths_and_frames_with_every_animal():
    import pyarrow as pa

    from orchestrator.analyze import track_summary

    # track 1 in frames 0-5 but missing in 2 and 3; track 2 in 0-1; an untracked row (0) in frame 4
    rows = [(0, 1), (1, 1), (4, 1), (5, 1), (0, 2), (1, 2), (4, 0)]
    table = pa.table({"frame": [f for f, _ in rows], "track_id": [t for _, t in rows]})
    out = track_summary(table, animals=2)
    assert out == {"median_track_frames": 3.0, "track_gaps_bridged": 1, "frames_with_all_animals": 2, "animals": 2}
    assert track_summary(table, animals=0) == {"median_track_frames": 3.0, "track_gaps_bridged": 1}


def test_reports_name_unnamed_rows_by_their_track_where_that_identity_is_free():
    import pandas as pd

    from orchestrator.analyze import identity_or_track

    df = pd.DataFrame({"frame": [0, 1, 2, 1, 2, 0, 3, 1],
                       "track_id": [1, 1, 1, 2, 2, 3, 2, 4],
                       "identity": [None, "a", "a", None, "b", None, None, None]})
    df.loc[8] = {"frame": 2, "track_id": 4, "identity": None}
    df.loc[9] = {"frame": 3, "track_id": 4, "identity": "b"}
    # track 1 frame 0 takes its later "a"; track 2 frame 1 its later "b"; track 3 was never named; track 2 frame 3
    # would repeat track 4's "b" there, and track 4's frames 1 and 2 track 2's: they stay tracks
    who = identity_or_track(df).tolist()
    assert who == ["a", "a", "a", "b", "b", "track_3", "track_2", "track_4", "track_4", "b"]
    assert identity_or_track(df.assign(identity=None)).tolist()[:2] == ["track_1", "track_1"]


def test_pose_files_name_each_individual_once_and_untracked_instances_by_their_rank_in_the_frame(tmp_path):
    """A known number of animals leaves extra detections without a track: they become `untracked_0`, `untracked_1`
    (within their frame), never a float-like name, and tracked ones `track_<id>`."""
    import pandas as pd

    from orchestrator.sinks import write_pose_files

    rows = [(0, 1, None, 10.0), (0, 0, None, 20.0), (0, 0, None, 30.0), (1, 1, None, 11.0), (1, 0, None, 40.0)]
    table = pa.table({"frame": [r[0] for r in rows], "track_id": pa.array([r[1] for r in rows], pa.int32()),
                      "identity": pa.array([r[2] for r in rows], pa.string()),
                      "kp_snout_x": [r[3] for r in rows], "kp_snout_y": [r[3] + 1 for r in rows],
                      "kp_snout_conf": [0.9] * len(rows)})
    files = write_pose_files(table, ["snout"], tmp_path, "video.mp4", fps=25.0, video_shape=(48, 64))
    assert {f.name for f in files} == {"pose_dlc.h5", "pose_dlc.csv", "pose.slp", "pose.nwb"}
    dlc = pd.read_hdf(tmp_path / "pose_dlc.h5")
    assert list(dlc.columns.get_level_values("individuals").unique()) == ["track_1", "untracked_0", "untracked_1"]
    assert dlc[("sipec", "track_1", "snout", "x")].tolist() == [10.0, 11.0]
    assert dlc[("sipec", "untracked_0", "snout", "x")].tolist() == [20.0, 40.0]
    assert dlc[("sipec", "untracked_1", "snout", "x")].iloc[0] == 30.0
    assert np.isnan(dlc[("sipec", "untracked_1", "snout", "x")].iloc[1])


def test_rows_without_a_track_are_not_tracks_in_the_analysis_scores(clip, tmp_path):
    """`sipec evaluate analysis`: an instance without a track (id 0) links to nothing, so it is neither counted as a
    track nor joined with the other untracked rows of the video into one."""
    from orchestrator.score import score_analysis
    from sipec.synth.reader import SynthDataset

    rows = []
    with SynthDataset(clip.parent) as ds:
        names = sorted({g.identity for g in ds.instances(0)})
        for f in range(ds.num_frames):
            for g in ds.instances(f):
                track = names.index(g.identity) + 1
                if track == 2 and 10 <= f < 20:
                    track = 0                           # the tracker left this animal untracked for 10 frames
                counts = g.rle["counts"]
                rows.append({"frame": f, "track_id": track, "score": 0.9, "x1": g.box[0], "y1": g.box[1],
                             "x2": g.box[2], "y2": g.box[3], "com_x": g.com[0], "com_y": g.com[1],
                             "mask_height": g.rle["size"][0], "mask_width": g.rle["size"][1],
                             "mask_rle": counts.decode() if isinstance(counts, bytes) else counts})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "results.parquet")
    t = score_analysis(tmp_path, clip.parent)["tracker"]
    assert (t["gt_tracks"], t["hyp_tracks"], t["untracked_rows"]) == (2, 2, 10)
    assert t["idtp"] == len(rows) - 10 and t["mota"] < 1.0


def test_identity_accuracy_with_self_given_names_mapped_onto_the_true_ones():
    """An IdNet trained without hand labels names the animals its own way: the score maps its names one-to-one
    onto the true ones by the most agreement, and counts the rest (and unnamed rows) as wrong."""
    from collections import Counter

    from orchestrator.score import _mapped_accuracy

    pairs = Counter({("mouse_a", "id_2"): 90, ("mouse_a", "id_1"): 5, ("mouse_b", "id_1"): 80,
                     ("mouse_b", "id_2"): 3, ("mouse_b", ""): 2, ("mouse_c", "id_1"): 10})
    accuracy, mapping = _mapped_accuracy(pairs, 190)
    assert mapping == {"id_2": "mouse_a", "id_1": "mouse_b"} and accuracy == pytest.approx(170 / 190)
    assert _mapped_accuracy(Counter(), 0) == (0.0, {})
