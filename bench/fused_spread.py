"""Issue 14 item 2, with dropout: fused members draw their dropout masks in another order than separate
trainings, so they are not equal to them — is their seed-to-seed spread the same?

    .venv/bin/python bench/fused_spread.py                          # ce, mse, bce × seeds 0-4, MEX-A3T
    .venv/bin/python bench/fused_spread.py --losses ce mse --seeds 0 1 2 trainer.max_epochs=3   # smaller

For every seed: one fused training of the losses (``fused.losses=[...]``) and one separate training per loss,
in this process (imports and features paid once), into a throwaway sqlite store, default model (dropout 0.5).
Per loss and metric: mean ± sd over seeds of both, the ratio of the two variances with its two-sided F-test
p-value (same spread: ratio near 1, p large) and the paired mean difference with its t-interval. Results go to
``bench/fused_spread.json``. CPU only here: it shows the statistics, not the speed (see README "Fused sweeps").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import measure as bench  # bench/measure.py

METRICS = ("test/f1_macro", "test/f1_aggressive", "best_val/f1_macro")


def trainings(losses: list[str], seeds: list[int], overrides: list[str], work: Path) -> dict[str, dict]:
    """``{"fused"|"separate": {loss: {metric: [value per seed]}}}``."""
    from losslab.data.featureset import build_feature_set
    from losslab.training.fused import train_fused
    from losslab.training.train import train

    uri = f"sqlite:///{work / 'mlflow.db'}"
    out: dict[str, dict] = {"fused": {}, "separate": {}}
    for seed in seeds:
        base = [*overrides, f"seed={seed}", f"tracking.uri={uri}", "tracking.experiment=fused-spread",
                "tracking.confusion_matrix_png=false"]
        cfg = bench.compose_config([*base, f"fused.losses=[{','.join(losses)}]"])
        fs = build_feature_set(cfg.data, cfg.features, seed)
        with bench.quiet(), contextlib.redirect_stdout(io.StringIO()):  # each training's own summary lines
            fused = train_fused(cfg, work / f"fused-s{seed}", features=fs).members
            separate = {loss: train(bench.compose_config([*base, f"loss={loss}"]), work / f"{loss}-s{seed}", fs)
                        for loss in losses}
        for kind, results in (("fused", fused), ("separate", separate)):
            for loss in losses:
                values = results[loss].test_metrics | {"best_val/f1_macro": results[loss].best_val_f1_macro}
                for metric in METRICS:
                    out[kind].setdefault(loss, {}).setdefault(metric, []).append(float(values[metric]))
        print(f"  seed {seed}: " + ", ".join(f"{loss} fused {fused[loss].test_metrics['test/f1_macro']:.4f} / "
                                            f"separate {separate[loss].test_metrics['test/f1_macro']:.4f}"
                                            for loss in losses), flush=True)
    return out


def compare(fused: list[float], separate: list[float]) -> dict[str, float]:
    from scipy import stats

    a, b = np.asarray(fused), np.asarray(separate)
    n = len(a)
    var_a, var_b = a.var(ddof=1), b.var(ddof=1)
    ratio = var_a / var_b if var_b > 0 else float("nan")
    tail = stats.f.cdf(ratio, n - 1, n - 1) if np.isfinite(ratio) else float("nan")
    diff = a - b
    half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    return {"fused_mean": float(a.mean()), "fused_sd": float(np.sqrt(var_a)), "separate_mean": float(b.mean()),
            "separate_sd": float(np.sqrt(var_b)), "variance_ratio": float(ratio),
            "f_test_p": float(2 * min(tail, 1 - tail)), "mean_diff": float(diff.mean()),
            "mean_diff_low": float(diff.mean() - half), "mean_diff_high": float(diff.mean() + half)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="+", default=["ce", "mse", "bce"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--output", default=str(Path(__file__).with_name("fused_spread.json")))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every training")
    args = parser.parse_args(argv)
    if len(args.seeds) < 3:
        sys.exit("--seeds: at least 3 seeds (a spread needs them)")
    with tempfile.TemporaryDirectory(prefix="losslab-fused-spread-") as tmp:
        got = trainings(args.losses, args.seeds, args.overrides, Path(tmp))
    rows: dict[str, Any] = {}
    print(f"\n{'loss':6s} {'metric':18s} {'fused mean ± sd':>17s} {'separate mean ± sd':>19s} {'var ratio':>9s} "
          f"{'F-test p':>8s}  {'fused − separate [95% CI]':>27s}")
    for loss in args.losses:
        for metric in METRICS:
            row = compare(got["fused"][loss][metric], got["separate"][loss][metric])
            rows[f"{loss}|{metric}"] = row
            print(f"{loss:6s} {metric:18s} {row['fused_mean']:.4f} ± {row['fused_sd']:.4f}  "
                  f"{row['separate_mean']:.4f} ± {row['separate_sd']:.4f}  {row['variance_ratio']:9.2f} "
                  f"{row['f_test_p']:8.2f}  {row['mean_diff']:+.4f} [{row['mean_diff_low']:+.4f}, "
                  f"{row['mean_diff_high']:+.4f}]")
    record = {"losses": args.losses, "seeds": args.seeds, "overrides": args.overrides,
              "machine": bench.machine_info(), "per_seed": got, "comparison": rows}
    Path(args.output).write_text(json.dumps(record, indent=2))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
