"""The DVC pipeline (dvc.yaml): stage logic on tiny data, then real `dvc repro` / `dvc exp run`
in a temporary copy of the repository with a tiny synthetic dataset and its own MLflow store."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import ROOT, synthetic_rows, write_table
from losslab.errors import ConfigError, DataError
from losslab.model.losses import LOSSES
from losslab.pipeline.params import changed_keys, compose

VENV_BIN = str(Path(sys.executable).parent)
ALL_STAGES = {"prepare", "featurize", "train@ce", "train@kl", "evaluate@ce", "evaluate@kl", "compare"}


# --- params.yaml: one source of truth in conf/ ------------------------------------------------

def composed(tmp_path: Path, *overrides: str) -> dict:
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # DVC's composition initialises Hydra itself
    out = tmp_path / "params.yaml"
    compose(ROOT, out, list(overrides))
    return yaml.safe_load(out.read_text())


def test_pipeline_params_hold_every_loss_and_honour_overrides(tmp_path):
    params = composed(tmp_path)
    assert set(params["losses"]) == set(LOSSES)
    kl = {"_target_": "losslab.model.losses.KLDivergence", "name": "kl", "smoothing": 0.0}  # conf/loss/kl.yaml
    assert params["losses"]["kl"] == kl
    assert params["loss"]["name"] == "ce" and "hydra" not in params

    changed = composed(tmp_path, "loss=kl", "model.hidden=512", "losses.kl.smoothing=0.1")
    assert changed["loss"] == kl and changed["model"]["hidden"] == 512
    assert changed["losses"]["kl"]["smoothing"] == 0.1 and changed["losses"]["ce"] == params["losses"]["ce"]
    assert changed_keys(params, changed) == ["loss._target_", "loss.name", "loss.smoothing", "losses.kl.smoothing",
                                             "model.hidden", "tracking.run_name"]


def test_committed_params_yaml_matches_conf(tmp_path):
    """dvc repro replays params.yaml: it must be what conf/ composes to (`make params` fixes it)."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    fresh = tmp_path / "params.yaml"
    compose(ROOT, fresh, [])
    assert fresh.read_text() == (ROOT / "params.yaml").read_text(), "params.yaml is stale: run `make params`"


def test_make_train_config_has_no_pipeline_keys(compose):
    cfg = compose("loss=mse", tiny=False)
    assert "losses" not in cfg and cfg.loss.name == "mse"


def test_stage_config_takes_its_loss_from_losses(tmp_path):
    from losslab.pipeline.train import stage_config

    params = OmegaConf.create(composed(tmp_path, "losses.kl.smoothing=0.2", "+tracking.tags.purpose=x"))
    cfg = stage_config(params, "kl", {"dvc_stage": "train@kl"})
    assert cfg.loss == params.losses.kl and cfg.loss.name == "kl" and cfg.loss.smoothing == 0.2 and "losses" not in cfg
    assert cfg.tracking.run_name == "kl-s0" and cfg.tracking.tags == {"purpose": "x", "dvc_stage": "train@kl"}
    with pytest.raises(ConfigError, match="no losses.hinge"):
        stage_config(params, "hinge", {})


# --- stage logic on tiny data -----------------------------------------------------------------

def tiny_params(tmp_path: Path, **data: object) -> object:
    mapping = {"calm": 0, "aggressive": 1}
    train = [(t, mapping[y]) for t, y in synthetic_rows(120, ["calm", "aggressive"], seed=1)]
    train += [train[0], train[1], ("   ", 0), (train[2][0], 1 - train[2][1])]  # 2 dups, 1 empty, 1 conflict
    test = [(t, mapping[y]) for t, y in synthetic_rows(40, ["calm", "aggressive"], seed=2)] + [train[5]]
    params = OmegaConf.create(composed(tmp_path / "..", "data=custom", "features.word.min_df=1",
                                       "data.class_names=[calm,aggressive]"))
    params.data.train_path = str(write_table(tmp_path / "train.csv", train, "csv"))
    params.data.test_path = str(write_table(tmp_path / "test.csv", test, "csv"))
    for key, value in data.items():
        params.data[key] = value
    return params


def test_prepare_and_featurize_give_the_core_feature_set(tmp_path):
    from losslab.data.featureset import build_feature_set
    from losslab.pipeline.featurize import featurize
    from losslab.pipeline.prepare import prepare

    params = tiny_params(tmp_path)
    report = prepare(params, tmp_path / "prepared", tmp_path / "data.json", tmp_path / "data.md")
    assert report["files"]["train"] == {"rows": 124, "empty_texts": 1, "duplicate_texts": 3, "conflicting_labels": 1}
    assert report["files"]["test"]["rows"] == 41 and report["train_test_overlap"] == 1
    assert report["splits"]["test"] == {"rows": 41, "calm": 20, "aggressive": 21}
    assert json.loads((tmp_path / "data.json").read_text()) == report
    assert "| train | 124 | 1 | 3 | 1 |" in (tmp_path / "data.md").read_text()

    ours = featurize(params, tmp_path / "prepared", tmp_path / "features")
    core = build_feature_set(params.data, params.features, int(params.seed), use_cache=False)
    assert ours.class_names == core.class_names == ["calm", "aggressive"] and ours.dataset_md5 == core.dataset_md5
    for split in ("train", "val", "test"):
        assert (ours.x[split] != core.x[split]).nnz == 0 and (ours.y[split] == core.y[split]).all()


def test_compare_ranks_by_validation_and_explains_kl_equals_ce(tmp_path):
    from argparse import Namespace

    from losslab.pipeline.compare import compare

    params = OmegaConf.create(composed(tmp_path))
    params.losses = {k: params.losses[k] for k in ("ce", "kl", "mse")}
    scores = {"ce": (0.70, 0.60), "kl": (0.70, 0.60), "mse": (0.75, 0.55)}  # (val, test) macro-F1
    for folder in ("m", "t", "c"):
        (tmp_path / folder).mkdir()
    for key, (val, test) in scores.items():
        (tmp_path / "m" / f"{key}.json").write_text(json.dumps({  # evaluate@<loss>
            "test/f1_macro": test, "test/f1_aggressive": test - 0.1, "test/f1_non_aggressive": test + 0.1,
            "test/accuracy": 0.7, "test/auroc": 0.8, "test/ece": 0.05, "test/nll": 0.6}))
        (tmp_path / "t" / f"{key}.json").write_text(json.dumps({"best_val/f1_macro": val, "best_epoch": 2}))  # train@
        (tmp_path / "c" / f"{key}.csv").write_text("epoch,val/f1_macro\n0,0.5\n1,0.6\n")
    args = Namespace(metrics_dir=tmp_path / "m", train_metrics_dir=tmp_path / "t", curves_dir=tmp_path / "c",
                     data=tmp_path / "none.json", summary=tmp_path / "summary.json",
                     report=tmp_path / "r" / "losses.md", plot=tmp_path / "r" / "curves.png")
    (tmp_path / "t" / "mse.json").unlink()
    with pytest.raises(DataError, match=r"t/mse.json: missing; stage train@mse has not run"):
        compare(params, args)
    (tmp_path / "t" / "mse.json").write_text(json.dumps({"best_val/f1_macro": 0.75, "best_epoch": 2}))
    summary = compare(params, args)
    assert summary["best"]["loss"] == "mse" and summary["losses"]["mse"]["rank"] == 1
    assert summary["reference"]["loss"] == "ce" and summary["losses"]["mse"]["delta_f1_macro"] == pytest.approx(-0.05)
    assert summary["kl_ce_max_abs_gap"] == 0
    report = args.report.read_text()
    assert "kl equals ce" in report and "(identical, as expected)" in report and "![" in report
    assert report.count("| `") == 3 and args.plot.stat().st_size > 0


def test_evaluate_refuses_a_missing_model_or_a_vanished_training_store(tmp_path):
    from argparse import Namespace

    from losslab.pipeline.evaluate import evaluate, log_to_training_run

    params = OmegaConf.create(composed(tmp_path))
    args = Namespace(loss="ce", model_dir=tmp_path / "models" / "ce", features=tmp_path / "features")
    with pytest.raises(DataError, match=r"models/ce/model: no model bundle; stage train@ce has not run"):
        evaluate(params, args)
    with pytest.raises(ConfigError, match=r"no losses.hinge"):
        evaluate(params, Namespace(**{**vars(args), "loss": "hinge"}))

    args.model_dir.mkdir(parents=True)
    assert log_to_training_run(args.model_dir, {"test/f1_macro": 0.5}, tmp_path, "evaluate@ce") is None  # no record
    gone = tmp_path / "gone" / "mlflow.db"
    (args.model_dir / "mlflow_run.json").write_text(json.dumps({"run_id": "abc", "tracking_uri": f"sqlite:///{gone}"}))
    with pytest.raises(ConfigError, match=r"mlflow_run.json: the training's MLflow store .* no longer exists. Retrain"):
        log_to_training_run(args.model_dir, {"test/f1_macro": 0.5}, tmp_path, "evaluate@ce")
    assert not gone.parent.exists()  # no empty store created in its place
    gone.parent.mkdir()
    MlflowClient(f"sqlite:///{gone}").create_experiment("x")
    with pytest.raises(ConfigError, match=r"cannot log to MLflow run abc in sqlite:///.*dvc repro --force train@ce"):
        log_to_training_run(args.model_dir, {"test/f1_macro": 0.5}, tmp_path, "evaluate@ce")


# --- dvc.yaml: each stage lists the code it imports and the params it reads ----------------------

def stage_code(module: str, params: dict) -> set[str]:
    """The files of ``module`` and of every losslab module it imports, directly or not (also inside functions,
    not under TYPE_CHECKING), plus those named by a ``_target_: losslab.…`` in the params it reads; package
    ``__init__.py`` files count when they hold code (``losslab/__init__.py`` sets OMP_WAIT_POLICY)."""
    import ast

    import grimp

    graph = grimp.build_graph("losslab", exclude_type_checking_imports=True)
    modules = {module} | graph.find_upstream_modules(module)
    targets = [v for v in _values(params) if isinstance(v, str) and v.startswith("losslab.")]
    for target in targets:  # a class or function: its module is the longest prefix that is one
        parts = target.split(".")
        modules |= {next(".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in graph.modules)}
    files = set()
    for name in list(modules):
        path = ROOT / "src" / Path(*name.split("."))
        files.add(path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
        for depth in range(1, name.count(".") + 1):
            package = ROOT / "src" / Path(*name.split(".")[:depth]) / "__init__.py"
            body = ast.parse(package.read_text()).body
            if any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body):
                files.add(package)
    return {str(f.relative_to(ROOT)) for f in files}


def _values(node: object) -> list:
    if isinstance(node, dict):
        return [v for value in node.values() for v in _values(value)]
    if isinstance(node, list):
        return [v for value in node for v in _values(value)]
    return [node]


def stage_params(stage: dict, item: str, params: dict) -> dict:
    """The part of ``params`` a stage declares (``losses.${item.loss}`` for loss ``item``)."""
    picked = {}
    for key in stage.get("params", []):
        value = params
        for part in key.replace("${item.loss}", item).split("."):
            value = value[part]
        picked[key] = value
    return picked


def test_every_stage_lists_exactly_the_code_it_imports(tmp_path):
    params = composed(tmp_path)  # what conf/ composes to (params.yaml may lag until `make params`)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {"prepare", "featurize", "train", "evaluate", "compare"} == set(stages)
    for name, stage in stages.items():
        module = re.search(r"python -m (losslab\.pipeline\.\w+)", stage["cmd"]).group(1)
        listed = {d for d in stage["deps"] if d.startswith("src/")}
        expected = stage_code(module, stage_params(stage, "ce", params))
        assert listed == expected, (f"dvc.yaml stage {name}: add {sorted(expected - listed)} to its deps, "
                                    f"remove {sorted(listed - expected)}")


def test_every_params_key_is_read_by_a_stage(tmp_path):
    """A key of params.yaml no stage lists would change nothing in `dvc repro`, however it is set."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = composed(tmp_path)  # what conf/ composes to (params.yaml may lag until `make params`)
    listed = {key.split(".")[0] for stage in stages.values() for key in stage.get("params", [])}
    # modes of `python -m losslab.train` only (resume=<id>, fused.losses=[...], ensemble.folds=k): a stage trains
    # one model with train(), which reads none of them
    ignored = {"resume", "fused", "ensemble"}
    unread = set(params) - listed - ignored
    for stage in stages.values():
        for key in stage.get("params", []):
            stage_params({"params": [key]}, "ce", params)  # every listed key exists (else dvc repro stops)
    assert not unread, f"params.yaml keys {sorted(unread)} are read by no stage: list them in dvc.yaml where read"
    evaluate = stages["evaluate"]["params"]
    assert evaluate == ["data.eval_batch_size", "losses.${item.loss}"]  # no training setting: no retraining


# --- the real pipeline: dvc repro / dvc exp run in a temporary copy -------------------------

def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "LOSSLAB_ROOT", "LOSSLAB_DEBUG") and not k.startswith("DVC_")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x")
    done = subprocess.run(list(args), cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert done.returncode == 0, f"{args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def dvc(repo: Path, *args: str) -> set[str]:
    """Run a dvc command; the stages it actually ran (not skipped, not restored from cache)."""
    done = run(repo, sys.executable, "-m", "dvc", *args)
    return set(re.findall(r"Running stage '([^']+)'", done.stdout + done.stderr))


def copy_repo(dest: Path) -> Path:
    """The checkout's files as a fresh clone has them, minus the committed pipeline results."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    skip = ("dvc.lock", "params.yaml", "metrics/", "reports/")
    for name in listed:
        src = ROOT / name
        if name.startswith(skip) or not src.is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
    return dest


def tiny_pipeline_conf(repo: Path, losses: tuple[str, ...] = ("ce", "kl")) -> None:
    """conf/pipeline.yaml with 2 losses, a tiny model and the synthetic data (what `dvc exp run` composes)."""
    conf = yaml.safe_load((repo / "conf" / "pipeline.yaml").read_text())
    keep = {f"loss@losses.{k}" for k in losses}
    conf["defaults"] = [d for d in conf["defaults"] if not (isinstance(d, dict) and next(iter(d)).startswith(
        "loss@losses.") and next(iter(d)) not in keep)]
    conf.update(data={"name": "tiny", "train_path": "data/tiny/train.csv", "test_path": "data/tiny/test.csv",
                      "dvc_file": None, "class_names": ["calm", "aggressive"], "batch_size": 32},
                features={"word": {"min_df": 1}}, model={"hidden": 16}, optimizer={"lr": 0.01},
                trainer={"max_epochs": 2, "accelerator": "cpu"}, tracking={"experiment": "pipeline-test"})
    (repo / "conf" / "pipeline.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))


def mlflow_runs(repo: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pipeline-test")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def read_params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


@pytest.mark.slow
def test_dvc_pipeline_end_to_end(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    mapping = {"calm": 0, "aggressive": 1}
    (repo / "data" / "tiny").mkdir(parents=True)
    for name, n, seed in (("train", 160, 1), ("test", 60, 2)):
        rows = [(t, mapping[y]) for t, y in synthetic_rows(n, ["calm", "aggressive"], seed=seed)]
        write_table(repo / "data" / "tiny" / f"{name}.csv", rows, "csv")
    tiny_pipeline_conf(repo)
    (repo / ".dvc" / "config.local").write_text("[core]\n    analytics = false\n    check_update = false\n")
    run(repo, "git", "init", "-q")
    composed_out = run(repo, sys.executable, "-m", "losslab.pipeline.params").stdout
    assert "params.yaml: updated" in composed_out and set(read_params(repo)["losses"]) == {"ce", "kl"}
    dvc(repo, "add", "-q", "data")  # the tiny data replaces MEX-A3T in data.dvc (temp experiments check it out)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny pipeline")

    # 1. a clean build runs every stage; every train stage is one MLflow run in the project's store
    assert dvc(repo, "repro") == ALL_STAGES
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    features_md5 = next(o["md5"] for o in lock["featurize"]["outs"] if o["path"] == "artifacts/features")
    runs = mlflow_runs(repo)
    assert sorted(r.data.tags["dvc_stage"] for r in runs) == ["train@ce", "train@kl"]
    for r in runs:
        assert r.info.status == "FINISHED" and r.info.run_name == f"{r.data.tags['loss']}-s0"
        assert r.data.tags["dvc_data_md5"] == features_md5 and r.data.tags["dataset"] == "tiny"
        assert "test/f1_macro" in r.data.metrics and not any(p.startswith("losses.") for p in r.data.params)
    trained = json.loads((repo / "metrics" / "train" / "ce.json").read_text())
    assert trained["epochs"] == 2 and 0 <= trained["best_epoch"] <= 1 and 0 < trained["best_val/f1_macro"] <= 1
    ce = json.loads((repo / "metrics" / "test" / "ce.json").read_text())
    assert ce["test/accuracy"] > 0.7 and {"test/f1_macro", "test/auroc", "test/ece", "test/nll", "test/loss",
                                          "test/f1_calm", "test/f1_aggressive"} == {
        k for k in ce if k.startswith("test/")} - {"test/accuracy"}
    # and under the decision rule train@ce chose on validation (in the bundle), as the training's test_tuned/*
    assert {"test_tuned/accuracy", "test_tuned/f1_macro", "test_tuned/f1_calm", "test_tuned/f1_aggressive"} == {
        k for k in ce if k.startswith("test_tuned/")}
    # evaluate@ce scores the bundle as the training's own test loop did, and logs to that training's run
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    ce_run = next(r for r in runs if r.data.tags["loss"] == "ce")
    assert json.loads((repo / "artifacts" / "models" / "ce" / "mlflow_run.json").read_text())["run_id"] == \
        ce_run.info.run_id and ce_run.data.tags["dvc_evaluate_stage"] == "evaluate@ce"
    for key, value in ce.items():
        history = [m.value for m in client.get_metric_history(ce_run.info.run_id, key)]
        assert len(history) == 2 and history == pytest.approx([value, value], abs=1e-5), key  # training, evaluate
    assert {"evaluation/confusion_matrix.png", "evaluation/test_predictions.csv"} <= {
        a.path for a in client.list_artifacts(ce_run.info.run_id, "evaluation")}
    assert (repo / "artifacts" / "evaluation" / "ce" / "classification_report.json").is_file()
    with (repo / "metrics" / "curves" / "ce.csv").open() as fh:
        curves = list(csv.DictReader(fh))
    assert [c["epoch"] for c in curves] == ["0", "1"] and {"train/loss", "val/loss", "val/f1_macro"} <= set(curves[0])
    with (repo / "artifacts" / "predictions" / "kl.csv").open() as fh:
        predictions = list(csv.DictReader(fh))
    assert len(predictions) == 60 and {p["actual"] for p in predictions} == {"calm", "aggressive"}
    assert (repo / "artifacts" / "models" / "ce" / "model" / "network.pt").is_file()
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary["losses"]) == {"ce", "kl"} and summary["reference"]["loss"] == "ce"
    assert "kl equals ce" in (repo / "reports" / "losses.md").read_text()
    assert "| train | 160 |" in (repo / "reports" / "data.md").read_text()

    # 2. nothing changed: nothing runs, no new MLflow run
    second = run(repo, sys.executable, "-m", "dvc", "repro")
    assert "Running stage" not in second.stdout and "up to date" in second.stdout
    assert len(mlflow_runs(repo)) == 2
    shown = json.loads(run(repo, sys.executable, "-m", "dvc", "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert {"metrics/test/ce.json", "metrics/test/kl.json", "metrics/train/ce.json", "metrics/summary.json",
            "metrics/data.json"} <= set(files)
    run(repo, sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "metrics/curves/ce.csv" in html and "artifacts/predictions/kl.csv" in html
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline results")

    # 3. which stages a change reaches (dvc status lists the stages whose own params changed)
    def changed_by(*overrides: str, edit: tuple[Path, str, str] | None = None) -> set[str]:
        if edit:
            edit[0].write_text(edit[0].read_text().replace(edit[1], edit[2]))
        run(repo, sys.executable, "-m", "losslab.pipeline.params", *overrides)
        status = json.loads(run(repo, sys.executable, "-m", "dvc", "status", "--json").stdout)
        run(repo, "git", "checkout", "-q", "--", "conf", "params.yaml")
        return set(status)

    mlp = (repo / "conf" / "model" / "mlp.yaml", "dropout: 0.5", "dropout: 0.3")
    assert changed_by(edit=mlp) == {"train@ce", "train@kl"}  # a conf/ edit, through `make params`
    assert changed_by("losses.kl.smoothing=0.1") == {"train@kl", "evaluate@kl", "compare"}  # compare shows settings
    assert changed_by("features.word.min_df=2") == {"featurize"}
    assert changed_by("loss=kl") == {"compare"}  # the reference loss of the comparison table
    assert changed_by("data.eval_batch_size=7") == {"train@ce", "train@kl", "evaluate@ce", "evaluate@kl"}

    # 3b. an evaluation-only change (code only evaluate@ imports) rescores the models, never retrains them
    evaluate_code = repo / "src" / "losslab" / "pipeline" / "evaluate.py"
    evaluate_code.write_text(evaluate_code.read_text() + "\n# an evaluation-only edit\n")
    models_before = {p: p.read_bytes() for p in (repo / "artifacts" / "models").rglob("*") if p.is_file()}
    assert dvc(repo, "repro") == {"evaluate@ce", "evaluate@kl"}  # same metrics: compare is skipped
    assert len(mlflow_runs(repo)) == 2
    assert {p: p.read_bytes() for p in models_before} == models_before
    assert len(client.get_metric_history(ce_run.info.run_id, "test/f1_macro")) == 3  # the run has the new scores
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "evaluation-only edit")

    # 4. dvc exp run -S composes conf/ + overrides into params.yaml; a model change reruns the
    #    train stages and what follows, never prepare/featurize
    assert dvc(repo, "exp", "run", "-S", "loss=kl", "-S", "model.hidden=8") == {"train@ce", "train@kl", "evaluate@ce",
                                                                                "evaluate@kl", "compare"}
    params = read_params(repo)
    assert params["loss"]["name"] == "kl" and params["loss"] == params["losses"]["kl"]
    assert params["model"]["hidden"] == 8
    assert params["tracking"]["run_name"] == "kl-s0" and params["losses"] == read_params(repo)["losses"]
    assert json.loads((repo / "metrics" / "summary.json").read_text())["reference"]["loss"] == "kl"
    assert len(mlflow_runs(repo)) == 4

    # 5. a --temp experiment runs in a copy under .dvc/tmp/exps; its run lands in the same store
    ran = dvc(repo, "exp", "run", "--temp", "-S", "model.hidden=8", "-S", "losses.kl.smoothing=0.3")
    assert {"train@kl", "evaluate@kl"} <= ran and "featurize" not in ran
    runs = mlflow_runs(repo)
    assert len(runs) == 4 + len(ran & {"train@ce", "train@kl"})
    smoothed = [r for r in runs if r.data.params.get("loss.smoothing") == "0.3"]
    assert len(smoothed) == 1 and smoothed[0].data.tags.get("dvc_exp_name")
    assert smoothed[0].data.tags.get("dvc_evaluate_stage") == "evaluate@kl"  # logged from the copy, same store
    assert all(r.info.status == "FINISHED" and r.data.tags["dvc_stage"].startswith("train@") for r in runs)
    assert not list((repo / ".dvc").rglob("mlflow.db"))
    assert read_params(repo)["losses"]["kl"]["smoothing"] == 0.0  # a temp run leaves the workspace alone
