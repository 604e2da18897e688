"""The pipeline's side of ByteTrack's second pass (tracker.low_score): SegNet is asked for instances down to
low_score; those below segnet.min_score that continued a track are kept (with it), the others are dropped.

A fake SegNet that honours the request's min_score, and the real tracker service in-process.
"""

from __future__ import annotations

import numpy as np

from orchestrator.pipeline import ModuleSet, PipelineOptions, VideoPipeline
from services.tracker.service import TrackerService
from sipec.api.convert import InstanceData, instance_to_proto
from sipec.serving.backends import LocalBackend
from sipec.serving.stubs import in_process_stub
from sipec.v1 import common_pb2, segnet_pb2
from sipec.video import Frame

FRAMES = 12
DIP = range(5, 8)          # the animal's score drops in these frames (e.g. partly hidden)


def _mask(x: int) -> np.ndarray:
    m = np.zeros((64, 96), bool)
    m[20:30, x:x + 16] = True
    return m


class FakeSegNet:
    """An animal walking right (score 0.9, 0.3 in DIP) and a faint false positive (0.2) in every frame."""

    def __init__(self) -> None:
        self.asked: set[float] = set()

    def GetModelInfo(self, request, timeout=None):
        return common_pb2.ModelInfo(module="segnet", version=1)

    def SegmentStream(self, requests, timeout=None):
        for req in requests:
            self.asked.add(round(req.min_score, 3))
            i = req.frame.index
            found = [(_mask(10 + 2 * i), 0.3 if i in DIP else 0.9), (_mask(70)[::-1].copy(), 0.2)]
            insts = [instance_to_proto(InstanceData.from_mask(m, s, index=k))
                     for k, (m, s) in enumerate(found) if s >= req.min_score]
            yield segnet_pb2.SegmentResponse(frame=req.frame, model_version=1, instances=insts)


def _run(tmp_path, tracker: dict, low_score: float) -> tuple[list, FakeSegNet]:
    seg = FakeSegNet()
    svc = TrackerService(LocalBackend(tmp_path, "depth3d", poll_s=0))
    try:
        modules = ModuleSet({"segnet": seg, "tracker": in_process_stub("tracker", svc)})
        emitted: list = []
        VideoPipeline(modules, PipelineOptions(modules=("segnet", "tracker"), min_score=0.5, tracker=tracker,
                                               low_score=low_score, timeout_s=30)).run(
            (Frame(i, i / 25, np.zeros((64, 96, 3), np.uint8)) for i in range(FRAMES)), emitted.append)
        return emitted, seg
    finally:
        svc.close()


def test_low_score_instances_continue_tracks_and_the_rest_are_dropped(tmp_path):
    emitted, seg = _run(tmp_path, {}, low_score=0.1)
    assert seg.asked == {0.1}
    assert [len(s.animals) for s in emitted] == [1] * FRAMES          # the faint false positive is never kept
    assert [s.animals[0].track_id for s in emitted] == [1] * FRAMES   # one track through the dip
    assert [s.animals[0].index for s in emitted] == [0] * FRAMES


def test_without_low_score_the_dip_is_a_gap(tmp_path):
    emitted, seg = _run(tmp_path, {}, low_score=0.0)
    assert seg.asked == {0.5}
    assert [len(s.animals) for s in emitted] == [0 if i in DIP else 1 for i in range(FRAMES)]
