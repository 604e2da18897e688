"""Scoring BehaveNet's predictions against per-frame labels.

For a set of held-out videos (crops cut as in training) it reports, for the frame-only classifier
and for the temporal network side by side:

- per-class precision, recall, F1 and support, accuracy, the confusion matrix, and macro-F1 over the
  behaviours labelled or predicted in the data scored;
- Pearson correlation over time per class: the fraction of each 1 s bin an animal spends in a
  behaviour, labelled vs predicted, over every animal's bins;
- shuffled-label chance: macro-F1 of the same predictions against labels shifted in time by a random
  offset within each sequence (bout structure and class frequencies kept, alignment destroyed),
  mean over repeats; and the majority-class baseline.

Individual crops, pair crops and their combination are scored separately. A pair crop's class is the
most probable of the classes a pair can have ('none' and the social behaviours). The combination
gives an animal a social behaviour in a frame where a pair crop containing it is classified as that
social behaviour, and its own crop's class otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from services.behavenet.data import INDIVIDUAL, NONE_CLASS, PAIR, CropSet
from sipec import metrics
from sipec.video import FALLBACK_FPS

CHANCE_REPEATS = 20


def present_classes(y_true: np.ndarray, y_pred: np.ndarray) -> list[int]:
    """Classes that are labelled or predicted at least once: the ones macro-F1 averages over."""
    return sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, behaviours: Sequence[str],
                          classes: Sequence[int] | None = None) -> dict[str, Any]:
    """Per-class P/R/F1 (over `classes`, default all), accuracy, confusion matrix, and macro-F1 over the
    classes labelled or predicted at least once (a behaviour absent from a video and never predicted
    has no F1 and does not count; one predicted but absent counts as 0)."""
    classes = list(range(len(behaviours))) if classes is None else list(classes)
    per = metrics.precision_recall_f1(y_true, y_pred, labels=classes)
    return {
        "n": int(len(y_true)),
        "accuracy": metrics.accuracy(y_true, y_pred),
        "macro_f1": metrics.macro_f1(y_true, y_pred, labels=present_classes(y_true, y_pred)),
        "macro_f1_classes": [behaviours[c] for c in present_classes(y_true, y_pred)],
        "per_class": {behaviours[c]: {"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}
                      for c, s in per.items()},
        "confusion": {"labels": [behaviours[c] for c in classes],
                      "matrix": metrics.confusion_matrix(y_true, y_pred, labels=classes).tolist()},
    }


def time_binned_fractions(labels: np.ndarray, sequences: Sequence[tuple[int, int]], num_classes: int,
                          bin_frames: int) -> np.ndarray:
    """(bins, C): per sequence (start row, length), the fraction of each bin's frames in each class."""
    out = []
    for start, length in sequences:
        seq = labels[start:start + length]
        for b in range(0, length - bin_frames + 1, bin_frames):
            out.append(np.bincount(seq[b:b + bin_frames], minlength=num_classes) / bin_frames)
    return np.asarray(out, dtype=np.float64).reshape(-1, num_classes)


def pearson_over_time(y_true: np.ndarray, y_pred: np.ndarray, sequences: Sequence[tuple[int, int]],
                      behaviours: Sequence[str], bin_frames: int) -> dict[str, float | None]:
    """Pearson r per class of labelled vs predicted time-in-behaviour per bin (None where undefined)."""
    t = time_binned_fractions(y_true, sequences, len(behaviours), bin_frames)
    p = time_binned_fractions(y_pred, sequences, len(behaviours), bin_frames)
    if len(t) < 2:
        return {b: None for b in behaviours}
    r = metrics.pearson_per_class(t, p)
    return {b: (None if not np.isfinite(v) else float(v)) for b, v in zip(behaviours, r, strict=True)}


def shuffled_label_chance(y_true: np.ndarray, y_pred: np.ndarray, sequences: Sequence[tuple[int, int]],
                          repeats: int = CHANCE_REPEATS, seed: int = 0) -> dict[str, float]:
    """Macro-F1 against labels circularly shifted by a random offset within each sequence (mean, sd)."""
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        shifted = y_true.copy()
        for start, length in sequences:
            if length > 1:
                shift = int(rng.integers(max(1, length // 10), length))
                shifted[start:start + length] = np.roll(y_true[start:start + length], shift)
        scores.append(metrics.macro_f1(shifted, y_pred, labels=present_classes(shifted, y_pred)))
    return {"macro_f1_mean": float(np.mean(scores)), "macro_f1_sd": float(np.std(scores)), "repeats": repeats}


def combine_individual_and_pairs(data: CropSet, individual_pred: np.ndarray, pair_pred: np.ndarray,
                                 social: Sequence[int]) -> np.ndarray:
    """Individual predictions where a pair crop's social class overrides the animal's own crop.

    `individual_pred` is indexed like ``data.rows(INDIVIDUAL)``, `pair_pred` like ``data.rows(PAIR)``.
    """
    social = set(int(s) for s in social)
    pair_rows = data.rows(PAIR)
    pair_at = {int(r): int(p) for r, p in zip(pair_rows, pair_pred, strict=True)}
    overrides: dict[tuple[str, str, int], int] = {}
    for seq in data.sequences:
        if seq.kind != PAIR:
            continue
        for row, frame in zip(seq.rows, seq.frames, strict=True):
            cls = pair_at[int(row)]
            if cls in social:
                for member in seq.subject.split("+"):
                    overrides[(seq.video, member, int(frame))] = cls
    out = individual_pred.copy()
    position = {int(r): i for i, r in enumerate(data.rows(INDIVIDUAL))}
    for seq in data.sequences:
        if seq.kind != INDIVIDUAL:
            continue
        for row, frame in zip(seq.rows, seq.frames, strict=True):
            cls = overrides.get((seq.video, seq.subject, int(frame)))
            if cls is not None:
                out[position[int(row)]] = cls
    return out


def pair_predictions(probs: np.ndarray, pair_classes: Sequence[int]) -> np.ndarray:
    """Class of each pair crop: the most probable of the classes a pair can have ('none' and the social ones)."""
    classes = np.asarray(sorted(set(pair_classes)), dtype=np.int64)
    if probs.size == 0:
        return np.zeros(len(probs), dtype=np.int64)
    return classes[probs[:, classes].argmax(axis=1)]


def _sequences_of(data: CropSet, kind: str) -> list[tuple[int, int]]:
    """(start, length) of each sequence of `kind` in the compacted row order of ``data.rows(kind)``."""
    out, start = [], 0
    for s in data.sequences:
        if s.kind == kind:
            out.append((start, len(s)))
            start += len(s)
    return out


def evaluate_predictions(data: CropSet, probabilities: dict[str, np.ndarray], social: Sequence[str] = (),
                         bin_seconds: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Scores of each model's (N, C) probabilities over `data` (e.g. {"frame": ..., "temporal": ...})."""
    behaviours = data.behaviours
    num_classes = len(behaviours)
    social_idx = [behaviours.index(s) for s in social if s in behaviours]
    fps = float(np.median(list(data.fps.values()))) if data.fps else FALLBACK_FPS
    bin_frames = max(1, int(round(bin_seconds * fps)))
    ind_rows, pair_rows = data.rows(INDIVIDUAL), data.rows(PAIR)
    ind_seqs = _sequences_of(data, INDIVIDUAL)
    y_ind, y_pair = data.labels[ind_rows], data.labels[pair_rows]
    all_classes = list(range(num_classes))
    pair_classes = sorted(set(y_pair.tolist()) | set(social_idx)) or all_classes
    report: dict[str, Any] = {"behaviours": list(behaviours), "videos": data.videos(),
                              "individual_crops": int(len(ind_rows)), "pair_crops": int(len(pair_rows)),
                              "bin_seconds": bin_seconds, "models": {}}
    majority = int(np.bincount(y_ind, minlength=num_classes).argmax()) if len(y_ind) else 0
    report["majority_class"] = {
        "class": behaviours[majority],
        "macro_f1": metrics.macro_f1(y_ind, np.full_like(y_ind, majority)) if len(y_ind) else None}
    for name, probs in probabilities.items():
        probs = np.asarray(probs)
        p_ind = probs[ind_rows].argmax(axis=1)
        p_pair = pair_predictions(probs[pair_rows], [behaviours.index(NONE_CLASS)] + social_idx
                                  if NONE_CLASS in behaviours else social_idx or all_classes)
        entry: dict[str, Any] = {}
        if len(ind_rows):
            entry["individual"] = classification_scores(y_ind, p_ind, behaviours, all_classes)
            entry["individual"]["pearson_over_time"] = pearson_over_time(y_ind, p_ind, ind_seqs, behaviours,
                                                                         bin_frames)
            entry["individual"]["shuffled_label_chance"] = shuffled_label_chance(y_ind, p_ind, ind_seqs, seed=seed)
        if len(pair_rows):
            entry["pair"] = classification_scores(y_pair, p_pair, behaviours, pair_classes)
        if len(ind_rows) and len(pair_rows) and social_idx:
            combined = combine_individual_and_pairs(data, p_ind, p_pair, social_idx)
            entry["combined"] = classification_scores(y_ind, combined, behaviours, all_classes)
        report["models"][name] = entry
    return report


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables: per-class F1 and macro-F1 of each model, then chance levels."""
    models = list(report["models"])
    lines = [f"videos: {', '.join(map(str, report['videos']))}; individual crops {report['individual_crops']}, "
             f"pair crops {report['pair_crops']}", ""]
    header = "| scores | " + " | ".join(models) + " |"
    lines += [header, "|---|" + "---|" * len(models)]

    def cell(model: str, part: str, key: str, cls: str | None = None) -> str:
        entry = report["models"][model].get(part)
        if entry is None:
            return "-"
        value = entry["per_class"][cls]["f1"] if cls is not None else entry[key]
        return f"{value:.3f}"

    for part in ("individual", "pair", "combined"):
        if not any(part in report["models"][m] for m in models):
            continue
        lines.append(f"| **{part}** macro-F1 | " + " | ".join(cell(m, part, "macro_f1") for m in models) + " |")
        lines.append(f"| {part} accuracy | " + " | ".join(cell(m, part, "accuracy") for m in models) + " |")
        if part == "individual":
            for b in report["behaviours"]:
                lines.append(f"| F1 {b} | " + " | ".join(cell(m, part, "", b) for m in models) + " |")
                lines.append(f"| Pearson r {b} | " + " | ".join(
                    _fmt(report["models"][m].get(part, {}).get("pearson_over_time", {}).get(b)) for m in models)
                    + " |")
            lines.append("| shuffled-label chance macro-F1 | " + " | ".join(
                _fmt(report["models"][m].get(part, {}).get("shuffled_label_chance", {}).get("macro_f1_mean"))
                for m in models) + " |")
    maj = report.get("majority_class", {})
    lines += ["", f"majority class ({maj.get('class')}) macro-F1: {_fmt(maj.get('macro_f1'))}"]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"
