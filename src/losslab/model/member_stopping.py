"""Early stopping per member of a fused training: Lightning's ``EarlyStopping`` rule, kept for each member.

A separate training with ``callbacks=early_stopping`` stops once its monitored validation metric has not improved
(by more than ``min_delta``) for ``patience`` epochs, or is not finite — but never before ``trainer.min_epochs``;
its best checkpoint is the best epoch up to there. ``MemberStopping`` applies the same rule to each member of a
``FusedClassifier``: once a member's last epoch is reached it is *done* — its best weights stop changing (its
slices still train with the others; what it records is cut at that epoch) — and the fused fit stops when every
member is done. Each member thus ends as its separate training would.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

# EarlyStopping options this rule reproduces; any other one set (thresholds, ...) is refused by the fused training
SUPPORTED = {"_target_", "monitor", "mode", "patience", "min_delta", "check_finite", "strict", "verbose"}


class MemberStopping:
    """``EarlyStopping(monitor, mode, patience, min_delta, check_finite)`` for ``members`` members at once."""

    def __init__(self, members: int, monitor: str = "val/f1_macro", mode: str = "max", patience: int = 3,
                 min_delta: float = 0.0, check_finite: bool = True, min_epochs: int = 0) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"early stopping mode must be min or max, not {mode!r}")
        self.monitor, self.patience, self.check_finite = monitor, int(patience), bool(check_finite)
        self.min_epochs = int(min_epochs or 0)
        self.better = torch.gt if mode == "max" else torch.lt
        self.min_delta = abs(float(min_delta)) * (1 if mode == "max" else -1)  # as EarlyStopping signs it
        start = torch.tensor(-torch.inf if mode == "max" else torch.inf)
        self.best = [start.clone() for _ in range(members)]
        self.wait = [0] * members
        self.signalled: list[int | None] = [None] * members  # the epoch the rule fired (stop requested)
        self.last_epoch: list[int | None] = [None] * members  # the member's last epoch (>= min_epochs - 1)

    @classmethod
    def from_config(cls, members: int, settings: Mapping[str, Any], min_epochs: int | None) -> "MemberStopping":
        """From ``callbacks.early_stopping`` (a ``pytorch_lightning.callbacks.EarlyStopping`` node)."""
        return cls(members, str(settings.get("monitor", "val/f1_macro")), str(settings.get("mode", "min")),
                   int(settings.get("patience", 3)), float(settings.get("min_delta", 0.0)),
                   bool(settings.get("check_finite", True)), int(min_epochs or 0))

    def done(self, k: int, epoch: int) -> bool:
        """Whether member ``k`` had stopped before ``epoch`` (its results must not change from then on)."""
        last = self.last_epoch[k]
        return last is not None and epoch > last

    def update(self, k: int, current: torch.Tensor, epoch: int) -> None:
        """Member ``k``'s monitored value at the end of ``epoch`` (call once per epoch, after validation)."""
        if self.done(k, epoch):
            return
        current = current.detach().float().cpu().squeeze()
        if self.signalled[k] is None:
            if self.check_finite and not torch.isfinite(current):
                self.signalled[k] = epoch
            elif self.better(current - self.min_delta, self.best[k]):
                self.best[k], self.wait[k] = current, 0
            else:
                self.wait[k] += 1
                if self.wait[k] >= self.patience:
                    self.signalled[k] = epoch
        if self.signalled[k] is not None and epoch + 1 >= self.min_epochs:  # Lightning honours min_epochs first
            self.last_epoch[k] = epoch
