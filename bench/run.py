"""``make bench``: the performance figures of losslab on MEX-A3T, as one table and ``bench/results.json``.

    .venv/bin/python bench/run.py                       # what make bench runs (CPU)
    .venv/bin/python bench/run.py --accelerator gpu     # make bench ACCELERATOR=gpu
    .venv/bin/python bench/run.py --repeats 1 --runs 1 --output /tmp/r.json data.train_path=...   # smoke

Every figure is the median of several runs. Everything goes to a throwaway MLflow store (a
temp sqlite) and temp output dirs, so the project store and ``outputs/`` stay untouched.
Trailing ``key=value`` arguments are Hydra overrides applied to every measure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import measure as bench  # bench/measure.py, beside this script
from losslab.paths import project_root

JOBS = "auto"  # sweeps run as make runs them (SWEEP_JOBS=auto: one worker per usable core on CPU)
PHASES = ("startup", "imports", "store", "data", "setup", "fit", "test", "logging")
REQUIRED = ("featurize_tweets_per_s", "lightning_samples_per_s", "plain_samples_per_s", "lightning_vs_plain_ratio",
            "epoch_seconds", "train_wall_seconds", "quick_sweep_seconds", "peak_rss_mb", "predict_tweets_per_s",
            "sklearn_fit_seconds", "diagnostics_overhead_ratio", "logging_seconds", "losses_sweep_seconds")
# (key, label, unit, format, target as (op, value) or None)
TABLE = [
    ("featurize_tweets_per_s", "featurize (fit+transform, train split)", "tweets/s", ",.0f", None),
    ("lightning_samples_per_s", "train throughput, Lightning path", "samples/s", ",.0f", None),
    ("plain_samples_per_s", "train throughput, plain PyTorch loop", "samples/s", ",.0f", None),
    ("lightning_vs_plain_ratio", "Lightning / plain", "x", ".2f", (">=", 0.8)),
    ("epoch_seconds", "one epoch (train + val + logging)", "s", ".3f", ("<", 0.25)),
    ("diagnostics_overhead_ratio", "one epoch, diagnostics on / off", "x", ".3f", ("<", 1.10)),
    ("diagnostics_seconds_per_epoch", "  diag/* measurement per epoch", "s", ".3f", None),
    ("diagnostics_share_of_epoch", "  its share of an epoch (no diagnostics)", "x", ".3f", ("<", 0.10)),
    ("train_wall_seconds", "make train (python -m losslab.train)", "s", ".1f", ("<", 10.0)),
    *[(f"train_{p}_seconds", f"  of which {p}", "s", ".2f", None) for p in PHASES],
    ("import_torch_seconds", "floor: import torch (bare interpreter)", "s", ".2f", None),
    ("import_lightning_seconds", "floor: + import pytorch_lightning", "s", ".2f", None),
    ("import_mlflow_seconds", "floor: + import mlflow", "s", ".2f", None),
    ("logging_seconds", "per-run records outside fit (time/logging; sweep runs)", "s", ".2f", ("<", 0.2)),
    ("losses_sweep_seconds", "make sweep (35 runs + baseline + report)", "s", ".1f", ("<", 60.0)),
    ("losses_sweep_trainings_seconds", "  of which the trainings (first start → last end)", "s", ".1f", None),
    ("fused_vs_separate_max_abs_diff", "fused members vs separate runs, max |diff|", "abs", ".2g", None),
    ("quick_sweep_seconds", "make sweep SWEEP=quick (8 runs + baseline + report)", "s", ".1f", ("<", 60.0)),
    ("quick_sweep_runs_per_min", "  sweep throughput", "runs/min", ".1f", None),
    ("peak_rss_mb", "peak RSS of a training", "MB", ",.0f", None),
    ("predict_tweets_per_s", "predict (logged model, Predictor)", "tweets/s", ",.0f", None),
    ("sklearn_fit_seconds", "sklearn TF-IDF + LogisticRegression fit", "s", ".2f", None),
    ("sklearn_test_f1_macro", "  its test macro-F1", "F1", ".3f", None),
    ("train_test_f1_macro", "  losslab MLP test macro-F1 (default run)", "F1", ".3f", None),
    ("cli_help_seconds", "python -m losslab --help", "s", ".2f", None),
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu",
                        help="trainer=<cpu|gpu> for every training; the plain loop runs on the same device")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each in-process measure (default 5)")
    parser.add_argument("--fits", type=int, default=4, help="interleaved Lightning/plain fits (default 4)")
    parser.add_argument("--epochs", type=int, default=6,
                        help="epochs per throughput fit (default 6); the first is dropped")
    parser.add_argument("--runs", type=int, default=3, help="python -m losslab.train subprocesses (default 3)")
    parser.add_argument("--sweeps", type=int, default=2, help="quick sweeps (default 2; 0 skips them)")
    parser.add_argument("--losses-sweeps", type=int, default=1,
                        help="default sweeps, make sweep end to end (default 1; 0 skips it)")
    parser.add_argument("--output", default=str(project_root() / "bench" / "results.json"))
    parser.add_argument("--keep", action="store_true", help="keep the temp store and outputs (path printed)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every measure (e.g. data paths)")
    return parser.parse_intermixed_args(argv)


# --- subprocess measures ----------------------------------------------------------------------
def run_child(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Run ``cmd`` from the project root; (wall seconds, peak RSS MB of the child tree, stdout)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=project_root(), env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; its output ({log}):\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text


def train_runs(n: int, overrides: list[str], env: dict[str, str], work: Path) -> dict[str, Any]:
    """``python -m losslab.train`` (what ``make train`` runs) n times: wall, phases, peak RSS, a run id."""
    from mlflow.tracking import MlflowClient

    walls, rss, phases, run_id = [], [], {p: [] for p in PHASES}, ""
    for i in range(n):
        cmd = [sys.executable, "-m", "losslab.train", f"hydra.run.dir={work / f'train-{i}'}", *overrides]
        wall, peak, text = run_child(cmd, env, work / f"train-{i}.log")
        run_id = re.findall(r"MLflow run id: (\w+)", text)[-1]
        metrics = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id).data.metrics
        inside = {p: metrics.get(f"time/{p}_seconds", float("nan")) for p in PHASES[1:]}
        inside["startup"] = wall - sum(inside.values())  # interpreter, Hydra compose, exit
        for p in PHASES:
            phases[p].append(inside[p])
        walls.append(wall)
        rss.append(peak)
        print(f"  train {i + 1}/{n}: {wall:.1f} s, peak RSS {peak:,.0f} MB", flush=True)
    out = {"train_wall_seconds": bench.median(walls), "peak_rss_mb": bench.median(rss), "_run_id": run_id,
           "train_test_f1_macro": metrics.get("test/f1_macro", float("nan"))}
    out |= {f"train_{p}_seconds": bench.median(v) for p, v in phases.items()}
    return out


def sweep_command(overrides: list[str], work: Path, i: int) -> list[str]:
    """``make sweep SWEEP=quick`` (losslab.sweeps.cli) if present, else the same multirun by hand."""
    common = [f"hydra.sweep.dir={work / f'sweep-{i}'}", f"tracking.experiment=bench-sweep-{i}", *overrides]
    if importlib.util.find_spec("losslab.sweeps.cli") and (project_root() / "conf" / "sweep" / "quick.yaml").is_file():
        return [sys.executable, "-m", "losslab.sweeps", "quick", "--jobs", JOBS,
                f"sweep.reports_dir={work / 'reports'}", *common]
    return [sys.executable, "-m", "losslab.train", "--multirun", "loss=mse,bce,ce,kl", "seed=0,1",
            "trainer.max_epochs=2", *common]


def sweep_runs(n: int, overrides: list[str], env: dict[str, str], work: Path) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    walls, jobs = [], 0
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for i in range(n):
        wall, _, _ = run_child(sweep_command(overrides, work, i), env, work / f"sweep-{i}.log")
        experiment = client.get_experiment_by_name(f"bench-sweep-{i}")
        runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)
        jobs = sum(1 for r in runs if r.data.tags.get("sweep_role") not in ("parent", "ensemble")  # the trainings
                   and r.data.tags.get("model") != "linear-baseline")  # (the wall includes baseline, ensembles, report)
        walls.append(wall)
        print(f"  quick sweep {i + 1}/{n}: {jobs} runs in {wall:.1f} s", flush=True)
    seconds = bench.median(walls)
    return {"quick_sweep_seconds": seconds, "quick_sweep_runs": jobs, "quick_sweep_runs_per_min": 60 * jobs / seconds}


def losses_sweep(n: int, overrides: list[str], env: dict[str, str], work: Path) -> dict[str, Any]:
    """``make sweep`` (7 losses × 5 seeds, linear baseline, seed ensembles, report; ``--jobs auto`` as make runs it)
    end to end, ``n`` times. From the store: the trainings' span (first training's start → last one's end) and the
    median per-run records (``time/logging_seconds``: params, dataset, artifacts, run end — outside fit)."""
    from mlflow.tracking import MlflowClient

    walls, spans, logging = [], [], []
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for i in range(n):
        cmd = [sys.executable, "-m", "losslab.sweeps", "losses", "--jobs", JOBS,
               f"sweep.reports_dir={work / 'reports'}", f"hydra.sweep.dir={work / f'losses-{i}'}",
               f"tracking.experiment=bench-losses-{i}", *overrides]
        wall, _, _ = run_child(cmd, env, work / f"losses-{i}.log")
        walls.append(wall)
        experiment = client.get_experiment_by_name(f"bench-losses-{i}")
        runs = [r for r in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                                              max_results=1000)
                if r.data.tags.get("sweep_role") != "parent" and "ensemble" not in r.data.tags
                and r.data.tags.get("model") != "linear-baseline"]
        spans.append((max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000)
        logging.append(bench.median([r.data.metrics["time/logging_seconds"] for r in runs]))
        print(f"  make sweep {i + 1}/{n}: {len(runs)} trainings over {spans[-1]:.1f} s, {wall:.1f} s in all",
              flush=True)
    return {"losses_sweep_seconds": bench.median(walls), "losses_sweep_trainings_seconds": bench.median(spans),
            "sweep_run_logging_seconds": bench.median(logging), "sweep_jobs": JOBS}


def fused_difference(overrides: list[str], uri: str, work: Path) -> float:
    """The four lecture losses fused vs trained one by one (dropout 0, 3 epochs): the largest |difference| of the
    logged weights and test metrics (``losslab.training.fused_check.max_abs_diff_vs_separate``; 0.0 = bitwise)."""
    from losslab.training.fused_check import max_abs_diff_vs_separate

    cfg = bench.compose_config([*overrides, f"tracking.uri={uri}", "tracking.experiment=bench-fused",
                                "fused.losses=[mse,bce,ce,kl]", "model.dropout=0.0", "trainer.max_epochs=3"])
    with bench.quiet(), contextlib.redirect_stdout(io.StringIO()):
        return max_abs_diff_vs_separate(cfg, work / "fused")


IMPORT_PROBE = ("import time; t = [time.perf_counter()]; import torch; t.append(time.perf_counter()); "
                "import pytorch_lightning; t.append(time.perf_counter()); "
                "import mlflow; t.append(time.perf_counter()); "
                "print(*(b - a for a, b in zip(t, t[1:])))")


def import_floor(env: dict[str, str], work: Path, repeats: int) -> dict[str, float]:
    """Seconds to import torch, then Lightning (+ torchmetrics, torch._dynamo), then MLflow, in a bare interpreter."""
    samples = [run_child([sys.executable, "-c", IMPORT_PROBE], env, work / "imports.log")[2].split()
               for _ in range(repeats)]
    return {f"import_{name}_seconds": bench.median([float(s[i]) for s in samples])
            for i, name in enumerate(("torch", "lightning", "mlflow"))}


def cli_help_seconds(env: dict[str, str], work: Path, repeats: int) -> float:
    return bench.median([run_child([sys.executable, "-m", "losslab", "--help"], env, work / "help.log")[0]
                         for _ in range(repeats)])


# --- the whole benchmark ------------------------------------------------------------------------
def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from losslab.tracking import store as tracking
    from losslab.data.dataset import load_dataset
    from losslab.data.featureset import build_feature_set

    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    overrides = [f"trainer={args.accelerator}", *args.overrides]
    results: dict[str, Any] = {"machine": bench.machine_info(args.accelerator),
                               "settings": {k: v for k, v in vars(args).items() if k not in ("output", "keep")}}
    tracking.experiment_id_for(uri, "bench")  # the store exists before any timed run ("warm")
    tracking.experiment_id_for(uri, "mex-a3t")

    print("featurization, sklearn reference …", flush=True)
    cfg = bench.compose_config([*overrides, f"tracking.uri={uri}", "tracking.experiment=bench"])
    dataset = load_dataset(cfg.data, int(cfg.seed))
    feat = bench.featurize_seconds(dataset.train.texts, cfg.features, args.repeats)
    results["featurize_tweets_per_s"] = len(dataset.train.texts) / bench.median(feat)
    sk, sk_f1 = bench.sklearn_reference((dataset.train.texts, dataset.train.y), (dataset.test.texts, dataset.test.y),
                                        args.repeats)
    results |= {"sklearn_fit_seconds": bench.median(sk), "sklearn_test_f1_macro": sk_f1}

    print(f"training throughput: {args.fits} × (Lightning, plain) fits of {args.epochs} epochs …", flush=True)
    tcfg = bench.compose_config([*overrides, f"tracking.uri={uri}", "tracking.experiment=bench",
                                 f"trainer.max_epochs={args.epochs}"])
    fs = build_feature_set(tcfg.data, tcfg.features, int(tcfg.seed))
    from losslab.training.build import resolve_sizes

    resolve_sizes(tcfg, len(fs.y["train"]))  # batch size / epochs "auto" → numbers, as train() does
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    results |= bench.throughput(tcfg, fs, work / "throughput", uri, args.fits, device)
    print(f"diagnostics overhead: {args.fits} × (on, off) fits of {args.epochs} epochs …", flush=True)
    results |= bench.diagnostics_overhead(tcfg, fs, work / "diagnostics", uri, args.fits)

    print(f"make train: {args.runs} × python -m losslab.train …", flush=True)
    trained = train_runs(args.runs, overrides, env, work)
    run_id = trained.pop("_run_id")
    results |= trained

    print("predict throughput of the logged model …", flush=True)
    from losslab.serving.bundle import download_bundle

    bundle = download_bundle(run_id, uri)
    pred = bench.predict_seconds(bundle, dataset.test.texts, args.repeats)
    results["predict_tweets_per_s"] = len(dataset.test.texts) / bench.median(pred)

    print("fused vs separate: 4 lecture losses, dropout 0 …", flush=True)
    results["fused_vs_separate_max_abs_diff"] = fused_difference(overrides, uri, work)
    results["logging_seconds"] = results["train_logging_seconds"]  # make train's, unless a sweep is measured
    if args.losses_sweeps > 0:
        print(f"default sweep: {args.losses_sweeps} × make sweep …", flush=True)
        results |= losses_sweep(args.losses_sweeps, overrides, env, work)
        results["logging_seconds"] = results["sweep_run_logging_seconds"]  # per run of the sweep (the target)
    if args.sweeps > 0:
        print(f"quick sweep: {args.sweeps} × make sweep SWEEP=quick …", flush=True)
        results |= sweep_runs(args.sweeps, overrides, env, work)
    else:
        results |= {"quick_sweep_seconds": float("nan"), "quick_sweep_runs_per_min": float("nan")}
    results["cli_help_seconds"] = cli_help_seconds(env, work, min(args.repeats, 3))
    results |= import_floor(env, work, min(args.repeats, 3))
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    return results


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    head = (f"losslab bench — {m['cpu']} ({m['cores']} cores, torch threads {m['torch_threads']}), "
            f"accelerator {m['accelerator']}{' ' + m['gpu'] if m.get('gpu') else ''}\n"
            f"python {m['python']}, torch {m['torch']}, lightning {m['lightning']}, mlflow {m['mlflow']}, "
            f"sklearn {m['sklearn']}; load avg {m['loadavg_start'][0]:.2f} → {m['loadavg_end'][0]:.2f}; "
            f"medians of {results['settings']['repeats']} repeats / {results['settings']['runs']} trainings / "
            f"{results['settings']['sweeps']} sweeps")
    rows = [f"{'figure':<44} {'value':>12}  {'unit':<10} target"]
    for key, label, unit, fmt, target in TABLE:
        value = results.get(key, float("nan"))
        cell = format(value, fmt) if isinstance(value, (int, float)) and value == value else "n/a"
        verdict = ""
        if target and isinstance(value, (int, float)) and value == value:
            op, bound = target
            met = value >= bound if op == ">=" else value < bound
            verdict = f"{op} {bound:g}  {'met' if met else 'NOT met'}"
        rows.append(f"{label:<44} {cell:>12}  {unit:<10} {verdict}")
    return head + "\n" + "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="losslab-bench-"))
    try:
        results = measure(args, work)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    missing = [k for k in REQUIRED if not isinstance(results.get(k), (int, float))]
    if missing:
        raise SystemExit(f"bench: missing figures {missing}")
    print("\n" + table(results))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
