"""IdNet end to end: `sipec train idnet` on synth, `sipec evaluate idnet`, and `sipec serve idnet` as a real
process (local backend, and tfserving backend through `sipec serve model-server`)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from tests.conftest import ServerProcess, behind_model_server

T = 1
S = 48
# small CPU configuration; learning rates raised from the paper's (2.5e-4, 5e-5) so that a few epochs on a few
# hundred crops learn something
TRAIN_ARGS = ["--t", str(T), "--input-size", str(S), "--crop-px", "64", "--epochs", "5", "--lr", "1e-3",
              "--recurrent-epochs", "5", "--recurrent-lr", "1e-3", "--gru-units", "16", "--train-fraction", "0.7",
              "--seed", "0"]
READY = r"idnet: serving on port (\d+)"


pytestmark = pytest.mark.slow   # trains the networks in a fixture (minutes on 2 cores)


def _main(args: list[str]) -> int:
    from sipec.cli import main

    return main(args)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("idnet-synth") / "s"
    assert _main(["synth", "--out", str(out), "--animals", "4", "--frames", "200", "--seed", "5",
                  "--size", "320x240", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def repo(synth, tmp_path_factory):
    root = tmp_path_factory.mktemp("idnet-repo")
    assert _main(["train", "idnet", "--data", str(synth), "--out", str(root), *TRAIN_ARGS]) == 0
    return root


def test_training_exports_both_models_and_beats_chance(repo):
    from sipec.serving.repository import ModelRepository

    r = ModelRepository(repo)
    assert r.versions("idnet") == [1] and r.versions("idnet-frame") == [1]
    meta = r.get("idnet").metadata()
    assert meta["t"] == T and meta["class_names"] == [f"animal_{i}" for i in range(4)]
    assert r.get("idnet-frame").metadata()["t"] == 0
    held = meta["training"]["data"]["held_out"]
    # 4 identities: chance is 0.25; the recurrent network on the held-out last 30% must clearly beat it
    assert held["recurrent"]["chance_shuffled_labels"] < 0.35
    assert held["recurrent"]["accuracy"] > 0.5, held


def test_evaluate_cli_reports_scores(synth, repo, tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert _main(["evaluate", "idnet", "--data", str(synth), "--model-repo", str(repo), "--test-fraction", "0.3",
                  "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert set(scores) == {"frame", "recurrent"}
    rec = scores["recurrent"]
    assert rec["n"] > 0 and len(rec["confusion_matrix"]["matrix"]) == 4
    assert sum(map(sum, rec["confusion_matrix"]["matrix"])) == rec["n"]
    assert rec["accuracy"] > rec["chance_shuffled_labels"]
    assert "per identity" in capsys.readouterr().out


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert _main(["train", "idnet", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) != 0
    assert f"--data: not found: {tmp_path / 'missing'}" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hello")
    assert _main(["train", "idnet", "--data", str(tmp_path / "x.txt"), "--out", str(tmp_path / "r")]) != 0
    err = capsys.readouterr().err
    assert "x.txt" in err and "not a sipec synth folder" in err


# ---------------------------------------------------------------------------------------------- service
@pytest.fixture(scope="module")
def crops(synth):
    """(frames, S-side crops) of track 1 for frames 80..84, cut as the model's metadata says (crop_px 64)."""
    from sipec.geometry import crop_around
    from sipec.synth.reader import SynthDataset

    ds = SynthDataset(synth)
    out, masks = [], []
    for i in range(80, 85):
        inst = next(x for x in ds.instances(i) if x.track_id == 1)
        out.append(crop_around(ds.frame(i), inst.com, 64))
        masks.append(crop_around(inst.mask.astype(np.uint8), inst.com, 64).astype(bool))
    return out, masks


def _server(args: list[str]) -> ServerProcess:
    return ServerProcess(["serve", "idnet", "--port", "0", "--poll-s", "0.5", *args], READY)


@pytest.fixture(scope="module")
def server(repo):
    srv = _server(["--model-repo", str(repo)])
    yield srv
    srv.terminate()


def _stub(server):
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.v1 import idnet_pb2_grpc

    channel = make_channel(f"localhost:{server.match.group(1)}")
    wait_for_serving(channel, "sipec.v1.IdNet", timeout_s=60)
    return channel, idnet_pb2_grpc.IdNetStub(channel)


@pytest.fixture(scope="module")
def stub(server):
    channel, stub = _stub(server)
    yield stub
    channel.close()


def _sequence(crops, masks=None, key=""):
    from sipec.api.convert import image_to_proto, mask_to_proto
    from sipec.v1 import idnet_pb2

    return idnet_pb2.CropSequence(crops=[image_to_proto(c) for c in crops],
                                  masks=[mask_to_proto(m) for m in masks] if masks else [], key=key)


def _expected(repo, crops, masks):
    """What the exported model answers for these crops, masked by the shared function, in this process."""
    from services.idnet.masking import MaskSettings, prepare_sequence
    from sipec.serving.backends import LocalBackend

    b = LocalBackend(repo, "idnet")
    try:
        settings = MaskSettings.from_json(b.metadata().info["masking"])
        x = np.stack([prepare_sequence(c, m, settings) for c, m in zip(crops, masks, strict=True)])
        return b.predict({"crops": x}).outputs["probabilities"]
    finally:
        b.close()


def test_health_and_model_info(server, stub):
    from sipec.serving.client import health_status, make_channel
    from sipec.v1 import common_pb2

    info = stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=30)
    assert info.module == "idnet" and info.model_name == "idnet" and info.version == 1
    assert list(info.class_names) == [f"animal_{i}" for i in range(4)]
    assert info.input_height == S and json.loads(info.metadata_json)["t"] == T
    channel = make_channel(f"localhost:{server.match.group(1)}")
    assert health_status(channel, "sipec.v1.IdNet") == "SERVING"
    channel.close()


def test_identify_batch_matches_model(repo, stub, crops):
    from sipec.v1 import idnet_pb2

    c, m = crops
    seqs = [(c[0:3], m[0:3]), (c[1:4], None), (c[2:5], m[2:5])]
    resp = stub.Identify(idnet_pb2.IdentifyRequest(sequences=[_sequence(a, b, key=f"s{i}")
                                                              for i, (a, b) in enumerate(seqs)]), timeout=60)
    assert resp.model_version == 1 and [r.key for r in resp.results] == ["s0", "s1", "s2"]
    got = np.array([list(r.identities.values) for r in resp.results])
    np.testing.assert_allclose(got, _expected(repo, [a for a, _ in seqs], [b for _, b in seqs]), atol=1e-4)
    for r in resp.results:
        assert r.identity == r.identities.names[int(np.argmax(r.identities.values))]
        assert r.confidence == pytest.approx(max(r.identities.values), abs=1e-6)


def test_identify_bad_input_names_the_field(stub, crops):
    from sipec.v1 import common_pb2, idnet_pb2

    c, m = crops
    with pytest.raises(grpc.RpcError) as err:
        stub.Identify(idnet_pb2.IdentifyRequest(sequences=[_sequence(c[0:3]), _sequence(c[0:2])]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sequences[1].crops: 2 crops" in err.value.details() and "3" in err.value.details()
    bad = _sequence(c[0:3])
    bad.crops[1].CopyFrom(common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"not an image")))
    with pytest.raises(grpc.RpcError) as err:
        stub.Identify(idnet_pb2.IdentifyRequest(sequences=[bad]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sequences[0].crops[1]" in err.value.details()
    wrong_mask = _sequence(c[0:3], [mm[:40] for mm in m[0:3]])
    with pytest.raises(grpc.RpcError) as err:
        stub.Identify(idnet_pb2.IdentifyRequest(sequences=[wrong_mask]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sequences[0].masks[0]" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.Identify(idnet_pb2.IdentifyRequest(), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sequences" in err.value.details()


def _stream_req(track, index, crop=None, mask=None, end=False, **image):
    from sipec.api.convert import frame_ref_to_proto, image_to_proto, mask_to_proto
    from sipec.v1 import common_pb2, idnet_pb2

    req = idnet_pb2.IdentifyStreamRequest(frame=frame_ref_to_proto("v", index), track_id=track, end_of_track=end)
    if crop is not None:
        req.crop.CopyFrom(image_to_proto(crop))
    if image:
        req.crop.CopyFrom(common_pb2.Image(**image))
    if mask is not None:
        req.mask.CopyFrom(mask_to_proto(mask))
    return req


def test_identify_stream_delay_flush_and_bad_frames(repo, stub, crops):
    from sipec.v1 import common_pb2

    c, m = crops
    reqs = [_stream_req(1, 80, c[0], m[0]), _stream_req(1, 81, c[1], m[1]),
            _stream_req(2, 81, encoded=common_pb2.EncodedImage(data=b"junk")),
            _stream_req(1, 82, c[2], m[2]), _stream_req(1, 0, end=True)]
    got = list(stub.IdentifyStream(iter(reqs), timeout=60))
    # T=1: frame 80 is answered after 81 arrives, before the bad frame's error; 82 only at the flush
    assert [(r.track_id, r.frame.index, r.result.HasField("error")) for r in got] == \
        [(1, 80, False), (2, 81, True), (1, 81, False), (1, 82, False)]
    err = got[1].result.error
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "crop" in err.message
    # edge-padded windows, exactly what Identify would answer
    expected = _expected(repo, [[c[0], c[0], c[1]], c[0:3], [c[1], c[2], c[2]]],
                         [[m[0], m[0], m[1]], m[0:3], [m[1], m[2], m[2]]])
    ok = [r for r in got if not r.result.HasField("error")]
    np.testing.assert_allclose(np.array([list(r.result.identities.values) for r in ok]), expected, atol=1e-4)


def test_stream_end_flushes_open_tracks(stub, crops):
    c, _ = crops
    got = list(stub.IdentifyStream(iter([_stream_req(3, 1, c[0]), _stream_req(1, 1, c[1]),
                                         _stream_req(0, 2, c[2])]), timeout=60))
    assert got[0].result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "track_id" in got[0].result.error.message
    assert [(r.track_id, r.frame.index) for r in got[1:]] == [(1, 1), (3, 1)]


def test_tfserving_backend_through_model_server(repo, crops):
    from sipec.v1 import idnet_pb2

    with behind_model_server("idnet", repo, READY, "--poll-s", "0.5", poll_s="0.5") as (_, srv):
        channel, stub = _stub(srv)
        c, m = crops
        resp = stub.Identify(idnet_pb2.IdentifyRequest(sequences=[_sequence(c[0:3], m[0:3])]), timeout=60)
        assert list(resp.results[0].identities.names) == [f"animal_{i}" for i in range(4)]
        np.testing.assert_allclose(list(resp.results[0].identities.values),
                                   _expected(repo, [c[0:3]], [m[0:3]])[0], atol=1e-4)
        channel.close()


def test_leave_one_video_out_retrains_per_video_and_scores_the_one_left_out(synth, tmp_path, capsys):
    """Two recordings of the same 4 animals (same --appearance-seed as `synth`'s seed): each fold trains on one
    and scores the other; both folds and their mean are reported."""
    other = tmp_path / "other"
    assert _main(["synth", "--out", str(other), "--animals", "4", "--frames", "60", "--seed", "6",
                  "--appearance-seed", "5", "--size", "320x240", "--quiet"]) == 0
    out = tmp_path / "lovo.json"
    assert _main(["evaluate", "idnet", "--data", str(synth), str(other), "--leave-one-video-out", "--epochs", "1",
                  "--t", "0", "--input-size", "32", "--crop-px", "64", "--lr", "1e-3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert str(synth) in text and str(other) in text      # one fold per video, named by the video left out
    accs = [v for v in _find(report, "accuracy") if isinstance(v, float)]
    assert accs and all(0.0 <= a <= 1.0 for a in accs)
    assert "leave" in capsys.readouterr().out.lower()


def _find(obj, key):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find(v, key)


def test_folds_and_train_sizes_train_per_split_and_report_mean_sem_and_a_curve(synth, tmp_path, capsys):
    """--folds 2 on one video: two contiguous blocks of frames, each trained on the other; --train-sizes 20,60:
    nested frame subsets tested on the last 30% of the frames; mean +- s.e.m., chance, the plot."""
    out = tmp_path / "cv.json"
    assert _main(["evaluate", "idnet", "--data", str(synth), "--folds", "2", "--train-sizes", "20,60", "--epochs",
                  "1", "--t", "0", "--input-size", "32", "--crop-px", "64", "--lr", "1e-3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    folds = report["folds"]
    assert [f["fold"] for f in folds] == [1, 2] and sum(f["test_frames"] for f in folds) == 200
    assert all(f["train_frames"] + f["test_frames"] == 200 for f in folds)
    s = report["folds_summary"]["frame_accuracy"]
    assert s["n"] == 2 and s["sem"] == pytest.approx(abs(folds[0]["frame_accuracy"] - folds[1]["frame_accuracy"]) / 2)
    assert 0.0 <= report["folds_summary"]["frame_chance"]["mean"] <= 1.0
    sizes = report["train_sizes"]
    assert [(r["train_size"], r["test_frames"]) for r in sizes] == [(20, 60), (60, 60)]
    assert (tmp_path / "cv.png").is_file() and (tmp_path / "cv.svg").is_file()
    assert "2-fold frame accuracy" in capsys.readouterr().out
    assert _main(["evaluate", "idnet", "--data", str(synth), "--folds", "2", "--model-repo", str(tmp_path)]) == 2
