"""`sipec serve segnet` as a real process: Segment, SegmentStream, GetModelInfo, health, both backends.

The served model is the real Mask R-CNN graph in a small configuration, exported UNTRAINED (random weights,
seed 0): these tests check the service's contract (letterboxing, batching, filtering, mask pasting, errors,
backends), not segmentation quality, which the trained models of docs/benchmarks.md measure. Untrained
class scores are near 0.5 and the model's default_min_score is set to 0.05, so every frame has detections.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from sipec.api.convert import image_to_proto, instance_from_proto
from tests.conftest import ServerProcess, behind_model_server, wait_until

READY = r"segnet: serving on port (\d+)"
H, W = 64, 96


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    import keras

    from services.segnet.config import MaskRCNNConfig
    from services.segnet.model import build_model
    from services.segnet.train import export_model

    keras.utils.set_random_seed(0)
    config = MaskRCNNConfig(image_height=H, image_width=W, fpn_channels=16, box_head_units=32, mask_head_convs=1,
                            mask_head_channels=8, anchor_sizes=(8.0, 16.0, 32.0, 64.0, 128.0), pre_nms_test=200,
                            post_nms_test=24, max_detections=6, default_min_score=0.05)
    root = tmp_path_factory.mktemp("segnet-repo")
    export_model(build_model(config), root, "segnet", {"note": "untrained, for service tests"})
    return root


@pytest.fixture(scope="module")
def server(repo):
    srv = ServerProcess(["serve", "segnet", "--model-repo", str(repo), "--port", "0", "--max-batch", "4",
                         "--max-pixels", "1000000"], READY)
    yield srv
    srv.terminate()


def _stub(port: str):
    from sipec.v1 import segnet_pb2_grpc

    channel = grpc.insecure_channel(f"localhost:{port}")
    return channel, segnet_pb2_grpc.SegNetStub(channel)


@pytest.fixture(scope="module")
def stub(server):
    channel, stub = _stub(server.match.group(1))
    yield stub
    channel.close()


def _frame(seed: int = 0, h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40, np.uint8)
    img[60:140, 80:200] = rng.integers(150, 255, (80, 120, 3))
    return img


def _request(img: np.ndarray, **kw):
    from sipec.v1 import segnet_pb2

    return segnet_pb2.SegmentRequest(image=image_to_proto(img), **kw)


def test_segment_returns_instances_in_frame_pixels(stub):
    resp = stub.Segment(_request(_frame()), timeout=60)
    assert resp.model_version == 1 and not resp.HasField("error")
    assert len(resp.instances) > 0
    scores = [i.score for i in resp.instances]
    assert scores == sorted(scores, reverse=True)
    for k, inst in enumerate(resp.instances):
        assert inst.index == k
        assert (inst.mask.height, inst.mask.width) == (240, 320)
        data = instance_from_proto(inst, decode_mask=True)
        assert data.mask.any()
        ys, xs = np.nonzero(data.mask)
        assert inst.box.x1 == pytest.approx(xs.min()) and inst.box.y2 == pytest.approx(ys.max() + 1)
        assert inst.com.x == pytest.approx(xs.mean() + 0.5, abs=1e-3)   # pixel centres
        assert inst.com.y == pytest.approx(ys.mean() + 0.5, abs=1e-3)


def test_min_score_max_instances_and_omit_masks(stub):
    img = _frame()
    full = stub.Segment(_request(img), timeout=60).instances
    top = stub.Segment(_request(img, max_instances=2), timeout=60).instances
    assert len(top) == min(2, len(full))
    assert [i.score for i in top] == [i.score for i in full[:len(top)]]
    cut = sorted(i.score for i in full)[len(full) // 2]
    high = stub.Segment(_request(img, min_score=cut), timeout=60).instances
    assert all(i.score >= cut for i in high) and len(high) == sum(i.score >= cut for i in full)
    bare = stub.Segment(_request(img, omit_masks=True), timeout=60).instances
    assert len(bare) == len(full) and not bare[0].HasField("mask") and bare[0].HasField("com")


def test_segment_bad_input_names_the_field(stub):
    from sipec.v1 import common_pb2, segnet_pb2

    bad = segnet_pb2.SegmentRequest(image=common_pb2.Image(
        raw=common_pb2.RawImage(data=b"xx", height=4, width=4, channels=3)))
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(bad, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(_request(_frame(), min_score=1.5), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_score" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(_request(np.zeros((1200, 1000, 3), np.uint8)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_goes_on_after_a_bad_frame(stub):
    from sipec.api.convert import frame_ref_to_proto
    from sipec.v1 import common_pb2, segnet_pb2

    reqs = [_request(_frame(i), frame=frame_ref_to_proto("v.mp4", i)) for i in range(7)]
    reqs[3] = segnet_pb2.SegmentRequest(image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"not a png")),
                                        frame=frame_ref_to_proto("v.mp4", 3))
    out = list(stub.SegmentStream(iter(reqs), timeout=120))
    assert [r.frame.index for r in out] == list(range(7))
    assert out[3].HasField("error") and out[3].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not out[3].instances
    single = stub.Segment(_request(_frame(5)), timeout=60)
    for i in (0, 1, 2, 4, 5, 6):
        assert not out[i].HasField("error") and len(out[i].instances) > 0
    assert [x.score for x in out[5].instances] == pytest.approx([x.score for x in single.instances], abs=1e-4)


def test_model_info_and_health(server, stub):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sipec.v1 import common_pb2

    info = stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=30)
    assert info.module == "segnet" and (info.input_height, info.input_width) == (H, W)
    assert list(info.class_names) == ["animal"]
    assert info.architecture == "maskrcnn-mobilenetv2-0.35-fpn" and info.backend == "local"
    channel = grpc.insecure_channel(f"localhost:{server.match.group(1)}")
    health = health_pb2_grpc.HealthStub(channel)
    assert wait_until(lambda: health.Check(health_pb2.HealthCheckRequest(service="sipec.v1.SegNet"))
                      .status == health_pb2.HealthCheckResponse.SERVING)
    channel.close()


def test_tfserving_backend_matches_local_and_dead_backend_is_unavailable(repo, stub):
    with behind_model_server("segnet", repo, READY, "--poll-s", "0.3", "--backend-timeout-s", "10") as (ms, seg):
        channel, remote = _stub(seg.match.group(1))
        try:
            assert wait_until(lambda: _serving(remote), timeout_s=60)
            img = _frame(2)
            got = remote.Segment(_request(img), timeout=60)
            want = stub.Segment(_request(img), timeout=60)
            assert [i.score for i in got.instances] == pytest.approx([i.score for i in want.instances], abs=1e-4)
            assert remote.GetModelInfo(__import__("sipec.v1.common_pb2", fromlist=["x"]).GetModelInfoRequest(),
                                       timeout=30).backend == "tfserving"
            ms.terminate()
            with pytest.raises(grpc.RpcError) as err:
                remote.Segment(_request(img), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            out = list(remote.SegmentStream(iter([_request(img), _request(img)]), timeout=60))
            assert len(out) == 2 and all(r.error.code == grpc.StatusCode.UNAVAILABLE.value[0] for r in out)
        finally:
            channel.close()


def _serving(stub) -> bool:
    from sipec.v1 import common_pb2

    try:
        stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=5)
        return True
    except grpc.RpcError:
        return False


def test_create_servicer_answers_in_process(repo, stub):
    from services.segnet.service import create_servicer

    servicer = create_servicer(repo)
    try:
        assert wait_until(servicer.backend.ready, timeout_s=60)
        img = _frame(4)
        got = servicer.Segment(_request(img, max_instances=3), None)
        want = stub.Segment(_request(img, max_instances=3), timeout=60)
        assert [i.score for i in got.instances] == pytest.approx([i.score for i in want.instances], abs=1e-4)
        assert [i.mask.counts for i in got.instances] == [i.mask.counts for i in want.instances]
    finally:
        servicer.close()
