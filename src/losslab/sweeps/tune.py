"""``make tune``: search the recipe on validation, write the winner as ``conf/experiment/<data.name>_best.yaml``.

    python -m losslab.sweeps.tune                       # or: make tune [ARGS="data=custom ..."]

The search is ``losslab.sweeps.search`` with ``conf/sweep/tune.yaml`` (per loss, trials only, objective on
the validation split); the best trial over all losses becomes an experiment file that any command takes:
``make train ARGS="experiment=mex_a3t_best"``, ``make sweep ARGS="experiment=mex_a3t_best"``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from losslab.errors import friendly_exit
from losslab.paths import config_dir, resolve_path

GROUPS = ("data", "features", "model", "loss", "optimizer", "scheduler", "trainer", "callbacks")  # conf/ groups


def best_trial(results: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The loss whose search reached the highest objective (ties: the first listed loss)."""
    return max(results, key=lambda r: float(r["best_value"]))


def experiment_yaml(name: str, winner: Mapping[str, Any], cfg: Any, sweep_id: str, commit: str,
                    overrides: Sequence[str] = ()) -> str:
    """The experiment file: the winner's loss and group choices as ``override /group``, its sampled values, the
    training schedule the search ran with (early stopping, epochs), and where it came from."""
    from omegaconf import OmegaConf

    from losslab.sweeps.search import trial_seeds

    params = dict(winner["best_params"])
    groups = {"loss": winner["loss"], "callbacks": "early_stopping"}
    groups |= {k: v for k, v in params.items() if k in GROUPS}
    values = {k: v for k, v in params.items() if k not in GROUPS}
    body: dict[str, Any] = {}
    for key, value in values.items():
        node = body
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = round(value, 6) if isinstance(value, float) else value
    body.setdefault("trainer", {}).update({"max_epochs": int(cfg.trainer.max_epochs),
                                           "min_epochs": int(cfg.trainer.min_epochs)})
    body["callbacks"] = {"early_stopping": {"patience": int(cfg.callbacks.early_stopping.patience)}}
    body["tracking"] = {"tags": {"experiment": name}}
    search = cfg.sweep.search
    header = [
        "# @package _global_",
        f"# Written by `make tune` (losslab.sweeps.tune) on {time.strftime('%Y-%m-%d')}, git {commit[:10]},",
        f"# sweep {sweep_id}: the best of {int(search.trials)} Optuna trials per loss ({', '.join(search.losses)}),",
        f"# mean over seeds {list(trial_seeds(search))}: {search.objective} = {float(winner['best_value']):.4f}",
        "# (validation split only; the test split chose nothing).",
        *([f"# Command: make tune ARGS=\"{' '.join(overrides)}\""] if overrides else []),
        f"#   make train ARGS=\"experiment={name}\"      make sweep ARGS=\"experiment={name}\"",
        "defaults:",
        *[f"  - override /{group}: {choice}" for group, choice in groups.items()],
    ]
    return "\n".join(header) + "\n" + OmegaConf.to_yaml(OmegaConf.create(body))


def output_path(cfg: Any) -> Path:
    """``sweep.output``, else ``conf/experiment/<data.name>_best.yaml``."""
    if cfg.sweep.get("output"):
        return resolve_path(str(cfg.sweep.output))
    return config_dir() / "experiment" / f"{cfg.data.name}_best.yaml"


def run_tune(overrides: Sequence[str], jobs: int = 1) -> Path:
    """Search (``conf/sweep/tune.yaml``) and write the winner; returns the file written."""
    from losslab.sweeps.search import compose, run_search
    from losslab.tracking.runs import git_state

    cfg = compose(overrides, "tune")
    results = run_search(overrides, jobs=jobs, sweep="tune")
    winner = best_trial(results)
    out = output_path(cfg)
    name = out.stem
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(experiment_yaml(name, winner, cfg, str(winner.get("sweep_id", "")), git_state()[0], overrides))
    print(f"tune: {winner['loss']} {cfg.sweep.search.objective}={float(winner['best_value']):.4f} → {out}\n"
          f"  next: make sweep ARGS=\"experiment={name}\"", file=sys.stderr)
    return out


@friendly_exit
def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m losslab.sweeps.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="auto", help="losses searched in parallel processes: a number or auto "
                                                      "(default: one per usable core on CPU, 1 with CUDA)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=custom data.train_path=...")
    args = parser.parse_intermixed_args(argv)
    from losslab.sweeps.jobs import resolve_jobs

    run_tune(args.overrides, jobs=resolve_jobs(args.jobs))


if __name__ == "__main__":
    main()
