"""The featurized splits of one (data, features, seed) config: built once, reused, saved.

``build_feature_set`` memoises in-process, so a sweep of many losses/seeds over the same
data and features featurizes once per split config. ``save`` / ``load`` write the same
object as files (sparse ``.npz`` + featurizer state) for pipeline stages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from losslab.data.dataset import Dataset, load_dataset
from losslab.data.features import Featurizer

SPLITS = ("train", "val", "test")
_CACHE: dict[str, "FeatureSet"] = {}
_CACHE_SIZE = 4


@dataclass
class FeatureSet:
    """Sparse inputs and class ids of each split, the fitted featurizer and dataset facts."""

    x: dict[str, sp.csr_matrix]
    y: dict[str, np.ndarray]
    class_names: list[str]
    featurizer: Featurizer
    dataset_md5: str
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def vocabulary_size(self) -> int:
        return int(self.x["train"].shape[1])

    def class_counts(self) -> list[int]:
        return np.bincount(self.y["train"], minlength=self.num_classes).tolist()

    @classmethod
    def from_dataset(cls, dataset: Dataset, features_cfg: Any) -> "FeatureSet":
        featurizer = Featurizer.from_config(features_cfg).fit(dataset.train.texts)
        splits = {"train": dataset.train, "val": dataset.val, "test": dataset.test}
        return cls({k: featurizer.transform(s.texts) for k, s in splits.items()}, {k: s.y for k, s in splits.items()},
                   dataset.class_names, featurizer, dataset.md5, dict(dataset.stats))

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            sp.save_npz(out / f"{split}.npz", self.x[split])
            np.save(out / f"{split}_y.npy", self.y[split])
        self.featurizer.save(out)
        info = {"class_names": self.class_names, "dataset_md5": self.dataset_md5, "stats": self.stats}
        (out / "info.json").write_text(json.dumps(info, indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "FeatureSet":
        src = Path(directory)
        info = json.loads((src / "info.json").read_text())
        featurizer = Featurizer.load(src)
        x = {s: sp.load_npz(src / f"{s}.npz").tocsr() for s in SPLITS}
        y = {s: np.load(src / f"{s}_y.npy", allow_pickle=False) for s in SPLITS}
        return cls(x, y, info["class_names"], featurizer, info["dataset_md5"], info.get("stats", {}))


def cache_key(data_cfg: Any, features_cfg: Any, seed: int) -> str:
    from omegaconf import OmegaConf

    def plain(c: Any) -> Any:
        return OmegaConf.to_container(c, resolve=True) if OmegaConf.is_config(c) else c

    return json.dumps([plain(data_cfg), plain(features_cfg), seed], sort_keys=True, default=str)


def build_feature_set(data_cfg: Any, features_cfg: Any, seed: int, use_cache: bool = True) -> FeatureSet:
    """Load, split and featurize; the same config in the same process reuses the result."""
    key = cache_key(data_cfg, features_cfg, seed)
    if use_cache and key in _CACHE:
        return _CACHE[key]
    result = FeatureSet.from_dataset(load_dataset(data_cfg, seed), features_cfg)
    if use_cache:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = result
    return result
