"""SegNet evaluation: mask mAP@0.5 (pycocotools COCOeval), box mAP@0.5 (the network's boxes), mean IoU and
Dice, in frame pixels.

Predictions go through exactly what the service does (letterboxed input, the exported graph or the
in-process network, :func:`postprocess.to_instances` pasting the masks back into the frame) and are
compared with the ground truth at the frame's own resolution. Mean IoU and Dice average the greedy
one-to-one matches with IoU >= 0.5 (:func:`sipec.metrics.match_masks`); ``recall50`` is the fraction of
ground-truth instances so matched.

The paper's protocols (Fig. 2b: k-fold cross-validation over contiguous blocks of frames, a label-count
ablation) run in `sipec evaluate segnet` with :mod:`sipec.protocols`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from services.segnet.data import SegData
from services.segnet.postprocess import to_instances
from sipec import metrics

PredictFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]
RESULT_KEYS: tuple[str, ...] = ("map50", "box_map50", "map50_95", "mean_iou", "mean_dice", "recall50")


def predict_all(predict: PredictFn, images: np.ndarray, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Per-image detections (dicts of numpy arrays) of letterboxed `images` (N, H, W, 3) uint8."""
    out: list[dict[str, np.ndarray]] = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        res = {k: np.asarray(v) for k, v in predict(chunk).items()}
        out.extend({k: v[j] for k, v in res.items()} for j in range(len(chunk)))
    return out


def evaluate(predict: PredictFn, data: SegData, min_score: float = 0.05, batch_size: int = 8) -> dict[str, Any]:
    """mAP@0.5 of masks and of boxes, COCO mAP@[.5:.95] of masks, mean IoU, mean Dice and recall at 0.5."""
    dets = predict_all(predict, data.images, batch_size)
    images, gt_anns, det_anns, box_anns, ious = [], [], [], [], []
    for i, det in enumerate(dets):
        h, w = (int(v) for v in data.frame_sizes[i])
        images.append({"id": i, "height": h, "width": w})
        gts = data.gt[i]
        gt_anns += [{"image_id": i, "category_id": int(c), "segmentation": rle} for c, rle in gts]
        box_anns += _box_detections(det, i, float(data.scales[i]), min_score)
        inst = to_instances(det, float(data.scales[i]), h, w, data.class_names, min_score=min_score)
        for x in inst:
            cls = data.class_names.index(x.class_name) + 1 if x.class_name else 1
            det_anns.append({"image_id": i, "category_id": cls, "segmentation": x.rle, "score": x.score})
        ious += [p[2] for p in metrics.match_masks([rle for _, rle in gts], [x.rle for x in inst], min_iou=0.5)]
    gt = {"images": images, "annotations": gt_anns,
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(data.class_names)]}
    segm = metrics.mean_average_precision(gt, det_anns, "segm", 0.5)
    box = metrics.mean_average_precision(gt, box_anns, "bbox", 0.5)
    n_gt = len(gt_anns)
    return {
        "images": len(data), "instances": n_gt, "detections": len(det_anns),
        "map50": segm.map, "box_map50": box.map, "map50_95": segm.map_50_95,
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "mean_dice": float(np.mean([2 * v / (1 + v) for v in ious])) if ious else float("nan"),
        "recall50": len(ious) / n_gt if n_gt else float("nan"),
    }


def _box_detections(det: Mapping[str, np.ndarray], image_id: int, scale: float, min_score: float) -> list[dict]:
    """COCO box results of the network's own boxes (frame pixels), for the box mAP."""
    n = int(np.asarray(det["num_detections"]).reshape(()))
    out = []
    for box, score, cls in zip(det["boxes"][:n], det["scores"][:n], det["classes"][:n], strict=True):
        if score < min_score:
            continue
        x1, y1, x2, y2 = (float(v) / scale for v in box)
        out.append({"image_id": image_id, "category_id": int(cls) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score)})
    return out


def model_predict_fn(model: Any) -> PredictFn:
    """A PredictFn of an in-process MaskRCNN (the same graph that is exported)."""
    import tensorflow as tf

    fn = tf.function(model.detect, reduce_retracing=True)
    return lambda images: {k: v.numpy() for k, v in fn(tf.constant(images)).items()}


def backend_predict_fn(backend: Any) -> PredictFn:
    """A PredictFn of a ModelBackend (local SavedModel or TF Serving), in fixed-size calls as the service makes."""
    from sipec.serving.batching import DEFAULT_BATCH_SIZE, predict_fixed

    return lambda images: predict_fixed(backend, {"image": images}, DEFAULT_BATCH_SIZE).outputs


def table(rows: list[dict[str, Any]], first: str) -> str:
    """A markdown table of result rows."""
    cols = [first, "train_images", "images", "instances", "map50", "box_map50", "map50_95", "mean_iou",
            "mean_dice", "recall50"]
    cols = list(dict.fromkeys(c for c in cols if any(c in r for r in rows)))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, ""))
                                       for c in cols) + " |")
    return "\n".join(lines)
