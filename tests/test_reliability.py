"""Bad input, faults during training, interrupts + resume, parallel writers, safe loading."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
from mlflow.tracking import MlflowClient

from conftest import ROOT, data_overrides
from losslab.errors import ConfigError, DataError, TrainingInterrupted
from losslab.training.train import resume, train


class SignalAtEpoch(pl.Callback):
    """Test helper: the process sends itself SIGTERM at the end of one epoch (as `kill` would)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# --- bad input: one clear error, before any MLflow run exists ------------------------------------------------
BAD_FILES = {
    "empty file": ("", "the file is empty"),
    "missing label column": ("text,y\nhola,0\n",
                             r"no column 'label' \(data.label_column\). Columns found: \['text', 'y'\]"),
    "missing labels": ("text,label\nhola,0\nadios,\nque tal,1\n", "1 row\\(s\\) have no 'label' label"),
    "only empty texts": ("text,label\n  ,0\n,1\n", "every text is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_training_file_is_a_data_error_and_no_run(compose, tmp_path, case):
    content, message = BAD_FILES[case]
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        train(compose("data=custom", f"data.train_path={path}"), tmp_path / "out")
    assert str(path) in str(err.value)
    assert all_runs(store(tmp_path)) == []


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=0", "optimizer.lr=0 must be > 0"),
    ("model.hidden=0", "model.hidden=0 must be >= 1"),
    ("model.dropout=1.0", r"model.dropout=1.0 must be in \[0, 1\)"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be >= 1"),
    ("loss.name=hinge", "unknown loss 'hinge'.*bce, .*ce_weighted, .*kl, .*mse"),
])
def test_impossible_settings_are_config_errors_and_no_run(compose, tiny_binary, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose(*data_overrides(tiny_binary), override), tmp_path / "out")
    assert all_runs(store(tmp_path)) == []


def test_unreachable_or_unwritable_store_fails_fast(compose, tiny_binary, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for uri, message in [("http://127.0.0.1:9", "unreachable"),
                         (f"sqlite:///{blocker}/sub/mlflow.db", "cannot create")]:
        with pytest.raises(ConfigError, match=message):
            train(compose(*data_overrides(tiny_binary), f"tracking.uri='{uri}'"), tmp_path / "out")


def cli(*args: str, env_extra: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LOSSLAB_DEBUG"} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "losslab.training.train", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300, **kwargs)


@pytest.mark.slow
def test_cli_errors_exit_nonzero_without_traceback_unless_debug(tmp_path):
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("text,label\nhola,0\nniño,1\n".encode("latin-1"))
    args = ["data=custom", f"data.train_path={latin}", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {"MLFLOW_TRACKING_URI": store(tmp_path)}
    plain = cli(*args, env_extra=env)
    assert plain.returncode == 2 and "line 3 is not valid UTF-8" in plain.stderr and "Traceback" not in plain.stderr
    debug = cli(*args, env_extra=env | {"LOSSLAB_DEBUG": "1", "HYDRA_FULL_ERROR": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    unknown = cli("features=nope", env_extra=env)
    assert unknown.returncode != 0 and "Available options in 'features'" in unknown.stderr
    assert "onehot" in unknown.stderr and "tfidf" in unknown.stderr


# --- faults during training -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_nan_loss_fails_the_run_with_reason_and_epoch(compose, tiny_binary, tmp_path):
    cfg = compose(*data_overrides(tiny_binary), "optimizer=sgd", "optimizer.lr=1e30", "optimizer.momentum=0")
    with pytest.raises(Exception, match="train/loss is (nan|inf)"):
        train(cfg, tmp_path / "out")
    (run,) = all_runs(store(tmp_path))
    assert run.info.status == "FAILED"
    assert "NonFiniteLossError" in run.data.tags["error"] and run.data.tags["failure_epoch"] == "0"


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_kills_the_run_and_resume_matches_an_uninterrupted_run(compose, tiny_binary,
                                                                                         tmp_path):
    base = [*data_overrides(tiny_binary), "trainer.max_epochs=5", "model.dropout=0.3", "seed=7"]
    expected = train(compose(*base), tmp_path / "straight").test_metrics

    hook = "+callbacks.sigterm._target_=test_reliability.SignalAtEpoch"
    with pytest.raises(TrainingInterrupted) as err:
        train(compose(*base, hook), tmp_path / "interrupted")
    run_id = err.value.run_id
    client = MlflowClient(store(tmp_path))
    killed = client.get_run(run_id)
    # the signal lands after GracefulStop's check for epoch 1, so epoch 2 completes first
    assert killed.info.status == "KILLED" and killed.data.tags["completed_epochs"] == "3"
    assert (tmp_path / "interrupted" / "checkpoints" / "interrupted.ckpt").is_file()

    resumed = resume(run_id, compose(*base))
    assert resumed.run_id == run_id
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/f1_macro")] == [0, 1, 2, 3, 4]
    assert resumed.test_metrics == expected


def test_a_finished_training_leaves_the_signal_handlers_as_it_found_them(compose, tiny_binary, tmp_path):
    """No handler of a finished fit stays installed: one would keep its trainer and model alive (a sweep's
    process grew by every training) and hear a later SIGTERM."""
    import gc

    before = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")}
    gc.collect()
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, pl.Trainer)}  # other tests' (not this one's)
    cfg = compose(*data_overrides(tiny_binary), "trainer.max_epochs=1")
    for k in range(2):
        train(cfg, tmp_path / f"run{k}")
    assert {name: signal.getsignal(getattr(signal, name)) for name in before} == before
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, pl.Trainer) and id(o) not in earlier], \
        "a finished trainer is still referenced"


# --- parallel writers ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_four_parallel_trainings_land_finished_in_the_right_experiment(tiny_binary, tmp_path):
    uri = store(tmp_path)
    args = [*data_overrides(tiny_binary), "model.hidden=8", "trainer.max_epochs=2", "tracking.experiment=parallel"]

    def launch(seeds: range) -> None:
        procs = [subprocess.Popen([sys.executable, "-m", "losslab.training.train", *args, f"seed={s}",
                                   f"hydra.run.dir={tmp_path / f'run{s}'}"], cwd=ROOT, env=os.environ | {
                                       "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for s in seeds]
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-2000:]

    launch(range(4))      # a brand-new store, created by 4 processes at once
    launch(range(4, 8))   # the same store, now existing
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("parallel")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"ce-s{s}" for s in range(8)]
    assert all(r.info.status == "FINISHED" and "test/f1_macro" in r.data.metrics for r in runs)
    assert client.search_runs(["0"]) == []  # nothing misfiled in Default


# --- security -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_secrets_in_the_environment_are_not_logged_and_bundles_refuse_pickled_code(compose, tiny_binary, tmp_path,
                                                                                   monkeypatch):
    import torch

    from losslab.serving.bundle import Predictor, download_bundle

    secrets = {  # variable: (value, the secret inside it); set before training, as a shell or CI would
        "AWS_SECRET_ACCESS_KEY": ("s3cr3t-aws-value-123", "s3cr3t-aws-value-123"),
        "MLFLOW_TRACKING_PASSWORD": ("s3cr3t-mlflow-pw-456", "s3cr3t-mlflow-pw-456"),
        "DATABASE_URL": ("postgresql://losslab:s3cr3t-db-pw-789@db.internal:5432/mlflow", "s3cr3t-db-pw-789"),
    }
    for key, (value, _) in secrets.items():
        monkeypatch.setenv(key, value)
    result = train(compose(*data_overrides(tiny_binary)), tmp_path / "out")
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    config_yaml = Path(client.download_artifacts(result.run_id, "config.yaml", str(tmp_path / "logged"))).read_text()
    assert "model:" in config_yaml and "loss:" in config_yaml  # the resolved config really is in the artifact
    logged = {"params": " ".join([*run.data.params, *run.data.params.values()]),
              "tags": " ".join([*run.data.tags, *run.data.tags.values()]), "config.yaml": config_yaml}
    for key, (_, secret) in secrets.items():
        leaks = [where for where, text in logged.items() if secret in text]
        assert not leaks, f"the value of {key} was logged in the run's {leaks}"
    bundle = download_bundle(result.run_id, result.tracking_uri)
    assert "s3cr3t" not in "".join(p.read_text(errors="ignore") for p in Path(bundle).glob("*.json"))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"payload": Evil()}, Path(bundle) / "network.pt")
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        Predictor.load(bundle)
    assert not (tmp_path / "pwned").exists()


def test_ui_binds_loopback_by_default(tmp_path):
    from losslab.ops.ui import cli_command

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = cli_command([], uri)  # the real argparse CLI with no --host: what `python -m losslab.ops.ui` execs
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5000" and command[command.index("--backend-store-uri") + 1] == uri
    chosen = cli_command(["--host", "0.0.0.0", "--port", "5001"], uri)  # HOST= is the only way off loopback
    assert chosen[chosen.index("--host") + 1] == "0.0.0.0" and chosen[chosen.index("--port") + 1] == "5001"
