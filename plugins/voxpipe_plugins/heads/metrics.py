"""Test metrics for the heads (scikit-learn): accuracy, balanced accuracy, ROC AUC, F1, confusion matrix; MAE, RMSE, R²."""

from __future__ import annotations

import math

import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, names: list[str]) -> dict:
    """Metrics of predicted class probabilities (N, K) against true class indices (N,).

    ROC AUC is one-vs-rest macro for more than two classes and ``None`` when the set holds one class only.
    F1 is binary (positive = class 1) for two classes, macro otherwise.
    """
    from sklearn import metrics

    pred = proba.argmax(1)
    labels = list(range(len(names)))
    present = np.unique(y_true)
    auc = None
    if len(present) > 1:
        if len(names) == 2:
            auc = float(metrics.roc_auc_score(y_true, proba[:, 1]))
        elif len(present) == len(names):
            auc = float(metrics.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels))
    binary = len(names) == 2
    return {
        "n": int(len(y_true)),
        "accuracy": float(metrics.accuracy_score(y_true, pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, pred)) if len(present) > 1 else None,
        "roc_auc": auc,
        "f1": float(
            metrics.f1_score(y_true, pred, average="binary" if binary else "macro", labels=None if binary else labels, zero_division=0)
        ),
        "confusion_matrix": metrics.confusion_matrix(y_true, pred, labels=labels).tolist(),
        "classes": list(names),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MAE, RMSE and R² (``None`` when the targets are constant, where R² is undefined)."""
    error = y_pred - y_true
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "n": int(len(y_true)),
        "mae": float(np.abs(error).mean()),
        "rmse": float(math.sqrt((error**2).mean())),
        "r2": (1.0 - float((error**2).sum()) / ss_tot) if ss_tot > 0 else None,
    }


def render(metrics: dict) -> str:
    """The metrics as a few readable lines (the JSON holds the same numbers)."""
    lines = []

    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    cls = metrics.get("classification")
    if cls:
        lines.append(
            f"classification (n={cls['n']}): accuracy {fmt(cls['accuracy'])}  balanced accuracy "
            f"{fmt(cls['balanced_accuracy'])}  ROC AUC {fmt(cls['roc_auc'])}  F1 {fmt(cls['f1'])}"
        )
        width = max(len(n) for n in cls["classes"]) + 2
        lines.append("confusion matrix (rows: true, columns: predicted):")
        lines.append(" " * width + "".join(f"{n:>{width}}" for n in cls["classes"]))
        for name, row in zip(cls["classes"], cls["confusion_matrix"]):
            lines.append(f"{name:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    reg = metrics.get("regression")
    if reg:
        lines.append(f"regression (n={reg['n']}): MAE {fmt(reg['mae'])}  RMSE {fmt(reg['rmse'])}  R² {fmt(reg['r2'])}")
    return "\n".join(lines)
