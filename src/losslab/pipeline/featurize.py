"""Stage ``featurize``: fit the vectorizer on the training split, transform every split.

    python -m losslab.pipeline.featurize --prepared artifacts/prepared --out artifacts/features

Reads ``features.*`` from ``params.yaml``; writes a ``losslab.data.featureset.FeatureSet``
(sparse ``.npz`` per split + the fitted featurizer as JSON/arrays, no pickle).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from losslab.errors import friendly_exit
from losslab.pipeline.common import PARAMS_FILE, load_params


def featurize(params: Any, prepared: Path, out: Path) -> Any:
    from losslab.data.featureset import FeatureSet
    from losslab.pipeline.prepare import load_prepared

    features = FeatureSet.from_dataset(load_prepared(prepared), params.features)
    features.save(out)
    return features


@friendly_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DVC stage featurize: fit on train, transform all splits.")
    parser.add_argument("--params", default=PARAMS_FILE)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/features"))
    args = parser.parse_args(argv)
    fs = featurize(load_params(args.params), args.prepared, args.out)
    shapes = ", ".join(f"{s} {fs.x[s].shape[0]}x{fs.x[s].shape[1]} (nnz {fs.x[s].nnz})" for s in fs.x)
    print(f"featurize: {shapes} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
