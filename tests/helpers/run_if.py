"""``RunIf``: run a test only where the hardware it needs exists, and say why it was skipped.

    @RunIf(min_gpus=1)
    def test_trains_on_cuda(): ...

On a CPU-only machine the test is reported as skipped with the reason (``pytest -rs``),
never silently passed; ``bench/gpu_check.sh`` fails when a GPU test is skipped.
"""

from __future__ import annotations

import pytest


def visible_gpus() -> int:
    """How many CUDA devices torch can use here (0 without a CUDA build or driver)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def RunIf(min_gpus: int = 0) -> pytest.MarkDecorator:  # a mark factory, capitalised like a class
    """A ``skipif`` mark that skips unless at least ``min_gpus`` CUDA GPUs are visible."""
    import torch

    reasons = []
    if min_gpus:
        found = visible_gpus()
        if found < min_gpus:
            reasons.append(f"needs {min_gpus} CUDA GPU(s), torch {torch.__version__} sees {found} "
                           f"(CUDA build: {torch.version.cuda or 'none'}, "
                           f"CUDA_VISIBLE_DEVICES={_env('CUDA_VISIBLE_DEVICES')})")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "all requirements met")


def _env(name: str) -> str:
    import os

    value = os.environ.get(name)
    return "unset" if value is None else repr(value)
