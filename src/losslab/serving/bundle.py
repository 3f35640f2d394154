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
from losslab.model.operating_point import apply_rule
from losslab.data.text import Normalizer

META_FILE = "losslab_model.json"
FORMAT_VERSION = 1
OPERATING_POINTS = ("tuned", "argmax")



def save_bundle(directory: str | Path, *, featurizer: Featurizer, net: PReLUMLP, class_names: Sequence[str],
                normalizer: Normalizer, model_params: dict[str, Any], activation: str,
                operating_point: dict[str, Any] | None = None) -> Path:
    """Write the four bundle files into ``directory`` (``operating_point``: the rule chosen on validation)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    featurizer.save(out)
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / "network.pt")
    info = {"format_version": FORMAT_VERSION, "class_names": list(class_names), "normalizer": normalizer.to_dict(),
            "in_features": featurizer.vocabulary_size, "model": dict(model_params), "activation": activation,
            "operating_point": operating_point}
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
    operating_point: dict[str, Any] | None = None  # the decision rule chosen on validation; None = argmax

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
        return cls(info["class_names"], Normalizer(**info["normalizer"]), featurizer, net, info["activation"],
                   info.get("operating_point"))

    @torch.no_grad()
    def logits(self, x: Any, batch_size: int = 4096) -> torch.Tensor:
        """The network's outputs for already featurized rows (a CSR matrix from ``self.featurizer``)."""
        chunks = [self.net(*csr_to_batch(x[start:start + batch_size])[:3])
                  for start in range(0, x.shape[0], batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros((0, len(self.class_names)))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 4096) -> np.ndarray:
        """Normalise → featurize → network → probabilities, ``batch_size`` texts at a time."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            x = self.featurizer.transform(self.normalizer.many(texts[start:start + batch_size]))
            chunks.append(probabilities(self.logits(x, batch_size), self.activation).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.class_names)), dtype=np.float32)

    def labels(self, probs: np.ndarray, operating_point: str = "tuned") -> np.ndarray:
        """Class indices: the bundle's rule chosen on validation (``tuned``; argmax if it has none) or ``argmax``."""
        if operating_point not in OPERATING_POINTS:
            raise LosslabError(f"operating_point={operating_point!r}: one of {', '.join(OPERATING_POINTS)}.")
        return apply_rule(probs, self.operating_point if operating_point == "tuned" else None)

    def predict_table(self, texts: Sequence[str], operating_point: str = "tuned") -> Any:
        """A pandas DataFrame, one row per text: ``class`` (under the tuned rule unless ``operating_point="argmax"``)
        and ``p_<class name>`` (float) for every class — what the CLI and the served pyfunc return."""
        import pandas as pd

        probs = self.predict_proba(texts)
        predicted = self.labels(probs, operating_point)
        frame = pd.DataFrame({"class": pd.Series([self.class_names[i] for i in predicted], dtype=object)})
        for j, name in enumerate(self.class_names):
            frame[f"p_{name}"] = probs[:, j].astype(float)
        return frame

    def predict(self, texts: Sequence[str], operating_point: str = "tuned") -> list[str]:
        """The class name per text (the tuned rule unless ``operating_point="argmax"``)."""
        return list(self.predict_table(texts, operating_point)["class"])


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
