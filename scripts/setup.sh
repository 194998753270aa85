#!/usr/bin/env bash
# Create or update the project's virtual environment and install snapflow_ros into it.
#
#   bash scripts/setup.sh            # venv at ./.venv (override with SNAPFLOW_VENV=/path)
#
# First run on a fresh machine: ~3 min and ~8.5 GB (lerobot 0.4.4 pulls torch 2.10, a CUDA build
# that also runs on CPU). Re-running when nothing changed takes about a second: dependencies are
# reinstalled only when requirements*.txt/constraints.txt change, the package only when its files do.
# The package is installed non-editably, so launch/ and config/ land in share/snapflow_ros, and
# every executable is linked into lib/snapflow_ros/ (where `ros2 run` / launch_ros look).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SNAPFLOW_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
cd "$ROOT"

log() { printf '[setup] %s\n' "$*"; }

"$PYTHON" - <<'PY' || { echo "[setup] snapflow_ros needs Python >= 3.10 (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# pip warns once per package about local mirror folders this machine's pip.conf names; hide that.
pip_quiet() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

deps_hash=$(hash_of requirements.txt constraints.txt requirements-nodeps.txt)
if [ "$(cat "$VENV/.snapflow_deps" 2>/dev/null)" != "$deps_hash" ]; then
  log "installing pinned dependencies (first run: ~3 min, ~8.5 GB)"
  start=$(date +%s)
  pip_quiet install -q -r requirements.txt -c constraints.txt
  pip_quiet install -q --no-deps -r requirements-nodeps.txt  # why: that file's header
  echo "$deps_hash" > "$VENV/.snapflow_deps"
  log "dependencies installed in $(( $(date +%s) - start )) s; venv size $(du -sh "$VENV" | cut -f1)"
fi

pkg_files=(setup.py setup.cfg package.xml resource/snapflow_ros)
while IFS= read -r f; do pkg_files+=("$f"); done < <(find snapflow_ros launch config -type f \
  \( -name '*.py' -o -name '*.yaml' -o -name '*.typed' -o -name '*.xml' \) | LC_ALL=C sort)
pkg_hash=$( { printf '%s\n' "${pkg_files[@]}"; hash_of "${pkg_files[@]}"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.snapflow_pkg" 2>/dev/null)" != "$pkg_hash" ]; then
  log "installing snapflow_ros (non-editable)"
  rm -rf build ./*.egg-info
  pip_quiet install -q --no-deps --no-build-isolation --force-reinstall .
  rm -rf build ./*.egg-info
  echo "$pkg_hash" > "$VENV/.snapflow_pkg"
fi
# `ros2 run` and launch_ros look for executables in <prefix>/lib/<package>/, but pip puts console
# scripts in <prefix>/bin/ (it ignores setup.cfg's install_scripts, which colcon honours), named
# snapflow-<tool> there: link each one into lib/ under its ROS name, so a system or source-built
# `ros2` finds every tool in this venv (`ros2 run snapflow_ros distill`).
libexec="$VENV/lib/snapflow_ros"
rm -rf "$libexec"
mkdir -p "$libexec"
"$VENV/bin/python" -c 'from snapflow_ros._tools import TOOLS, path_name
for tool in TOOLS: print(tool, path_name(tool))' | while read -r tool on_path; do
  ln -sfn "../../bin/$on_path" "$libexec/$tool"
done
log "ready: $VENV (run commands through scripts/run.sh, which sets the ROS environment)"
