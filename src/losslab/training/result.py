"""What one training returns to its caller (the CLI, a sweep, the fused and k-fold flows, a test)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainResult:
    """What a caller (CLI, sweep, test) gets back from one training."""

    run_id: str
    tracking_uri: str
    test_metrics: dict[str, float]
    best_val_f1_macro: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (also logged as time/*)
