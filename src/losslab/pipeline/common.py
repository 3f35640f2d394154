"""Helpers shared by the pipeline stages: the DVC project root, params.yaml, dvc.lock, JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from losslab.errors import ConfigError
from losslab.paths import ROOT_ENV, project_root

PARAMS_FILE = "params.yaml"
LOCK_FILE = "dvc.lock"
BUNDLE_DIR = "model"  # artifacts/models/<loss>/model: the model bundle (losslab.serving.bundle), from train@<loss>
RUN_FILE = "mlflow_run.json"  # artifacts/models/<loss>/mlflow_run.json: the MLflow run that trained it


def dvc_root() -> Path:
    """The DVC project a stage belongs to.

    ``$DVC_ROOT`` is set by DVC for every stage, and points at the *original* project even
    for ``dvc exp run --temp`` / ``--queue`` (which run in copies under ``.dvc/tmp/exps``).
    Outside DVC: the nearest parent of the cwd holding ``.dvc/``, else the package checkout.
    """
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return project_root()


def anchor_project_root() -> Path:
    """Make ``losslab.paths.project_root()`` (hence the default MLflow store
    ``sqlite:///<root>/mlflow.db``) the DVC project root, unless ``$LOSSLAB_ROOT`` is set."""
    if not os.environ.get(ROOT_ENV):
        os.environ[ROOT_ENV] = str(dvc_root())
    return project_root()


def load_params(path: str | Path = PARAMS_FILE) -> Any:
    """``params.yaml`` as an OmegaConf config (already resolved by the composition)."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found. Compose it from conf/ with `make params` "
                          "(or `python -m losslab.pipeline.params`).")
    return OmegaConf.load(path)


def lock_out_md5(stage: str, out: str, lock: str | Path = LOCK_FILE) -> str | None:
    """The md5 that ``dvc.lock`` records for output ``out`` of ``stage`` (None if not locked yet)."""
    import yaml

    path = Path(lock)
    if not path.is_file():
        return None
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    for entry in (stages.get(stage) or {}).get("outs") or []:
        if entry.get("path") == out:
            return entry.get("md5")
    return None


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
