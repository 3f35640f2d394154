"""The decision rule applied to a model's probabilities, chosen on the validation split only.

Binary: predict the configured class when its probability is >= a threshold (the threshold
maximising that class's validation F1, or validation macro-F1). Multi-class: add per-class
offsets to the log-probabilities and take the argmax (offsets chosen by coordinate ascent on
validation macro-F1). ``argmax`` is the rule with threshold 0.5 / zero offsets.

A rule is a plain dict (stored in the model bundle's ``losslab_model.json``)::

    {"kind": "threshold", "positive": 1, "threshold": 0.31, "metric": "f1_minority"}
    {"kind": "offsets", "offsets": [0.0, 0.4, -0.2], "metric": "f1_macro"}
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

METRICS = ("f1_minority", "f1_class", "f1_macro")
_EPS = 1e-12


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """F1 of every class (0 where the class is neither true nor predicted), as scikit-learn with zero_division=0."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = np.bincount(y_true[y_true == y_pred], minlength=num_classes).astype(float)
    true = np.bincount(y_true, minlength=num_classes).astype(float)
    pred = np.bincount(y_pred, minlength=num_classes).astype(float)
    denom = true + pred
    return np.where(denom > 0, 2 * tp / np.maximum(denom, _EPS), 0.0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Macro-F1 over the classes present in ``y_true`` or ``y_pred`` (scikit-learn's ``average="macro"``)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    present = (np.bincount(y_true, minlength=num_classes) + np.bincount(y_pred, minlength=num_classes)) > 0
    f1 = f1_per_class(y_true, y_pred, num_classes)
    return float(f1[present].mean()) if present.any() else 0.0


def tune_threshold(p_positive: np.ndarray, y_true: np.ndarray, positive: int,
                   metric: str = "f1_class") -> tuple[float, float]:
    """The threshold ``t`` on p(positive) (predict positive when ``p >= t``) maximising the positive class's F1
    (``f1_class`` / ``f1_minority``) or the binary macro-F1 (``f1_macro``); returns (t, its score).

    Candidates are the observed probabilities (every distinct split of the sorted scores); ties go to the
    candidate closest to 0.5 (the argmax rule)."""
    p = np.asarray(p_positive, dtype=float)
    is_pos = np.asarray(y_true) == positive
    order = np.argsort(-p, kind="stable")
    p_sorted, pos_sorted = p[order], is_pos[order]
    n, n_pos = len(p), int(is_pos.sum())
    # the last index of each run of equal scores: predicting positive for the top k = that index + 1
    last = np.flatnonzero(np.r_[p_sorted[1:] != p_sorted[:-1], True])
    k = last + 1
    tp = np.cumsum(pos_sorted)[last].astype(float)
    fp, fn = k - tp, n_pos - tp
    f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, _EPS), 0.0)
    if metric == "f1_macro":
        tn = (n - n_pos) - fp  # the negative class: tp = tn, fp = fn, fn = fp
        f1_neg = np.where(2 * tn + fp + fn > 0, 2 * tn / np.maximum(2 * tn + fp + fn, _EPS), 0.0)
        score = (f1_pos + f1_neg) / 2
    elif metric in ("f1_class", "f1_minority"):
        score = f1_pos
    else:
        raise ValueError(f"operating_point.metric={metric!r}: one of {', '.join(METRICS)}")
    thresholds = p_sorted[last]
    best = np.flatnonzero(score >= score.max() - 1e-12)
    pick = best[np.argmin(np.abs(thresholds[best] - 0.5))]
    return float(thresholds[pick]), float(score[pick])


def tune_offsets(probs: np.ndarray, y_true: np.ndarray, grid: Sequence[float] | None = None,
                 rounds: int = 3) -> tuple[np.ndarray, float]:
    """Per-class log-probability offsets (class 0 fixed at 0) maximising macro-F1 of
    ``argmax(log p + offsets)``, by coordinate ascent over ``grid``; returns (offsets, macro-F1).
    An offset only moves when it strictly improves the score, so the result is never below argmax."""
    num_classes = probs.shape[1]
    logp = np.log(np.clip(np.asarray(probs, dtype=float), _EPS, 1.0))
    y_true = np.asarray(y_true)
    grid = np.asarray(grid if grid is not None else np.round(np.arange(-3.0, 3.0001, 0.1), 2))
    offsets = np.zeros(num_classes)
    best = macro_f1(y_true, logp.argmax(axis=1), num_classes)
    for _ in range(rounds):
        moved = False
        for c in range(1, num_classes):
            for value in grid:
                trial = offsets.copy()
                trial[c] = value
                score = macro_f1(y_true, (logp + trial).argmax(axis=1), num_classes)
                if score > best + 1e-12:
                    best, offsets, moved = score, trial, True
        if not moved:
            break
    return offsets, float(best)


def choose_rule(probs: np.ndarray, y_true: np.ndarray, metric: str = "f1_minority",
                positive: int | None = None, class_counts: Sequence[int] | None = None) -> dict[str, Any]:
    """The rule for these (validation) probabilities: a threshold for 2 classes, offsets for more.

    ``positive``: the class whose F1 counts (binary, ``f1_class``); by default the minority class of
    ``class_counts`` (the training split's), else of ``y_true``."""
    probs, y_true = np.asarray(probs), np.asarray(y_true)
    num_classes = probs.shape[1]
    if metric not in METRICS:
        raise ValueError(f"operating_point.metric={metric!r}: one of {', '.join(METRICS)}")
    if num_classes == 2:
        if positive is None:
            counts = np.asarray(class_counts if class_counts is not None else np.bincount(y_true, minlength=2))
            positive = int(np.argmin(counts))
        threshold, score = tune_threshold(probs[:, positive], y_true, positive, metric)
        return {"kind": "threshold", "positive": int(positive), "threshold": threshold, "metric": metric,
                "val_score": score}
    offsets, score = tune_offsets(probs, y_true)
    return {"kind": "offsets", "offsets": [float(v) for v in offsets], "metric": "f1_macro", "val_score": score}


def apply_rule(probs: np.ndarray, rule: dict[str, Any] | None) -> np.ndarray:
    """Predicted class indices under ``rule`` (``None``: argmax)."""
    probs = np.asarray(probs)
    if not rule:
        return probs.argmax(axis=1)
    if rule["kind"] == "threshold":
        positive = int(rule["positive"])
        return np.where(probs[:, positive] >= float(rule["threshold"]), positive, 1 - positive)
    if rule["kind"] == "offsets":
        logp = np.log(np.clip(probs.astype(float), _EPS, 1.0))
        return (logp + np.asarray(rule["offsets"], dtype=float)).argmax(axis=1)
    raise ValueError(f"unknown operating point kind {rule['kind']!r}")


def rule_metrics(rule: dict[str, Any], class_names: Sequence[str]) -> dict[str, float]:
    """The rule as metrics: ``threshold`` or ``offset_<class>`` (prefix them with ``val/``)."""
    from losslab.model.names import metric_key

    if rule["kind"] == "threshold":
        return {"threshold": float(rule["threshold"])}
    return {f"offset_{metric_key(c)}": float(v) for c, v in zip(class_names, rule["offsets"])}


def label_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """accuracy, f1_macro (classes present, as scikit-learn) and f1_<class> of hard predictions."""
    from losslab.model.names import metric_key

    k = len(class_names)
    f1 = f1_per_class(y_true, y_pred, k)
    out = {"accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0,
           "f1_macro": macro_f1(y_true, y_pred, k)}
    out |= {f"f1_{metric_key(c)}": float(v) for c, v in zip(class_names, f1)}
    return out


def describe_rule(rule: dict[str, Any] | None) -> str:
    """``p(aggressive) >= 0.312 (max validation f1_minority)``, ``log-prob offsets ...`` or ``argmax``."""
    if not rule:
        return "argmax"
    if rule["kind"] == "threshold":
        return (f"p({rule.get('class_name', rule['positive'])}) >= {rule['threshold']:.4g} "
                f"(max validation {rule['metric']})")
    return "log-prob offsets " + ", ".join(f"{v:+.2f}" for v in rule["offsets"]) + " (max validation f1_macro)"
