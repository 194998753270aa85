"""``snapflow_ros.cpu_threads``: auto follows the real affinity mask, apply sets torch's thread
count (checked in fresh processes, so nothing leaks into this one), bad counts are refused."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapflow_ros.cpu_threads import apply_cpu_threads, resolve_cpu_threads, thread_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from script_args import add_cpu_threads_argument, cpu_threads_arg  # noqa: E402

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_affinity = pytest.mark.skipif(not CPUS, reason="no sched_setaffinity on this platform")


def _child(code: str, *, cpus: list[int] | None = None, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (optionally pinned to ``cpus``); its printed JSON."""
    pin = f"import os; os.sched_setaffinity(0, {set(cpus)!r})\n" if cpus else ""
    run = subprocess.run([sys.executable, "-c", pin + code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _env_without_thread_vars() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


RESOLVE = """
import json
from snapflow_ros.cpu_threads import available_cores, resolve_cpu_threads as r
print(json.dumps({"cores": available_cores(), "auto": r(0, reserved=1),
                  "auto_no_reserve": r(0, reserved=0), "auto_reserve_5": r(0, reserved=5),
                  "explicit": r(3, reserved=1)}))
"""


@needs_affinity
def test_auto_follows_a_one_core_affinity_mask():
    got = _child(RESOLVE, cpus=CPUS[:1])
    assert got == {"cores": 1, "auto": 1, "auto_no_reserve": 1, "auto_reserve_5": 1,
                   "explicit": 3}


@pytest.mark.skipif(len(CPUS) < 2, reason="this process's affinity mask has fewer than 2 "
                    "cores (or none can be read): a two-core mask cannot be made")
def test_auto_leaves_the_reserved_cores_of_a_two_core_mask():
    got = _child(RESOLVE, cpus=CPUS[:2])
    assert got == {"cores": 2, "auto": 1, "auto_no_reserve": 2, "auto_reserve_5": 1,
                   "explicit": 3}


APPLY = """
import json, os
import torch
from snapflow_ros.cpu_threads import apply_cpu_threads
before = torch.get_num_threads()
wanted = {wanted}
got = apply_cpu_threads(wanted if wanted >= 0 else before + 1, reserved={reserved})
print(json.dumps({{"before": before, "returned": got, "torch": torch.get_num_threads(),
                  "interop": torch.get_num_interop_threads(),
                  "env": {{k: os.environ.get(k) for k in
                          ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}}}))
"""


def test_apply_sets_torchs_threads_in_a_fresh_process():
    got = _child(APPLY.format(wanted=-1, reserved=1), env=_env_without_thread_vars())
    n = got["before"] + 1  # differs from torch's own default
    assert got["returned"] == got["torch"] == n
    assert got["interop"] == 1
    assert got["env"] == {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n),
                          "OPENBLAS_NUM_THREADS": "1"}


@needs_affinity
def test_apply_auto_uses_the_affinity_mask_in_a_fresh_process():
    got = _child(APPLY.format(wanted=0, reserved=0), cpus=CPUS[:1],
                 env={**_env_without_thread_vars(), "OMP_NUM_THREADS": "4"})
    assert got["returned"] == got["torch"] == 1
    assert got["env"]["OMP_NUM_THREADS"] == "1"


def test_apply_does_not_import_torch():
    got = _child("import json, sys\nfrom snapflow_ros.cpu_threads import apply_cpu_threads\n"
                 "n = apply_cpu_threads(2)\n"
                 "print(json.dumps({'n': n, 'torch': 'torch' in sys.modules}))")
    assert got == {"n": 2, "torch": False}


@pytest.mark.parametrize("call", [lambda: resolve_cpu_threads(-1),
                                  lambda: apply_cpu_threads(-2, reserved=1)])
def test_negative_counts_are_refused_naming_cpu_threads(call):
    with pytest.raises(ValueError, match=r"cpu_threads must be >= 0 \(0 = auto\)"):
        call()


def test_thread_env_pins_openblas_to_one():
    assert thread_env(3) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3",
                             "OPENBLAS_NUM_THREADS": "1"}


def test_the_scripts_cli_option_defaults_to_auto_and_refuses_bad_counts(capsys):
    p = argparse.ArgumentParser()
    add_cpu_threads_argument(p, alias="--threads")
    assert p.parse_args([]).cpu_threads == 0
    assert p.parse_args(["--cpu-threads", "2"]).cpu_threads == 2
    assert p.parse_args(["--threads", "3"]).cpu_threads == 3  # the hidden old name
    assert "--threads" not in p.format_help()
    for bad in ("-1", "two"):
        with pytest.raises(SystemExit):
            p.parse_args(["--cpu-threads", bad])
        assert "cpu_threads must be" in capsys.readouterr().err
    with pytest.raises(argparse.ArgumentTypeError, match="cpu_threads must be >= 0"):
        cpu_threads_arg("-3")
