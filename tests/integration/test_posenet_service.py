"""`sipec serve posenet` as a real process: batch and streaming pose estimation, errors, model info, health,
and the tfserving backend through `sipec serve model-server`.

The served model is a small PoseNet with random weights: these tests check the service's contract (shapes,
origin/scale mapping against the in-process computation, errors), not its accuracy (that is evaluate's job).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tests.conftest import ServerProcess, behind_model_server

NAMES = ["snout", "left_ear", "right_ear", "tail_base"]
READY = r"posenet: serving on port (\d+)"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    import keras

    from services.posenet.model import build_posenet, export_posenet

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("posenet-repo")
    model = build_posenet(len(NAMES), 64, "small", small_width=8)
    export_posenet(model, root, "posenet", {"module": "posenet", "architecture": "simple-baselines/small",
                                            "input": {"height": 64, "width": 64, "channels": 3},
                                            "keypoint_names": NAMES})
    return root


@pytest.fixture(scope="module")
def server(repo):
    srv = ServerProcess(["serve", "posenet", "--model-repo", str(repo), "--port", "0", "--max-batch", "4"], READY)
    yield srv
    srv.terminate()


@pytest.fixture(scope="module")
def stub(server):
    from sipec.v1 import posenet_pb2_grpc

    channel = grpc.insecure_channel(f"localhost:{server.match.group(1)}")
    yield posenet_pb2_grpc.PoseNetStub(channel)
    channel.close()


def _crops(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)]


def _expected(repo, images):
    """Keypoints in crop pixels, computed in-process with the same model and shared code."""
    from services.posenet.predict import estimate_crops
    from services.posenet.service import fit_crop
    from sipec.serving.backends import LocalBackend

    backend = LocalBackend(repo, "posenet")
    fitted = [fit_crop(im, 64) for im in images]
    kp, _ = estimate_crops(backend, np.stack([c for c, _ in fitted]))
    backend.close()
    for i, (_, f) in enumerate(fitted):
        kp[i, :, :2] *= f
    return kp


def _request(images, origins=None, scales=None, min_confidence=0.0, frame=0, encoding="raw"):
    from sipec.api.convert import frame_ref_to_proto, image_to_proto
    from sipec.v1 import common_pb2, posenet_pb2

    req = posenet_pb2.PoseRequest(frame=frame_ref_to_proto("v.mp4", frame), min_confidence=min_confidence)
    for i, im in enumerate(images):
        c = req.crops.add(crop=image_to_proto(im, encoding), key=f"a{i}")
        if origins and origins[i] is not None:
            c.origin.CopyFrom(common_pb2.Point(x=origins[i][0], y=origins[i][1]))
        if scales:
            c.scale = scales[i]
    return req


def _array(pose):
    return np.array([[k.x, k.y, k.confidence] for k in pose.keypoints])


def test_estimate_pose_maps_origin_and_scale(stub, repo):
    images = _crops()
    expected = _expected(repo, images)
    resp = stub.EstimatePose(_request(images, origins=[(100.0, 50.0), None], scales=[2.0, 0.0]))
    assert [p.key for p in resp.poses] == ["a0", "a1"] and resp.model_version == 1
    assert [k.name for k in resp.poses[0].keypoints] == NAMES
    got0, got1 = _array(resp.poses[0]), _array(resp.poses[1])
    np.testing.assert_allclose(got0[:, :2], expected[0, :, :2] * 2.0 + [100.0, 50.0], atol=1e-2)
    np.testing.assert_allclose(got1[:, :2], expected[1, :, :2], atol=1e-2)      # no origin: crop pixels
    np.testing.assert_allclose(got0[:, 2], expected[0, :, 2], atol=1e-4)
    png = stub.EstimatePose(_request(images[:1], encoding="png"))
    np.testing.assert_allclose(_array(png.poses[0])[:, :2], expected[0, :, :2], atol=1e-2)


def test_min_confidence_blanks_low_keypoints(stub):
    resp = stub.EstimatePose(_request(_crops()[:1], min_confidence=1.0))
    kp = _array(resp.poses[0])
    assert np.all(np.isnan(kp[kp[:, 2] < 1.0, :2]))


def test_bad_requests_are_invalid_argument_or_resource_exhausted(stub):
    from sipec.v1 import common_pb2

    req = _request(_crops())
    req.crops[1].crop.CopyFrom(common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"not an image")))
    with pytest.raises(grpc.RpcError) as err:
        stub.EstimatePose(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "crops[1].crop" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.EstimatePose(_request(_crops()[:1], min_confidence=2.0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_confidence" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.EstimatePose(_request(_crops() * 3))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-batch" in err.value.details()


def test_stream_answers_in_order_and_survives_bad_crop(stub, repo):
    from sipec.v1 import common_pb2

    images = _crops(1)
    expected = _expected(repo, images)
    bad = _request(images, frame=1)
    bad.crops[0].crop.CopyFrom(common_pb2.Image(raw=common_pb2.RawImage(data=b"\x00" * 10, height=8, width=8,
                                                                          channels=3)))
    reqs = [_request(images, frame=0), bad, _request(images, frame=2), _request([], frame=3)]
    out = list(stub.EstimatePoseStream(iter(reqs)))
    assert [r.frame.index for r in out] == [0, 1, 2, 3]
    assert out[1].poses[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "crops[0].crop" in out[1].poses[0].error.message and not out[1].poses[0].keypoints
    np.testing.assert_allclose(_array(out[1].poses[1])[:, :2], expected[1, :, :2], atol=1e-2)
    np.testing.assert_allclose(_array(out[2].poses[0])[:, :2], expected[0, :, :2], atol=1e-2)
    assert len(out[3].poses) == 0


def test_model_info_and_health(stub, server):
    from sipec.serving.client import health_status, make_channel
    from sipec.v1 import common_pb2

    info = stub.GetModelInfo(common_pb2.GetModelInfoRequest())
    assert info.module == "posenet" and list(info.keypoint_names) == NAMES and info.input_height == 64
    channel = make_channel(f"localhost:{server.match.group(1)}")
    assert health_status(channel, "sipec.v1.PoseNet") == "SERVING"
    channel.close()


def test_tfserving_backend_and_dead_backend(repo):
    from sipec.v1 import posenet_pb2_grpc

    images = _crops()
    expected = _expected(repo, images)
    with behind_model_server("posenet", repo, READY, "--backend-timeout-s", "5") as (ms, pn):
        channel = grpc.insecure_channel(f"localhost:{pn.match.group(1)}")
        stub = posenet_pb2_grpc.PoseNetStub(channel)
        resp = stub.EstimatePose(_request(images), timeout=60)
        np.testing.assert_allclose(_array(resp.poses[1])[:, :2], expected[1, :, :2], atol=1e-2)
        ms.terminate()
        with pytest.raises(grpc.RpcError) as err:
            stub.EstimatePose(_request(images), timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        out = list(stub.EstimatePoseStream(iter([_request(images, frame=7)]), timeout=60))
        assert out[0].frame.index == 7 and out[0].poses[0].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert pn.proc.poll() is None   # the service survived the dead backend
        channel.close()
