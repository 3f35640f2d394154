"""The one place that turns class indices into the target form a loss needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Float one-hot rows (``F.one_hot``), optionally label-smoothed: ``(1-ε)·onehot + ε/C``."""
    target = F.one_hot(y, num_classes).to(torch.float32)
    if smoothing:
        target = target * (1.0 - smoothing) + smoothing / num_classes
    return target
