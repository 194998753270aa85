#!/usr/bin/env bash
# The prepared GPU benchmark: setup, `pytest -m gpu`, `bench --compare` (smolvla-full, pi05-full,
# bf16), the node benchmark on the GPU, distillation steps/s; one JSON file and a table.
# Budget: under 8 minutes on a fresh H100/H200 machine with this repo (setup included).
#
#   bash scripts/gpu_bench.sh                  # on the GPU machine
#   bash scripts/gpu_bench.sh --dry-run        # the same steps on CPU with the tiny models
#   bash scripts/gpu_bench.sh --out result.json --skip-setup
#   bash scripts/gpu_bench.sh --wheels .whl/core --steps pytest_gpu,compare_smolvla
#
# --wheels DIR: an offline machine whose Python already has torch (our borrowed GPU machines):
# instead of setup.sh, install DIR's wheels (python3 scripts/gpu_wheels.py downloads them) and
# this package into that Python, then run there. Other arguments go to scripts/gpu_bench.py.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SETUP=1
WHEELS=
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-setup) SETUP=0 ;;
    --wheels) WHEELS=${2:?--wheels needs a directory}; shift ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
PYTHON=${PYTHON:-python3}
start=$(date +%s.%N)
if [ -n "$WHEELS" ]; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || {
    echo "[gpu_bench] no wheels in $WHEELS: run 'python3 scripts/gpu_wheels.py' where pip works" >&2
    exit 2; }
  echo "[gpu_bench] installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $("$PYTHON" -c 'import sys; print(sys.prefix)')" >&2
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    "$WHEELS"/*.whl >&2
  rm -rf build ./*.egg-info
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --disable-pip-version-check \
    . >&2
  rm -rf build ./*.egg-info
  export SNAPFLOW_VENV
  SNAPFLOW_VENV=$("$PYTHON" -c 'import sys; print(sys.prefix)')
elif [ "$SETUP" = 1 ]; then
  bash scripts/setup.sh >&2
fi
SETUP_S=0
if [ -n "$WHEELS" ] || [ "$SETUP" = 1 ]; then
  SETUP_S=$("$PYTHON" -c "print(round($(date +%s.%N) - $start, 1))")
fi
exec bash scripts/run.sh python scripts/gpu_bench.py --setup-s "$SETUP_S" "${ARGS[@]+"${ARGS[@]}"}"
