"""Proof that fused training changes nothing: each member against its separate training (tests, ``make bench``)."""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, open_dict

from losslab.training.fused import FusedResult, member_config, train_fused
from losslab.training.result import TrainResult


def compare_with_separate(cfg: DictConfig,
                          output_dir: str | Path) -> tuple[FusedResult, dict[str, TrainResult], float]:
    """Train ``fused.losses`` fused, then each loss separately with the same config and seed; returns both and the
    largest |difference| over the members' logged (best-checkpoint) network weights and test/test_tuned metrics."""
    import torch

    from losslab.training.train import train

    output_dir = Path(output_dir)
    fused = train_fused(copy.deepcopy(cfg), output_dir / "fused")
    separate, worst = {}, 0.0
    for name, member in fused.members.items():
        single = member_config(cfg, name)
        with open_dict(single):
            single.fused.losses = None
        separate[name] = result = train(single, output_dir / "separate" / name)
        nets = [torch.load(Path(folder) / "artifacts" / "model" / "network.pt", weights_only=True)  # the logged bundles
                for folder in (output_dir / "fused" / name, output_dir / "separate" / name)]
        worst = max([worst, *((nets[0][key] - value).abs().max().item() for key, value in nets[1].items()),
                     *(abs(member.test_metrics[key] - value) for key, value in result.test_metrics.items())])
    return fused, separate, worst


def max_abs_diff_vs_separate(cfg: DictConfig, output_dir: str | Path) -> float:
    """For the benchmark: ``compare_with_separate``'s largest |difference| (0.0 = bitwise equal)."""
    return compare_with_separate(cfg, output_dir)[2]
