"""losslab: compare the loss functions of a neural-networks course on a real text-classification task.

Subpackages, top to bottom: each imports only those below it (the top three not each other), so
the data flows bottom-up, data → model → training → report:

    sweeps | pipeline | ops   entry points: multi-loss sweeps, the DVC stages, the MLflow server/UI
    report                    the statistical comparison of a sweep, read back from the MLflow store
    training                  one training: Hydra config → fit → test → logged MLflow run
    serving                   the saved model bundle, prediction, the pyfunc model and the registry
    tracking                  the MLflow store, run helpers and sweep-run queries
    model                     network, losses and their targets, metrics, the LightningModule
    data                      reading and checking datasets, text normalisation, features, batches

``paths``, ``errors``, ``console`` and ``quick_exit`` are shared by all and import none of them; the contract is
``[tool.importlinter]`` in pyproject.toml (``make lint``).
"""

__version__ = "0.1.0"

import os as _os

# torch's CPU kernels use GNU OpenMP, whose idle threads busy-wait between kernels. When other
# processes share the cores (a sweep with --jobs 2, other users), that spinning slowed an epoch
# 3-10x here; passive waiting costs nothing measurable on an idle machine. It must be set before
# torch loads, and every entry point imports losslab first. An explicit setting is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# MLflow logs store creation/migration at INFO ("Creating initial MLflow database tables..."): progress
# lines of a library, not ours. LOSSLAB_VERBOSE=1 or an explicit MLFLOW_LOGGING_LEVEL keeps them.
if _os.environ.get("LOSSLAB_VERBOSE", "").strip().lower() in ("", "0", "false", "no"):
    _os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

# MLflow 3 collects usage telemetry and tries to send it out; nothing here may call out, and the
# bookkeeping wraps every client call. An explicit MLFLOW_DISABLE_TELEMETRY=false keeps it.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
