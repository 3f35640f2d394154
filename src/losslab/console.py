"""What the console shows: progress and results, not third-party noise.

``LOSSLAB_VERBOSE=1`` brings back the per-epoch lines (and the per-run test block) inside sweeps,
where a job otherwise shows one progress line. Third-party warnings are silenced where they are
raised (see the callers of ``ignore_warning``), never by muting every warning.
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "LOSSLAB_VERBOSE"


def verbose() -> bool:
    """``$LOSSLAB_VERBOSE`` is set to something other than ``""``, ``0`` or ``false``."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def ignore_warning(message: str, category: type[Warning] = Warning, module: str = "") -> None:
    """Silence one known third-party warning by its message (a regex matched at its start)."""
    warnings.filterwarnings("ignore", message=message, category=category, module=module)


def quiet_third_party() -> None:
    """Keep Lightning's info lines (device banner, tips, checkpoint restores) and known deprecations off the
    console unless ``LOSSLAB_VERBOSE=1``; warnings about our own use still show."""
    import logging

    if verbose():
        return
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6's CombinedLoader builds torch's LeafSpec, deprecated in torch 2.13 (not our code).
    ignore_warning(r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
    # Lightning's hint on any host where SLURM is installed but this process was not started by srun
    # (a local run or a local sweep); jobs sent to SLURM (LAUNCHER=slurm) run under it anyway.
    ignore_warning(r"The `srun` command is available on your system but is not used")
