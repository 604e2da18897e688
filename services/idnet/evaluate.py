"""IdNet scores: accuracy, per-identity accuracy, confusion matrix, and a shuffled-label chance baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from sipec.metrics import accuracy, confusion_matrix, per_class_accuracy


def shuffled_label_chance(y_true: np.ndarray, y_pred: np.ndarray, repeats: int = 100, seed: int = 0) -> float:
    """Mean accuracy of the same predictions against randomly permuted labels (what no identity signal scores)."""
    rng = np.random.default_rng(seed)
    return float(np.mean([accuracy(rng.permutation(y_true), y_pred) for _ in range(repeats)]))


def identity_scores(y_true: np.ndarray, probs: np.ndarray, names: list[str]) -> dict[str, Any]:
    """accuracy, per-identity accuracy, confusion matrix (rows true, columns predicted), chance baseline."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(probs).argmax(axis=1)
    labels = list(range(len(names)))
    per = per_class_accuracy(y_true, y_pred, labels)
    return {
        "n": int(len(y_true)),
        "accuracy": accuracy(y_true, y_pred),
        "per_identity_accuracy": {names[i]: (None if np.isnan(per[i]) else float(per[i])) for i in labels},
        "confusion_matrix": {"names": names, "matrix": np.asarray(confusion_matrix(y_true, y_pred, labels)).tolist()},
        "chance_shuffled_labels": shuffled_label_chance(y_true, y_pred),
    }


def format_scores(title: str, scores: dict[str, Any]) -> str:
    """A short human-readable block of one model's scores."""
    lines = [f"{title}: accuracy {scores['accuracy']:.3f} on {scores['n']} crops "
             f"(shuffled-label chance {scores['chance_shuffled_labels']:.3f})"]
    per = ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in scores["per_identity_accuracy"].items())
    lines.append(f"  per identity: {per}")
    names = scores["confusion_matrix"]["names"]
    lines.append("  confusion (rows true, cols predicted): " + " | ".join(
        f"{n}: {row}" for n, row in zip(names, scores["confusion_matrix"]["matrix"], strict=True)))
    return "\n".join(lines)
