"""Bag-of-words featurizers (binary one-hot, TF-IDF, word + char n-grams), fitted on train only.

Outputs stay sparse (scipy CSR, float32). A fitted featurizer serialises to plain JSON +
arrays (no pickle), so a logged model loads without running code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from losslab.errors import ConfigError

WEIGHTINGS = ("binary", "count", "tfidf")
DEFAULT_TOKEN_PATTERN = r"(?u)<<url>>|<\w+>|\b\w+\b"  # <user>, <laugh>, <hashtag>, <emoji_…> stay whole


def _make_vectorizer(weighting: str, part: dict[str, Any]):
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    opts = dict(part)
    opts["ngram_range"] = tuple(opts.get("ngram_range", (1, 1)))
    opts.setdefault("lowercase", False)  # the Normalizer already lowercases
    opts["dtype"] = np.float32
    if opts.get("analyzer", "word") != "word":
        opts.pop("token_pattern", None)
    if weighting == "tfidf":
        return TfidfVectorizer(sublinear_tf=opts.pop("sublinear_tf", True), **opts)
    opts.pop("sublinear_tf", None)
    return CountVectorizer(binary=weighting == "binary", **opts)


@dataclass
class Featurizer:
    """One or more vectorizers (``word``, ``char``) whose outputs are stacked side by side."""

    weighting: str
    parts: dict[str, dict[str, Any]]
    vectorizers: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> "Featurizer":
        """From a ``features`` config (``conf/features/*.yaml``) or a plain dict."""
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        weighting = str(cfg.get("weighting", "binary"))
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"features.weighting={weighting!r} is not one of {list(WEIGHTINGS)}.")
        parts = {name: dict(cfg[name]) for name in ("word", "char") if cfg.get(name)}
        if not parts:
            raise ConfigError("features: set at least one of features.word or features.char.")
        if "word" in parts:
            parts["word"].setdefault("token_pattern", DEFAULT_TOKEN_PATTERN)
        if "char" in parts:
            parts["char"].setdefault("analyzer", "char_wb")
        return cls(weighting, parts)

    @property
    def vocabulary_size(self) -> int:
        return sum(len(v.vocabulary_) for v in self._fitted().values())

    def fit(self, texts: Sequence[str]) -> "Featurizer":
        self.vectorizers = {}
        for name, part in self.parts.items():
            vec = _make_vectorizer(self.weighting, part)
            try:
                vec.fit(texts)
            except ValueError as exc:  # e.g. empty vocabulary after min_df
                raise ConfigError(f"features.{name}: {exc}; lower features.{name}.min_df or check the texts.") from None
            self.vectorizers[name] = vec
        return self

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        blocks = [vec.transform(texts) for vec in self._fitted().values()]
        matrix = blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")
        return sp.csr_matrix(matrix, dtype=np.float32)

    def _fitted(self) -> dict[str, Any]:
        if self.vectorizers is None:
            raise RuntimeError("Featurizer.fit() must run before transform().")
        return self.vectorizers

    # --- serialisation without pickle ---------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able description (params + vocabularies) and the numeric arrays (idf)."""
        meta: dict[str, Any] = {"weighting": self.weighting, "parts": {}}
        arrays: dict[str, np.ndarray] = {}
        for name, vec in self._fitted().items():
            vocab = {term: int(i) for term, i in vec.vocabulary_.items()}
            meta["parts"][name] = {"params": _jsonable(self.parts[name]), "vocabulary": vocab}
            if self.weighting == "tfidf":
                arrays[f"{name}.idf"] = vec.idf_.astype(np.float64)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Featurizer":
        weighting = meta["weighting"]
        parts = {name: dict(p["params"]) for name, p in meta["parts"].items()}
        featurizer = cls(weighting, parts, vectorizers={})
        for name, part in meta["parts"].items():
            vec = _make_vectorizer(weighting, parts[name])
            vec.vocabulary_ = dict(part["vocabulary"])
            if weighting == "tfidf":
                vec.idf_ = arrays[f"{name}.idf"]
            featurizer.vectorizers[name] = vec  # type: ignore[index]
        return featurizer


    def save(self, directory: str | Path) -> None:
        """``featurizer.json`` (params, vocabularies) + ``featurizer.npz`` (idf) in ``directory``."""
        out = Path(directory)
        meta, arrays = self.state()
        (out / "featurizer.json").write_text(json.dumps(meta, ensure_ascii=False))
        np.savez(out / "featurizer.npz", **arrays)

    @classmethod
    def load(cls, directory: str | Path) -> "Featurizer":
        """The featurizer ``save`` wrote (no pickle: JSON and a plain ``.npz``)."""
        src = Path(directory)
        with np.load(src / "featurizer.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return cls.from_state(json.loads((src / "featurizer.json").read_text()), arrays)


def _jsonable(part: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in part.items()}
