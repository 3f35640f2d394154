"""Loading CSV / TSV / JSONL with int or string labels, normalisation, splits and clear errors."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import synthetic_rows, write_table
from losslab.data.dataset import load_dataset, read_table
from losslab.errors import DataError
from losslab.data.text import Normalizer


def data_cfg(train: Path, test: Path | None = None, **extra) -> OmegaConf:
    base = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "mex_a3t.yaml")
    base.merge_with({"name": "t", "train_path": str(train), "test_path": str(test) if test else None,
                     "class_names": None, "dvc_file": None, **extra})
    return base


def test_normalizer_brings_raw_tweets_to_the_corpus_form():
    norm = Normalizer()
    raw = "RT @Pepe_MX:  Mira ESTO https://t.co/XyZ\n y www.ejemplo.com/a  "
    assert norm(raw) == "rt <user>: mira esto <<url>> y <<url>>"
    assert norm("ya normalizado <user> <<url>>") == "ya normalizado <user> <<url>>"
    assert Normalizer(lowercase=False, users=False)("Hola @a") == "Hola @a"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_three_string_classes_in_every_format(tmp_path, fmt):
    labels = ["aggressive", "calm", "sad"]
    train = write_table(tmp_path / f"train.{fmt}", synthetic_rows(90, labels), fmt, "tweet", "tag")
    test = write_table(tmp_path / f"test.{fmt}", synthetic_rows(30, labels, seed=5), fmt, "tweet", "tag")
    ds = load_dataset(data_cfg(train, test, text_column="tweet", label_column="tag"), seed=0)
    assert ds.class_names == labels
    assert ds.num_classes == 3
    assert len(ds.train) + len(ds.val) == 90 and len(ds.test) == 30
    assert set(np.unique(ds.val.y)) == {0, 1, 2}  # stratified
    assert all("@" not in t and t == t.lower() for t in ds.train.texts)


def test_int_labels_sort_numerically_and_take_configured_names(tmp_path):
    rows = [(t, {"calm": 2, "aggressive": 10}[y]) for t, y in synthetic_rows(40, ["calm", "aggressive"])]
    train = write_table(tmp_path / "train.csv", rows, "csv")
    ds = load_dataset(data_cfg(train, test_fraction=0.25, class_names=["low", "high"]), seed=0)
    assert ds.class_names == ["low", "high"]  # 2 < 10, not "10" < "2"
    assert len(ds.test) == 10


def test_split_is_fixed_by_seed(tmp_path):
    train = write_table(tmp_path / "train.csv", synthetic_rows(100, ["calm", "aggressive"]), "csv")
    cfg = data_cfg(train, test_fraction=0.2)
    a, b, c = load_dataset(cfg, 1), load_dataset(cfg, 1), load_dataset(cfg, 2)
    assert a.val.texts == b.val.texts and a.test.texts == b.test.texts
    assert a.val.texts != c.val.texts


def test_quotes_and_newlines_inside_csv_fields_parse(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,label\n"dijo ""hola"",\ny se fue",1\n"línea, con coma",0\n', encoding="utf-8")
    table = read_table(path, "text", "label")
    assert table.texts == ['dijo "hola",\ny se fue', "línea, con coma"]
    assert table.labels == [1, 0]


def test_missing_column_lists_the_columns_found(tmp_path):
    path = write_table(tmp_path / "d.csv", synthetic_rows(10, ["calm", "sad"]), "csv", "tweet", "y")
    with pytest.raises(DataError, match=r"no column 'text' \(data.text_column\).*\['tweet', 'y'\]"):
        read_table(path, "text", "y")


def test_unseen_test_label_is_named(tmp_path):
    train = write_table(tmp_path / "train.csv", synthetic_rows(40, ["calm", "sad"]), "csv")
    test = write_table(tmp_path / "test.csv", synthetic_rows(9, ["calm", "sad", "aggressive"]), "csv")
    with pytest.raises(DataError, match=r"\['aggressive'\].*never occur in training"):
        load_dataset(data_cfg(train, test), 0)


def test_one_class_and_non_utf8_and_missing_file(tmp_path):
    one = write_table(tmp_path / "one.csv", synthetic_rows(20, ["calm"]), "csv")
    with pytest.raises(DataError, match="only one class"):
        load_dataset(data_cfg(one, test_fraction=0.2), 0)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\nhola,0\nniño,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 3 is not valid UTF-8"):
        read_table(bad, "text", "label")
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "nope.csv", "text", "label")


def test_empty_texts_are_dropped_and_counted(tmp_path):
    rows = synthetic_rows(40, ["calm", "sad"]) + [("   ", "calm"), ("", "sad")]
    train = write_table(tmp_path / "train.csv", rows, "csv")
    ds = load_dataset(data_cfg(train, test_fraction=0.2), 0)
    assert ds.stats["train_empty_dropped"] == 2
    assert len(ds.train) + len(ds.val) + len(ds.test) == 40
