"""`sipec serve tracker` as a real process: Track streams (state per stream, order, bounds, bad frames),
Estimate3D with a depth model trained by `sipec train depth3d` (local backend and through TF Serving's
protocol), GetModelInfo, health, and a dead backend."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest

from services.tracker import depth3d
from services.tracker.train import PARAMS_FILE
from sipec.api.convert import InstanceData, instance_to_proto, item_error_code, probabilities_to_proto
from sipec.serving.client import health_status, make_channel, wait_for_serving
from sipec.synth.config import SynthConfig
from sipec.synth.pipeline import generate
from sipec.synth.reader import SynthDataset
from sipec.v1 import common_pb2, tracker_pb2, tracker_pb2_grpc
from tests.conftest import ROOT, ServerProcess, behind_model_server, wait_until

READY = r"tracker: serving on port (\d+)"
H, W = 240, 320


@pytest.fixture(scope="module")
def synth_persp(tmp_path_factory):
    out = tmp_path_factory.mktemp("persp")
    generate(SynthConfig(animals=4, frames=250, seed=6, width=W, height=H, camera="perspective"), out)
    return out


@pytest.fixture(scope="module")
def repo(synth_persp, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    done = subprocess.run([sys.executable, "-m", "sipec", "train", "depth3d", "--positions",
                           str(synth_persp / "positions_3d.csv"), "--out", str(root), "--isomap-rows", "400"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "exported" in done.stdout
    return root


@pytest.fixture(scope="module")
def server(repo):
    srv = ServerProcess(["serve", "tracker", "--model-repo", str(repo), "--port", "0", "--max-tracks", "3",
                         "--max-streams", "4", "--poll-s", "0.5"], READY)
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def channel(server):
    ch = make_channel(f"localhost:{server.match.group(1)}")
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return tracker_pb2_grpc.TrackerStub(channel)


def square(x: int, y: int, size: int = 16) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y:y + size, x:x + size] = True
    return m


def request(frame: int, masks: list[np.ndarray], identities: list[np.ndarray] | None = None,
            options: tracker_pb2.TrackerOptions | None = None, names=("a", "b")) -> tracker_pb2.TrackRequest:
    req = tracker_pb2.TrackRequest(frame=common_pb2.FrameRef(video="v", index=frame))
    for i, m in enumerate(masks):
        req.instances.append(instance_to_proto(InstanceData.from_mask(m, 1.0, index=i)))
    for p in identities or []:
        req.identities.append(probabilities_to_proto(list(names), p))
    if options is not None:
        req.options.CopyFrom(options)
    return req


def test_health_and_model_info(channel, stub):
    wait_for_serving(channel, "sipec.v1.Tracker", timeout_s=60)
    info = stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=30)
    assert (info.module, info.model_name, info.version, info.backend) == ("tracker", "depth3d", 1, "local")
    assert info.architecture == "isomap6-ols" and (info.input_width, info.input_height) == (W, H)
    meta = json.loads(info.metadata_json)
    assert meta["isomap"]["components"] == 6 and meta["training"]["data"]["rows"] > 500


def test_track_stream_tracks_identifies_and_reports_interactions(stub):
    reqs = []
    for f in range(12):
        a, b = square(60 + 5 * f, 40), square(160 - 5 * f, 60)   # passing 4 pixels apart
        # IdNet (simulated here) is unsure in frame 6 and wrong about animal a
        pa = np.array([0.2, 0.8]) if f == 6 else np.array([0.9, 0.1])
        masks, ids = ([b, a], [np.array([0.1, 0.9]), pa]) if f % 2 else ([a, b], [pa, np.array([0.1, 0.9])])
        reqs.append(request(f, masks, ids, tracker_pb2.TrackerOptions(identity_window=5, interaction_dilation=4)))
    responses = list(stub.Track(iter(reqs), timeout=60))
    assert len(responses) == 12
    for f, r in enumerate(responses):
        assert not r.HasField("error") and r.frame.index == f
        by_index = {t.index: t for t in r.instances}
        a, b = (by_index[1], by_index[0]) if f % 2 else (by_index[0], by_index[1])
        assert (a.track_id, b.track_id) == (1, 2)
        assert (a.identity, b.identity) == ("a", "b"), f"frame {f}"        # smoothing overrides frame 6
        assert 0.5 < a.identity_confidence <= 1.0
    # dilated by 4 pixels each, the squares touch once their corners are closer than about 8 pixels
    met = [f for f, r in enumerate(responses) if r.interactions]
    assert met == [8, 9, 10, 11]
    inter = responses[met[0]].interactions[0]
    assert (inter.track_a, inter.track_b) == (1, 2) and inter.box.x2 > inter.box.x1


def test_bad_frames_get_errors_and_the_stream_goes_on(stub):
    bad_mask = request(2, [square(20, 40)])
    bad_mask.instances[0].mask.counts = b"!!not rle"
    bad_probs = request(4, [square(24, 40)])
    bad_probs.identities.append(common_pb2.Probabilities(names=["a", "b"], values=[0.5, 0.5, 0.0]))
    reqs = [
        request(0, [square(20, 40)]),
        request(0, [square(22, 40)]),                                    # not after frame 0
        bad_mask,                                                        # undecodable mask
        request(3, [square(20, 40), square(100, 40), square(200, 40), square(20, 150)]),  # 4 tracks > --max-tracks 3
        bad_probs,                                                       # 3 values for 2 names
        request(5, [square(25, 40)]),
    ]
    rs = list(stub.Track(iter(reqs), timeout=60))
    assert [item_error_code(r.error) if r.HasField("error") else None for r in rs] == [
        None, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT, None]
    assert "not after the previous frame 0" in rs[1].error.message
    assert "instances[0].mask.counts" in rs[2].error.message
    assert "max_tracks=3" in rs[3].error.message
    assert "identities[0]" in rs[4].error.message
    assert [t.track_id for t in rs[5].instances] == [1]                  # the state survived every bad frame


def test_invalid_options_end_the_stream_with_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as exc:
        list(stub.Track(iter([request(0, [square(1, 1)], options=tracker_pb2.TrackerOptions(matching="nearest"))]),
                        timeout=30))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "options.matching" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        list(stub.Track(iter([request(0, [square(1, 1)], options=tracker_pb2.TrackerOptions(max_distance=-5))]),
                        timeout=30))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "options.max_distance" in exc.value.details()


def test_two_concurrent_streams_do_not_mix(stub):
    """Interleaved frames of two videos: each stream has its own tracks and frame order."""
    results: dict[str, list] = {}
    gates = {"one": queue.Queue(), "two": queue.Queue()}

    def frames(name: str, n_animals: int):
        for f in range(15):
            gates[name].get(timeout=30)
            masks = [square(10 + 3 * f, 30), square(250 - 3 * f, 150)][:n_animals]
            yield request(f, masks)

    def consume(name: str, n_animals: int):
        results[name] = list(stub.Track(frames(name, n_animals), timeout=60))

    threads = [threading.Thread(target=consume, args=(n, k)) for n, k in (("one", 2), ("two", 1))]
    for t in threads:
        t.start()
    for _ in range(15):                        # strictly interleaved: one frame of each video in turn
        gates["one"].put(1)
        gates["two"].put(1)
    for t in threads:
        t.join(60)
    assert len(results["one"]) == len(results["two"]) == 15
    assert all(not r.HasField("error") for r in results["one"] + results["two"])
    assert {tuple(sorted(t.track_id for t in r.instances)) for r in results["one"]} == {(1, 2)}
    assert {tuple(t.track_id for t in r.instances) for r in results["two"]} == {(1,)}


def _instances(ds: SynthDataset, frames: range):
    insts, truth, feats = [], [], []
    for f in frames:
        for inst in ds.instances(f):
            rle = {"size": inst.rle["size"], "counts": inst.rle["counts"]}
            insts.append(instance_to_proto(InstanceData(box=inst.box, rle=rle, com=inst.com, index=len(insts))))
            truth.append(inst.position_3d)
            feats.append((inst.area, *inst.com))
    return insts, np.array(truth), np.array(feats, dtype=np.float64)


def test_estimate3d_matches_the_trained_model_and_the_truth(stub, synth_persp, repo):
    ds = SynthDataset(synth_persp)
    insts, truth, feats = _instances(ds, range(200, 250))
    resp = stub.Estimate3D(tracker_pb2.Estimate3DRequest(instances=insts), timeout=30)
    got = np.array([(p.x, p.y, p.z) for p in resp.positions])
    assert [p.index for p in resp.positions] == list(range(len(insts)))
    params = depth3d.Depth3DParams.load(repo / "depth3d" / "1" / "assets" / PARAMS_FILE)
    np.testing.assert_allclose(got, depth3d.predict(params, feats.astype(np.float32)), atol=1e-4)
    err = depth3d.rmse_per_axis(got, truth)
    assert np.all(err[:2] < 0.1), err               # metres, in a 1.0 x 0.75 m room


def test_estimate3d_bad_input(stub, synth_persp):
    no_mask = common_pb2.Instance(box=common_pb2.Box(x1=1, y1=1, x2=5, y2=5))
    with pytest.raises(grpc.RpcError) as exc:
        stub.Estimate3D(tracker_pb2.Estimate3DRequest(instances=[no_mask]), timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "instances[0].mask is missing" in exc.value.details()
    small = instance_to_proto(InstanceData.from_mask(np.ones((48, 64), bool), 1.0))
    with pytest.raises(grpc.RpcError) as exc:
        stub.Estimate3D(tracker_pb2.Estimate3DRequest(instances=[small]), timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "trained on 320x240" in exc.value.details()
    ok = instance_to_proto(InstanceData.from_mask(square(100, 100), 1.0))
    with pytest.raises(grpc.RpcError) as exc:
        stub.Estimate3D(tracker_pb2.Estimate3DRequest(instances=[ok], model_name="nothere"), timeout=30)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND and "nothere" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        stub.Estimate3D(tracker_pb2.Estimate3DRequest(instances=[ok], model_name="../x"), timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model_name" in exc.value.details()
    assert len(stub.Estimate3D(tracker_pb2.Estimate3DRequest(instances=[ok]), timeout=30).positions) == 1


def test_through_tf_serving_protocol_and_a_dead_backend(repo, synth_persp):
    """depth3d served by `sipec serve model-server` (TF Serving's protocol); then the model server dies."""
    with behind_model_server("tracker", repo, READY, "--backend-timeout-s", "5") as (ms, tracker):
        ch = make_channel(f"localhost:{tracker.match.group(1)}")
        stub = tracker_pb2_grpc.TrackerStub(ch)
        wait_for_serving(ch, "sipec.v1.Tracker", timeout_s=60)
        insts, truth, feats = _instances(SynthDataset(synth_persp), range(240, 250))
        got = stub.Estimate3D(tracker_pb2.Estimate3DRequest(instances=insts), timeout=30)
        params = depth3d.Depth3DParams.load(repo / "depth3d" / "1" / "assets" / PARAMS_FILE)
        np.testing.assert_allclose([(p.x, p.y, p.z) for p in got.positions],
                                   depth3d.predict(params, feats.astype(np.float32)), atol=1e-4)
        assert stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=30).backend == "tfserving"
        ms.terminate()
        with pytest.raises(grpc.RpcError) as exc:
            stub.Estimate3D(tracker_pb2.Estimate3DRequest(instances=insts[:1]), timeout=30)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        # tracking does not need the model: health stays SERVING and Track answers
        assert health_status(ch, "sipec.v1.Tracker") == "SERVING"
        rs = list(stub.Track(iter([request(0, [square(5, 5)]), request(1, [square(6, 5)])]), timeout=30))
        assert [[t.track_id for t in r.instances] for r in rs] == [[1], [1]]
        assert wait_until(lambda: tracker.proc.poll() is None, timeout_s=1)
        ch.close()
