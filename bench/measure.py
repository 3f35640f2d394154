"""In-process benchmarks of the hot path (``make bench`` drives them through ``bench/run.py``).

Every measure reuses the real pieces — the composed ``conf/``, ``build_feature_set``, the
``SparseBatches`` / ``PReLUMLP`` / ``TextClassifier`` and the Trainer exactly as
``losslab.training.train`` builds them — and returns raw per-repeat seconds; callers take medians.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's banners, warnings and the per-epoch summary while a measure runs."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric",
                                                    "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def compose_config(overrides: Sequence[str] = ()) -> Any:
    """The real ``conf/config.yaml`` with ``overrides`` (no Hydra run: nothing is written)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from losslab.paths import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def machine_info(accelerator: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, load, library versions, GPU if used."""
    import mlflow
    import numpy
    import pytorch_lightning
    import sklearn
    import torch

    from losslab.tracking.runs import _cpu_name, git_state

    info: dict[str, Any] = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "loadavg_start": list(os.getloadavg()),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "lightning": pytorch_lightning.__version__, "mlflow": mlflow.__version__, "sklearn": sklearn.__version__,
        "numpy": numpy.__version__, "git_commit": git_state()[0], "accelerator": accelerator,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if accelerator == "gpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --- featurization and the reference --------------------------------------------------------
def featurize_seconds(texts: Sequence[str], features_cfg: Any, repeats: int) -> list[float]:
    """Fit + transform of ``texts`` with the configured featurizer (what training does to train)."""
    from losslab.data.features import Featurizer

    return timed(lambda: Featurizer.from_config(features_cfg).fit(texts).transform(texts), repeats)


def sklearn_reference(train: tuple[Sequence[str], Any], test: tuple[Sequence[str], Any], repeats: int,
                      max_iter: int = 1000) -> tuple[list[float], float]:
    """TF-IDF + LogisticRegression fit seconds per repeat, and its test macro-F1 (the user's bar)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline

    from losslab.data.features import DEFAULT_TOKEN_PATTERN

    def fit() -> Any:
        pipe = make_pipeline(TfidfVectorizer(token_pattern=DEFAULT_TOKEN_PATTERN, sublinear_tf=True, min_df=2),
                             LogisticRegression(max_iter=max_iter))
        return pipe.fit(list(train[0]), train[1])

    seconds = timed(fit, repeats)
    f1 = float(f1_score(test[1], fit().predict(list(test[0])), average="macro"))
    return seconds, f1


def predict_seconds(bundle_dir: str | Path, texts: Sequence[str], repeats: int) -> list[float]:
    """``Predictor.predict_proba`` over raw ``texts`` (normalise → featurize → network), model loaded once."""
    from losslab.serving.bundle import Predictor

    predictor = Predictor.load(bundle_dir)
    predictor.predict_proba(list(texts[:64]))  # warm-up
    return timed(lambda: predictor.predict_proba(list(texts)), repeats)


# --- training throughput: Lightning path vs a plain PyTorch loop ----------------------------
@dataclass
class EpochTimes:
    """Per-epoch seconds of one fit: the training part only, and whole epochs (val + logging too)."""

    train: list[float] = field(default_factory=list)
    whole: list[float] = field(default_factory=list)


def _epoch_timer() -> Any:
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        """Training part = epoch start → validation start; whole epoch = start → next start (or fit end)."""

        def __init__(self) -> None:
            self.times = EpochTimes()
            self._start: float | None = None
            self._train_done = False

        def _close_epoch(self, now: float) -> None:
            if self._start is not None:
                self.times.whole.append(now - self._start)

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            now = time.perf_counter()
            self._close_epoch(now)
            self._start = now
            self._train_done = False

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            if self._start is not None and not self._train_done:
                self._sync(pl_module)
                self.times.train.append(time.perf_counter() - self._start)
                self._train_done = True

        def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
            self._sync(pl_module)
            self._close_epoch(time.perf_counter())

        @staticmethod
        def _sync(pl_module: Any) -> None:
            import torch

            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)

    return EpochTimer()


def lightning_epochs(cfg: Any, fs: Any, output_dir: Path, uri: str) -> EpochTimes:
    """One ``trainer.fit`` of ``cfg.trainer.max_epochs`` epochs, built by ``losslab.training.build``,
    logging to a run of the (throwaway) store ``uri`` — as a real training does."""
    from losslab.tracking import runs as tracking
    from losslab.training.build import build_parts, make_trainer

    parts = build_parts(cfg, fs)
    with tracking.mlflow_run(uri, str(cfg.tracking.experiment), "bench-lightning", {"bench": "true"}) as run:
        trainer, _ = make_trainer(cfg, output_dir, run.info.run_id, uri)
        timer = _epoch_timer()
        trainer.callbacks.append(timer)
        trainer.fit(parts.module, parts.train, parts.val)
    return timer.times


def plain_epochs(cfg: Any, fs: Any, device: str = "cpu") -> EpochTimes:
    """The same network, batches, loss and optimizer config in a bare PyTorch loop (train only).

    The epoch's mean loss is accumulated on the device and read once per epoch, as Lightning does.
    """
    import torch

    from losslab.model.module import build_optimizer
    from losslab.training.build import build_parts

    parts = build_parts(cfg, fs)  # same seed → same init, same batch order
    net, loss_fn = parts.module.net.to(device), parts.module.loss.to(device)
    optimizer = build_optimizer(parts.module.hparams.optimizer, net.parameters())
    batches = parts.train
    times = EpochTimes()
    net.train()
    for epoch in range(int(cfg.trainer.max_epochs)):
        start = time.perf_counter()
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        total = torch.zeros((), device=device)
        for batch in batches:
            indices, offsets, weights, y = (t.to(device) for t in batch)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(indices, offsets, weights), y)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(y)
        float(total)  # the one host sync per epoch
        times.train.append(time.perf_counter() - start)
        times.whole.append(times.train[-1])
    return times


def throughput(cfg: Any, fs: Any, work_dir: Path, uri: str, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Interleaved Lightning and plain fits; per-epoch medians with each fit's first (warm-up) epoch dropped."""
    lightning, plain = EpochTimes(), EpochTimes()
    for r in range(repeats):
        with quiet():
            got = lightning_epochs(cfg, fs, work_dir / f"lightning-{r}", uri)
        lightning.train += got.train[1:]
        lightning.whole += got.whole[1:]
        got = plain_epochs(cfg, fs, device)
        plain.train += got.train[1:]
    n = len(fs.y["train"])
    lightning_sps, plain_sps = n / median(lightning.train), n / median(plain.train)
    return {"lightning_samples_per_s": lightning_sps, "plain_samples_per_s": plain_sps,
            "lightning_vs_plain_ratio": lightning_sps / plain_sps, "epoch_seconds": median(lightning.whole),
            "lightning_train_epoch_seconds": median(lightning.train), "plain_epoch_seconds": median(plain.train),
            "train_samples": n, "epochs_timed": len(lightning.train)}


# --- loss-health diagnostics: what the diag/* measurement adds to an epoch ---------------------------
def diagnostics_overhead(cfg: Any, fs: Any, work_dir: Path, uri: str, repeats: int) -> dict[str, Any]:
    """Interleaved fits with ``callbacks.diagnostics`` on and off: whole-epoch medians (first epoch dropped) and the
    seconds the ``LossDiagnostics`` callback itself measured per epoch."""
    from omegaconf import OmegaConf

    from losslab.tracking import runs as tracking
    from losslab.training.build import build_parts, make_trainer
    from losslab.training.diagnostics import LossDiagnostics

    whole: dict[bool, list[float]] = {True: [], False: []}
    own: list[float] = []
    for r in range(repeats):
        for enabled in (True, False):
            variant = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            variant.diagnostics = enabled
            variant.callbacks.diagnostics.enabled = enabled
            parts = build_parts(variant, fs)
            with quiet(), tracking.mlflow_run(uri, str(cfg.tracking.experiment), f"bench-diag-{enabled}",
                                              {"bench": "true"}) as run:
                trainer, _ = make_trainer(variant, work_dir / f"diag-{enabled}-{r}", run.info.run_id, uri)
                timer = _epoch_timer()
                trainer.callbacks.append(timer)
                trainer.fit(parts.module, parts.train, parts.val)
            whole[enabled] += timer.times.whole[1:]
            own += [s for c in trainer.callbacks if isinstance(c, LossDiagnostics) and c.enabled for s in c.seconds[1:]]
    with_diag, without = median(whole[True]), median(whole[False])
    per_epoch = median(own) if own else float("nan")
    return {"diagnostics_overhead_ratio": with_diag / without, "diagnostics_seconds_per_epoch": per_epoch,
            "diagnostics_share_of_epoch": per_epoch / without, "epoch_seconds_without_diagnostics": without}
