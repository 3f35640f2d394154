"""Classification metrics (torchmetrics), one collection per stage so states never mix."""

from __future__ import annotations

import warnings

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (MulticlassAccuracy, MulticlassAUROC, MulticlassCalibrationError,
                                         MulticlassF1Score)

from losslab.model.names import metric_key


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


class PresentClassesAUROC(MulticlassAUROC):
    """Macro one-vs-rest AUROC over the classes with at least one example in the targets seen (as scikit-learn
    scores only the classes present); torchmetrics' macro would average a 0 in for every absent class."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes, average=None)
        self.add_state("class_counts", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds, target)
        self.class_counts += torch.bincount(target.flatten().long(), minlength=self.num_classes)

    def compute(self) -> torch.Tensor:
        present = self.class_counts > 0
        if not present.all():
            with warnings.catch_warnings():  # "No positive samples in targets": the absent classes, left out below
                warnings.simplefilter("ignore", UserWarning)
                per_class = super().compute()
        else:
            per_class = super().compute()
        return per_class[present].mean() if present.any() else torch.tensor(float("nan"))


def absent_classes(targets: torch.Tensor, class_names: list[str]) -> list[str]:
    """The classes with no example in ``targets``: macro metrics leave them out, their f1_<class> reads 0."""
    counts = torch.bincount(targets.flatten().long().cpu(), minlength=len(class_names))
    return [name for name, n in zip(class_names, counts.tolist()) if n == 0]


def make_metrics(num_classes: int) -> MetricCollection:
    """accuracy, f1_macro, per-class F1 (as a vector), auroc, ece, nll — all fed probabilities.

    Macro averages count only the classes present in the split (as scikit-learn): torchmetrics' macro-F1 already
    skips a class that is neither true nor predicted; the AUROC is ``PresentClassesAUROC``."""
    return MetricCollection({
        "accuracy": MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "f1_per_class": MulticlassF1Score(num_classes, average=None),
        "auroc": PresentClassesAUROC(num_classes),
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
