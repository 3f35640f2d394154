"""Stage ``prepare``: validate the raw data, normalise, split → ``artifacts/prepared/``.

    python -m losslab.pipeline.prepare --out artifacts/prepared --metrics metrics/data.json --report reports/data.md

Reads ``seed`` and ``data.*`` from ``params.yaml`` and uses the core loader
(``losslab.data.dataset.load_dataset``), so the splits are exactly those of ``make train``. Schema and
label problems stop the stage with a ``DataError``; counts (rows, empty texts, duplicates,
texts with conflicting labels, train/test overlap, classes per split) go to a small report.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from losslab.errors import friendly_exit
from losslab.pipeline.common import PARAMS_FILE, load_params, write_json

SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
INFO_FILE = "info.json"


def file_counts(texts: list[str], labels: list[Any]) -> dict[str, int]:
    """Rows, empty texts, exact duplicates and texts that carry more than one label (normalised)."""
    kept = [(t, y) for t, y in zip(texts, labels) if t]
    by_text: dict[str, set[str]] = defaultdict(set)
    for text, label in kept:
        by_text[text].add(str(label))
    return {"rows": len(texts), "empty_texts": len(texts) - len(kept),
            "duplicate_texts": len(kept) - len(by_text),
            "conflicting_labels": sum(1 for labels_ in by_text.values() if len(labels_) > 1)}


def data_report(data_cfg: Any, dataset: Any) -> dict[str, Any]:
    """Counts a reader can check at a glance; every value is a number (``dvc metrics show``)."""
    from losslab.data.dataset import read_table
    from losslab.data.text import Normalizer

    normalize = Normalizer(**dict(data_cfg.normalize))
    report: dict[str, Any] = {"files": {}}
    texts_of: dict[str, set[str]] = {}
    roles = {"train": data_cfg.train_path, "test": data_cfg.get("test_path")}
    for role, path in roles.items():
        if not path:
            continue
        table = read_table(path, data_cfg.text_column, data_cfg.label_column, data_cfg.get("format"),
                           f"data.{role}_path")
        texts = normalize.many(table.texts)
        report["files"][role] = file_counts(texts, table.labels)
        texts_of[role] = {t for t in texts if t}
    if "test" in texts_of:
        report["train_test_overlap"] = len(texts_of["train"] & texts_of["test"])
    report["splits"] = {}
    for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
        counts = Counter(split.y.tolist())
        report["splits"][name] = {"rows": len(split),
                                  **{c: int(counts.get(i, 0)) for i, c in enumerate(dataset.class_names)}}
    report["classes"] = dataset.num_classes
    return report


def report_markdown(report: dict[str, Any], class_names: list[str], sources: dict[str, str]) -> str:
    lines = ["# Data checks (stage `prepare`)", ""]
    lines += [f"- {role} file: `{path}`" for role, path in sources.items()]
    lines += ["", "| file | rows | empty texts (dropped) | duplicate texts | texts with conflicting labels |",
              "|---|---:|---:|---:|---:|"]
    for role, c in report["files"].items():
        lines.append(f"| {role} | {c['rows']} | {c['empty_texts']} | {c['duplicate_texts']} | "
                     f"{c['conflicting_labels']} |")
    if "train_test_overlap" in report:
        lines += ["", f"Texts found in both the training and the test file: {report['train_test_overlap']}."]
    lines += ["", "| split | rows | " + " | ".join(class_names) + " |",
              "|---|---:|" + "---:|" * len(class_names)]
    for name, c in report["splits"].items():
        lines.append(f"| {name} | {c['rows']} | " + " | ".join(str(c[n]) for n in class_names) + " |")
    lines += ["", "Duplicates are counted, not removed (training and `make train` see the same rows); "
              "empty texts are dropped.", ""]
    return "\n".join(lines)


def write_split(path: Path, texts: list[str], y: Any) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, (int(v) for v in y)))


def prepare(params: Any, out: Path, metrics: Path, report_path: Path) -> dict[str, Any]:
    """Load + validate + split with the core loader; write the splits, ``info.json`` and the report."""
    from losslab.data.dataset import load_dataset

    data_cfg = params.data
    dataset = load_dataset(data_cfg, int(params.seed))
    report = data_report(data_cfg, dataset)
    out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test)):
        write_split(out / SPLIT_FILES[name], split.texts, split.y)
    sources = {"train": str(data_cfg.train_path), **({"test": str(data_cfg.test_path)} if data_cfg.get("test_path")
                                                    else {})}
    write_json(out / INFO_FILE, {"class_names": dataset.class_names, "dataset_md5": dataset.md5,
                                 "stats": dataset.stats, "sources": sources})
    write_json(metrics, report)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report_markdown(report, dataset.class_names, sources), encoding="utf-8")
    return report


def load_prepared(directory: str | Path) -> Any:
    """The splits written by ``prepare`` as a ``losslab.data.dataset.Dataset``."""
    import numpy as np

    from losslab.data.dataset import Dataset, Split
    from losslab.pipeline.common import read_json

    src = Path(directory)
    info = read_json(src / INFO_FILE)
    splits = {}
    for name, filename in SPLIT_FILES.items():
        with (src / filename).open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))[1:]
        splits[name] = Split([r[0] for r in rows], np.array([int(r[1]) for r in rows], dtype=np.int64))
    return Dataset(splits["train"], splits["val"], splits["test"], list(info["class_names"]), info["dataset_md5"],
                   dict(info.get("stats", {})))


@friendly_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DVC stage prepare: validate, normalise and split the data.")
    parser.add_argument("--params", default=PARAMS_FILE)
    parser.add_argument("--out", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/data.json"))
    parser.add_argument("--report", type=Path, default=Path("reports/data.md"))
    args = parser.parse_args(argv)
    report = prepare(load_params(args.params), args.out, args.metrics, args.report)
    sizes = ", ".join(f"{k} {v['rows']}" for k, v in report["splits"].items())
    print(f"prepare: {sizes} rows -> {args.out}; checks in {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
