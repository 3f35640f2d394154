#!/usr/bin/env bash
# The GPU check for a machine with an NVIDIA GPU (make gpu-check); a few minutes at most.
#   1. what the machine has: nvidia-smi and what torch.cuda sees
#   2. tests/test_gpu.py: every test must pass and none may be skipped (no GPU visible = failure)
#   3. one real 2-epoch training on MEX-A3T with trainer.accelerator=gpu into a throwaway MLflow
#      store (MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db); prints the run's device tag
# Exits non-zero, with the reason on stderr, at the first step that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
fail() { echo "gpu-check: FAILED: $*" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== 1/3 the GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used --format=csv || echo "nvidia-smi failed"
else
  echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
fi
"$PY" - <<'PYEOF'
import torch

n = torch.cuda.device_count() if torch.cuda.is_available() else 0
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, devices torch.cuda sees: {n}")
for i in range(n):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}")
PYEOF

echo "== 2/3 tests/test_gpu.py (none may be skipped)"
"$PY" -m pytest tests/test_gpu.py -q -rs -p no:cacheprovider --junitxml "$tmp/gpu-tests.xml" \
  || fail "tests/test_gpu.py failed (see above)"
"$PY" - "$tmp/gpu-tests.xml" <<'PYEOF' || fail "GPU tests were skipped: no GPU is visible to torch here, so nothing ran on one (see the reason above). Run make gpu-check on a machine with an NVIDIA GPU and a CUDA build of torch."
import sys
import xml.etree.ElementTree as ET

cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
skipped = [(c.get("name"), c.find("skipped").get("message", "")) for c in cases if c.find("skipped") is not None]
for name, reason in skipped:
    print(f"skipped: {name}: {reason}", file=sys.stderr)
print(f"{len(cases) - len(skipped)} of {len(cases)} GPU tests ran and passed")
sys.exit(1 if skipped or not cases else 0)
PYEOF

echo "== 3/3 python -m losslab.train trainer.accelerator=gpu trainer.max_epochs=2 (MEX-A3T, throwaway store)"
test -f data/mex-a3t/train.csv && test -f data/mex-a3t/test.csv || fail "data/mex-a3t is missing: run make data"
export MLFLOW_TRACKING_URI="sqlite:///$tmp/mlflow.db"
"$PY" -m losslab.train trainer.accelerator=gpu trainer.max_epochs=2 tracking.experiment=gpu-check \
  "hydra.run.dir=$tmp/run" || fail "the GPU training failed (see above)"
"$PY" - <<'PYEOF' || fail "the GPU training did not record a FINISHED run tagged device=cuda"
import os
import sys

from mlflow.tracking import MlflowClient

client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
runs = client.search_runs([client.get_experiment_by_name("gpu-check").experiment_id])
for run in runs:
    tags, metrics = run.data.tags, run.data.metrics
    print(f"run {run.info.run_id}: status {run.info.status}, device={tags.get('device')} "
          f"({tags.get('device_name')}), test/f1_macro {metrics.get('test/f1_macro', float('nan')):.4f}")
sys.exit(0 if len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.tags.get("device") == "cuda"
         else 1)
PYEOF
echo "gpu-check: OK"
