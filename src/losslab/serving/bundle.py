"""A trained model as files that load without executing code: JSON + ``.npz`` + a state dict.

Layout of a bundle directory (logged as the ``model/`` artifact of every run)::

    losslab_model.json   class names, normaliser, network shape, output activation
    featurizer.json      vectorizer params and vocabularies
    featurizer.npz       numeric arrays (idf weights; empty for one-hot)
    network.pt           network state dict, loaded with ``torch.load(weights_only=True)``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from losslab.data.batches import csr_to_batch
from losslab.errors import LosslabError
from losslab.data.features import Featurizer
from losslab.model.losses import probabilities
from losslab.model.network import PReLUMLP
from losslab.data.text import Normalizer

META_FILE = "losslab_model.json"
FORMAT_VERSION = 1


def save_bundle(directory: str | Path, *, featurizer: Featurizer, net: PReLUMLP, class_names: Sequence[str],
                normalizer: Normalizer, model_params: dict[str, Any], activation: str) -> Path:
    """Write the four bundle files into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    featurizer.save(out)
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / "network.pt")
    info = {"format_version": FORMAT_VERSION, "class_names": list(class_names), "normalizer": normalizer.to_dict(),
            "in_features": featurizer.vocabulary_size, "model": dict(model_params), "activation": activation}
    (out / META_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    return out


@dataclass
class Predictor:
    """Normalise → featurize → network → probabilities, exactly as in training."""

    class_names: list[str]
    normalizer: Normalizer
    featurizer: Featurizer
    net: PReLUMLP
    activation: str

    @classmethod
    def load(cls, directory: str | Path) -> "Predictor":
        path = Path(directory)
        if not (path / META_FILE).is_file():
            raise LosslabError(f"{path}: not a losslab model bundle (no {META_FILE}).")
        info = json.loads((path / META_FILE).read_text())
        featurizer = Featurizer.load(path)
        net = PReLUMLP(info["in_features"], len(info["class_names"]), **info["model"])
        net.load_state_dict(torch.load(path / "network.pt", map_location="cpu", weights_only=True))
        net.eval()
        return cls(info["class_names"], Normalizer(**info["normalizer"]), featurizer, net, info["activation"])

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str], batch_size: int = 4096) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), batch_size):
            x = self.featurizer.transform(self.normalizer.many(texts[start:start + batch_size]))
            indices, offsets, weights, _ = csr_to_batch(x)
            chunks.append(probabilities(self.net(indices, offsets, weights), self.activation).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.class_names)), dtype=np.float32)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.class_names[i] for i in self.predict_proba(texts).argmax(axis=1)]


def download_bundle(run_id: str, tracking_uri: str) -> Path:
    """Fetch the ``model/`` artifact of an MLflow run into a local cache dir and return its path."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model"))
    except MlflowException as exc:
        raise LosslabError(f"run {run_id} in {tracking_uri}: cannot load its model artifact ({exc.message}). "
                           "Check the run id (MLflow UI) and MLFLOW_TRACKING_URI.") from None
