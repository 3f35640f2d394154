"""The course's classifier: an MLP of Linear → PReLU → Dropout blocks over bag-of-words input.

The first layer reads sparse rows through ``embedding_bag`` (a CSR · W product), so the
V-wide one-hot input never becomes a dense matrix. Dropout draws its keep-mask from uniform numbers
(``dropout``): the same distribution as ``nn.Dropout``'s Bernoulli draws, at a third of the cost on CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from losslab.errors import ConfigError


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``: each unit kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``.

    The mask is ``uniform[0, 1) >= p`` from the default generator (seeded, saved in checkpoints) rather than
    ``bernoulli_(1 - p)``: on CPU torch's Bernoulli kernel costs ~0.9 ms per 256 × 256 mask here, ``rand_like``
    ~0.25 ms; forward + backward, ~17 ms saved per ~0.25 s MEX-A3T epoch (27 steps). Same distribution,
    other draws than ``nn.Dropout``.
    """
    if not training or p == 0.0:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype).div_(1.0 - p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the uniform-draw mask of ``dropout`` (still an ``nn.Dropout``: ``p``, ``train()``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class SparseLinear(nn.Module):
    """``y = x W + b`` for sparse rows given as ``(indices, offsets, weights)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default init
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = F.embedding_bag(indices, self.weight, offsets, mode="sum", per_sample_weights=weights)
        return out + self.bias


class PReLUMLP(nn.Module):
    """``depth`` hidden blocks of width ``hidden`` (Linear → PReLU → Dropout), then C logits."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, depth: int = 1,
                 dropout: float = 0.5) -> None:
        super().__init__()
        problems = [msg for ok, msg in [(hidden >= 1, f"model.hidden={hidden} must be >= 1"),
                                        (depth >= 1, f"model.depth={depth} must be >= 1"),
                                        (0.0 <= dropout < 1.0, f"model.dropout={dropout} must be in [0, 1)")] if not ok]
        if problems:
            raise ConfigError("; ".join(problems) + ". Fix the override or conf/model/.")
        self.input = SparseLinear(in_features, hidden)
        blocks: list[nn.Module] = [nn.PReLU(), Dropout(dropout)]
        for _ in range(depth - 1):
            blocks += [nn.Linear(hidden, hidden), nn.PReLU(), Dropout(dropout)]
        self.hidden = nn.Sequential(*blocks)
        self.output = nn.Linear(hidden, num_classes)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(self.input(indices, offsets, weights)))
