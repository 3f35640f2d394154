"""Load a labelled text table (CSV, TSV, JSONL), validate it, encode labels, split by seed; optional label noise
on the training split only (``data.label_noise``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from losslab.errors import DataError
from losslab.paths import project_root, resolve_path
from losslab.data.text import Normalizer

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


@dataclass
class Table:
    """Texts and raw labels read from one file."""

    path: Path
    texts: list[str]
    labels: list[Any]


@dataclass
class Split:
    """One split: normalised texts and integer class ids."""

    texts: list[str]
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Dataset:
    """Train / validation / test splits with the class names (index = class id)."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    md5: str
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        """Training-split frequency of each class."""
        return np.bincount(self.train.y, minlength=self.num_classes)


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(
            f"{path}: cannot tell the format from the extension '{path.suffix}'. "
            f"Use one of {sorted(FORMATS)} or set data.format=csv|tsv|jsonl."
        ) from None


def _first_bad_line(path: Path) -> int:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def read_frame(path: str | Path, fmt: str | None = None, role: str = "data.train_path") -> tuple[Path, Any]:
    """Read a CSV/TSV/JSONL file into a DataFrame (all CSV fields as strings).

    Every problem is a ``DataError`` that names the file and the fix.
    """
    import pandas as pd

    path = resolve_path(path)
    if not path.is_file():
        hint = " Run `make data` (dvc pull) first." if "data" in path.parts else ""
        raise DataError(f"{path}: file not found ({role}).{hint}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; it needs a header and at least one row.")
    kind = detect_format(path, fmt)
    try:
        if kind == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
        else:
            frame = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False,
                                encoding="utf-8")
    except UnicodeDecodeError:
        line = _first_bad_line(path)
        raise DataError(f"{path}: line {line} is not valid UTF-8; re-save the file as UTF-8.") from None
    except ValueError as exc:
        raise DataError(f"{path}: cannot parse as {kind}: {exc}. Check data.format and the file.") from None
    return path, frame


def require_columns(path: Path, frame: Any, columns: dict[str, str]) -> None:
    """``columns`` maps the setting's name (e.g. ``data.text_column``) to the column it names."""
    for role, column in columns.items():
        if column not in frame.columns:
            raise DataError(
                f"{path}: no column '{column}' ({role}). Columns found: {list(map(str, frame.columns))}. "
                f"Set {role}=<one of them>."
            )


def read_table(path: str | Path, text_column: str, label_column: str, fmt: str | None = None,
               role: str = "data.train_path") -> Table:
    """Texts and labels of one file; rows without a label are an error."""
    path, frame = read_frame(path, fmt, role)
    require_columns(path, frame, {"data.text_column": text_column, "data.label_column": label_column})
    labels = frame[label_column].tolist()
    missing = [i for i, v in enumerate(labels) if _is_blank(v)]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} row(s) have no '{label_column}' label (first at data row {missing[0] + 1}); "
            "fill them in or remove those rows."
        )
    texts = ["" if _is_blank(t) else str(t) for t in frame[text_column]]
    return Table(path=path, texts=texts, labels=[_canonical_label(v) for v in labels])


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def _canonical_label(value: Any) -> Any:
    """Labels that look like integers become ints (so 0/1 and "0"/"1" agree); others stay strings."""
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        try:
            as_float = float(text)
            return int(as_float) if as_float.is_integer() else text
        except ValueError:
            return text


def sorted_labels(labels: Sequence[Any]) -> list[Any]:
    """Distinct labels in a stable order: numeric order for ints, lexical for strings."""
    distinct = set(labels)
    return sorted(distinct, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))


def file_md5(*paths: Path) -> str:
    digest = hashlib.md5()
    for path in paths:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def dvc_md5(dvc_file: str | Path) -> str | None:
    """The md5 recorded for the first output of a ``.dvc`` file (e.g. ``data.dvc``), if present."""
    import yaml

    path = Path(dvc_file)
    path = path if path.is_absolute() else project_root() / path
    if not path.is_file():
        return None
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")


def _drop_empty(table: Table, normalize: Normalizer, stats: dict[str, int], role: str) -> tuple[list[str], list[Any]]:
    texts = normalize.many(table.texts)
    keep = [i for i, t in enumerate(texts) if t]
    stats[f"{role}_empty_dropped"] = len(texts) - len(keep)
    if not keep:
        raise DataError(f"{table.path}: every text is empty or whitespace after normalisation; check data.text_column.")
    return [texts[i] for i in keep], [table.labels[i] for i in keep]


def load_dataset(cfg: Any, seed: int) -> Dataset:
    """Build the splits from a ``data`` config (see ``conf/data/*.yaml``)."""
    from sklearn.model_selection import train_test_split

    normalize = Normalizer(**dict(cfg.normalize))
    stats: dict[str, int] = {}
    train_table = read_table(cfg.train_path, cfg.text_column, cfg.label_column, cfg.get("format"))
    texts, labels = _drop_empty(train_table, normalize, stats, "train")
    stats["train_duplicates"] = len(texts) - len(set(texts))

    order = sorted_labels(labels)
    if len(order) < 2:
        raise DataError(f"{train_table.path}: only one class ({order[0]!r}) in '{cfg.label_column}'; "
                        "a classifier needs at least two.")
    names = _class_names(order, cfg.get("class_names"), train_table.path)
    index = {label: i for i, label in enumerate(order)}
    y = np.array([index[v] for v in labels], dtype=np.int64)

    files = [train_table.path]
    if cfg.get("test_path"):
        test_table = read_table(cfg.test_path, cfg.text_column, cfg.label_column, cfg.get("format"), "data.test_path")
        files.append(test_table.path)
        test_texts, test_labels = _drop_empty(test_table, normalize, stats, "test")
        unseen = sorted({str(v) for v in test_labels if v not in index})
        if unseen:
            raise DataError(f"{test_table.path}: label(s) {unseen} in '{cfg.label_column}' never occur in training "
                            f"({[str(v) for v in order]}); fix the labels or the files.")
        test_y = np.array([index[v] for v in test_labels], dtype=np.int64)
    else:
        fraction = cfg.get("test_fraction")
        if not fraction:
            raise DataError("no test set: set data.test_path=<file> or data.test_fraction=<0..1>.")
        texts, test_texts, y, test_y = _stratified(train_test_split, texts, y, fraction, seed, "data.test_fraction")

    train_texts, val_texts, train_y, val_y = _stratified(train_test_split, texts, y, cfg.val_fraction, seed,
                                                         "data.val_fraction")
    train_y, stats["flipped_labels"] = add_label_noise(
        train_y, float(cfg.get("label_noise") or 0.0), str(cfg.get("label_noise_type") or "symmetric"), names, seed,
        cfg.get("label_noise_from"), cfg.get("label_noise_to"))
    md5 = (dvc_md5(cfg.dvc_file) if cfg.get("dvc_file") else None) or file_md5(*files)
    stats.update(train=len(train_texts), val=len(val_texts), test=len(test_texts))
    return Dataset(Split(train_texts, train_y), Split(val_texts, val_y), Split(list(test_texts), test_y), names, md5,
                   stats)


NOISE_TYPES = ("symmetric", "asymmetric")


def add_label_noise(y: np.ndarray, rate: float, kind: str, class_names: Sequence[str], seed: int,
                    source: str | None = None, target: str | None = None) -> tuple[np.ndarray, int]:
    """A copy of the training labels ``y`` with ``round(rate · n)`` of them flipped, and that count.

    ``symmetric``: n = every row; each chosen row gets another class, uniformly. ``asymmetric``:
    n = the rows of class ``source`` (a class name); each chosen row becomes ``target``. Rows are
    drawn without replacement from a generator seeded by ``seed`` alone (its own stream, so the
    splits do not move): the same seed flips the same rows. Only the training split is passed here.
    """
    if not 0.0 <= rate <= 1.0:
        raise DataError(f"data.label_noise={rate} must be a share of the training labels, in [0, 1].")
    if kind not in NOISE_TYPES:
        raise DataError(f"data.label_noise_type={kind}: use one of {', '.join(NOISE_TYPES)}.")
    noisy = np.array(y, copy=True)
    if rate == 0.0:
        return noisy, 0
    rng = np.random.default_rng([int(seed), 0x4E4F495345])  # "NOISE": independent of the split's stream
    names = list(class_names)
    if kind == "symmetric":
        rows = rng.choice(len(noisy), size=round(rate * len(noisy)), replace=False)
        shift = rng.integers(1, len(names), size=len(rows))  # another class, uniformly: (c + k) mod C, k in 1..C-1
        noisy[rows] = (noisy[rows] + shift) % len(names)
        return noisy, int(len(rows))
    missing = [f"data.label_noise_{role}={value}" for role, value in (("from", source), ("to", target))
               if value is None or str(value) not in names]
    if missing or str(source) == str(target):
        problem = ", ".join(missing) if missing else f"data.label_noise_from and _to are both {source}"
        raise DataError(f"asymmetric label noise: {problem}; the classes are {names}. Set data.label_noise_from "
                        "and data.label_noise_to to two different class names.")
    candidates = np.flatnonzero(noisy == names.index(str(source)))
    rows = rng.choice(candidates, size=round(rate * len(candidates)), replace=False)
    noisy[rows] = names.index(str(target))
    return noisy, int(len(rows))


def _stratified(split_fn: Any, texts: list[str], y: np.ndarray, fraction: float, seed: int, key: str):
    if not 0 < float(fraction) < 1:
        raise DataError(f"{key}={fraction} must be between 0 and 1 (exclusive).")
    try:
        return split_fn(texts, y, test_size=float(fraction), random_state=seed, stratify=y)
    except ValueError as exc:
        raise DataError(f"cannot make a stratified split with {key}={fraction}: {exc}. "
                        "Every class needs at least two examples; use a larger file or fraction.") from None


def _class_names(order: list[Any], configured: Sequence[str] | None, path: Path) -> list[str]:
    if not configured:
        return [str(v) for v in order]
    configured = list(configured)
    if len(configured) != len(order):
        raise DataError(f"{path}: data.class_names has {len(configured)} names but the labels have {len(order)} "
                        f"classes {[str(v) for v in order]}; list one name per label in that order, or set "
                        "data.class_names=null.")
    return configured
