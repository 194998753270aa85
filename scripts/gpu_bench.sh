#!/usr/bin/env bash
# The prepared GPU benchmark: setup, `pytest -m gpu`, `bench --compare` (smolvla-full, pi05-full,
# bf16), the node benchmark on the GPU, distillation steps/s; one JSON file and a table.
# Budget: under 8 minutes on a fresh H100/H200 machine with this repo (setup included).
#
#   bash scripts/gpu_bench.sh                  # on the GPU machine
#   bash scripts/gpu_bench.sh --dry-run        # the same steps on CPU with the tiny models
#   bash scripts/gpu_bench.sh --out result.json --skip-setup
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SETUP=1
ARGS=()
for arg in "$@"; do
  case "$arg" in
    --skip-setup) SETUP=0 ;;
    *) ARGS+=("$arg") ;;
  esac
done
SETUP_S=0
if [ "$SETUP" = 1 ]; then
  start=$(date +%s.%N)
  bash scripts/setup.sh >&2
  SETUP_S=$(python3 -c "import sys; print(round($(date +%s.%N) - $start, 1))")
fi
exec bash scripts/run.sh python scripts/gpu_bench.py --setup-s "$SETUP_S" "${ARGS[@]+"${ARGS[@]}"}"
