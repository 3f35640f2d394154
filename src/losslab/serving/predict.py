"""Classify texts with a logged model.

    python -m losslab.serving.predict --run <run id> --text "no mames, eres un pendejo"
    python -m losslab.serving.predict --run <run id> --input tweets.csv --text-column text --output preds.csv
    python -m losslab.serving.predict --model-dir path/to/model --text "..."     # a downloaded bundle
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from losslab.errors import LosslabError, friendly_exit


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m losslab.serving.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="MLflow run id whose model/ artifact to use")
    source.add_argument("--model-dir", type=Path, help="a local model bundle directory")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the project's mlflow.db")
    parser.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    parser.add_argument("--input", type=Path, help="CSV/TSV/JSONL file of texts")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--output", type=Path, help="write predictions as CSV here (default: print)")
    parser.add_argument("--operating-point", choices=["tuned", "argmax"], default="tuned",
                        help="tuned (default): the decision rule the run chose on validation; argmax: the most "
                             "probable class")
    return parser.parse_args(argv)


@friendly_exit
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from losslab.serving.bundle import Predictor, download_bundle
    from losslab.paths import default_tracking_uri

    texts = list(args.text)
    if args.input:
        texts += _read_texts(args.input, args.text_column)
    if not texts:
        raise LosslabError("nothing to classify: give --text '...' or --input file.csv.")
    uri = args.tracking_uri or default_tracking_uri()
    predictor = Predictor.load(args.model_dir if args.model_dir else download_bundle(args.run, uri))
    table = predictor.predict_table(texts, args.operating_point)
    if args.output:
        table.insert(0, "text", texts)
        table.rename(columns={"class": "predicted"}).to_csv(args.output, index=False)
        print(f"wrote {len(texts)} predictions to {args.output}")
    else:
        for text, row in zip(texts, table.to_dict("records")):
            scores = {name: round(row[f"p_{name}"], 4) for name in predictor.class_names}
            print(json.dumps({"text": text, "class": row["class"], "probabilities": scores}, ensure_ascii=False))
    return 0


def _read_texts(path: Path, column: str) -> list[str]:
    from losslab.data.dataset import read_frame, require_columns

    resolved, frame = read_frame(path, role="--input")
    require_columns(resolved, frame, {"--text-column": column})
    return ["" if v is None else str(v) for v in frame[column]]


if __name__ == "__main__":
    sys.exit(main())
