"""`sipec analyze` end to end: in-process and over real gRPC processes on localhost give the same results.

A SegNet trained for a few steps only (the point is the pipeline, not accuracy: min_score 0 keeps its
detections) feeds the tracker; outputs are checked for completeness, and the two transports for equality.
"""

from __future__ import annotations

import json

import cv2
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.e2e.common import sipec as _sipec
from tests.e2e.common import synth_with_segnet


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return synth_with_segnet(tmp_path_factory.mktemp("e2e"), frames=24, seed=2)


def test_in_process_and_grpc_services_give_the_same_results(setup):
    d = setup
    video = d / "synth" / "video.mp4"
    r = _sipec("analyze", str(video), "--models", str(d / "models"), "--out", str(d / "inproc"),
               "--config", str(d / "pipeline.yaml"), "--quiet")
    assert "24 frames" in r.stdout
    folder = d / "inproc" / "video"
    table = pq.read_table(folder / "results.parquet")
    assert set(table.column("frame").to_pylist()) <= set(range(24)) and table.num_rows > 0
    assert {"track_id", "mask_rle", "x1", "com_x"} <= set(table.column_names)
    # track 0: an instance scored below the tracked animals' scores, which starts no track (the tracker's new-track
    # score); the summary counts them. Whether any occur depends on this quickly trained SegNet's scores.
    tracks = table.column("track_id").to_pylist()
    assert all(t >= 0 for t in tracks) and any(t > 0 for t in tracks)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["untracked_instances"] == tracks.count(0)
    assert summary["frames_analysed"] == 24 and summary["modules"] == ["segnet", "tracker"]
    cap = cv2.VideoCapture(str(folder / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    cap.release()
    assert list(folder.glob("density_*.png"))

    state = d / "state"
    up = _sipec("up", "--models", str(d / "models"), "--modules", "segnet,tracker", "--state-dir", str(state))
    try:
        assert "segnet" in up.stdout and (state / "endpoints.yaml").is_file()
        _sipec("analyze", str(video), "--services", "local", "--state-dir", str(state), "--out", str(d / "grpc"),
               "--config", str(d / "pipeline.yaml"), "--quiet")
    finally:
        down = _sipec("down", "--state-dir", str(state))
    assert "segnet" in down.stdout
    other = pq.read_table(d / "grpc" / "video" / "results.parquet")
    drop = ["video"]
    assert other.drop(drop).equals(table.drop(drop))


def test_resume_after_interruption_loses_and_duplicates_nothing(setup):
    d = setup
    video = d / "synth" / "video.mp4"
    out = d / "resume"
    full = d / "inproc" / "video" / "results.parquet"
    assert full.is_file(), "runs after the in-process analysis"
    # simulate an interruption after the first checkpoint: keep only the first part of a complete run
    _sipec("analyze", str(video), "--models", str(d / "models"), "--out", str(out), "--config",
           str(d / "pipeline.yaml"), "--quiet")
    folder = out / "video"
    progress = json.loads((folder / "progress.json").read_text())
    first, *rest = progress["parts"]
    for p in rest:
        (folder / "parts" / p).unlink()
    (folder / "results.parquet").unlink()
    progress.update(parts=[first], finished=False, last_completed_frame=int(first.split("-")[2].split(".")[0]))
    (folder / "progress.json").write_text(json.dumps(progress))
    _sipec("analyze", str(video), "--models", str(d / "models"), "--out", str(out), "--config",
           str(d / "pipeline.yaml"), "--quiet", "--resume")
    resumed = pq.read_table(folder / "results.parquet")
    assert resumed.equals(pq.read_table(full).select(resumed.column_names))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["resumed_from_frame"] == progress["last_completed_frame"] + 1
    # a finished video (a retried batch index) is neither analysed nor rendered again
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}
    r = _sipec("analyze", str(video), "--models", str(d / "models"), "--out", str(out), "--config",
               str(d / "pipeline.yaml"), "--quiet", "--resume")
    assert "already finished (24 frames)" in r.stdout
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()} == stamps
    # another file under the same name: its checkpoint is refused, named, and nothing is overwritten
    other = out / "elsewhere" / "video.mp4"
    other.parent.mkdir()
    other.write_bytes(video.read_bytes() + b"\0" * 64)
    progress = json.loads((folder / "progress.json").read_text())
    progress["finished"] = False
    (folder / "progress.json").write_text(json.dumps(progress))
    r = _sipec("analyze", str(other), "--models", str(d / "models"), "--out", str(out), "--config",
               str(d / "pipeline.yaml"), "--quiet", "--resume", check=False)
    assert r.returncode == 3 and "was written for another video" in r.stderr, r.stderr[-2000:]
    assert pq.read_table(folder / "results.parquet").equals(resumed)


def test_bad_inputs_are_named_and_other_videos_still_run(setup, tmp_path):
    d = setup
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    r = _sipec("analyze", str(bad), str(d / "synth" / "video.mp4"), "--models", str(d / "models"), "--out",
               str(tmp_path / "out"), "--config", str(d / "pipeline.yaml"), "--quiet", check=False)
    assert r.returncode == 3            # every failure is bad input: retrying cannot help
    assert "broken.mp4: cannot open as a video" in r.stderr
    assert (tmp_path / "out" / "video" / "results.parquet").is_file()
    # a video cut off in the middle (a copy that did not finish): named, and the frames before the cut are kept
    data = (d / "synth" / "video.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    r = _sipec("analyze", str(cut), "--models", str(d / "models"), "--out", str(tmp_path / "cut-out"), "--config",
               str(d / "pipeline.yaml"), "--quiet", check=False)
    assert r.returncode == 3 and "cut.mp4" in r.stderr, r.stderr[-2000:]
    summary = json.loads((tmp_path / "cut-out" / "cut" / "summary.json").read_text())
    assert summary["error"] and "cut.mp4" in summary["error"]
    assert 0 < summary["frames_analysed"] < summary["frames_in_header"]
    # the frames before the cut hold what the whole video gives there (the tracker is causal; identity, which
    # smooths over later frames, is not in this pipeline): the rows depend on the few-step SegNet the fixture
    # trained, so they are compared with the complete run rather than counted
    kept = pq.read_table(tmp_path / "cut-out" / "cut" / "results.parquet").drop(["video"])
    whole = pq.read_table(tmp_path / "out" / "video" / "results.parquet").drop(["video"])
    before = whole.filter(pc.less(whole.column("frame"), summary["frames_analysed"]))
    assert kept.equals(before) and summary["rows"] == kept.num_rows
    (tmp_path / "bad.yaml").write_text("modules: [segnet, flownet]\n")
    r = _sipec("analyze", str(d / "synth" / "video.mp4"), "--models", str(d / "models"), "--out",
               str(tmp_path / "o2"), "--config", str(tmp_path / "bad.yaml"), check=False)
    assert r.returncode == 2 and "unknown module(s) flownet" in r.stderr
    (tmp_path / "p2.yaml").write_text("modules: [segnet, tracker, posenet]\n")
    r = _sipec("analyze", str(d / "synth" / "video.mp4"), "--models", str(d / "models"), "--out",
               str(tmp_path / "o3"), "--config", str(tmp_path / "p2.yaml"), check=False)
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("sipec analyze: error:"))
    assert r.returncode == 2 and "posenet" in line and "not loaded" in line


def test_analyze_stream_service_gives_the_analysis_results_and_survives_a_bad_frame(setup):
    """`sipec serve orchestrator`: frames in over gRPC, one FrameResult per frame out, in order, the same
    tracks and boxes as `sipec analyze` in-process; a frame that cannot be decoded gets its own error."""
    import grpc

    from sipec.api.convert import image_to_proto
    from sipec.synth.reader import SynthDataset
    from sipec.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
    from tests.conftest import ServerProcess

    d = setup
    full = pq.read_table(d / "inproc" / "video" / "results.parquet").to_pandas()
    server = ServerProcess(["serve", "orchestrator", "--models", str(d / "models"), "--config",
                            str(d / "pipeline.yaml"), "--port", "0"], ready=r"orchestrator: serving on port (\d+)")
    try:
        channel = grpc.insecure_channel(f"localhost:{server.match.group(1)}")
        stub = orchestrator_pb2_grpc.PipelineStub(channel)
        info = stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=30)
        assert info.architecture == "segnet+tracker"
        with SynthDataset(d / "synth") as ds:
            frames = list(ds.frames(0, 24))
        requests = [orchestrator_pb2.AnalyzeRequest(frame=common_pb2.FrameRef(index=i, time_s=i / 30),
                                                    image=image_to_proto(img)) for i, img in frames]
        garbage = common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"not a jpeg"))
        requests.insert(5, orchestrator_pb2.AnalyzeRequest(frame=common_pb2.FrameRef(index=999), image=garbage))
        got = list(stub.AnalyzeStream(iter(requests), timeout=300))
        bad = [r for r in got if r.frame.index == 999]
        assert len(bad) == 1 and bad[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        good = [r for r in got if r.frame.index != 999]
        assert [r.frame.index for r in good] == list(range(24))
        streamed = sorted((r.frame.index, a.track_id, round(a.instance.box.x1, 1)) for r in good for a in r.animals)
        analysed = sorted((int(f), int(t), round(float(x), 1))
                          for f, t, x in zip(full["frame"], full["track_id"], full["x1"], strict=True))
        assert streamed == analysed
        with pytest.raises(grpc.RpcError) as err:   # a module the pipeline was not configured with
            list(stub.AnalyzeStream(iter([orchestrator_pb2.AnalyzeRequest(
                frame=common_pb2.FrameRef(index=0), image=image_to_proto(frames[0][1]),
                modules=["segnet", "posenet"])]), timeout=60))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "posenet" in err.value.details()
    finally:
        server.terminate()
