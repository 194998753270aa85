"""Fixtures of the policy node tests (see policy_harness.py)."""

import pytest
import yaml
from policy_harness import Harness

from snapflow_ros.cpu_threads import apply_cpu_threads
from snapflow_ros.paths import config_path
from snapflow_ros.policies import make_builtin
from snapflow_ros.policies.runner import PolicyRunner


@pytest.fixture(scope="module")
def runner():
    apply_cpu_threads(1)  # the model shares this process with the executor and the test
    return PolicyRunner(make_builtin("smolvla-tiny"), device="cpu", seed=0)


@pytest.fixture
def topic_map_file(tmp_path):
    data = yaml.safe_load(config_path("topic_map.yaml").read_text())
    for cam in data["cameras"].values():
        cam.update(height=64, width=64)  # the tiny policy's native size
    path = tmp_path / "topic_map.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def compressed_topic_map_file(topic_map_file):
    data = yaml.safe_load(topic_map_file.read_text())
    for cam in data["cameras"].values():
        cam["type"] = "CompressedImage"
    path = topic_map_file.with_name("compressed.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def harness(runner, topic_map_file, compressed_topic_map_file):
    made = []

    def make(compressed=False, **params):
        tm = compressed_topic_map_file if compressed else topic_map_file
        h = Harness(runner, tm, compressed=compressed, **params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
