"""Issue 13 item 1: what makes word+char n-grams affordable — fit time and VALIDATION quality per lever.

    .venv/bin/python bench/ngrams_probe.py                 # default variants, seeds 0 1
    .venv/bin/python bench/ngrams_probe.py --seeds 0 1 2 --only onehot ngrams_es

Every variant trains the default model with ``loss=ce`` in this process (imports paid once), into a
throwaway sqlite store; the table shows fit seconds, epochs run, the best epoch, best validation
macro-F1 and validation AUROC of that epoch (mean over seeds). Nothing here looks at the test split
except the last column, printed for the record only. Results go to ``bench/ngrams_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import measure as bench  # bench/measure.py

ES = ["callbacks=early_stopping", "callbacks.early_stopping.patience=2", "+trainer.min_epochs=3"]
VARIANTS: dict[str, list[str]] = {
    "onehot": [],
    "onehot_es": ES,
    "ngrams": ["features=ngrams"],
    "ngrams_es": ["features=ngrams", *ES],
    "ngrams_es_b512": ["features=ngrams", *ES, "data.batch_size=512"],
    "ngrams_es_h128": ["features=ngrams", *ES, "model.hidden=128"],
    "ngrams_es_char20k": ["features=ngrams", *ES, "features.char.max_features=20000"],
    "ngrams_es_mindf5": ["features=ngrams", *ES, "features.char.min_df=5", "features.word.min_df=3"],
    "mex_a3t_best": ["experiment=mex_a3t_best"],   # what make tune wrote (n-grams, early stopping, its loss)
}


def run_variant(name: str, overrides: list[str], seed: int, work: Path) -> dict[str, Any]:
    import mlflow

    from losslab.training.train import train

    uri = f"sqlite:///{work / 'mlflow.db'}"
    cfg = bench.compose_config([*overrides, f"seed={seed}", f"tracking.uri={uri}", "tracking.experiment=probe",
                                "diagnostics=false", f"tracking.run_name={name}"])
    with bench.quiet():
        result = train(cfg, work / f"{name}-s{seed}")
    run = mlflow.MlflowClient(uri).get_run(result.run_id)
    best_epoch = int(run.data.tags.get("best_epoch", -1))
    auroc = [m for m in mlflow.MlflowClient(uri).get_metric_history(result.run_id, "val/auroc") if m.step == best_epoch]
    epochs = len(mlflow.MlflowClient(uri).get_metric_history(result.run_id, "val/f1_macro"))
    return {"fit_seconds": result.timings["fit"], "epochs": epochs, "best_epoch": best_epoch,
            "val_f1_macro": result.best_val_f1_macro, "val_auroc": auroc[0].value if auroc else float("nan"),
            "vocabulary": int(run.data.params.get("vocabulary_size", 0)),
            "test_tuned_f1_aggressive": result.test_metrics.get("test_tuned/f1_aggressive", float("nan"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", nargs="+", default=None, help="variants to run (default: all)")
    parser.add_argument("--output", default=str(Path(__file__).with_name("ngrams_probe.json")))
    args = parser.parse_args(argv)
    names = args.only or list(VARIANTS)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            runs = [run_variant(name, VARIANTS[name], seed, Path(tmp)) for seed in args.seeds]
            rows[name] = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]} | {"overrides": VARIANTS[name]}
            r = rows[name]
            print(f"{name:20s} fit {r['fit_seconds']:6.2f} s  epochs {r['epochs']:4.1f}  best {r['best_epoch']:3.1f}  "
                  f"val F1 {r['val_f1_macro']:.4f}  val AUROC {r['val_auroc']:.4f}  V {r['vocabulary']:7.0f}  "
                  f"(test_tuned F1 aggr {r['test_tuned_f1_aggressive']:.4f})", flush=True)
    base = rows.get("onehot", {}).get("fit_seconds")
    if base:
        for name, r in rows.items():
            r["fit_vs_onehot"] = r["fit_seconds"] / base
        print("fit / onehot fit: " + ", ".join(f"{n} {r['fit_vs_onehot']:.2f}x" for n, r in rows.items()))
    Path(args.output).write_text(json.dumps({"seeds": args.seeds, "machine": bench.machine_info(), "variants": rows},
                                            indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
