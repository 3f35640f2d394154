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
