"""After fit: the operating point (decision rule) chosen on the validation split with the best checkpoint,
and the test metrics under it (``test_tuned/*``, beside the argmax ``test/*``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from losslab.data.featureset import FeatureSet
    from losslab.training.build import Parts


def validation_probabilities(cfg: DictConfig, fs: "FeatureSet", parts: "Parts") -> np.ndarray:
    """The module's (best checkpoint's) probabilities on the whole validation split, in row order."""
    import torch

    from losslab.data.batches import SparseBatches

    module = parts.module
    module.eval()
    chunks = []
    with torch.no_grad():
        for batch in SparseBatches(fs.x["val"], fs.y["val"], int(cfg.data.eval_batch_size)):
            logits = module(*(t.to(module.device) for t in batch[:3]))
            chunks.append(module.loss.probabilities(logits).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, len(fs.class_names)), dtype=np.float32)


def tune(cfg: DictConfig, fs: "FeatureSet", parts: "Parts") -> tuple[dict[str, Any], dict[str, float]]:
    """The rule (``operating_point.metric``: f1_minority | f1_class | f1_macro) from validation only, and
    the metrics to log: ``val/threshold`` or ``val/offset_<class>``, ``val_tuned/<metric>``, ``test_tuned/*``.
    The rule is also kept on the module (``operating_point``) for the artifacts and the model bundle."""
    from losslab.model.operating_point import apply_rule, choose_rule, label_metrics, rule_metrics

    metric = str(OmegaConf.select(cfg, "operating_point.metric", default="f1_minority"))
    class_name = OmegaConf.select(cfg, "operating_point.class_name", default=None)
    names = list(fs.class_names)
    positive = None
    if class_name is not None:
        if str(class_name) not in names:
            from losslab.errors import ConfigError

            raise ConfigError(f"operating_point.class_name={class_name}: not one of the classes {names}.")
        positive = names.index(str(class_name))
    elif metric == "f1_class":
        metric = "f1_minority"  # no class named: the training split's minority class
    val_probs = validation_probabilities(cfg, fs, parts)
    parts.module.val_probs = val_probs  # kept for the run's evaluation/val_predictions.csv (record.log_artifacts)
    rule = choose_rule(val_probs, np.asarray(fs.y["val"]), metric=metric,
                       positive=positive, class_counts=fs.class_counts())
    if rule["kind"] == "threshold":
        rule["class_name"] = names[rule["positive"]]
    parts.module.operating_point = rule
    module = parts.module
    metrics = {f"val/{k}": v for k, v in rule_metrics(rule, names).items()}
    metrics[f"val_tuned/{rule['metric']}"] = float(rule["val_score"])
    if module.test_probs:
        probs = np.concatenate([p.numpy() for p in module.test_probs])
        targets = np.concatenate([t.numpy() for t in module.test_targets])
        metrics |= {f"test_tuned/{k}": v for k, v in label_metrics(targets, apply_rule(probs, rule), names).items()}
    return rule, metrics
