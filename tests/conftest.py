"""Shared fixtures: tiny synthetic datasets written in tmp_path and the real Hydra config."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

WORDS = {
    "aggressive": ["pendejo", "idiota", "cállate", "odio", "maldito", "basura"],
    "calm": ["gracias", "hermoso", "feliz", "amigos", "bonito", "saludos"],
    "sad": ["triste", "llorar", "solo", "extraño", "dolor", "perdí"],
}
FILLER = ["el", "la", "de", "que", "y", "en", "un", "por", "con", "para", "hoy", "muy"]


def synthetic_rows(n: int, labels: list[str], seed: int = 0) -> list[tuple[str, str]]:
    """Texts whose class shows in 2-3 class words among filler (learnable, not trivial)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(WORDS[label], 2) + rng.sample(FILLER, 4)
        if rng.random() < 0.5:
            words.append("@" + rng.choice(["pepe", "ana_mx", "luis99"]))
        if rng.random() < 0.2:
            words.append("https://t.co/abc" + str(i))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_table(path: Path, rows: list[tuple[str, object]], fmt: str, text_col: str = "text",
                label_col: str = "label") -> Path:
    import csv

    if fmt == "jsonl":
        path.write_text("".join(json.dumps({text_col: t, label_col: y}, ensure_ascii=False) + "\n" for t, y in rows),
                        encoding="utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t" if fmt == "tsv" else ",")
        writer.writerow([text_col, label_col])
        writer.writerows(rows)
    return path


@pytest.fixture
def tiny_binary(tmp_path: Path) -> dict[str, Path]:
    """A two-class CSV pair with 0/1 labels, like MEX-A3T."""
    mapping = {"calm": 0, "aggressive": 1}
    train = [(t, mapping[y]) for t, y in synthetic_rows(160, ["calm", "aggressive"], seed=1)]
    test = [(t, mapping[y]) for t, y in synthetic_rows(60, ["calm", "aggressive"], seed=2)]
    return {"train": write_table(tmp_path / "train.csv", train, "csv"),
            "test": write_table(tmp_path / "test.csv", test, "csv")}


def _compose_conf(overrides: list[str], return_hydra_config: bool = False):
    """Compose the real ``conf/config.yaml`` with ``overrides`` (Hydra's global state cleared before and after)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()


def tiny_overrides(tmp_path: Path) -> list[str]:
    """What every test training gets unless it overrides it: tiny model, CPU, store and outputs in tmp_path."""
    return [
        "trainer.accelerator=cpu",
        "trainer.max_epochs=3",
        "model.hidden=16",
        "optimizer.lr=0.01",
        "data.batch_size=32",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment=tests",
        "hydra.run.dir=" + str(tmp_path / "run"),
    ]


@pytest.fixture
def compose(tmp_path: Path) -> Callable[..., object]:
    """The one way tests compose ``conf/``: ``compose(*overrides, tiny=True, return_hydra_config=False)``.

    ``tiny=True`` puts ``tiny_overrides(tmp_path)`` first (tiny model, CPU, sqlite store in
    ``tmp_path``), so a test's own overrides win; ``tiny=False`` composes exactly what the
    CLI would with only the given overrides. ``return_hydra_config=True`` keeps the ``hydra``
    node (launchers, sweeper, run dir).
    """

    def _compose(*overrides: str, tiny: bool = True, return_hydra_config: bool = False):
        base = tiny_overrides(tmp_path) if tiny else []
        return _compose_conf([*base, *overrides], return_hydra_config=return_hydra_config)

    return _compose


def data_overrides(paths: dict[str, Path]) -> list[str]:
    return ["data=custom", f"data.train_path={paths['train']}", f"data.test_path={paths['test']}",
            "features.word.min_df=1"]
