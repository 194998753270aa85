#!/usr/bin/env bash
# Check `gpu_bench.sh --wheels` without a GPU: a fresh venv holding only the GPU image's packages
# (scripts/gpu_image_packages.txt; anything pip adds beyond them is removed again), this Python's
# build of both wheel parts (scripts/gpu_wheels.py), then the two device calls of the README with
# --dry-run (CPU, tiny models). Needs pip access and ~6 GB in $TMPDIR; ~4 min on 2 cores.
#
#   bash scripts/gpu_offline_check.sh            # prints both tables; exit 0 if every step ran
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d -t snapflow_gpu_offline.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
log() { printf '[gpu_offline_check] %s\n' "$*" >&2; }
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# What this check does not install: GPU-only stacks (JAX, CuPy, CUDA libraries pip brings with
# torch anyway) and large packages nothing of ours imports.
SKIP='^(jax|cupy|flax|optax|orbax|chex|tensorstore|diffrax|equinox|lineax|optimistix|numpyro|e3nn|botorch|gpytorch|linear-operator|lightning|pytorch-lightning|torch-geometric|torchmetrics|torchaudio|sentence-transformers|peft|timm|numba|llvmlite|mpi4py|nvidia-|cuda-|triton|onnx|tensorboard|sacrebleu|pyre-extensions|treescope|statsmodels|seaborn|xarray|scikit-learn)'
# The versions of the image where they matter, or the nearest that install on this Python.
cat > "$WORK/constraints.txt" <<'PINS'
torch==2.14.1
torchvision==0.29.1
numpy==2.4.6
transformers==5.17.0
huggingface-hub==1.33.0
tokenizers==0.23.2
safetensors==0.8.0
accelerate==1.15.0
PINS

normal() { sed 's/==.*//; s/[-_.]\+/-/g' | tr 'A-Z' 'a-z' | sort -u; }
grep -vE '^\s*(#|$)' scripts/gpu_image_packages.txt | normal > "$WORK/image"
log "venv with the GPU image's packages in $WORK/venv"
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
quiet "$PY" -m pip install -q --disable-pip-version-check -c "$WORK/constraints.txt" \
  $(grep -vE "$SKIP" "$WORK/image")
"$PY" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null | normal > "$WORK/installed"
extra=$(comm -23 "$WORK/installed" "$WORK/image" | grep -vxE 'pip|setuptools|wheel' || true)
if [ -n "$extra" ]; then
  log "removing what pip added beyond the image: $(echo $extra)"
  "$PY" -m pip uninstall -y -q $extra
fi

version=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
log "wheels for Python $version"
quiet python3 scripts/gpu_wheels.py --python-version "$version" --out "$WORK/whl"

rc=0
log "call 1: --wheels core"
PYTHON="$PY" bash scripts/gpu_bench.sh --wheels "$WORK/whl/core" --dry-run \
  --steps pytest_gpu,compare_smolvla,compare_pi05 --out "$WORK/core.json" || rc=1
log "call 2: --wheels ros"
PYTHON="$PY" bash scripts/gpu_bench.sh --wheels "$WORK/whl/ros" --dry-run \
  --steps node_bench,distill --out "$WORK/ros.json" || rc=1
log "$([ $rc = 0 ] && echo "every step ran" || echo "FAILED: see the tables above")"
exit $rc
