"""Shared test setup: offline, ROS environment defaults, tiny random-weight policies."""

from __future__ import annotations

import itertools
import os
import random
import sys
import tempfile

# Before anything imports huggingface_hub/transformers/rclpy: ROS must find the venv's share
# directory and stay on loopback in its own domain; nothing may download (see pytest_configure).
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering on CPU (Mesa EGL)
os.environ.setdefault("SNAPFLOW_CACHE", tempfile.mkdtemp(prefix="snapflow_test_cache_"))

import pytest


def pytest_configure(config):
    """Offline unless the run selects the ``hub`` tests (``-m hub``)."""
    markexpr = config.getoption("markexpr") or ""
    if "hub" not in markexpr.replace("not hub", ""):
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


_FIRST_DOMAIN = int(os.environ["ROS_DOMAIN_ID"])
_tests = itertools.count()


@pytest.fixture(autouse=True)
def _own_ros_domain(monkeypatch):
    """Each test in a ROS domain of its own (1-100, in turn from the run's), claimed with a
    lock file so that test runs side by side on one machine never share one.

    No test then discovers the participants of an earlier test's killed node processes: until
    their lease expires (~20 s) Fast DDS 3.2 sends them heartbeats and then reaps them, and a
    timer callback that runs while this process deletes a reader can deadlock the delete
    (eProsima/Fast-DDS#6502, #6193); the delete holds the GIL, so pytest-timeout cannot fire
    (CI hung 600 s in a policy-node teardown). Module fixtures finish their ROS work in set-up.
    """
    import fcntl

    for _ in range(100):
        domain = 1 + (_FIRST_DOMAIN + next(_tests)) % 100
        lock = open(os.path.join(tempfile.gettempdir(),  # noqa: SIM115 (held for the test)
                                 f"snapflow_ros_test_domain_{domain}.lock"), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
        try:
            yield domain
        finally:
            lock.close()  # releases the claim
        return
    pytest.fail("ROS domains 1-100 are all claimed by other test runs on this machine")


@pytest.fixture
def tiny_teacher():
    """A fresh built-in tiny SmolVLA teacher (random weights, seed 0) wrapped for SnapFlow."""
    from snapflow_ros.policies import make_builtin

    return make_builtin("smolvla-tiny", seed=0)


@pytest.fixture(autouse=True)
def _scheduling_policy_unchanged():
    """No test may leave the test process real-time (SVT-AV1 does that; see sched_guard):
    every later test and child process would inherit it and could freeze the machine."""
    from snapflow_ros.sched_guard import current_policy, keep_scheduling_policy

    before = current_policy()
    with keep_scheduling_policy():
        yield
        after = current_policy()
    assert after == before, (f"the test changed the process's scheduling policy {before} -> "
                             f"{after} (restored); wrap the call in keep_scheduling_policy()")


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """A tool's ``main`` run in-process configures root logging onto the stream pytest
    captured for that test; later tests then logged into a closed file ("--- Logging error
    ---" tracebacks in the output). Each test's root handlers and level are put back."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
