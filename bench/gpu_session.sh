#!/usr/bin/env bash
# The GPU work of a session lent the device machine, as ONE call (the lease is 15 minutes in all, start included):
#
#   here:       make gpu-wheels      # .whl/: what the GPU machine lacks (bench/gpu_wheels.txt), ~37 MB
#   the device: run(command="bash bench/gpu_session.sh", carry=[".whl", "data"], timeout_s=600)
#
# On the device (Python 3.12 with its own CUDA PyTorch, Lightning, torchmetrics, scikit-learn, pandas): installs the
# wheels beside that stack (PYTHONPATH, compiled once), then, most important first, each step's output into $OUT:
#   1. make gpu-check (bench/gpu_check.sh: tests/test_gpu.py, fused vs separate on CUDA included, none may skip;
#      a 2-epoch MEX-A3T training on cuda)                                               → gpu_check.log
#   2. make bench ACCELERATOR=gpu, shortened; its default sweep is fused (sweep.fused=auto on CUDA)
#                                                                                        → bench.log, results_gpu.json
#   3. the same default sweep with sweep.fused=false (bench/run.py's losses_sweep)       → separate.log, separate.json
# Back here: copy results_gpu.json to bench/, and the figures into README "Performance".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/outputs/gpu-session}
SITE=${SITE:-/tmp/losslab-site}
mkdir -p "$OUT"
say() { echo "== $(date +%T) $*"; }
test -f data/mex-a3t/train.csv || { echo "no data/mex-a3t: carry data (make data here first)" >&2; exit 2; }

if ls .whl/*.whl >/dev/null 2>&1; then  # the lent machine: its own python3 + the carried wheels
  PY=${PY:-python3}
  say "install .whl/ into $SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || exit 1
  "$PY" -m compileall -q -j 0 "$SITE" src >/dev/null 2>&1  # else every process imports MLflow and Hydra from source
  export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else  # a GPU machine with the project set up (make setup)
  PY=${PY:-.venv/bin/python}
fi
export PY PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c "import torch, pytorch_lightning as pl, mlflow, hydra; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'lightning', pl.__version__, 'mlflow', mlflow.__version__, 'hydra', hydra.__version__)"

say "1/3 gpu-check"
bash bench/gpu_check.sh > "$OUT/gpu_check.log" 2>&1; check=$?
tail -5 "$OUT/gpu_check.log"

say "2/3 make bench ACCELERATOR=gpu (shortened; its default sweep runs fused)"
"$PY" bench/run.py --accelerator gpu --repeats 2 --fits 2 --runs 1 --sweeps 1 --losses-sweeps 1 \
  --output "$OUT/results_gpu.json" > "$OUT/bench.log" 2>&1
tail -40 "$OUT/bench.log"

say "3/3 the default sweep on CUDA with sweep.fused=false, measured as the bench measures it"
"$PY" - "$OUT" > "$OUT/separate.log" 2>&1 <<'PYEOF'
import json, os, sys, tempfile
from pathlib import Path

sys.path.insert(0, "bench")
from run import losses_sweep  # noqa: E402  (bench/run.py: make sweep end to end, span and records from the store)

work = Path(tempfile.mkdtemp(prefix="separate-"))
env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "PYTHONUNBUFFERED": "1"}
results = losses_sweep(1, ["trainer=gpu", "sweep.fused=false"], env, work)
(Path(sys.argv[1]) / "separate.json").write_text(json.dumps(results, indent=2))
PYEOF
cat "$OUT/separate.json" 2>/dev/null || tail -20 "$OUT/separate.log"
say "done (gpu-check exit $check)"
exit $check
