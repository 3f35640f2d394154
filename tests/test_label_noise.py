"""``data.label_noise``: an exact, seeded share of the TRAINING labels flipped; validation and test untouched."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import data_overrides, synthetic_rows, write_table
from losslab.data.dataset import add_label_noise, load_dataset
from losslab.errors import DataError

CONF = Path(__file__).resolve().parents[1] / "conf"


def data_cfg(train: Path, **extra) -> OmegaConf:
    base = OmegaConf.load(CONF / "data" / "mex_a3t.yaml")
    base.merge_with({"name": "t", "train_path": str(train), "test_path": None, "test_fraction": 0.2,
                     "class_names": None, "dvc_file": None, **extra})
    return base


@pytest.fixture
def three_classes(tmp_path: Path) -> Path:
    return write_table(tmp_path / "train.csv", synthetic_rows(300, ["aggressive", "calm", "sad"]), "csv")


def test_symmetric_noise_flips_the_exact_share_of_training_labels_only(three_classes):
    clean = load_dataset(data_cfg(three_classes), seed=3)
    noisy = load_dataset(data_cfg(three_classes, label_noise=0.2), seed=3)
    assert clean.stats["flipped_labels"] == 0
    assert noisy.train.texts == clean.train.texts  # same rows, same order: only labels change
    changed = noisy.train.y != clean.train.y
    assert changed.sum() == round(0.2 * len(clean.train)) == noisy.stats["flipped_labels"] == 43
    # every flipped row went to another class, and both other classes occur (uniform over the C-1 others)
    shifts = (noisy.train.y[changed] - clean.train.y[changed]) % 3
    assert set(shifts.tolist()) == {1, 2}
    for split in ("val", "test"):
        assert getattr(noisy, split).texts == getattr(clean, split).texts
        assert np.array_equal(getattr(noisy, split).y, getattr(clean, split).y), split


def test_noise_is_seeded(three_classes):
    cfg = data_cfg(three_classes, label_noise=0.3)
    a, b, c = load_dataset(cfg, 1), load_dataset(cfg, 1), load_dataset(cfg, 2)
    assert np.array_equal(a.train.y, b.train.y)
    clean_a = load_dataset(data_cfg(three_classes), 1)
    clean_c = load_dataset(data_cfg(three_classes), 2)
    flipped_a = {t for t, y, y0 in zip(a.train.texts, a.train.y, clean_a.train.y) if y != y0}
    flipped_c = {t for t, y, y0 in zip(c.train.texts, c.train.y, clean_c.train.y) if y != y0}
    assert flipped_a != flipped_c


def test_asymmetric_noise_flips_only_from_source_to_target(tmp_path):
    rows = [(t, {"calm": 0, "aggressive": 1}[y]) for t, y in synthetic_rows(200, ["calm", "aggressive"])]
    train = write_table(tmp_path / "train.csv", rows, "csv")
    names = ["non_aggressive", "aggressive"]  # MEX-A3T's names: the defaults flip aggressive -> non_aggressive
    clean = load_dataset(data_cfg(train, class_names=names), seed=0)
    noisy = load_dataset(data_cfg(train, class_names=names, label_noise=0.4, label_noise_type="asymmetric"), seed=0)
    aggressive = int((clean.train.y == 1).sum())
    changed = noisy.train.y != clean.train.y
    assert changed.sum() == round(0.4 * aggressive) == noisy.stats["flipped_labels"]
    assert set(clean.train.y[changed].tolist()) == {1} and set(noisy.train.y[changed].tolist()) == {0}
    assert np.array_equal(noisy.val.y, clean.val.y) and np.array_equal(noisy.test.y, clean.test.y)


def test_asymmetric_noise_names_the_classes_when_they_do_not_exist(three_classes):
    cfg = data_cfg(three_classes, label_noise=0.2, label_noise_type="asymmetric")  # defaults: aggressive -> non_agg.
    with pytest.raises(DataError, match=r"data.label_noise_to=non_aggressive; the classes are "
                                        r"\['aggressive', 'calm', 'sad'\]"):
        load_dataset(cfg, 0)
    ok = load_dataset(data_cfg(three_classes, label_noise=0.5, label_noise_type="asymmetric",
                               label_noise_from="sad", label_noise_to="calm"), 0)
    assert ok.stats["flipped_labels"] > 0


@pytest.mark.parametrize("extra, message", [({"label_noise": 1.5}, r"data.label_noise=1.5 must be"),
                                            ({"label_noise": 0.1, "label_noise_type": "pairs"},
                                             r"label_noise_type=pairs: use one of symmetric, asymmetric")])
def test_impossible_noise_settings_are_data_errors(three_classes, extra, message):
    with pytest.raises(DataError, match=message):
        load_dataset(data_cfg(three_classes, **extra), 0)


def test_add_label_noise_keeps_the_input_and_rounds():
    y = np.array([0, 1] * 5)
    noisy, flipped = add_label_noise(y, 0.25, "symmetric", ["a", "b"], seed=0)
    assert flipped == round(2.5) == int((noisy != y).sum()) and list(y) == [0, 1] * 5
    assert add_label_noise(y, 0.0, "asymmetric", ["a", "b"], 0, "x", "y")[1] == 0  # off: nothing is checked


@pytest.mark.slow
def test_a_noisy_run_logs_the_setting_and_the_flipped_count(compose, tiny_binary, tmp_path):
    from mlflow.tracking import MlflowClient

    from losslab.training.train import train

    cfg = compose(*data_overrides(tiny_binary), "data.label_noise=0.25", "trainer.max_epochs=1", "diagnostics=false")
    result = train(cfg, tmp_path / "out")
    params = MlflowClient(result.tracking_uri).get_run(result.run_id).data.params
    train_rows = int(params["dataset.train"])
    assert params["data.label_noise"] == "0.25" and params["data.label_noise_type"] == "symmetric"
    assert int(params["dataset.flipped_labels"]) == round(0.25 * train_rows) > 0
