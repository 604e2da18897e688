"""BehaveNet end to end: `sipec synth` -> `sipec train behavenet` -> `sipec evaluate behavenet` ->
`sipec serve behavenet` as a real process (local backend, and tfserving backend through
`sipec serve model-server`).

The network is small (xception-small at 32x32, window n=2) and trains for a minute on three short
synthetic videos, so its accuracy is far below the benchmark's; the test asks that it beats
shuffled-label chance clearly on a held-out video.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import grpc
import numpy as np
import pytest

from tests.conftest import ServerProcess, behind_model_server, wait_until

READY = r"behavenet: serving on port (\d+)"
N = 2  # window half-width of the test model
TRAIN_ARGS = ["--epochs", "8", "--temporal-epochs", "6", "--input-size", "32", "--crop-px", "64",
              "--pair-crop-px", "96", "--pair-dilation-px", "4", "--window-n", str(N), "--frame-step", "3",
              "--seed", "0"]


pytestmark = pytest.mark.slow   # trains the networks in a fixture (minutes on 2 cores)


def _main(args: list[str]) -> int:
    from sipec.cli import main

    return main(args)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("behavenet-synth")
    out = {}
    for name, seed in (("train_a", 11), ("train_b", 12), ("train_c", 14), ("test", 13)):
        assert _main(["synth", "--out", str(root / name), "--animals", "3", "--frames", "900", "--seed", str(seed),
                      "--size", "320x240", "--quiet"]) == 0
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def repo(videos, tmp_path_factory):
    root = tmp_path_factory.mktemp("behavenet-repo")
    rc = _main(["train", "behavenet", "--data", str(videos["train_a"]), str(videos["train_b"]),
                str(videos["train_c"]), "--out", str(root), *TRAIN_ARGS])
    assert rc == 0
    return root


@pytest.fixture(scope="module")
def crops(videos, repo):
    """Individual crops of the held-out video's animals 0 and 1, cut as the model's metadata says."""
    from sipec.geometry import crop_around
    from sipec.serving.repository import ModelRepository
    from sipec.synth.reader import SynthDataset

    side = ModelRepository(repo).get("behavenet").metadata()["crops"]["crop_px"]   # the service resizes them
    out: dict[int, list[np.ndarray]] = {0: [], 1: []}
    with SynthDataset(videos["test"]) as ds:
        for index, frame in ds.frames(0, 60):
            for inst in ds.instances(index):
                if inst.identity in out and len(out[inst.identity]) < 10:
                    out[inst.identity].append(crop_around(frame, inst.com, side))
    assert all(len(v) == 10 for v in out.values())
    return out


def test_training_exports_three_models_and_beats_chance(videos, repo, tmp_path):
    from sipec.serving.repository import ModelRepository

    r = ModelRepository(repo)
    assert r.models() == ["behavenet", "behavenet-features", "behavenet-frame"]
    meta = r.get("behavenet").metadata()
    assert meta["class_names"] == ["none", "walking", "rearing", "grooming", "resting", "social_grooming"]
    assert meta["window"] == {"n": N, "size": 2 * N + 1} and meta["backbone"]["name"] == "xception-small"
    assert meta["training"]["data"]["pair_crops"] > 0 and len(meta["training"]["data"]["videos"]) == 3

    out = tmp_path / "report.json"
    assert _main(["evaluate", "behavenet", "--model-repo", str(repo), "--data", str(videos["test"]),
                  "--json", str(out), "--ethogram-dir", str(tmp_path / "eth")]) == 0
    report = json.loads(out.read_text())
    for model in ("frame", "temporal"):
        ind = report["models"][model]["individual"]
        chance = ind["shuffled_label_chance"]
        # held-out video: clearly above chance (labels shifted in time), far from perfect
        assert ind["macro_f1"] > chance["macro_f1_mean"] + 4 * chance["macro_f1_sd"], (model, ind["macro_f1"], chance)
        assert ind["macro_f1"] > 0.25
        assert set(ind["per_class"]) == set(meta["class_names"])
        assert np.asarray(ind["confusion"]["matrix"]).sum() == report["individual_crops"]
        assert set(ind["pearson_over_time"]) == set(meta["class_names"])
    assert report["models"]["temporal"]["pair"]["n"] == report["pair_crops"] > 0
    assert (tmp_path / "eth" / "test_ethogram.png").stat().st_size > 2000
    assert "bouts" in (tmp_path / "eth" / "test_bouts.csv").read_text().splitlines()[0]


# ------------------------------------------------------------------------------------------- service


@pytest.fixture(scope="module")
def server(repo):
    srv = ServerProcess(["serve", "behavenet", "--model-repo", str(repo), "--port", "0", "--max-subjects", "2",
                         "--poll-s", "0.5"], READY)
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def stub(server):
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.v1 import behavenet_pb2_grpc

    channel = make_channel(f"localhost:{server.match.group(1)}")
    wait_for_serving(channel, "sipec.v1.BehaveNet", timeout_s=60)
    yield behavenet_pb2_grpc.BehaveNetStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def offline(repo):
    """The exported models in this process, to compute what the service must answer."""
    from services.behavenet.predict import repository_predictors

    return repository_predictors(repo, "behavenet")


def _expected(offline, crop_list: list[np.ndarray]) -> np.ndarray:
    """Probabilities of every frame of one subject's sequence (edge-padded windows), computed offline."""
    from services.behavenet.crops import resize_crop
    from services.behavenet.windows import windows

    x = np.stack([resize_crop(c, 32) for c in crop_list])
    return offline.temporal(windows(offline.features(x), N).astype(np.float32))


def _frame(subject: str, index: int, crop: np.ndarray | None = None, end: bool = False, **image):
    from sipec.api.convert import frame_ref_to_proto, image_to_proto
    from sipec.v1 import behavenet_pb2

    msg = behavenet_pb2.BehaviourFrame(frame=frame_ref_to_proto("test.mp4", index, index / 30.0), subject=subject,
                                       end_of_track=end)
    if crop is not None:
        msg.crop.CopyFrom(image_to_proto(crop, **image))
    return msg


def test_health_and_model_info(server, stub):
    from sipec.serving.client import health_status, make_channel
    from sipec.v1 import common_pb2

    channel = make_channel(f"localhost:{server.match.group(1)}")
    assert health_status(channel, "sipec.v1.BehaveNet") == "SERVING"
    info = stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
    assert (info.module, info.model_name, info.version, info.backend) == ("behavenet", "behavenet", 1, "local")
    assert list(info.class_names) == ["none", "walking", "rearing", "grooming", "resting", "social_grooming"]
    assert (info.input_height, info.input_width) == (64, 64)   # crops callers cut; the network sees 32x32
    meta = json.loads(info.metadata_json)
    assert meta["window"]["n"] == N and meta["crops"]["input_size"] == 32 and meta["crops"]["pair_crop_px"] == 96
    assert meta["models"]["features"] == "behavenet-features"


def test_classify_one_window(stub, crops, offline):
    from sipec.api.convert import image_to_proto
    from sipec.v1 import behavenet_pb2

    window = crops[0][:2 * N + 1]
    resp = stub.Classify(behavenet_pb2.ClassifyRequest(key="w1", window=[image_to_proto(c) for c in window]),
                         timeout=30)
    expected = _expected(offline, window)[N]   # the centre frame's window is complete
    assert resp.key == "w1" and resp.model_version == 1
    np.testing.assert_allclose(resp.behaviours.values, expected, rtol=1e-4, atol=1e-5)
    assert resp.behaviour == resp.behaviours.names[int(np.argmax(expected))]
    assert resp.confidence == pytest.approx(float(np.max(expected)), rel=1e-5)
    # JPEG crops work too
    jpeg = stub.Classify(behavenet_pb2.ClassifyRequest(window=[image_to_proto(c, "jpeg") for c in window]), timeout=30)
    assert sum(jpeg.behaviours.values) == pytest.approx(1.0, abs=1e-4)


def test_classify_bad_requests_name_the_field(stub, crops):
    from sipec.api.convert import image_to_proto
    from sipec.v1 import behavenet_pb2, common_pb2

    good = [image_to_proto(c) for c in crops[0][:2 * N + 1]]
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(behavenet_pb2.ClassifyRequest(window=good[:3]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "window: expected 5 crops" in info.value.details() and "got 3" in info.value.details()
    bad = list(good)
    bad[2] = common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"not an image", format="jpeg"))
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(behavenet_pb2.ClassifyRequest(window=bad), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "window[2].encoded" in info.value.details()
    stub.Classify(behavenet_pb2.ClassifyRequest(window=good), timeout=10)   # still serving


class _Stream:
    """A ClassifyStream driven message by message: send one, see what has come back."""

    def __init__(self, stub) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.responses: list = []
        self.done = threading.Event()
        self.error: Exception | None = None

        def reqs():
            while True:
                item = self.requests.get()
                if item is None:
                    return
                yield item

        def pump():
            try:
                for r in stub.ClassifyStream(reqs(), timeout=60):
                    self.responses.append(r)
            except Exception as exc:  # noqa: BLE001
                self.error = exc
            self.done.set()

        threading.Thread(target=pump, daemon=True).start()

    def send(self, msg, expect_total: int, settle_s: float = 0.3) -> None:
        self.requests.put(msg)
        assert wait_until(lambda: len(self.responses) >= expect_total, timeout_s=30), (len(self.responses),
                                                                                      expect_total)
        time.sleep(settle_s)   # nothing more may arrive early
        assert len(self.responses) == expect_total

    def close(self) -> list:
        self.requests.put(None)
        assert self.done.wait(30)
        assert self.error is None, self.error
        return self.responses


def test_stream_answers_n_frames_late_and_flushes_at_end_of_track(stub, crops, offline):
    frames = crops[0][:7]
    stream = _Stream(stub)
    for t, crop in enumerate(frames):
        stream.send(_frame("3", t, crop), expect_total=max(0, t + 1 - N))   # frame t-n answered after frame t
    stream.send(_frame("3", 7, end=True), expect_total=len(frames))         # end_of_track flushes the last n
    got = stream.close()
    assert [r.frame.index for r in got] == list(range(len(frames)))
    assert all(r.subject == "3" and not r.HasField("error") for r in got)
    assert got[1].frame.video == "test.mp4" and got[1].frame.time_s == pytest.approx(1 / 30)
    expected = _expected(offline, frames)   # edge-padded at both ends, as in training
    np.testing.assert_allclose([list(r.behaviours.values) for r in got], expected, rtol=1e-4, atol=1e-5)
    assert [r.behaviour for r in got] == [got[0].behaviours.names[int(i)] for i in expected.argmax(axis=1)]


def test_stream_two_subjects_interleaved_with_a_bad_crop(stub, crops, offline):
    from sipec.v1 import common_pb2

    requests = []
    for t in range(6):
        bad = t == 3
        requests.append(_frame("1", t, None if bad else crops[0][t]))
        if bad:
            requests[-1].crop.CopyFrom(common_pb2.Image(raw=common_pb2.RawImage(data=b"\0" * 10, height=4, width=4,
                                                                                 channels=3)))
        requests.append(_frame("2+5", t, crops[1][t], encoding="png"))
    got = list(stub.ClassifyStream(iter(requests), timeout=60))   # no end_of_track: the stream's end flushes
    errors = [r for r in got if r.HasField("error")]
    assert len(errors) == 1 and (errors[0].subject, errors[0].frame.index) == ("1", 3)
    assert errors[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "crop.raw" in errors[0].error.message and "expected height*width*channels" in errors[0].error.message
    ok = {s: [r for r in got if r.subject == s and not r.HasField("error")] for s in ("1", "2+5")}
    assert [r.frame.index for r in ok["1"]] == [0, 1, 2, 4, 5]      # the bad frame is not in the window
    assert [r.frame.index for r in ok["2+5"]] == list(range(6))
    good_1 = [crops[0][t] for t in (0, 1, 2, 4, 5)]
    np.testing.assert_allclose([list(r.behaviours.values) for r in ok["1"]], _expected(offline, good_1),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([list(r.behaviours.values) for r in ok["2+5"]], _expected(offline, crops[1][:6]),
                               rtol=1e-4, atol=1e-5)


def test_stream_limits_open_subjects_and_checks_fields(stub, crops):
    c = crops[0][0]
    requests = [_frame("a", 0, c), _frame("b", 0, c), _frame("c", 0, c),          # c: a third subject
                _frame("a", 1, end=True), _frame("c", 1, c),                         # a ended: room for c
                _frame("", 2, c), _frame("b", 2)]                                    # no subject; no crop
    got = list(stub.ClassifyStream(iter(requests), timeout=60))
    by = [(r.subject, r.frame.index, r.error.code if r.HasField("error") else 0) for r in got]
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert ("c", 0, exhausted) in by
    assert "limit per stream" in next(r.error.message for r in got if r.error.code == exhausted)
    assert ("c", 1, 0) in by and ("a", 0, 0) in by and ("b", 0, 0) in by
    assert ("", 2, invalid) in by and ("b", 2, invalid) in by
    assert "subject: empty" in next(r.error.message for r in got if r.subject == "")
    assert "crop: missing" in next(r.error.message for r in got if r.subject == "b" and r.error.code)
    assert len(got) == 6   # the end_of_track message without a crop is no frame: it gets no answer


# ----------------------------------------------------------------------------------- tfserving backend


def test_tfserving_backend_answers_like_local_and_survives_a_dead_backend(repo, stub, crops):
    from sipec.api.convert import image_to_proto
    from sipec.serving.client import health_status, make_channel, wait_for_serving
    from sipec.v1 import behavenet_pb2, behavenet_pb2_grpc, common_pb2

    with behind_model_server("behavenet", repo, READY, "--poll-s", "0.3", "--backend-timeout-s", "5",
                             poll_s="0") as (ms, bn):
        channel = make_channel(f"localhost:{bn.match.group(1)}")
        wait_for_serving(channel, "sipec.v1.BehaveNet", timeout_s=60)
        remote = behavenet_pb2_grpc.BehaveNetStub(channel)
        info = remote.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=10)
        assert info.backend == "tfserving" and list(info.class_names)[-1] == "social_grooming"
        req = behavenet_pb2.ClassifyRequest(window=[image_to_proto(c) for c in crops[1][:2 * N + 1]])
        a, b = stub.Classify(req, timeout=30), remote.Classify(req, timeout=30)
        np.testing.assert_allclose(b.behaviours.values, a.behaviours.values, rtol=1e-5, atol=1e-6)
        assert a.behaviour == b.behaviour and b.model_version == 1
        stream = list(remote.ClassifyStream(iter([_frame("9", t, crops[1][t]) for t in range(4)]), timeout=30))
        assert [r.frame.index for r in stream] == [0, 1, 2, 3] and not any(r.HasField("error") for r in stream)

        ms.terminate()   # the backend dies: clear statuses, per-item errors, NOT_SERVING; the service lives on
        with pytest.raises(grpc.RpcError) as err:
            remote.Classify(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        got = list(remote.ClassifyStream(iter([_frame("9", 0, crops[1][0])]), timeout=30))
        assert len(got) == 1 and got[0].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "behavenet-features" in got[0].error.message
        assert wait_until(lambda: health_status(channel, "sipec.v1.BehaveNet") == "NOT_SERVING", timeout_s=30)
        assert bn.proc.poll() is None


def test_leave_one_video_out_trains_and_scores_a_fold_per_video(videos, tmp_path, capsys):
    out = tmp_path / "lovo.json"
    args = ["evaluate", "behavenet", "--leave-one-video-out", "--data", str(videos["train_a"]), str(videos["train_b"]),
            "--max-frames", "60", "--epochs", "1", "--temporal-epochs", "1", "--input-size", "32", "--crop-px", "64",
            "--window-n", "1", "--frame-step", "2", "--json", str(out)]
    assert _main(args) == 0
    report = json.loads(out.read_text())
    assert [f["held_out"] for f in report["folds"]] == ["train_a", "train_b"]
    for fold in report["folds"]:
        assert fold["report"]["videos"] == [fold["held_out"]]          # tested only on the held-out video
        assert 0 < fold["report"]["individual_crops"] <= 60 * 3
    assert len(report["summary"]["temporal"]["macro_f1_per_fold"]) == 2 and report["k"] == 2
    vals = report["summary"]["temporal"]["macro_f1_per_fold"]
    assert report["summary"]["temporal"]["macro_f1_sem"] == pytest.approx(abs(vals[0] - vals[1]) / 2)
    assert report["pooled"]["individual_crops"] == sum(f["report"]["individual_crops"] for f in report["folds"])
    # bad input: exit status 2 and a message naming the flag or file
    capsys.readouterr()
    assert _main(["evaluate", "behavenet", "--data", str(videos["train_a"])]) == 2
    assert "give --model-repo" in capsys.readouterr().err
    assert _main(["evaluate", "behavenet", "--leave-one-video-out", "--data", str(videos["train_a"])]) == 2
    assert "folds hold whole videos" in capsys.readouterr().err
    assert _main(["evaluate", "behavenet", "--folds", "3", "--data", str(videos["train_a"]),
                  str(videos["train_b"])]) == 2
    assert "between 2 and the 2 --data folder(s), not 3" in capsys.readouterr().err
    assert _main(["train", "behavenet", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "--data: directory not found" in capsys.readouterr().err
    assert _main(["train", "behavenet", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "expected video.mp4" in capsys.readouterr().err
    assert _main(["train", "behavenet", "--data", str(videos["train_a"]), "--out", str(tmp_path / "r"),
                  "--input-size", "8"]) == 2
    assert "input_size must be 16 to 2048" in capsys.readouterr().err
