"""Classification metrics (torchmetrics), one collection per stage so states never mix."""

from __future__ import annotations

import re

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (MulticlassAccuracy, MulticlassAUROC, MulticlassCalibrationError,
                                         MulticlassF1Score)


class NegativeLogLikelihood(Metric):
    """Mean ``-log p(y)`` of the predicted probabilities (clamped away from 0)."""

    full_state_update = False

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        picked = probs.gather(1, target[:, None]).squeeze(1).clamp_min(self.eps)
        self.total += -picked.log().sum().to(torch.float64)
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).to(torch.float32)


def metric_key(class_name: str) -> str:
    """A class name as it appears in metric names: ``f1_<class>`` with [A-Za-z0-9_] only."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", str(class_name)).strip("_") or "class"


def make_metrics(num_classes: int) -> MetricCollection:
    """accuracy, f1_macro, per-class F1 (as a vector), auroc, ece, nll — all fed probabilities."""
    return MetricCollection({
        "accuracy": MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "f1_per_class": MulticlassF1Score(num_classes, average=None),
        "auroc": MulticlassAUROC(num_classes, average="macro"),
        "ece": MulticlassCalibrationError(num_classes, n_bins=15, norm="l1"),
        "nll": NegativeLogLikelihood(),
    })


def flatten(values: dict[str, torch.Tensor], prefix: str, class_names: list[str]) -> dict[str, torch.Tensor]:
    """``{"f1_per_class": [a, b]}`` → ``{"<prefix>/f1_<name_a>": a, …}``; scalars keep their names."""
    out: dict[str, torch.Tensor] = {}
    for name, value in values.items():
        if name == "f1_per_class":
            for cls, v in zip(class_names, value):
                out[f"{prefix}/f1_{metric_key(cls)}"] = v
        else:
            out[f"{prefix}/{name}"] = value
    return out
