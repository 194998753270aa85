"""``scripts/cpu_quota.sh``: a command run on N cores' worth of CPU (a slower machine)."""

import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cpu_quota.sh"


def _run(*args, **kw):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, **kw)


@pytest.mark.parametrize("args", [(), ("1.0",), ("1.0", "true"), ("0", "--", "true"),
                                  ("fast", "--", "true")])
def test_bad_arguments_print_the_usage(args):
    out = _run(*args)
    assert out.returncode == 2 and "usage:" in out.stderr


def test_the_command_runs_in_a_limited_group_that_is_removed_afterwards():
    # the command reports its own cgroup and that group's quota; exit code passed through
    probe = ('g=$(grep -E "(^0::|:cpu[,:])" /proc/self/cgroup | head -1 | cut -d: -f3); '
             'for f in /sys/fs/cgroup/cpu$g/cpu.cfs_quota_us /sys/fs/cgroup$g/cpu.max; do '
             '[ -f "$f" ] && echo "$g $(cat $f)"; done; exit 7')
    out = _run("0.5", "--", "bash", "-c", probe)
    if out.returncode == 1 and "cpu_quota:" in out.stderr:
        pytest.skip(f"no writable CPU cgroup here: {out.stderr.strip()}")
    assert out.returncode == 7, out.stderr
    group, quota = out.stdout.split()[0], out.stdout.split()[1]
    assert re.fullmatch(r".*/snapflow_quota_\d+", group), out.stdout
    assert quota == "5000", out.stdout  # 0.5 core: 5 ms of every 10 ms
    assert not any(Path(root + group).exists() for root in ("/sys/fs/cgroup/cpu",
                                                            "/sys/fs/cgroup"))
