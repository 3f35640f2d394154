"""losslab: compare the loss functions of a neural-networks course on a real text-classification task.

Data flow, one module each: data → text → features → batches → model / losses / targets →
metrics → module (LightningModule) → tracking → bundle (saved model) → train / predict.
"""

__version__ = "0.1.0"

import os as _os

# torch's CPU kernels use GNU OpenMP, whose idle threads busy-wait between kernels. When other
# processes share the cores (a sweep with --jobs 2, other users), that spinning slowed an epoch
# 3-10x here; passive waiting costs nothing measurable on an idle machine. It must be set before
# torch loads, and every entry point imports losslab first. An explicit setting is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
