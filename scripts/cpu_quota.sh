#!/usr/bin/env bash
# Run a command on a slower machine: inside a CPU cgroup limited to CORES cores' worth of time
# (CFS quota over a short period, so the slowdown is even rather than 100 ms stalls).
#
#   bash scripts/cpu_quota.sh 1.0 -- bash scripts/run.sh python -m snapflow_ros bench --node
#
# Needs root and a writable cgroup hierarchy (v2 at /sys/fs/cgroup with the cpu controller, or
# v1 at /sys/fs/cgroup/cpu). Everything the command starts (the node, its model process, the
# benchmark's publisher) shares the quota. The group is removed afterwards.
set -euo pipefail

usage() { echo "usage: $0 CORES -- COMMAND [ARGS...]   (CORES > 0, e.g. 1.0 or 0.5)" >&2; exit 2; }
[[ $# -ge 3 && $2 == "--" ]] || usage
cores=$1
shift 2
period=10000  # us
quota=$(awk -v c="$cores" 'BEGIN { if (c + 0 <= 0) exit 1; printf "%d", c * 10000 }') || usage

name="snapflow_quota_$$"
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then  # cgroup v2
  grep -qw cpu /sys/fs/cgroup/cgroup.controllers || {
    echo "cpu_quota: the cgroup v2 cpu controller is not available here" >&2; exit 1; }
  group=/sys/fs/cgroup/$name
  mkdir "$group" || { echo "cpu_quota: cannot create $group (needs root)" >&2; exit 1; }
  echo "$quota $period" > "$group/cpu.max"
  procs=$group/cgroup.procs
elif [[ -d /sys/fs/cgroup/cpu ]]; then  # cgroup v1
  group=/sys/fs/cgroup/cpu/$name
  mkdir "$group" || { echo "cpu_quota: cannot create $group (needs root)" >&2; exit 1; }
  echo "$period" > "$group/cpu.cfs_period_us"
  echo "$quota" > "$group/cpu.cfs_quota_us"
  procs=$group/cgroup.procs
else
  echo "cpu_quota: no cgroup cpu controller found under /sys/fs/cgroup" >&2
  exit 1
fi

cleanup() {
  # move anything left back to the root group, then remove ours
  if [[ -f $procs ]]; then
    while read -r pid; do echo "$pid" > "$(dirname "$group")/cgroup.procs" 2>/dev/null || true
    done < "$procs"
  fi
  rmdir "$group" 2>/dev/null || true
}
trap cleanup EXIT
echo "cpu_quota: $cores cores' worth of CPU time ($quota us every $period us) in $group" >&2
status=0
bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$procs" "$@" || status=$?
exit "$status"
