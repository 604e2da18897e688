"""The SLEAP flies clip reader and its derived masks, checked against the labelled keypoints."""

from __future__ import annotations

import numpy as np
import pytest

from sipec.data.flies import FliesClip


@pytest.fixture(scope="module")
def clip(shared_data):
    with FliesClip(shared_data / "sleap-flies-clip") as c:
        yield c


def test_labels(clip):
    assert len(clip) == 1500
    assert clip.identity_names == ["female", "male"]
    assert len(clip.keypoint_names) == 13 and "thorax" in clip.keypoint_names
    kp = clip.keypoints(0)
    assert kp.shape == (2, 13, 3)
    labelled = kp[..., 2] > 0
    assert labelled.mean() > 0.9
    assert np.isnan(kp[..., 0][~labelled]).all()


def test_derived_masks_cover_the_flies_bodies(clip):
    thorax = clip.keypoint_names.index("thorax")
    abdomen = clip.keypoint_names.index("abdomen")
    hits, total = 0, 0
    for index, image in clip.frames(600, 660):
        assert image.shape == (1024, 1024, 3)
        insts = clip.instances(index, image=image)
        assert [i.identity_name for i in insts] == ["female", "male"]
        a, b = insts[0].mask, insts[1].mask
        assert not (a & b).any(), "derived masks of the two flies overlap"
        for inst in insts:
            assert 500 < inst.mask.sum() < 6000  # a fly at this magnification, not the floor
            x1, y1, x2, y2 = inst.box
            assert x1 <= inst.com[0] <= x2 and y1 <= inst.com[1] <= y2
            for k in (thorax, abdomen):
                x, y, v = inst.keypoints[k]
                if v:
                    total += 1
                    hits += bool(inst.mask[int(round(y)), int(round(x))])
    assert total > 100 and hits / total > 0.95


def test_boxes_from_keypoints_without_masks(clip):
    insts = clip.instances(5, masks=False)
    assert len(insts) == 2 and all(i.mask is None for i in insts)
    for inst in insts:
        xy = inst.keypoints[inst.keypoints[:, 2] > 0, :2]
        x1, y1, x2, y2 = inst.box
        assert (xy[:, 0] >= x1).all() and (xy[:, 0] <= x2).all() and (xy[:, 1] >= y1).all() and (xy[:, 1] <= y2).all()
