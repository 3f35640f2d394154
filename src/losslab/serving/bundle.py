"""A trained model as files that load without executing code: JSON + ``.npz`` + a state dict.

Layout of a bundle directory (logged as the ``model/`` artifact of every run)::

    losslab_model.json   class names, normaliser, network shape, output activation
    featurizer.json      vectorizer params and vocabularies
    featurizer.npz       numeric arrays (idf weights; empty for one-hot)
    network.pt           network state dict, loaded with ``torch.load(weights_only=True)``

An ensemble bundle (format 2, ``"members": k`` in ``losslab_model.json``) averages the probabilities of
k networks: ``network_0.pt`` … ``network_{k-1}.pt``, with one shared featurizer at the top (k-fold bagging:
one vocabulary) or one per member in ``featurizer_<i>/`` (a seed ensemble: each seed fitted its own).
Format-1 bundles (one network) load as before.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
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
FORMAT_VERSION = 1           # one network
ENSEMBLE_FORMAT_VERSION = 2  # k networks whose probabilities are averaged
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
        """The bundle in ``directory``: a ``Predictor``, or an ``EnsemblePredictor`` for an ensemble bundle."""
        path = Path(directory)
        if not (path / META_FILE).is_file():
            raise LosslabError(f"{path}: not a losslab model bundle (no {META_FILE}).")
        info = json.loads((path / META_FILE).read_text())
        version = int(info.get("format_version", FORMAT_VERSION))
        if version > ENSEMBLE_FORMAT_VERSION:
            raise LosslabError(f"{path}: bundle format {version} is newer than this losslab reads "
                               f"(<= {ENSEMBLE_FORMAT_VERSION}); update losslab.")
        if int(info.get("members", 0)):
            return EnsemblePredictor.from_bundle(path, info)
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


@dataclass
class EnsemblePredictor(Predictor):
    """k (featurizer, network) members whose probabilities are averaged; ``featurizer``/``net`` are member 0's."""

    members: list[tuple[Featurizer, PReLUMLP]] = field(default_factory=list)

    @classmethod
    def from_bundle(cls, path: Path, info: dict[str, Any]) -> "EnsemblePredictor":
        k, shared = int(info["members"]), info.get("featurizers", "shared") == "shared"
        widths = info["in_features"] if isinstance(info["in_features"], list) else [info["in_features"]] * k
        shared_featurizer = Featurizer.load(path) if shared else None
        members = []
        for i in range(k):
            featurizer = shared_featurizer or Featurizer.load(path / f"featurizer_{i}")
            net = PReLUMLP(int(widths[i]), len(info["class_names"]), **info["model"])
            net.load_state_dict(torch.load(path / f"network_{i}.pt", map_location="cpu", weights_only=True))
            members.append((featurizer, net.eval()))
        return cls(info["class_names"], Normalizer(**info["normalizer"]), members[0][0], members[0][1],
                   info["activation"], info.get("operating_point"), members)

    def logits(self, x: Any, batch_size: int = 4096) -> torch.Tensor:
        raise LosslabError("an ensemble bundle has no single network's logits; use predict_proba (the members' "
                           "mean probability).")

    def predict_proba(self, texts: Sequence[str], batch_size: int = 4096) -> np.ndarray:
        """The mean of the members' probabilities (each member: its featurizer → its network)."""
        normalized = self.normalizer.many(list(texts))
        return mean_probabilities([_member_proba(f, n, self.activation, normalized, len(self.class_names), batch_size)
                                   for f, n in self.members])


@torch.no_grad()
def _member_proba(featurizer: Featurizer, net: PReLUMLP, activation: str, normalized: list[str], classes: int,
                  batch_size: int) -> np.ndarray:
    chunks = []
    for start in range(0, len(normalized), batch_size):
        x = featurizer.transform(normalized[start:start + batch_size])
        logits = net(*csr_to_batch(x)[:3])
        chunks.append(probabilities(logits, activation).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, classes), dtype=np.float32)


def mean_probabilities(members: Sequence[np.ndarray]) -> np.ndarray:
    """The ensemble's probabilities: the plain mean over members (float32, as a single model's)."""
    return np.mean(np.stack([np.asarray(p, dtype=np.float32) for p in members]), axis=0, dtype=np.float64
                   ).astype(np.float32)


def save_ensemble_bundle(directory: str | Path, *, featurizers: Sequence[Featurizer], nets: Sequence[PReLUMLP],
                         class_names: Sequence[str], normalizer: Normalizer, model_params: dict[str, Any],
                         activation: str, operating_point: dict[str, Any] | None = None,
                         extra: dict[str, Any] | None = None) -> Path:
    """An ensemble bundle of ``nets``: one featurizer (shared) or one per net; ``extra`` goes into the JSON."""
    if len(featurizers) not in (1, len(nets)) or not nets:
        raise ValueError(f"{len(nets)} networks need 1 shared featurizer or one each, got {len(featurizers)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    shared = len(featurizers) == 1
    for i, featurizer in enumerate(featurizers):
        target = out if shared else out / f"featurizer_{i}"
        target.mkdir(exist_ok=True)
        featurizer.save(target)
    for i, net in enumerate(nets):
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, out / f"network_{i}.pt")
    widths = [featurizers[0 if shared else i].vocabulary_size for i in range(len(nets))]
    _write_info(out, class_names, normalizer.to_dict(), widths, model_params, activation, operating_point,
                "shared" if shared else "per_member", extra)
    return out


def combine_bundles(member_dirs: Sequence[str | Path], directory: str | Path,
                    operating_point: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """One ensemble bundle from single-model bundles (files copied, one featurizer per member); the members
    must agree on classes, normaliser, network shape settings and activation."""
    infos = [json.loads((Path(d) / META_FILE).read_text()) for d in member_dirs]
    if not infos:
        raise LosslabError("an ensemble needs at least one member bundle.")
    for key in ("class_names", "normalizer", "model", "activation"):
        values = {json.dumps(i.get(key), sort_keys=True) for i in infos}
        if len(values) > 1:
            raise LosslabError(f"the member bundles differ in '{key}' ({sorted(values)}); an ensemble averages "
                               "models of one configuration.")
    if any(int(i.get("members", 0)) for i in infos):
        raise LosslabError("a member bundle is itself an ensemble; combine single-model bundles.")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(map(Path, member_dirs)):
        (out / f"featurizer_{i}").mkdir(exist_ok=True)
        for name in ("featurizer.json", "featurizer.npz"):
            shutil.copyfile(source / name, out / f"featurizer_{i}" / name)
        shutil.copyfile(source / "network.pt", out / f"network_{i}.pt")
    first = infos[0]
    _write_info(out, first["class_names"], first["normalizer"], [int(i["in_features"]) for i in infos], first["model"],
                first["activation"], operating_point, "per_member", extra)
    return out


def _write_info(out: Path, class_names: Sequence[str], normalizer: dict[str, Any], widths: list[int],
                model_params: dict[str, Any], activation: str, operating_point: dict[str, Any] | None,
                featurizers: str, extra: dict[str, Any] | None) -> None:
    info = {"format_version": ENSEMBLE_FORMAT_VERSION, "members": len(widths), "featurizers": featurizers,
            "class_names": list(class_names), "normalizer": normalizer, "in_features": widths,
            "model": dict(model_params), "activation": activation, "operating_point": operating_point,
            **(extra or {})}
    (out / META_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))


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
