"""The best run of a sweep as a registered model version with alias ``champion``, and serving it.

    python -m losslab.serving.registry register [--sweep-id <id>] [--experiment mex-a3t] [--model NAME]
    python -m losslab.serving.registry register --run <run id> [--model NAME]      # one given run, e.g. an ensemble
    python -m losslab.serving.registry serve [--model NAME] [--port 5002]      # or: make register / make serve

``register`` finds the sweep's parent run (tag ``sweep_role=parent``; the newest one unless
``--sweep-id``), ranks its FINISHED children by ``best_val/f1_macro`` (validation, never test),
logs the winner's ``model/`` bundle once as an MLflow pyfunc (``losslab.serving.pyfunc_model``, "models
from code", explicit pip requirements) under the run's ``pyfunc/`` artifact, registers it and
points the alias ``champion`` at the new version. Training itself logs no pyfunc, so every
training stays lean. ``serve`` runs ``mlflow models serve -m models:/<name>@champion`` on
127.0.0.1 in this environment. Both use ``$MLFLOW_TRACKING_URI`` (else the project's sqlite
store) as tracking and registry store. Settings: ``conf/registry.yaml``. ``register_run`` takes any run with a
``model/`` bundle, an ensemble run (``ensemble.folds=k`` or a sweep's seed ensemble) included: its pyfunc averages
the members' probabilities (``losslab.serving.bundle.EnsemblePredictor``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from losslab.errors import ConfigError, LosslabError, friendly_exit
from losslab.paths import config_dir, default_tracking_uri
from losslab.tracking.sweep_runs import child_runs, find_sweep_parent

ENSEMBLE_TAG = "ensemble"  # set on ensemble runs (training.ensemble, sweeps.ensembles): folds | seeds
REQUIREMENTS = ("mlflow", "torch", "numpy", "scipy", "pandas", "scikit-learn")  # what loading the model imports


@dataclass
class Champion:
    """A registered model version and the run behind it."""

    model_name: str
    version: str
    alias: str
    run_id: str
    run_name: str
    metric: str
    value: float
    sweep_id: str
    new: bool

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@{self.alias}"


def settings() -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.load(config_dir() / "registry.yaml")


def sweep_parent(client: Any, sweep_id: str | None = None, experiment: str | None = None) -> Any:
    """The parent run of sweep ``sweep_id`` (else the newest sweep) in ``experiment`` (else any experiment)."""
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ConfigError(f"no MLflow experiment '{experiment}' in {client.tracking_uri}.")
        experiment_ids = [found.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    parent = find_sweep_parent(client, experiment_ids, sweep_id)
    if parent is None:
        what = f"sweep '{sweep_id}'" if sweep_id else "sweep"
        raise ConfigError(f"no {what} in {client.tracking_uri}{f' (experiment {experiment})' if experiment else ''}. "
                          "Run one first (make sweep), or check SWEEP_ID and MLFLOW_TRACKING_URI.")
    return parent


def best_child(uri: str, parent: Any, metric: str) -> Any:
    """The FINISHED child of ``parent`` with the highest ``metric`` (ties: the earlier run); a sweep's seed
    ensembles (tag ``ensemble=seeds``) are not candidates: the champion is one of the trainings compared per seed."""
    children = child_runs(uri, parent.info.experiment_id, parent.info.run_id)
    ranked = [r for r in children if r.info.status == "FINISHED" and r.data.tags.get(ENSEMBLE_TAG) != "seeds"
              and math.isfinite(r.data.metrics.get(metric, math.nan))]
    if not ranked:
        raise LosslabError(f"sweep {parent.data.tags.get('sweep_id')}: none of its {len(children)} runs FINISHED with "
                           f"metric '{metric}'; nothing to register.")
    return max(ranked, key=lambda r: (r.data.metrics[metric], -r.info.start_time))


def pip_requirements() -> list[str]:
    """Exact versions of what loading the model imports (no slow environment inference)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def save_pyfunc(bundle_dir: Path, out_dir: Path) -> Path:
    """Write the pyfunc model (models from code + the bundle + losslab's code) into ``out_dir``."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    from losslab.serving import pyfunc_model
    from losslab.serving.bundle import Predictor

    class_names = Predictor.load(bundle_dir).class_names
    # One unnamed column of raw texts, declared "any": a "string" column makes MLflow cast a JSON number to
    # "5" before the model sees it; the pyfunc checks every value is a text itself (texts_of → HTTP 400).
    signature = ModelSignature(inputs=Schema([ColSpec(AnyType())]),
                               outputs=Schema([ColSpec("string", "class")]
                                              + [ColSpec("double", f"p_{name}") for name in class_names]))
    import losslab

    package = Path(losslab.__file__).parent  # the whole package: pyfunc_model imports serving, model and data
    with tempfile.TemporaryDirectory(prefix="losslab-code-") as code_root:
        code = Path(code_root) / "losslab"  # losslab's code travels with the model: no install needed to serve it
        shutil.copytree(package, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        mlflow.pyfunc.save_model(str(out_dir), python_model=pyfunc_model.__file__,
                                 artifacts={pyfunc_model.BUNDLE_ARTIFACT: str(bundle_dir)}, code_paths=[str(code)],
                                 signature=signature, pip_requirements=pip_requirements())
    return out_dir


def register_run(uri: str, run: Any, model_name: str, alias: str, artifact_path: str, metric: str,
                 sweep_id: str = "") -> Champion:
    """Log ``run``'s bundle as a pyfunc under ``artifact_path`` (once), register it, set ``alias`` to it."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from losslab.serving.bundle import download_bundle

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri, registry_uri=uri)
    run_id, value = run.info.run_id, float(run.data.metrics.get(metric, math.nan))

    def make(version: Any, new: bool) -> Champion:
        return Champion(model_name, str(version), alias, run_id, run.info.run_name or "", metric, value, sweep_id, new)

    try:
        current = client.get_model_version_by_alias(model_name, alias)
        if current.run_id == run_id:
            return make(current.version, False)
    except MlflowException:
        pass  # no such model or alias yet
    with tempfile.TemporaryDirectory(prefix="losslab-pyfunc-") as tmp:
        bundle = download_bundle(run_id, uri)
        model_dir = save_pyfunc(bundle, Path(tmp) / "model")
        client.log_artifacts(run_id, str(model_dir), artifact_path)
    tags = {"sweep_id": sweep_id, "selected_by": metric, "metric_value": f"{value:.6f}",
            "loss": run.data.tags.get("loss", ""), "seed": run.data.tags.get("seed", ""),
            **({"ensemble": run.data.tags[ENSEMBLE_TAG]} if run.data.tags.get(ENSEMBLE_TAG) else {})}
    version = mlflow.register_model(f"runs:/{run_id}/{artifact_path}", model_name, tags=tags)
    client.set_registered_model_alias(model_name, alias, version.version)
    client.set_tag(run_id, "registered_model", f"{model_name}/{version.version}@{alias}")
    return make(version.version, True)


def register_sweep(uri: str | None = None, sweep_id: str | None = None, experiment: str | None = None,
                   model_name: str | None = None) -> Champion:
    """Register the best run of a sweep as ``models:/<name>@champion`` (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    cfg = settings()
    uri = uri or default_tracking_uri()
    client = MlflowClient(uri)
    parent = sweep_parent(client, sweep_id, experiment)
    best = best_child(uri, parent, str(cfg.metric))
    experiment_name = client.get_experiment(parent.info.experiment_id).name
    name = model_name or str(cfg.model_name).format(experiment=experiment_name)
    return register_run(uri, best, name, str(cfg.alias), str(cfg.artifact_path), str(cfg.metric),
                        parent.data.tags.get("sweep_id", ""))


def register_one(uri: str, run_id: str, model_name: str | None = None) -> Champion:
    """Register run ``run_id`` (any run with a ``model/`` bundle: one network or an ensemble) as ``<name>@champion``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    cfg, client = settings(), MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--run {run_id}: no such run in {uri}; check the id (MLflow UI) and MLFLOW_TRACKING_URI.") \
            from None
    name = model_name or str(cfg.model_name).format(experiment=client.get_experiment(run.info.experiment_id).name)
    return register_run(uri, run, name, str(cfg.alias), str(cfg.artifact_path), str(cfg.metric),
                        run.data.tags.get("sweep_id", ""))


def describe(champion: Champion) -> str:
    state = "registered as" if champion.new else "already is"
    sweep = f" of sweep {champion.sweep_id}" if champion.sweep_id else ""
    return (f"champion: run {champion.run_id} ({champion.run_name}, {champion.metric} {champion.value:.4f}){sweep} "
            f"{state} {champion.model_name} version {champion.version} → {champion.model_uri}")


def serve_command(model_uri: str, host: str, port: int, workers: int = 1, timeout: int = 60) -> list[str]:
    """``mlflow models serve`` for ``model_uri`` in this environment (no virtualenv/conda build)."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", host, "-p", str(port), "-w", str(workers), "-t", str(timeout)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.serving.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    reg = sub.add_parser("register", help="register the best run of a sweep as <model>@champion")
    reg.add_argument("--run", help="register this run (an ensemble run, say) instead of a sweep's best run")
    reg.add_argument("--sweep-id", help="default: the newest sweep")
    reg.add_argument("--experiment", help="default: any experiment")
    reg.add_argument("--model", help="registered model name (default: conf/registry.yaml model_name)")
    srv = sub.add_parser("serve", help="mlflow models serve models:/<model>@champion on 127.0.0.1")
    srv.add_argument("--model", help="registered model name (default: the one of the newest sweep's experiment)")
    srv.add_argument("--experiment", default=None, help="experiment whose default model name to use (default mex-a3t)")
    srv.add_argument("--host")
    srv.add_argument("--port", type=int)
    return parser.parse_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings()
    uri = default_tracking_uri()
    if args.action == "register":
        print(describe(register_one(uri, args.run, args.model) if args.run else
                       register_sweep(uri, args.sweep_id, args.experiment, args.model)))
        return 0
    from omegaconf import OmegaConf

    experiment = args.experiment or str(OmegaConf.load(config_dir() / "tracking" / "mlflow.yaml").experiment)
    name = args.model or str(cfg.model_name).format(experiment=experiment)
    model_uri = f"models:/{name}@{cfg.alias}"
    host, port = args.host or str(cfg.serve.host), args.port or int(cfg.serve.port)
    command = serve_command(model_uri, host, port, int(cfg.serve.workers), int(cfg.serve.timeout))
    print(f"serving {model_uri} from {uri} on http://{host}:{port}/invocations", file=sys.stderr)
    os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_REGISTRY_URI=uri)
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` by name: the venv's must be found
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.execv(sys.executable, command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
