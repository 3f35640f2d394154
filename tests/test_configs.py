"""Every option of every config group composes, and everything with a ``_target_`` instantiates."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from conftest import CONF, ROOT, data_overrides
from losslab.errors import ConfigError
from losslab.model.losses import Loss, build_loss
from losslab.training.build import build_callbacks

# Every config group (experiment and sweep are @package _global_ recipes; sweep is not in config.yaml's defaults).
GROUPS = ["data", "features", "model", "loss", "optimizer", "scheduler", "trainer", "tracking", "logger",
          "callbacks", "experiment", "sweep"]
NEEDS_GPU = {("trainer", "gpu"), ("trainer", "ddp")}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def targets(node: object, path: str = "") -> list[tuple[str, DictConfig]]:
    """Every sub-config holding a ``_target_`` (depth first), with its dotted path."""
    found: list[tuple[str, DictConfig]] = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((path, node))
        else:
            for key in node:
                found += targets(node[key], f"{path}.{key}" if path else str(key))
    return found


@pytest.fixture(scope="module")
def open_run(tmp_path_factory) -> tuple[str, str]:
    """One real sqlite store with one run for every logger config to attach to: ``(uri, run_id)``."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client.create_run(client.create_experiment("configs")).info.run_id


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no option"


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(compose, tmp_path, open_run, group, option):
    prefix = "+" if group == "sweep" else ""  # sweep is not in config.yaml's defaults
    cfg = compose(f"{prefix}{group}={option}")
    built = 0
    for path, node in targets(cfg):
        if path.startswith(("hydra", "sweep")):
            continue
        top = path.split(".")[0]
        if top == "loss":
            assert isinstance(build_loss(node, class_counts=[30, 10]), Loss)
        elif top == "model":
            net = instantiate(node)(in_features=50, num_classes=3)
            assert sum(p.numel() for p in net.parameters()) > 0
        elif top in ("optimizer", "scheduler"):
            assert isinstance(instantiate(node), functools.partial), f"{path} must be _partial_"
        elif top == "trainer":
            if (group, option) in NEEDS_GPU:
                continue  # composes; building it needs the GPUs it names (tests/test_gpu.py, make gpu-check)
            trainer = instantiate(node, logger=False, enable_checkpointing=False)
            assert trainer.max_epochs == cfg.trainer.max_epochs
        elif top == "callbacks":
            continue  # built together below, as training builds them
        elif top == "logger":
            uri, run_id = open_run
            logger = instantiate(node, tracking_uri=uri, run_id=run_id)
            assert logger.run_id == run_id and logger.experiment_id is not None
        else:
            instantiate(node)
        built += 1
    callbacks = build_callbacks(cfg.callbacks, tmp_path)
    assert len(callbacks) == len(targets(cfg.callbacks)) >= 1
    assert built >= (4 if (group, option) in NEEDS_GPU else 5)  # model, loss, optimizer, (trainer,) logger


def test_the_checkpoint_callback_writes_into_the_run_output_dir(compose, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    (checkpoint,) = [c for c in build_callbacks(compose().callbacks, tmp_path / "out")
                     if isinstance(c, ModelCheckpoint) and c.monitor]  # the best-validation one (last.ckpt has none)
    assert checkpoint.dirpath == str(tmp_path / "out" / "checkpoints") and checkpoint.monitor == "val/f1_macro"


def test_sweep_callbacks_instantiate(compose):
    cfg = compose("+sweep=losses", tiny=False, return_hydra_config=True)
    from hydra.experimental.callback import Callback

    built = [instantiate(node) for node in cfg.hydra.callbacks.values()]
    assert all(isinstance(callback, Callback) for callback in built)
    assert "SweepParentRun" in {type(callback).__name__ for callback in built}


def test_a_loss_name_without_a_file_is_one_clear_error(compose):
    with pytest.raises(ConfigError,
                       match=r"^unknown loss 'hinge' \(loss.name\); valid losses: bce, bce_probs, ce, ce_smooth"):
        build_loss(OmegaConf.create({"name": "hinge", "_target_": "losslab.model.losses.CrossEntropy"}), [1, 1])


@pytest.mark.slow
def test_unknown_loss_on_the_command_line(tiny_binary, tmp_path):
    """``loss.name=hinge`` reaches losslab's check (one line, exit 2); ``loss=hinge`` is Hydra's own listing."""
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "losslab.train", *data_overrides(tiny_binary), *args,
                               f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.run.dir={tmp_path / 'run'}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    named = cli("loss.name=hinge")
    assert named.returncode == 2, named.stderr[-2000:]
    (line,) = [x for x in named.stderr.splitlines() if x.startswith("error:")]
    assert "unknown loss 'hinge'" in line
    assert "ce, ce_smooth, ce_weighted, focal, gce, kl, kl_probs, mae, mse, mse_lecture, sce" in line
    assert "Traceback" not in named.stderr
    grouped = cli("loss=hinge")
    assert grouped.returncode != 0 and "Could not find 'loss/hinge'" in grouped.stderr
    assert all(name in grouped.stderr for name in ("ce_weighted", "focal", "mse"))
