"""SegNet evaluation: mAP@0.5 (pycocotools, segm), mean IoU and Dice of matched masks.

Masks are compared at the model's input resolution (frames letterboxed to the input size, as in training);
the predictions go through the same post-processing as the service (`postprocess.to_instances`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from services.segnet.data import SegData
from services.segnet.postprocess import to_instances
from sipec import metrics

PredictFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def predict_all(predict: PredictFn, images: np.ndarray, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Per-image detections (dicts of numpy arrays) of `images` (N,S,S,3) uint8."""
    out: list[dict[str, np.ndarray]] = []
    for i in range(0, len(images), batch_size):
        res = {k: np.asarray(v) for k, v in predict(images[i:i + batch_size]).items()}
        for j in range(len(images[i:i + batch_size])):
            out.append({k: v[j] for k, v in res.items()})
    return out


def evaluate(predict: PredictFn, data: SegData, min_score: float = 0.05, batch_size: int = 8) -> dict[str, Any]:
    """mAP@0.5 (masks), box mAP@0.5, mean IoU and mean Dice (over matched pairs with IoU >= 0.5) on `data`."""
    size = data.images.shape[1]
    dets = predict_all(predict, data.images, batch_size)
    gt_masks, pred_masks, pred_scores, ious = [], [], [], []
    for i, det in enumerate(dets):
        gt = [data.masks[i, j] for j in range(data.masks.shape[1]) if data.classes[i, j] > 0 and data.masks[i, j].any()]
        inst = to_instances(det, 1.0, size, size, data.class_names, min_score=min_score)
        pm = [x.mask for x in inst]
        gt_masks.append(gt)
        pred_masks.append(pm)
        pred_scores.append([x.score for x in inst])
        ious += [p[2] for p in metrics.match_masks(gt, pm, min_iou=0.5)]
    gt_dict = metrics.coco_ground_truth(gt_masks, (size, size))
    det_list = metrics.coco_detections(pred_masks, pred_scores)
    n_gt = sum(len(g) for g in gt_masks)
    return {
        "images": len(data), "instances": n_gt,
        "map50": float(metrics.mean_average_precision(gt_dict, det_list, "segm", 0.5).map),
        "box_map50": float(metrics.mean_average_precision(gt_dict, det_list, "bbox", 0.5).map),
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "mean_dice": float(np.mean([2 * v / (1 + v) for v in ious])) if ious else float("nan"),
        "recall50": len(ious) / n_gt if n_gt else float("nan"),
    }


def model_predict_fn(model: Any) -> PredictFn:
    """A PredictFn of an in-process MaskRCNN."""
    import tensorflow as tf

    fn = tf.function(model.detect, reduce_retracing=True)
    return lambda images: {k: v.numpy() for k, v in fn(tf.constant(images)).items()}


def backend_predict_fn(backend: Any) -> PredictFn:
    """A PredictFn of a ModelBackend (local SavedModel or TF Serving)."""
    return lambda images: backend.predict({"image": images}).outputs


def folds(n: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k contiguous folds (train indices, test indices) of n ordered frames (neighbouring frames stay together)."""
    if k < 2 or k > n:
        raise ValueError(f"--folds must be between 2 and the number of images ({n}), got {k}")
    edges = np.linspace(0, n, k + 1).round().astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        test = np.arange(a, b)
        out.append((np.setdiff1d(np.arange(n), test), test))
    return out


def summarize(rows: list[dict[str, Any]], keys: tuple[str, ...] = ("map50", "mean_iou", "mean_dice")
              ) -> dict[str, Any]:
    return {k: {"mean": float(np.nanmean([r[k] for r in rows])), "sd": float(np.nanstd([r[k] for r in rows]))}
            for k in keys}


def table(rows: list[dict[str, Any]], first: str) -> str:
    """A markdown table of result rows."""
    cols = [first, "images", "instances", "map50", "box_map50", "mean_iou", "mean_dice"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, ""))
                                       for c in cols) + " |")
    return "\n".join(lines)
