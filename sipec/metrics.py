"""Evaluation metrics of the SIPEC paper: mAP@IoU, mask IoU/Dice, accuracy, macro-F1, Pearson, RMSE, PCK.

- Segmentation: :func:`mean_average_precision` (pycocotools COCOeval, built in memory),
  :func:`match_masks`, :func:`mean_iou`, :func:`mean_dice`; :func:`coco_ground_truth` and
  :func:`coco_detections` build the COCO dicts from masks.
- Identification / behaviour: :func:`accuracy`, :func:`per_class_accuracy`, :func:`confusion_matrix`,
  :func:`macro_f1`, :func:`precision_recall_f1`, :func:`pearson`, :func:`pearson_per_class`.
- Pose: :func:`rmse`, :func:`pck` (NaN marks a missing keypoint).

Labels may be ints or strings. scikit-learn is imported inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sipec import geometry

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanAP:
    """COCO-style mean average precision (area "all", up to ``max_detections`` per image).

    ``map`` is at the requested IoU threshold, ``map_50`` at 0.5, ``map_50_95`` the mean over
    0.5:0.05:0.95 (the COCO "AP"); ``per_class`` gives the AP at the requested threshold per
    category name. NaN when the ground truth has no (non-crowd) instance.
    """

    map: float
    map_50: float
    map_50_95: float
    iou_threshold: float
    per_class: dict[str, float]


def mean_average_precision(gt: dict, detections: Sequence[dict], iou_type: Literal["segm", "bbox"] = "segm",
                           iou_threshold: float = 0.5, max_detections: int = 100) -> MeanAP:
    """mAP of ``detections`` against a COCO ground-truth dict, with pycocotools' COCOeval.

    ``gt`` is a COCO dataset dict (``images`` with id/height/width, ``annotations``,
    ``categories``); annotations may omit ``id``, ``iscrowd``, ``area`` and ``bbox`` (derived from
    the segmentation). ``detections`` are COCO result dicts: ``image_id``, ``category_id``
    (optional with a single category), ``score`` and ``segmentation`` (RLE, counts bytes or str)
    and/or ``bbox`` ``[x, y, w, h]``. No detections gives mAP 0. Neither input is modified.
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    if not 0.0 < iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
    images = {int(im["id"]): im for im in gt["images"]}
    categories = list(gt["categories"])
    if not categories:
        raise ValueError("gt['categories'] is empty")
    gt_anns = [_prepare_annotation(a, images, iou_type, i + 1, is_detection=False, categories=categories)
               for i, a in enumerate(gt.get("annotations", []))]
    dt_anns = [_prepare_annotation(d, images, iou_type, i + 1, is_detection=True, categories=categories)
               for i, d in enumerate(detections)]
    base = {"images": list(images.values()), "categories": categories}
    gt_coco = _coco({**base, "annotations": gt_anns})
    dt_coco = _coco({**base, "annotations": dt_anns})

    thresholds = np.unique(np.round(np.append(COCO_IOU_THRESHOLDS, iou_threshold), 10))
    evaluator = COCOeval(gt_coco, dt_coco, iouType=iou_type)
    evaluator.params.iouThrs = thresholds
    evaluator.params.maxDets = [max_detections]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K), -1 where no GT

    def ap(t_mask: np.ndarray, k: int | None = None) -> float:
        p = precision[t_mask] if k is None else precision[t_mask][:, :, k]
        p = p[p > -1]
        return float(p.mean()) if p.size else float("nan")

    at = np.isclose(thresholds, iou_threshold)
    cat_ids = evaluator.params.catIds
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    return MeanAP(
        map=ap(at),
        map_50=ap(np.isclose(thresholds, 0.5)),
        map_50_95=ap(np.isin(np.round(thresholds, 10), np.round(COCO_IOU_THRESHOLDS, 10))),
        iou_threshold=float(iou_threshold),
        per_class={names[int(c)]: ap(at, k) for k, c in enumerate(cat_ids)},
    )


def coco_ground_truth(masks_per_image: Sequence[Sequence[np.ndarray]], image_shape: tuple[int, int],
                      category_ids_per_image: Sequence[Sequence[int]] | None = None,
                      category_names: Sequence[str] = ("animal",)) -> dict:
    """COCO ground-truth dict from HxW masks; image ``i`` gets id ``i``, categories ids 1..C."""
    height, width = image_shape
    anns = []
    for image_id, masks in enumerate(masks_per_image):
        cats = category_ids_per_image[image_id] if category_ids_per_image is not None else [1] * len(masks)
        for mask, cat in zip(masks, cats, strict=True):
            anns.append(_mask_annotation(mask, image_id, cat))
    return {
        "images": [{"id": i, "height": height, "width": width} for i in range(len(masks_per_image))],
        "annotations": [{**a, "id": i + 1, "iscrowd": 0} for i, a in enumerate(anns)],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(category_names)],
    }


def coco_detections(masks_per_image: Sequence[Sequence[np.ndarray]],
                    scores_per_image: Sequence[Sequence[float]],
                    category_ids_per_image: Sequence[Sequence[int]] | None = None) -> list[dict]:
    """COCO result dicts (segmentation RLE, bbox, score) from predicted HxW masks per image."""
    out = []
    for image_id, (masks, scores) in enumerate(zip(masks_per_image, scores_per_image, strict=True)):
        cats = category_ids_per_image[image_id] if category_ids_per_image is not None else [1] * len(masks)
        for mask, score, cat in zip(masks, scores, cats, strict=True):
            out.append({**_mask_annotation(mask, image_id, cat), "score": float(score)})
    return out


def match_masks(gt: Sequence[np.ndarray | dict], pred: Sequence[np.ndarray | dict],
                min_iou: float = 0.0) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of predicted to ground-truth masks by IoU.

    Masks are HxW arrays or COCO RLE dicts. Pairs are taken in order of decreasing IoU; a pair
    needs IoU > 0 and >= ``min_iou``. Returns ``(gt_index, pred_index, iou)`` by decreasing IoU.
    """
    iou = geometry.mask_iou_matrix([_as_rle(m) for m in gt], [_as_rle(m) for m in pred])
    if iou.size == 0:
        return []
    pairs = []
    used_gt: set[int] = set()
    used_pred: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        value = float(iou[i, j])
        if value <= 0.0 or value < min_iou:
            break
        if i in used_gt or j in used_pred:
            continue
        used_gt.add(i)
        used_pred.add(j)
        pairs.append((i, j, value))
    return pairs


def mean_iou(gt: Sequence[np.ndarray | dict], pred: Sequence[np.ndarray | dict], min_iou: float = 0.0) -> float:
    """Mean IoU over the pairs of :func:`match_masks` (unmatched masks do not count); NaN if none."""
    pairs = match_masks(gt, pred, min_iou)
    return float(np.mean([p[2] for p in pairs])) if pairs else float("nan")


def mean_dice(gt: Sequence[np.ndarray | dict], pred: Sequence[np.ndarray | dict], min_iou: float = 0.0) -> float:
    """Mean Dice over the pairs of :func:`match_masks` (Dice = 2 IoU / (1 + IoU)); NaN if none."""
    pairs = match_masks(gt, pred, min_iou)
    return float(np.mean([2 * p[2] / (1 + p[2]) for p in pairs])) if pairs else float("nan")


def _as_rle(mask: np.ndarray | dict) -> dict:
    return mask if isinstance(mask, dict) else geometry.encode_rle(np.asarray(mask, dtype=bool))


def _mask_annotation(mask: np.ndarray, image_id: int, category_id: int) -> dict:
    rle = geometry.encode_rle(np.asarray(mask, dtype=bool))
    return {"image_id": image_id, "category_id": int(category_id), "segmentation": rle,
            "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _prepare_annotation(ann: dict, images: dict[int, dict], iou_type: str, ann_id: int, is_detection: bool,
                        categories: list[dict]) -> dict:
    """Copy of a COCO annotation with the fields COCOeval needs (ids from 1: COCOeval treats id 0
    as "unmatched")."""
    kind = "detection" if is_detection else "gt annotation"
    out = copy.copy(ann)
    image_id = int(out.get("image_id", -1))
    if image_id not in images:
        raise ValueError(f"{kind} {ann_id - 1}: image_id {out.get('image_id')!r} is not in gt['images']")
    out["image_id"] = image_id
    out["id"] = ann_id
    out.setdefault("iscrowd", 0)
    if "category_id" not in out:
        if len(categories) != 1:
            raise ValueError(f"{kind} {ann_id - 1}: category_id is required with several categories")
        out["category_id"] = categories[0]["id"]
    if is_detection and "score" not in out:
        raise ValueError(f"detection {ann_id - 1}: 'score' is required")
    rle = None
    if "segmentation" in out:
        im = images[image_id]
        rle = _segmentation_rle(out["segmentation"], int(im["height"]), int(im["width"]))
        out["segmentation"] = rle
    elif iou_type == "segm":
        raise ValueError(f"{kind} {ann_id - 1}: 'segmentation' is required for iou_type='segm'")
    if "bbox" not in out:
        if rle is None:
            raise ValueError(f"{kind} {ann_id - 1}: needs 'bbox' or 'segmentation'")
        out["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
    if "area" not in out or is_detection:
        out["area"] = float(mask_utils.area(rle)) if (iou_type == "segm" and rle is not None) \
            else float(out["bbox"][2] * out["bbox"][3])
    return out


def _segmentation_rle(segm: Any, height: int, width: int) -> dict:
    """Compressed RLE (bytes counts) from a COCO segmentation: polygons, uncompressed or compressed RLE."""
    if isinstance(segm, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    return {"size": list(segm["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


# ---------------------------------------------------------------------------------------------
# Classification (identities, behaviours)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, and its number of true samples (support)."""

    precision: float
    recall: float
    f1: float
    support: int


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of samples whose predicted label equals the true label (NaN for no samples)."""
    t, p = _labels(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else float("nan")


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Hashable] | None = None
                     ) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``labels[i]`` predicted as ``labels[j]``.

    ``labels`` defaults to the sorted union of the labels in ``y_true`` and ``y_pred``.
    """
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    t, p = _labels(y_true, y_pred)
    return sk_confusion_matrix(t, p, labels=_label_list(t, p, labels))


def per_class_accuracy(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Hashable] | None = None
                       ) -> dict[Hashable, float]:
    """Per true class, the fraction of its samples predicted correctly (its recall); NaN for a class
    with no true samples."""
    t, p = _labels(y_true, y_pred)
    names = _label_list(t, p, labels)
    cm = confusion_matrix(t, p, names)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(totals > 0, np.diag(cm) / np.maximum(totals, 1), np.nan)
    return {_py(n): float(a) for n, a in zip(names, acc, strict=True)}


def precision_recall_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Hashable] | None = None
                        ) -> dict[Hashable, ClassScores]:
    """Per-class precision, recall, F1 and support (0 where undefined, as scikit-learn's zero_division=0)."""
    from sklearn.metrics import precision_recall_fscore_support

    t, p = _labels(y_true, y_pred)
    names = _label_list(t, p, labels)
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=names, zero_division=0)
    return {_py(n): ClassScores(float(a), float(b), float(c), int(d))
            for n, a, b, c, d in zip(names, prec, rec, f1, sup, strict=True)}


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[Hashable] | None = None) -> float:
    """Unweighted mean of the per-class F1 over ``labels`` (default: every label seen in either input).

    A class never predicted and never true has no F1 and only counts if listed in ``labels`` (as 0).
    """
    from sklearn.metrics import f1_score

    t, p = _labels(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    return float(f1_score(t, p, labels=_label_list(t, p, labels), average="macro", zero_division=0))


def _labels(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {t.shape} and {p.shape}")
    return t, p


def _label_list(t: np.ndarray, p: np.ndarray, labels: Sequence[Hashable] | None) -> list:
    if labels is not None:
        return list(labels)
    return list(np.unique(np.concatenate([t, p]))) if t.size else []


def _py(value: Any) -> Hashable:
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------------------------
# Correlation over time
# ---------------------------------------------------------------------------------------------


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation of two 1-D series; time steps where either is NaN are dropped.

    Returns NaN when fewer than two time steps remain or when either series is constant there:
    the correlation is undefined (zero variance), not 0. Report such classes separately.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"pearson needs two 1-D series of the same length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
    if denom == 0.0 or not np.isfinite(denom):
        return float("nan")
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0))


def pearson_per_class(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Pearson correlation per class of two (T, C) series (e.g. true vs predicted behaviour
    probabilities or per-window frequencies over time). Shape (C,); see :func:`pearson` for NaN."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"pearson_per_class needs two (T, C) arrays of the same shape, got {a.shape} "
                         f"and {b.shape}")
    return np.array([pearson(a[:, c], b[:, c]) for c in range(a.shape[1])], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Pose
# ---------------------------------------------------------------------------------------------


def rmse(pred: ArrayLike, true: ArrayLike) -> tuple[float, int]:
    """Root mean squared Euclidean error between points, and the number of points it averages.

    Points are on the last axis (shape ``(..., D)``, e.g. (frames, keypoints, 2); for scalar values
    use shape ``(N, 1)``). Points with a NaN in either input (missing keypoints) are skipped.
    Returns ``(nan, 0)`` when no point is present in both.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim == 0:
        raise ValueError(f"pred and true must have the same shape (..., D), got {p.shape} and {t.shape}")
    sq = np.sum((p - t) ** 2, axis=-1)
    valid = np.isfinite(sq)
    count = int(valid.sum())
    return (float(np.sqrt(sq[valid].mean())) if count else float("nan")), count


def pck(pred: ArrayLike, true: ArrayLike, threshold: float, scale: ArrayLike | None = None) -> float:
    """Percentage of correct keypoints: the fraction of true keypoints predicted within
    ``threshold`` (pixels, or ``threshold * scale`` when ``scale`` is given).

    Shapes ``(..., D)`` as in :func:`rmse`; ``scale`` broadcasts against the point shape ``(...)``
    (e.g. per-instance box diagonal ``diag[:, None]`` for (N, K, 2)). Keypoints missing in ``true``
    are ignored; keypoints missing in ``pred`` but present in ``true`` count as wrong.
    NaN when ``true`` has no keypoint.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim == 0:
        raise ValueError(f"pred and true must have the same shape (..., D), got {p.shape} and {t.shape}")
    present = np.all(np.isfinite(t), axis=-1)
    limit = threshold if scale is None else threshold * np.asarray(scale, dtype=np.float64)
    dist = np.sqrt(np.sum((p - t) ** 2, axis=-1))
    with np.errstate(invalid="ignore"):
        correct = present & (dist <= limit)
    n = int(present.sum())
    return float(correct.sum() / n) if n else float("nan")
