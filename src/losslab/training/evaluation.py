"""Test-set artifacts of a run: confusion matrix (PNG) and per-class report (text + JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> tuple[str, dict]:
    """scikit-learn's ``classification_report`` (every class listed, 4 digits, zero_division=0) as text and as a
    dict, computed from one confusion matrix (sklearn's own takes ~40 ms per call: two per report)."""
    k = len(class_names)
    counts = np.bincount(np.asarray(y_true, dtype=np.int64) * k + np.asarray(y_pred, dtype=np.int64),
                         minlength=k * k).reshape(k, k).astype(float)
    tp, support, predicted = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    total = float(support.sum())
    report: dict = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]),
                           "support": float(support[i])} for i, name in enumerate(class_names)}
    report["accuracy"] = float(tp.sum() / total) if total else 0.0
    weights = support / total if total else np.zeros(k)
    for name, w in (("macro avg", np.full(k, 1 / k)), ("weighted avg", weights)):
        report[name] = {"precision": float(w @ precision), "recall": float(w @ recall), "f1-score": float(w @ f1),
                        "support": total}
    width = max(len("weighted avg"), *(len(c) for c in class_names))
    row = "{:>{w}s}  {:>9.4f} {:>9.4f} {:>9.4f} {:>9}\n"  # sklearn's layout, digits=4

    def line(name: str) -> str:
        values = report[name]
        return row.format(name, values["precision"], values["recall"], values["f1-score"], int(values["support"]),
                          w=width)

    lines = [" " * width + "  {:>9} {:>9} {:>9} {:>9}\n\n".format("precision", "recall", "f1-score", "support")]
    lines += [line(c) for c in class_names]
    lines.append("\n{:>{w}s}  {:>9} {:>9} {:>9.4f} {:>9}\n".format("accuracy", "", "", report["accuracy"], int(total),
                                                                   w=width))
    lines += [line(avg) for avg in ("macro avg", "weighted avg")]
    return "".join(lines), report


def draw_confusion_matrix(ax, y_true: np.ndarray, y_pred: np.ndarray,  # type: ignore[no-untyped-def]
                          class_names: Sequence[str], title: str = "", fontsize: int = 9) -> None:
    """Counts with row-normalised shading on one matplotlib axes (the per-run PNG and the report's grid)."""
    from sklearn.metrics import confusion_matrix

    ticks = range(len(class_names))
    counts = confusion_matrix(y_true, y_pred, labels=list(ticks))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{n}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=fontsize,
                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(ticks, class_names, rotation=25, ha="right", fontsize=fontsize - 1)
    ax.set_yticks(ticks, class_names, fontsize=fontsize - 1)
    ax.set_title(title, fontsize=fontsize + 1)


def plot_confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path: Path,
                          title: str = "") -> Path:
    """One confusion matrix (``draw_confusion_matrix``) saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 2.2 + 0.9 * len(class_names)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=110)
    draw_confusion_matrix(ax, y_true, y_pred, class_names, title or "test confusion matrix")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_predictions(path: Path, probs: np.ndarray, y_true: np.ndarray, class_names: Sequence[str]) -> Path:
    """``label,predicted,p_<class>...`` per row, in the split's row order (``test_`` / ``val_predictions.csv``)."""
    header = "label,predicted," + ",".join(f"p_{c}" for c in class_names)
    rows = np.column_stack([y_true, np.asarray(probs).argmax(axis=1), probs])
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt=["%d", "%d"] + ["%.6f"] * len(class_names))
    return path


def write_test_artifacts(directory: Path, probs: np.ndarray, y_true: np.ndarray, class_names: Sequence[str],
                         title: str = "", rule: dict | None = None, png: bool = True) -> list[Path]:
    """confusion_matrix.png, classification_report.txt/.json and test_predictions.csv (argmax); with a ``rule``
    (the operating point chosen on validation) also confusion_matrix_tuned.png, classification_report_tuned.*.
    ``png=False`` skips the two drawings (~0.2 s each; a sweep's report draws every loss's matrix)."""
    directory.mkdir(parents=True, exist_ok=True)
    y_pred = probs.argmax(axis=1)
    text, as_dict = classification_report(y_true, y_pred, class_names)
    (directory / "classification_report.txt").write_text(text)
    (directory / "classification_report.json").write_text(json.dumps(as_dict, indent=2))
    write_predictions(directory / "test_predictions.csv", probs, y_true, class_names)
    written = [directory / "classification_report.txt", directory / "classification_report.json",
               directory / "test_predictions.csv"]
    if png:
        written.append(plot_confusion_matrix(y_true, y_pred, class_names, directory / "confusion_matrix.png", title))
    if rule:
        from losslab.model.operating_point import apply_rule, describe_rule

        tuned = apply_rule(probs, rule)
        text, as_dict = classification_report(y_true, tuned, class_names)
        (directory / "classification_report_tuned.txt").write_text(f"operating point: {describe_rule(rule)}\n\n{text}")
        (directory / "classification_report_tuned.json").write_text(json.dumps(as_dict | {"rule": rule}, indent=2))
        written += [directory / "classification_report_tuned.txt", directory / "classification_report_tuned.json"]
        if png:
            written.append(plot_confusion_matrix(y_true, tuned, class_names, directory / "confusion_matrix_tuned.png",
                                                 f"{title or 'test'} — {describe_rule(rule)}"))
    return written
