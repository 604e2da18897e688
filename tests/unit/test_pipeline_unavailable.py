"""A module whose model backend is down answers items UNAVAILABLE: the pipeline stops (retryable) before the frame
is emitted, instead of writing it without animals; other per-item errors stay the frame's own.

Fake module stubs in the test process (no network, no models); the real processes are in
tests/e2e/test_faults.py.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from orchestrator.analyze import unavailable
from orchestrator.pipeline import ModuleSet, ModuleUnavailable, PipelineOptions, VideoPipeline
from sipec.api.convert import item_error
from sipec.v1 import common_pb2, posenet_pb2, segnet_pb2
from sipec.video import Frame

FRAMES = 40


class FakeSegNet:
    """One animal a frame; the frames in `errors` get that ItemError code instead."""

    def __init__(self, errors: dict[int, grpc.StatusCode]) -> None:
        self.errors = errors

    def GetModelInfo(self, request, timeout=None):
        return common_pb2.ModelInfo(module="segnet", version=1)

    def SegmentStream(self, requests, timeout=None):
        for req in requests:
            i = req.frame.index
            if i in self.errors:
                yield segnet_pb2.SegmentResponse(frame=req.frame, error=item_error(self.errors[i], f"frame {i}"))
                continue
            inst = common_pb2.Instance(index=0, score=0.9, box=common_pb2.Box(x1=4, y1=4, x2=20, y2=20),
                                       com=common_pb2.Point(x=12, y=12))
            yield segnet_pb2.SegmentResponse(frame=req.frame, model_version=1, instances=[inst])


class FakePoseNet:
    """A keypoint per crop; the frames in `errors` get that ItemError code on every pose."""

    def __init__(self, errors: dict[int, grpc.StatusCode]) -> None:
        self.errors = errors

    def GetModelInfo(self, request, timeout=None):
        return common_pb2.ModelInfo(module="posenet", version=1, input_height=16, keypoint_names=["nose"])

    def EstimatePoseStream(self, requests, timeout=None):
        for req in requests:
            i = req.frame.index
            poses = []
            for c in req.crops:
                if i in self.errors:
                    poses.append(posenet_pb2.Pose(key=c.key, error=item_error(self.errors[i], "model server gone")))
                else:
                    poses.append(posenet_pb2.Pose(key=c.key, keypoints=[common_pb2.Keypoint(x=1, y=2, confidence=1)]))
            yield posenet_pb2.PoseResponse(frame=req.frame, poses=poses, model_version=1)


def _frames():
    for i in range(FRAMES):
        yield Frame(i, i / 25, np.zeros((32, 32, 3), np.uint8))


def _run(stubs: dict) -> tuple[list, BaseException | None]:
    emitted = []
    pipeline = VideoPipeline(ModuleSet(stubs), PipelineOptions(modules=tuple(stubs), max_frames_in_flight=8,
                                                                timeout_s=30))
    try:
        pipeline.run(_frames(), emitted.append)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return emitted, exc
    return emitted, None


def test_segnet_item_unavailable_stops_the_video_before_that_frame_and_is_retryable():
    emitted, exc = _run({"segnet": FakeSegNet({12: grpc.StatusCode.UNAVAILABLE})})
    assert isinstance(exc, ModuleUnavailable) and unavailable(exc)
    assert "segnet: frame 12" in str(exc)
    assert [s.frame.index for s in emitted] == list(range(12))   # 12 is not written without its animals


def test_a_bad_frame_is_its_own_error_and_the_video_goes_on():
    emitted, exc = _run({"segnet": FakeSegNet({12: grpc.StatusCode.INVALID_ARGUMENT})})
    assert exc is None
    assert [s.frame.index for s in emitted] == list(range(FRAMES))
    assert emitted[12].error == "segnet: frame 12" and not emitted[12].animals
    assert all(len(s.animals) == 1 for s in emitted if s.frame.index != 12)


def test_posenet_item_unavailable_in_its_stream_thread_stops_the_video_at_once():
    t0 = time.monotonic()
    emitted, exc = _run({"segnet": FakeSegNet({}), "posenet": FakePoseNet({20: grpc.StatusCode.UNAVAILABLE})})
    assert exc is not None and unavailable(exc), exc
    assert "model server gone" in str(exc)
    assert time.monotonic() - t0 < 10       # not after the 30 s without progress
    done = [s.frame.index for s in emitted]   # frames just before 20 may still wait to be emitted: redone on retry
    assert done == list(range(len(done))) and 10 <= len(done) <= 20
    assert all(s.animals[0].keypoints for s in emitted)


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_posenet_item_errors_other_than_unavailable_leave_the_pose_out(code):
    emitted, exc = _run({"segnet": FakeSegNet({}), "posenet": FakePoseNet({20: code})})
    assert exc is None
    assert [s.frame.index for s in emitted] == list(range(FRAMES))
    assert emitted[20].animals[0].keypoints is None and emitted[21].animals[0].keypoints
