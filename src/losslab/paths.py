"""One place for the project's locations: root, config dir, default tracking store, reports."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "LOSSLAB_ROOT"


def project_root() -> Path:
    """The project root: ``$LOSSLAB_ROOT``, else the checkout this package lives in, else cwd.

    DVC's queued experiments run in temporary copies; the package is installed (editable)
    from the original checkout, so anchoring on this file keeps one store for every run.
    """
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "conf" / "config.yaml").is_file():
        return here
    return Path.cwd().resolve()


def config_dir() -> Path:
    """The Hydra config directory (``conf/``)."""
    return project_root() / "conf"


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """An input path as the user meant it: absolute; else relative to cwd if it exists there;
    else relative to the project root."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if (Path.cwd() / p).exists():
        return (Path.cwd() / p).resolve()
    return project_root() / p


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a sqlite file ``mlflow.db`` at the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def reports_root(configured: str | os.PathLike[str] | None = None) -> Path:
    """Where sweep reports go: ``sweep.reports_dir`` if set, else ``<project root>/reports``."""
    return Path(configured).expanduser().resolve() if configured else project_root() / "reports"
