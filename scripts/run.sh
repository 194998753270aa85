#!/usr/bin/env bash
# Run a command inside the project's venv with the environment ROS 2 needs:
#   AMENT_PREFIX_PATH             the venv prefix (the ROS wheels don't set it; without it no
#                                 share directory, e.g. share/snapflow_ros/config, is found)
#   ROS_AUTOMATIC_DISCOVERY_RANGE LOCALHOST (keep DDS traffic on loopback)
#   ROS_DOMAIN_ID                 a per-run id unless already set, so parallel runs don't meet
#   OPENBLAS_NUM_THREADS          1 (idle BLAS threads otherwise eat a core in ROS processes)
# Usage: bash scripts/run.sh python -m snapflow_ros demo
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SNAPFLOW_VENV:-$ROOT/.venv}
[ -x "$VENV/bin/python" ] || { echo "no venv at $VENV: run 'bash scripts/setup.sh' first" >&2; exit 1; }
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
exec "$@"
