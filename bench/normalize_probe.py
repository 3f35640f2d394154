"""Issue 13 item 6: does each tweet-aware ``data.normalize`` option help? Measured on VALIDATION only.

    .venv/bin/python bench/normalize_probe.py                          # onehot + ngrams, seeds 0 1 2
    .venv/bin/python bench/normalize_probe.py --features onehot --seeds 0

For each feature set and seed, the default model (``loss=ce``, ``diagnostics=false``, CPU) trains
with every new option off (``baseline``), each option alone, and all four on (the corpus options
lowercase/users/urls/whitespace stay as configured). The best epoch is the one the run's checkpoint
would keep (first maximum of ``val/f1_macro``); the table shows that score and ``val/f1_aggressive``
of the same epoch, mean ± sd over seeds, and the paired mean difference to ``baseline`` ± its standard
error (``--report`` reprints the table from the JSON without training). The
training is driven directly (data → features → module → Lightning fit, no MLflow, no checkpoint
files), so the test split is never evaluated. A variant whose normalised train+val texts equal the
baseline's would train identically; it is not retrained and is marked ``same texts``.
Results go to ``bench/normalize_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import measure as bench  # bench/measure.py, beside this script

OPTIONS = ("repeats", "laughter", "emoji", "hashtags")
VARIANTS: dict[str, tuple[str, ...]] = {"baseline": (), **{o: (o,) for o in OPTIONS}, "all": OPTIONS}
OUT = Path(__file__).with_name("normalize_probe.json")


def config(features: str, seed: int, on: tuple[str, ...]) -> Any:
    opts = [f"data.normalize.{o}={str(o in on).lower()}" for o in OPTIONS]
    return bench.compose_config([f"features={features}", "loss=ce", f"seed={seed}", "diagnostics=false",
                    "trainer.accelerator=cpu", *opts])


def fit_validation(cfg: Any, work: Path) -> dict[str, Any]:
    """Train ``cfg``'s model; per-epoch validation metrics and those of the best epoch."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from losslab.data.featureset import build_feature_set
    from losslab.training.build import build_parts, resolve_sizes

    class Recorder(pl.Callback):
        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []

        def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if not trainer.sanity_checking:
                self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})

    started = time.perf_counter()
    fs = build_feature_set(cfg.data, cfg.features, int(cfg.seed), use_cache=False)
    resolve_sizes(cfg, len(fs.y["train"]))
    parts = build_parts(cfg, fs)
    recorder = Recorder()
    trainer = instantiate(cfg.trainer, callbacks=[recorder], logger=False, enable_checkpointing=False,
                          default_root_dir=str(work))
    trainer.fit(parts.module, parts.train, parts.val)
    scores = [e["val/f1_macro"] for e in recorder.epochs]
    best = scores.index(max(scores))  # ModelCheckpoint(mode=max) keeps the first maximum
    return {"best_epoch": best, "val_f1_macro": scores[best],
            "val_f1_aggressive": recorder.epochs[best]["val/f1_aggressive"],
            "vocabulary": fs.vocabulary_size, "seconds": round(time.perf_counter() - started, 1)}


def texts_of(cfg: Any) -> list[str]:
    """The normalised train+val texts of ``cfg`` (what the featurizer is fitted on and validated with)."""
    from losslab.data.dataset import load_dataset

    ds = load_dataset(cfg.data, int(cfg.seed))
    return [*ds.train.texts, *ds.val.texts]


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def summarise(runs: list[dict[str, Any]], features: str) -> list[dict[str, Any]]:
    base = {r["seed"]: r for r in runs if r["features"] == features and r["variant"] == "baseline"}
    rows = []
    for variant in VARIANTS:
        mine = [r for r in runs if r["features"] == features and r["variant"] == variant]
        if not mine:
            continue
        row: dict[str, Any] = {"features": features, "variant": variant, "seeds": [r["seed"] for r in mine],
                               "texts_changed": mine[0]["texts_changed"], "same_texts": mine[0]["same_texts"]}
        for metric in ("val_f1_macro", "val_f1_aggressive"):
            values = [r[metric] for r in mine]
            diffs = [r[metric] - base[r["seed"]][metric] for r in mine if r["seed"] in base]
            se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
            row[metric] = {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                           "delta_vs_baseline": statistics.mean(diffs) if diffs else float("nan"),
                           "delta_se": se}
        gain, se = row["val_f1_macro"]["delta_vs_baseline"], row["val_f1_macro"]["delta_se"]
        row["verdict"] = "helps" if gain > 2 * se else "hurts" if gain < -2 * se else "neutral"  # se = nan: neutral
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Mean ± sd over seeds; Δ = paired mean difference to baseline ± its standard error; the verdict on macro-F1
    (helps / hurts when |Δ| exceeds twice its standard error, else neutral)."""
    print(f"\n{'features':8} {'variant':9} {'texts chg':>9}  {'val macro-F1':17} {'Δ ± se':17}  "
          f"{'val F1(aggressive)':18} {'Δ ± se':17} verdict")
    for r in rows:
        m, a = r["val_f1_macro"], r["val_f1_aggressive"]
        note = "  (same texts: not retrained)" if r["same_texts"] else ""
        print(f"{r['features']:8} {r['variant']:9} {r['texts_changed']:>9}  {m['mean']:.4f} ± {m['sd']:.4f}  "
              f"{m['delta_vs_baseline']:+.4f} ± {m['delta_se']:.4f}  {a['mean']:.4f} ± {a['sd']:.4f}   "
              f"{a['delta_vs_baseline']:+.4f} ± {a['delta_se']:.4f}  {r['verdict']}{note}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", nargs="+", default=["onehot", "ngrams"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--output", type=Path, default=OUT)
    parser.add_argument("--report", action="store_true", help="re-summarise the runs already in --output, no training")
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(args.output.read_text())
        features_done = list(dict.fromkeys(r["features"] for r in saved["runs"]))
        saved["summary"] = [row for f in features_done for row in summarise(saved["runs"], f)]
        print_table(saved["summary"])
        args.output.write_text(json.dumps(saved, indent=2, ensure_ascii=False) + "\n")
        return
    variants = ["baseline", *[v for v in args.variants if v != "baseline"]]

    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="normalize-probe-") as tmp:
        for features in args.features:
            for seed in args.seeds:
                base_texts: list[str] = []
                base_result: dict[str, Any] = {}
                for variant in variants:
                    cfg = config(features, seed, VARIANTS[variant])
                    texts = texts_of(cfg)
                    if variant == "baseline":
                        base_texts = texts
                    changed = sum(a != b for a, b in zip(texts, base_texts)) + abs(len(texts) - len(base_texts))
                    same = variant != "baseline" and texts == base_texts
                    with bench.quiet():
                        work = Path(tmp) / f"{features}-{variant}-{seed}"
                        result = dict(base_result) if same else fit_validation(cfg, work)
                    if variant == "baseline":
                        base_result = result
                    runs.append({"features": features, "seed": seed, "variant": variant, "texts_changed": changed,
                                 "same_texts": same, **result})
                    print(f"{features:7} s{seed} {variant:9} changed {changed:5}"
                          f"  val macro-F1 {result['val_f1_macro']:.4f}"
                          f"  F1(aggr) {result['val_f1_aggressive']:.4f}  epoch {result['best_epoch']}"
                          f"  {'(same texts)' if same else str(result['seconds']) + ' s'}", flush=True)
    rows = [row for features in args.features for row in summarise(runs, features)]
    print_table(rows)
    wall = time.perf_counter() - started
    print(f"\n{len([r for r in runs if not r['same_texts']])} trainings, {wall:.0f} s. Written: {args.output}")
    args.output.write_text(json.dumps({"command": "python bench/normalize_probe.py " + " ".join(argv or sys.argv[1:]),
                                       "split": "validation", "loss": "ce", "seeds": args.seeds,
                                       "wall_seconds": round(wall, 1), "summary": rows, "runs": runs}, indent=2,
                                      ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
