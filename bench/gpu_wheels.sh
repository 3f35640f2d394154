#!/usr/bin/env bash
# make gpu-wheels: the wheels bench/gpu_session.sh installs on the GPU machine (bench/gpu_wheels.txt), for
# Python 3.12 on x86-64, at constraints.txt's versions, into .whl/ (git-ignored; ~35 MB, carried with the
# working tree: the device tool's limit is 64 MiB in all). A package with no such wheel on PyPI (a source
# release only: antlr4-python3-runtime 4.9.3, baycomp 1.0.3) is built here into a pure-Python wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.whl}
mkdir -p "$DEST"
platform=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
failed=0
# bench/gpu_wheels.txt's names with constraints.txt's pins, in one pass (names compared as pip does: case, - _ .)
pins=$("$PY" - <<'PYEOF'
import re, sys

key = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pinned = {key(line.split("==")[0]): line.split(";")[0].replace(" ", "")
          for line in open("constraints.txt").read().splitlines() if "==" in line and not line.startswith("#")}
for name in open("bench/gpu_wheels.txt").read().split("\n"):
    name = name.strip()
    if name and not name.startswith("#"):
        print(pinned.get(key(name), f"MISSING:{name}"))
PYEOF
)
for pin in $pins; do
  if [[ "$pin" == MISSING:* ]]; then echo "gpu-wheels: ${pin#MISSING:} is not pinned in constraints.txt" >&2; failed=1
  elif "$PY" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$DEST" "$pin" >/dev/null 2>&1; then
    echo "downloaded $pin"
  elif "$PY" -m pip wheel -q --no-deps -w "$DEST" "$pin" >/dev/null 2>&1; then
    echo "built      $pin (no wheel on PyPI)"
  else
    echo "gpu-wheels: FAILED $pin" >&2; failed=1
  fi
done
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
exit $failed
