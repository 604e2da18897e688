"""A module's health follows its model server (issue #12): real `sipec serve model-server` and
`sipec serve posenet --backend tfserving` processes.

The model server is SIGKILLed behind the running module: the next call is UNAVAILABLE naming the backend's
address, the module's health (overall "" and "sipec.v1.PoseNet") turns NOT_SERVING and the module keeps
running; a new model server on the same port makes the module SERVING again within a few seconds, and it
answers exactly as before.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from sipec.serving.client import health_status, make_channel
from tests.conftest import ServerProcess, behind_model_server, start_model_server, wait_until
from tests.tiny_models import export_tiny_posenet

READY = r"posenet: serving on port (\d+)"
SERVICE = "sipec.v1.PoseNet"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("posenet-health")
    export_tiny_posenet(root)
    return root


def _request(frame: int = 0):
    from sipec.api.convert import frame_ref_to_proto, image_to_proto
    from sipec.v1 import posenet_pb2

    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)]
    return posenet_pb2.PoseRequest(frame=frame_ref_to_proto("v.mp4", frame),
                                   crops=[posenet_pb2.PoseCrop(crop=image_to_proto(c), key=f"a{i}")
                                          for i, c in enumerate(crops)])


def _keypoints(resp) -> np.ndarray:
    return np.array([[[k.x, k.y, k.confidence] for k in p.keypoints] for p in resp.poses])


def _health(channel) -> tuple[str, str]:
    return health_status(channel, ""), health_status(channel, SERVICE)


def test_health_follows_the_model_server_through_a_kill_and_a_restart(repo):
    from sipec.v1 import posenet_pb2_grpc

    with behind_model_server("posenet", repo, READY, "--backend-timeout-s", "5", "--backend-poll-s", "0.25",
                             poll_s="0.5") as (ms, module):
        port = ms.match.group(1)
        channel = make_channel(f"localhost:{module.match.group(1)}")
        stub = posenet_pb2_grpc.PoseNetStub(channel)
        restarted: ServerProcess | None = None
        try:
            assert wait_until(lambda: _health(channel) == ("SERVING", "SERVING"), timeout_s=30)
            before = stub.EstimatePose(_request(), timeout=30)
            assert len(before.poses) == 2 and not before.poses[0].HasField("error")

            ms.kill()                                   # SIGKILL: no goodbye to the module
            with pytest.raises(grpc.RpcError) as err:
                stub.EstimatePose(_request(), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"localhost:{port}" in err.value.details()
            t0 = time.monotonic()
            assert wait_until(lambda: _health(channel) == ("NOT_SERVING", "NOT_SERVING"), timeout_s=5)
            went_down_s = time.monotonic() - t0
            # a stream keeps going with per-item UNAVAILABLE errors
            out = list(stub.EstimatePoseStream(iter([_request(7)]), timeout=30))
            assert out[0].frame.index == 7
            assert all(p.error.code == grpc.StatusCode.UNAVAILABLE.value[0] for p in out[0].poses)
            time.sleep(1.0)                             # several polls: still down, still alive
            assert _health(channel) == ("NOT_SERVING", "NOT_SERVING")
            assert module.proc.poll() is None

            restarted = start_model_server(repo, port, poll_s="0.5")
            assert restarted.match.group(1) == port
            t0 = time.monotonic()
            assert wait_until(lambda: _health(channel) == ("SERVING", "SERVING"), timeout_s=15), module.text()
            came_back_s = time.monotonic() - t0
            after = stub.EstimatePose(_request(), timeout=30)
            np.testing.assert_array_equal(_keypoints(after), _keypoints(before))
            assert after.model_version == before.model_version == 1
            assert module.proc.poll() is None
            print(f"NOT_SERVING {went_down_s:.2f} s after the failed call; SERVING {came_back_s:.2f} s after "
                  "the new model server was ready")
        finally:
            channel.close()
            if restarted is not None:
                restarted.terminate()
    log = module.text()
    assert "not ready: health NOT_SERVING" in log and f"localhost:{port}" in log
    assert "ready: health SERVING" in log
