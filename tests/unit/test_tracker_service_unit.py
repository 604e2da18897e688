"""TrackerService without a depth model: tracking works, Estimate3D is UNAVAILABLE, GetModelInfo says why."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from services.tracker.service import TrackerService
from sipec.api.convert import InstanceData, instance_to_proto
from sipec.serving.backends import LocalBackend
from sipec.v1 import common_pb2, tracker_pb2


class FakeContext:
    """Like grpc's: abort() records the status and raises a bare Exception."""

    def abort(self, code, details):
        self.code, self.details = code, details
        raise Exception()


def instance(x: int) -> common_pb2.Instance:
    m = np.zeros((60, 80), bool)
    m[10:20, x:x + 10] = True
    return instance_to_proto(InstanceData.from_mask(m, 1.0))


@pytest.fixture
def service(tmp_path):
    svc = TrackerService(LocalBackend(tmp_path, "depth3d", poll_s=0))
    yield svc
    svc.close()


def test_without_depth_model(service):
    ctx = FakeContext()
    info = service.GetModelInfo(common_pb2.GetModelInfoRequest(), ctx)
    assert (info.module, info.model_name, info.version) == ("tracker", "depth3d", 0)
    assert "not loaded" in info.architecture and "depth_model_error" in json.loads(info.metadata_json)
    with pytest.raises(Exception, match=r"^$"):   # grpc aborts with a bare Exception
        service.Estimate3D(tracker_pb2.Estimate3DRequest(instances=[instance(5)]), ctx)
    assert ctx.code == grpc.StatusCode.UNAVAILABLE and "depth3d" in ctx.details
    reqs = [tracker_pb2.TrackRequest(frame=common_pb2.FrameRef(index=f), instances=[instance(5 + f)]) for f in range(3)]
    out = list(service.Track(iter(reqs), FakeContext()))
    assert [[t.track_id for t in r.instances] for r in out] == [[1], [1], [1]]


def test_stream_limit(tmp_path):
    svc = TrackerService(LocalBackend(tmp_path, "depth3d", poll_s=0), max_streams=1)
    try:
        first = svc.Track(iter([tracker_pb2.TrackRequest(instances=[instance(5)])]), FakeContext())
        next(first)                                   # the first stream is open
        ctx = FakeContext()
        with pytest.raises(Exception, match=r"^$"):   # grpc aborts with a bare Exception
            next(svc.Track(iter([]), ctx))
        assert ctx.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams" in ctx.details
        list(first)                                   # closing the first frees its place
        assert list(svc.Track(iter([]), FakeContext())) == []
    finally:
        svc.close()
