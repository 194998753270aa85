"""ProcessRunner: the policy in a process of its own, fed through shared memory."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from snapflow_ros.inference.process_runner import ProcessRunner, WorkerError, slot_layout
from snapflow_ros.policies import make_builtin
from snapflow_ros.policies.runner import PolicyRunner
from snapflow_ros.timing import StageTimer
from snapflow_ros.waiting import wait_until

SHAPES = {"front": (64, 64), "wrist": (64, 64)}


@pytest.fixture(scope="module")
def worker():
    runner = ProcessRunner("smolvla-tiny", SHAPES, device="cpu", seed=0, cpu_threads=1,
                           warmup_iters=1)
    yield runner
    runner.close()


def _obs(seed):
    rng = np.random.default_rng(seed)
    images = {n: rng.integers(0, 256, (*s, 3), dtype=np.uint8) for n, s in SHAPES.items()}
    return images, rng.normal(size=6)


def test_the_worker_computes_what_the_policy_computes_in_process(worker):
    local = PolicyRunner(make_builtin("smolvla-tiny"), device="cpu", seed=0)
    assert worker.camera_names == local.camera_names
    assert (worker.state_dim, worker.action_dim, worker.chunk_size, worker.n_action_steps) == (
        local.state_dim, local.action_dim, local.chunk_size, local.n_action_steps)
    for seed in range(3):
        images, state = _obs(seed)
        timer = StageTimer()
        remote = worker.predict_chunk(images, state, "reach the target", timer)
        assert remote.shape == (local.chunk_size, local.action_dim) and remote.dtype == np.float64
        np.testing.assert_allclose(remote, local.predict_chunk(images, state, "reach the target"),
                                   rtol=1e-5, atol=1e-5)
        assert len(timer.durations["expert"]) == 10 and timer.total("prefix") > 0


def test_num_steps_travel_with_each_request(worker):
    images, state = _obs(7)
    timer = StageTimer()
    worker.set_num_steps(1)
    worker.predict_chunk(images, state, "reach", timer)
    assert len(timer.durations["expert"]) == 1
    worker.set_num_steps(0)  # back to the checkpoint's default
    assert worker.num_steps == 10
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        worker.set_num_steps(-1)


def test_interface_checks_and_wrong_image_shapes(worker):
    with pytest.raises(ValueError, match="missing"):
        worker.check_interface(["front"], [f"j{i}" for i in range(6)], [f"j{i}" for i in range(6)])
    images, state = _obs(0)
    images["front"] = images["front"][:32]
    with pytest.raises(ValueError, match="camera front"):
        worker.predict_chunk(images, state, "reach")


def test_a_failing_request_is_reported_and_the_worker_goes_on(worker):
    images, state = _obs(0)
    with pytest.raises(WorkerError, match="the policy failed"):
        worker.predict_chunk(images, np.zeros(3), "reach")  # wrong state size
    assert worker.predict_chunk(images, state, "reach").shape[0] == worker.chunk_size


def test_unknown_policies_fail_at_start_with_a_hint():
    with pytest.raises(WorkerError, match="did you mean the built-in 'smolvla-tiny'"):
        ProcessRunner("smolvla-tny", SHAPES, device="cpu")


def test_a_killed_worker_is_reported_not_hung():
    runner = ProcessRunner("smolvla-tiny", SHAPES, device="cpu", cpu_threads=1, warmup_iters=0)
    try:
        os.kill(runner.info["pid"], signal.SIGKILL)
        images, state = _obs(0)
        with pytest.raises(WorkerError, match="killed by signal 9"):
            runner.predict_chunk(images, state, "reach")
        assert not runner.alive
    finally:
        runner.close()


def test_the_worker_uses_the_requested_threads_and_dies_with_the_node():
    """A node process killed with SIGKILL takes its worker with it (no orphaned model)."""
    code = ("import time; from snapflow_ros.inference.process_runner import ProcessRunner;"
            "r = ProcessRunner('smolvla-tiny', {'front': (64, 64), 'wrist': (64, 64)},"
            " device='cpu', cpu_threads=1, warmup_iters=0);"
            "print(r.info['pid'], flush=True); time.sleep(60)")
    node = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(node.stdout.readline())
    proc = Path(f"/proc/{pid}")
    assert b"OMP_NUM_THREADS=1" in (proc / "environ").read_bytes().split(b"\0")
    node.kill()
    node.wait()
    def gone():
        try:
            return (proc / "stat").read_text().split()[2] == "Z"  # a zombie: it has exited
        except FileNotFoundError:
            return True

    wait_until(gone, 5.0, "the inference worker to die with its node")


def test_slots_are_aligned_and_disjoint():
    offsets, total = slot_layout({"a": (3, 5), "b": (64, 64)})
    assert offsets == {"a": 0, "b": 64} and total == 64 + 64 * 64 * 3


def test_close_stops_an_idle_worker_politely_and_a_busy_one_at_once():
    """An idle worker reads "stop" and exits 0; one computing a chunk is killed at once instead
    of finishing it (a node's stop waited for that chunk)."""
    runner = ProcessRunner("smolvla-tiny", SHAPES, device="cpu", cpu_threads=1, warmup_iters=0)
    runner.close(timeout_s=30.0)
    assert runner.exit_code == 0

    runner = ProcessRunner("smolvla-tiny", SHAPES, device="cpu", cpu_threads=1, warmup_iters=0)
    runner.set_num_steps(500)  # a chunk of seconds: the 60 s below would see it end
    errors: list[BaseException] = []

    def predict():
        try:
            runner.predict_chunk(*_obs(0), "reach")
        except BaseException as err:  # handed to the test
            errors.append(err)

    thread = threading.Thread(target=predict)
    thread.start()
    try:
        wait_until(lambda: runner.busy, 10.0, "the request to be sent")
        runner.close(timeout_s=60.0)
        assert runner.exit_code == -signal.SIGKILL
    finally:
        runner.close()
        thread.join(10.0)
    assert len(errors) == 1 and isinstance(errors[0], WorkerError), errors
