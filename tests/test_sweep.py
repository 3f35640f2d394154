"""Sweeps: configs compose, a parallel sweep loses nothing, a failing job leaves no run RUNNING, the search,
and what a sweep prints (one line per job, the loss table; Hydra's lines only with LOSSLAB_VERBOSE=1)."""

from __future__ import annotations

import itertools
from collections import Counter
import re

import joblib
import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import CONF
from losslab.model.losses import LOSSES
from losslab.sweeps.callbacks import planned_jobs
from losslab.sweeps.cli import available_sweeps, hydra_argv, main as sweep_main
from losslab.sweeps.progress import Progress, duration, metric_label
from sweep_fixture import EXPERIMENT, LOSSES as QUICK_LOSSES, SEEDS, quick_sweep, run_sweep, tiny_data  # noqa: F401


def composed(name: str):
    """The real config of sweep ``name``, hydra node included."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def sweeper_params(name: str) -> dict[str, list[str]]:
    """The sweep's ``hydra.sweeper.params`` as lists of values (``range(a,b)`` expanded)."""
    cfg = composed(name)
    out = {}
    for key, value in cfg.hydra.sweeper.params.items():
        value = str(value)
        if value.startswith("range("):
            low, high = map(int, value[6:-1].split(","))
            out[key] = [str(i) for i in range(low, high)]
        else:
            out[key] = value.split(",")
    return out


def test_the_sweeps_exist():
    assert available_sweeps() == ["grid", "losses", "noise", "quick", "search", "tune"]


def test_losses_sweep_is_the_lecture_losses_and_their_variants_times_five_seeds():
    """The default sweep: the lecture's four losses as they are used in practice (stable forms) and the
    three common variants; the lecture's literal forms (*_lecture, *_probs) and the robust losses have
    their own sweep (noise) and every loss runs with make train ARGS="loss=<name>"."""
    params = sweeper_params("losses")
    assert sorted(params["loss"]) == ["bce", "ce", "ce_smooth", "ce_weighted", "focal", "kl", "mse"]
    assert set(params["loss"]) <= set(LOSSES) and params["seed"] == ["0", "1", "2", "3", "4"]
    assert list(params)[0] == "seed", "seeds outermost: each split is featurized once per process"


def test_quick_sweep_is_four_lecture_losses_two_seeds_two_epochs():
    params = sweeper_params("quick")
    assert params == {"seed": ["0", "1"], "loss": ["mse", "bce", "ce", "kl"]}
    assert len(list(itertools.product(*params.values()))) == 8
    assert composed("quick").trainer.max_epochs == 2


def test_grid_sweep_varies_lr_and_width():
    params = sweeper_params("grid")
    assert {"optimizer.lr", "model.hidden", "loss", "seed"} <= set(params)
    assert len(params["optimizer.lr"]) > 1 and len(params["model.hidden"]) > 1


def test_search_space_names_real_config_keys():
    from omegaconf import OmegaConf

    cfg = composed("search")
    assert set(cfg.sweep.search.losses) <= set(LOSSES)
    for key in cfg.sweep.search.space:
        assert OmegaConf.select(cfg, key) is not None, key


def test_jobs_choose_the_launcher():
    assert hydra_argv("quick", 1, ["seed=3"]) == ["--multirun", "+sweep=quick", "seed=3"]
    assert hydra_argv("quick", 2, []) == ["--multirun", "+sweep=quick", "hydra/launcher=joblib",
                                          "hydra.launcher.n_jobs=2"]


def test_jobs_auto_is_one_worker_per_usable_core_on_cpu():
    import os

    import torch

    from losslab.errors import ConfigError
    from losslab.sweeps.jobs import MAX_AUTO_JOBS, cuda_available, launcher_given, resolve_jobs

    assert cuda_available() == torch.cuda.is_available()
    cores = len(os.sched_getaffinity(0))
    assert resolve_jobs("auto") == (1 if torch.cuda.is_available() else min(cores, MAX_AUTO_JOBS))
    assert resolve_jobs("3") == 3 and resolve_jobs(1) == 1
    for bad in ("0", "-2", "many"):
        with pytest.raises(ConfigError, match="SWEEP_JOBS"):
            resolve_jobs(bad)
    assert launcher_given(["seed=1", "hydra/launcher=submitit_slurm"]) and not launcher_given(["seed=1"])


def test_worker_pool_is_the_launchers_so_joblib_reuses_the_sweeps_workers(compose):
    """The baseline and the seed ensembles run in the workers that ran the jobs, with their imports paid: joblib
    only reuses them for a Parallel with exactly the arguments Hydra's joblib launcher used."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, delayed

    from losslab.sweeps.jobs import worker_pool

    def _worker(seconds: float) -> int:  # nested: pickled by value, so the workers need not import this module
        import os
        import time

        time.sleep(seconds)  # long enough that every worker gets a task
        return os.getpid()

    cfg = compose("+sweep=quick", *hydra_argv("quick", 2, [])[2:], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    hydra_args = {k: v for k, v in launcher.items() if k != "_target_"} | {"backend": "loky"}
    process_joblib_cfg(hydra_args)  # exactly what hydra_joblib_launcher's launch() passes to Parallel
    pool = worker_pool(launcher)
    assert pool == hydra_args and pool["n_jobs"] == 2
    jobs = set(Parallel(**hydra_args)(delayed(_worker)(0.3) for _ in range(4)))
    assert set(Parallel(**pool)(delayed(_worker)(0.3) for _ in range(4))) == jobs  # the same two processes
    assert not set(Parallel(n_jobs=2)(delayed(_worker)(0.3) for _ in range(4))) & jobs  # other args: new ones
    assert worker_pool({**launcher, "n_jobs": 1}) is None
    assert worker_pool({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}) is None


def test_warm_workers_start_the_launchers_workers_with_the_training_stack_imported(compose):
    """The workers warm_workers starts are the ones a Parallel with the launcher's arguments then gets: the
    training stack already imported there, at the lowered priority."""
    from joblib import Parallel, delayed

    from losslab.sweeps.jobs import WORKER_NICENESS, warm_workers, worker_pool

    def _probe(seconds: float) -> tuple[int, bool, int]:  # nested: pickled by value
        import os
        import sys
        import time

        time.sleep(seconds)  # long enough that every worker gets a task
        return os.getpid(), "pytorch_lightning" in sys.modules and "mlflow" in sys.modules, os.nice(0)

    cfg = compose("+sweep=quick", *hydra_argv("quick", 2, [])[2:], return_hydra_config=True)
    pool = worker_pool(OmegaConf.to_container(cfg.hydra.launcher, resolve=True))
    thread = warm_workers(pool)
    assert thread is not None and warm_workers(None) is None
    thread.join(timeout=120)
    assert not thread.is_alive()
    seen = Parallel(**pool)(delayed(_probe)(0.3) for _ in range(4))
    assert len({pid for pid, _, _ in seen}) == 2
    assert all(imported and niceness >= WORKER_NICENESS for _, imported, niceness in seen), seen


@pytest.mark.slow
def test_a_second_sweep_reuses_its_baseline_fits_in_the_workers_and_ends_with_every_run_finished(tmp_path):
    """The second sweep over the same data finds every baseline fit in its cache (sweep.baseline.cache_dir): its
    workers read them and log the baseline runs, then build the seed ensembles while the report is written; the
    sweep ends with each of its runs FINISHED, a baseline run per seed and an ensemble per loss."""
    grid, data, cache = ("loss=ce,mse", "seed=0,1"), tiny_data(tmp_path), tmp_path / "baseline-cache"
    first, second = (run_sweep(tmp_path / name, "quick", 2, *grid, data=data, baseline_cache=cache)
                     for name in ("first", "second"))
    for result in (first, second):
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "reused from" not in first.stdout and f"2 fit(s) reused from {cache}" in second.stdout
    assert len(list(cache.glob("*.pkl"))) == 2
    client = MlflowClient(f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=100)
    kinds = Counter("parent" if r.data.tags.get("sweep_role") == "parent" else "ensemble" if "ensemble" in r.data.tags
                    else r.data.tags.get("model") if r.data.tags.get("model") == "linear-baseline" else "training"
                    for r in runs)
    assert kinds == {"parent": 1, "training": 4, "linear-baseline": 2, "ensemble": 2}, kinds
    assert {r.info.status for r in runs} == {"FINISHED"}
    sweep_id = runs[0].data.tags["sweep_id"]
    assert (tmp_path / "second" / "reports" / sweep_id / "report.md").is_file()


def test_unknown_sweep_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(["nosuch"])
    assert exit_info.value.code == 2
    assert "unknown sweep 'nosuch'" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_sweep_records_every_job_under_one_parent(quick_sweep):
    client = MlflowClient(quick_sweep.uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_role") not in ("parent", "ensemble")
                and r.data.tags.get("model") != "linear-baseline"]  # the trainings (test_baseline: the baseline's)
    ensembles = [r for r in runs if r.data.tags.get("ensemble") == "seeds"]  # one per loss: its seeds as one model

    assert len(parents) == 1 and len(children) == len(QUICK_LOSSES) * len(SEEDS) == 8
    assert sorted(r.data.tags["loss"] for r in ensembles) == sorted(QUICK_LOSSES)
    parent = parents[0]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.data.tags["sweep_id"] == parent.data.tags["sweep_id"] for r in children)
    assert sorted((r.data.tags["loss"], int(r.data.tags["seed"])) for r in children) == sorted(
        itertools.product(QUICK_LOSSES, SEEDS))
    assert {r.data.params["trainer.max_epochs"] for r in children} == {"2"}
    assert {r.data.params["tracking.parent_run_id"] for r in children} == {parent.info.run_id}
    # the jobs ran in joblib's worker processes, and nothing landed in the Default experiment
    assert "joblib" in parent.data.params["sweep.launcher"].lower() and parent.data.params["sweep.n_jobs"] == "2"
    # forked from the worker server or not, each worker trains with joblib's share of the cores (sweeps.worker_server)
    assert {r.data.tags["torch_threads"] for r in children} == {str(max(joblib.cpu_count() // 2, 1))}
    assert client.search_runs(["0"]) == []
    assert parent.data.metrics["sweep_jobs"] == 8
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.md",
                                                                                       "report/report.html"}
    multirun = yaml.safe_load(next((quick_sweep.root / "multirun").glob("multirun.yaml")).read_text())
    assert multirun["hydra"]["launcher"]["n_jobs"] == 2


@pytest.mark.slow
def test_failing_job_leaves_parent_failed_and_nothing_running(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SystemExit) as exit_info:  # the second job's config is impossible
        sweep_main(["quick", "--jobs", "1", *tiny_data(tmp_path), f"tracking.uri={uri}",
                    f"tracking.experiment={EXPERIMENT}",
                    f"hydra.sweep.dir={tmp_path / 'multirun'}", "hydra.sweeper.params.seed=0",
                    "hydra.sweeper.params.loss=ce", "model.dropout=0.1,1.5"])
    assert exit_info.value.code != 0 and "model.dropout=1.5 must be in [0, 1)" in capsys.readouterr().err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    assert parent.info.status == "FAILED" and "stopped" in parent.data.tags["sweep_error"]
    assert [r.info.status for r in runs if r is not parent] == ["FINISHED"]


@pytest.mark.slow
def test_search_reruns_each_losses_best_trial_on_the_final_seeds(tmp_path, monkeypatch, capsys):
    from losslab.sweeps.search import run_search

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = run_search([*tiny_data(tmp_path), f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}",
                          f"sweep.reports_dir={tmp_path / 'reports'}", "sweep.search.losses=[ce,mse]",
                          "sweep.search.trials=2", "sweep.search.final_seeds=[0,1]", "trainer.max_epochs=2",
                          "sweep.report.enabled=false"])
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("sweep_role") == "parent")
    children = [r for r in runs if r is not parent and r.data.tags.get("ensemble") != "seeds"]
    assert parent.info.status == "FINISHED" and {r.info.status for r in children} == {"FINISHED"}
    phases = sorted((r.data.tags["loss"], r.data.tags["sweep_phase"]) for r in children)
    assert phases == sorted([(loss, phase) for loss in ("ce", "mse") for phase in ("search", "search", "final",
                                                                                      "final")])
    for summary in results:
        finals = [r for r in children if r.data.tags["loss"] == summary["loss"]
                  and r.data.tags["sweep_phase"] == "final"]
        for key, value in summary["best_params"].items():
            assert {r.data.params[key] for r in finals} == {str(value)}, key
    assert not (tmp_path / "reports").exists()  # sweep.report.enabled=false
    jobs = job_lines(capsys.readouterr().out)  # one line per training: 2 losses × (2 trials + 2 re-runs)
    assert [int(m[1]) for m in jobs] == list(range(1, 9)) and {m[2] for m in jobs} == {"8"}
    assert sorted((m[3], m[5].split("  ")[0]) for m in jobs) == sorted(
        (loss, detail) for loss in ("ce", "mse") for detail in ("trial 0", "trial 1", "final", "final"))


# --- what a sweep prints ---------------------------------------------------------------------------------

JOB_LINE = re.compile(r"^\[\s*(\d+)/(\d+|\?)\] (\S+)\s+seed (\S+)\s+(.*)$")


def job_lines(text: str) -> list[re.Match]:
    return [m for m in map(JOB_LINE.match, text.splitlines()) if m]


def loss_table(text: str) -> list[list[str]]:
    """The rows (cells split on 2+ spaces) of the table printed at the end of a sweep, header first."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^loss\s+runs\s", line))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:end]]


def assert_quiet(console: str) -> None:
    """Nothing but our own lines: no third-party warning, no Hydra banner, no per-epoch or per-run test block."""
    lines = console.splitlines()
    assert not [x for x in lines if "Warning" in x or "warn(" in x], console[-4000:]
    assert not [x for x in lines if "site-packages" in x], console[-4000:]  # a library's warning names its file
    assert not [x for x in lines if "[HYDRA]" in x or "Launching" in x or re.search(r"#\d+ : ", x)], console[-4000:]
    assert not [x for x in lines if x.startswith("epoch ") or "Test metrics" in x], console[-4000:]


def test_a_jobs_run_is_found_by_its_output_folder(tmp_path):
    from losslab.tracking.sweep_runs import job_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("jobs")
    parent = client.create_run(experiment_id).info.run_id
    folders = [tmp_path / "0-ce-s0", tmp_path / "1 mse-s0", tmp_path / "it's-s1"]  # a space, a quote
    made = {}
    for folder in folders:
        run = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "output_dir": str(folder)})
        made[folder] = run.info.run_id
    client.create_run(experiment_id, tags={"output_dir": str(folders[0])})  # same folder, another sweep's run
    for folder in folders:
        assert job_run(uri, parent, str(folder)).info.run_id == made[folder]
    assert job_run(uri, parent, str(tmp_path / "9-kl-s0")) is None


def test_job_count_is_the_sweepers_product_of_values():
    assert planned_jobs(composed("losses"))[0] == 35
    assert planned_jobs(composed("quick"))[0] == 8
    assert planned_jobs(composed("grid"))[0] == 126
    total, swept = planned_jobs(composed("grid"))
    assert set(swept) == {"seed", "loss", "optimizer.lr", "model.hidden"} and len(swept["optimizer.lr"]) == 3
    # the command line (what a multirun holds in hydra.overrides.task) replaces a swept key's values, and may
    # sweep another key
    from omegaconf import open_dict, read_write

    cfg = composed("quick")
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.overrides.task = ["+sweep=quick", "seed=0", "loss=ce,mse", "model.dropout=0.1,0.2,0.3"]
    total, swept = planned_jobs(cfg)
    assert total == 6 and swept == {"loss": ["ce", "mse"], "model.dropout": ["0.1", "0.2", "0.3"]}


def test_the_sweeper_checks_every_override_value_with_few_jobs_in_the_jobs_order():
    import itertools

    from losslab.sweeps.batch_check import jobs_to_check

    assert composed("losses").hydra.sweeper._target_ == "hydra_plugins.losslab_sweeper.LosslabSweeper"
    losses = sweeper_params("losses")["loss"]
    batch = [[f"seed={s}", f"loss={name}"] for s in range(5) for name in losses]  # as the sweeper orders them
    checked = jobs_to_check(batch)
    # seed s with the s-th loss (two new values each), then the losses left, with seed 0; in the jobs' order
    assert checked == sorted([batch[7 * s + s] for s in range(5)] + [batch[5], batch[6]], key=batch.index)
    assert {o for job in checked for o in job} == {o for job in batch for o in job}
    assert jobs_to_check(batch[:1]) == batch[:1] and jobs_to_check([]) == []
    assert jobs_to_check([["a=1"], ["a=1"], ["a=2"]]) == [["a=1"], ["a=2"]]  # a repeated job is composed once
    grid = sweeper_params("grid")
    product = [[f"{k}={v}" for k, v in zip(grid, values)] for values in itertools.product(*grid.values())]
    assert len(product) == 126 and len(jobs_to_check(product)) == max(len(v) for v in grid.values()) == 7


def test_a_bad_value_late_in_a_sweep_fails_before_its_first_job(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SystemExit) as exit_info:  # the last job's loss does not exist: no job may start
        sweep_main(["quick", "--jobs", "1", *tiny_data(tmp_path), f"tracking.uri={uri}",
                    f"tracking.experiment={EXPERIMENT}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
                    "hydra.sweeper.params.seed=0", "hydra.sweeper.params.loss=ce", "seed=0,1",
                    "loss=ce,mse,no_such_loss"])
    assert exit_info.value.code != 0 and "no_such_loss" in capsys.readouterr().err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert [r.data.tags.get("sweep_role") for r in runs] == ["parent"] and runs[0].info.status == "FAILED"
    assert not (tmp_path / "multirun" / "0").exists()


def test_progress_counts_jobs_in_its_log_and_estimates_the_rest(tmp_path):
    progress = Progress.start(tmp_path, 3, loss_width=3)
    first = progress.job_done("ce", 0, "FINISHED", 1.25, {"best_val/f1_macro": 0.7412, "test/f1_macro": 0.6})
    assert re.fullmatch(r"\[1/3\] ce   seed 0  val macro-F1 0\.741  test macro-F1 0\.600  FINISHED  1\.2 s  ETA .+ s",
                        first), first
    progress.job_done("mse", 1, "FAILED", 2.0, {}, "model.hidden=64", "ValueError: boom")
    last = progress.job_done("kl", 1, "FINISHED", 61.0, {"test/f1_macro": 0.5})
    assert last.startswith("[3/3] kl ") and "1 min 1 s" in last and "ETA" not in last
    log = (tmp_path / "progress.log").read_text().splitlines()
    assert log[0] == first and log[1].endswith("FAILED  2.0 s  ETA " + log[1].split("ETA ")[1])
    assert "model.hidden=64" in log[1] and log[1].endswith("(ValueError: boom)") and log[2] == last
    assert Progress.start(tmp_path, 3).job_done("ce", 0, "FINISHED", 1, {}).startswith("[1/3]"), "a new sweep restarts"
    assert [duration(s) for s in (12.34, 100, 3725)] == ["12.3 s", "1 min 40 s", "1 h 02 min"]
    assert metric_label("test/f1_aggressive") == "test F1 aggressive" and metric_label("test/nll") == "test nll"


@pytest.mark.slow
def test_sweep_console_is_one_line_per_job_then_the_loss_table(quick_sweep):
    """The joblib sweep (2 worker processes): k counts the jobs finished in either process, once each."""
    out, console = quick_sweep.result.stdout, quick_sweep.result.stdout + quick_sweep.result.stderr
    assert_quiet(console)
    jobs = job_lines(out)
    total = len(QUICK_LOSSES) * len(SEEDS)
    assert [int(m[1]) for m in jobs] == list(range(1, total + 1)) and {m[2] for m in jobs} == {str(total)}
    assert sorted((m[3], int(m[4])) for m in jobs) == sorted(itertools.product(QUICK_LOSSES, SEEDS))
    assert all(" FINISHED " in m[5] and "test macro-F1" in m[5] for m in jobs)
    assert all("ETA" in m[5] for m in jobs[:-1]) and "ETA" not in jobs[-1][5]
    table = loss_table(out)
    assert table[0][:3] == ["loss", "runs", "test macro-F1"] and table[0][3].startswith("test F1 ")
    assert sorted(row[0] for row in table[1:]) == sorted(QUICK_LOSSES) and {row[1] for row in table[1:]} == {"2"}
    means = [float(row[2].split()[0]) for row in table[1:]]
    assert means == sorted(means, reverse=True), "best first"
    lines = out.splitlines()
    report = next(i for i, x in enumerate(lines) if x.startswith("report of sweep"))
    champion = next(i for i, x in enumerate(lines) if x.startswith("champion: "))
    assert lines.index(next(x for x in lines if x.startswith("loss "))) < report < champion
    logged = (quick_sweep.root / "multirun" / "progress.log").read_text().splitlines()
    assert logged == [m[0] for m in jobs]


@pytest.mark.slow
def test_in_process_sweep_is_quiet_and_verbose_brings_hydras_lines_back(tmp_path):
    args = ("seed=0", "loss=ce,mse", "sweep.register=false", "sweep.report.enabled=false")
    quiet = run_sweep(tmp_path / "quiet", "quick", 1, *args)
    assert quiet.returncode == 0, quiet.stdout[-3000:] + quiet.stderr[-3000:]
    assert_quiet(quiet.stdout + quiet.stderr)
    jobs = [(m[1], m[2], m[3], m[4]) for m in job_lines(quiet.stdout)]
    assert jobs == [("1", "2", "ce", "0"), ("2", "2", "mse", "0")]
    assert sorted(row[0] for row in loss_table(quiet.stdout)[1:]) == ["ce", "mse"]

    loud = run_sweep(tmp_path / "verbose", "quick", 1, *args, env={"LOSSLAB_VERBOSE": "1"})
    assert loud.returncode == 0, loud.stdout[-3000:] + loud.stderr[-3000:]
    console = loud.stdout + loud.stderr
    assert "[HYDRA] Launching 2 jobs locally" in console
    assert re.search(r"\[HYDRA\]\s+#0 : seed=0 loss=ce", console) and re.search(r"#1 : seed=0 loss=mse", console)
    assert [m[3] for m in job_lines(loud.stdout)] == ["ce", "mse"], "the job lines stay"
