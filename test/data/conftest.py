"""Fixtures of the converter tests: a tiny topic map (helpers live in ``bagkit``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from bagkit import JOINTS, H, W

from snapflow_ros.topic_map import load_topic_map


@pytest.fixture
def topic_map_file(tmp_path: Path) -> Path:
    """A tiny map: 10 fps, front (Image) and wrist (CompressedImage) at 12x16, joints a, b, c."""
    data = {
        "fps": 10, "robot_type": "test_arm",
        "cameras": {"front": {"topic": "cam/front", "type": "Image", "height": H, "width": W},
                    "wrist": {"topic": "cam/wrist", "type": "CompressedImage", "height": H,
                              "width": W}},
        "joint_states": {"topic": "joint_states", "joints": JOINTS},
        "action": {"topic": "cmd", "type": "JointState", "joints": JOINTS},
        "task": {"source": "fixed", "text": "stack the blocks"},
    }
    path = tmp_path / "topic_map.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def topic_map(topic_map_file: Path):
    return load_topic_map(topic_map_file)
