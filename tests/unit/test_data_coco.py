"""COCO instances writer/reader: round trips, pycocotools compatibility, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from sipec.data.coco import (
    OCCLUDED,
    UNLABELLED,
    VISIBLE,
    CocoInstances,
    annotation_keypoints,
    annotation_mask,
    image_entry,
    instance_annotation,
    make_category,
    read_coco_instances,
    write_coco_instances,
)


def _masks() -> list[np.ndarray]:
    a = np.zeros((40, 60), dtype=bool)
    a[5:15, 10:30] = True
    b = np.zeros((40, 60), dtype=bool)
    b[20:38, 40:59] = True
    b[25, 41] = False
    return [a, b]


def _dataset() -> tuple[CocoInstances, list[np.ndarray], np.ndarray]:
    masks = _masks()
    kp = np.array([[12.5, 7.25, VISIBLE], [20.0, 10.0, OCCLUDED], [0.0, 0.0, UNLABELLED]])
    anns = [instance_annotation(m, ann_id=i + 1, image_id=1, keypoints=kp, track_id=i, identity=i,
                                identity_name=f"animal_{i}") for i, m in enumerate(masks)]
    data = CocoInstances(images=[image_entry(1, 60, 40, "video.mp4", frame_index=0)], annotations=anns,
                         categories=[make_category(1, "animal", ["a", "b", "c"], [(0, 1), (1, 2)])],
                         info={"description": "test"})
    return data, masks, kp


def test_round_trip_keeps_masks_boxes_keypoints_and_extra_fields(tmp_path):
    data, masks, kp = _dataset()
    path = tmp_path / "ann.json"
    write_coco_instances(path, data)
    back = read_coco_instances(path)
    assert [a["track_id"] for a in back.annotations_for(1)] == [0, 1]
    assert back.keypoint_names() == ["a", "b", "c"]
    assert back.categories[0]["skeleton"] == [[1, 2], [2, 3]]  # stored 1-based
    assert back.image_by_frame()[0]["id"] == 1
    for ann, mask in zip(back.annotations, masks, strict=True):
        np.testing.assert_array_equal(annotation_mask(ann), mask)
        assert ann["area"] == int(mask.sum())
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert isinstance(ann["segmentation"]["counts"], str)
        got = annotation_keypoints(ann)
        np.testing.assert_allclose(got[:2], kp[:2])
        assert np.isnan(got[2, :2]).all() and got[2, 2] == UNLABELLED


def test_pycocotools_reads_the_file(tmp_path):
    data, masks, _ = _dataset()
    path = tmp_path / "ann.json"
    write_coco_instances(path, data)
    coco = COCO(str(path))
    assert coco.getImgIds() == [1]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    np.testing.assert_array_equal(coco.annToMask(anns[1]).astype(bool), masks[1])


def test_polygon_and_uncompressed_segmentations_decode():
    poly = {"segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]], "id": 1}
    mask = annotation_mask(poly, 12, 12)
    assert mask.sum() > 40 and mask[5, 5]
    with pytest.raises(ValueError, match="height and width"):
        annotation_mask(poly)


def test_empty_mask_is_refused():
    with pytest.raises(ValueError, match="empty mask"):
        instance_annotation(np.zeros((4, 4), bool), ann_id=7, image_id=1)


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "not valid JSON"),
    (json.dumps({"images": []}), "missing list 'annotations'"),
    (json.dumps({"images": [], "categories": [], "annotations": [{"id": 3}]}), "annotation 3 lacks"),
])
def test_bad_files_raise_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        read_coco_instances(path)
    assert str(path) in str(err.value)
