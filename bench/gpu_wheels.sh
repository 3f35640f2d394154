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
while read -r name; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  key=$(echo "$name" | tr 'A-Z_.' 'a-z--')
  pin=$(grep -iE "^[A-Za-z0-9_.-]+==" constraints.txt | while IFS= read -r line; do
          n=${line%%==*}; [[ "$(echo "$n" | tr 'A-Z_.' 'a-z--')" == "$key" ]] && { echo "${line%%;*}"; break; }; done)
  if [[ -z "$pin" ]]; then echo "gpu-wheels: $name is not pinned in constraints.txt" >&2; failed=1; continue; fi
  pin=${pin// /}
  if "$PY" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$DEST" "$pin" >/dev/null 2>&1; then
    echo "downloaded $pin"
  elif "$PY" -m pip wheel -q --no-deps -w "$DEST" "$pin" >/dev/null 2>&1; then
    echo "built      $pin (no wheel on PyPI)"
  else
    echo "gpu-wheels: FAILED $pin" >&2; failed=1
  fi
done < bench/gpu_wheels.txt
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
exit $failed
