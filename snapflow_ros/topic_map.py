"""The topic map: one mapping from ROS topics to LeRobot features, shared by the bag converter,
the recorder, the policy node and the MuJoCo bridge (``config/topic_map.yaml``).

So a policy trained on converted bags runs on the live robot without re-mapping::

    camera <name>:  <topic> (sensor_msgs/Image | CompressedImage) → observation.images.<name>
                    (H, W, 3) uint8, resized to the map's height × width
    joint_states:   <topic> (sensor_msgs/JointState), by joint *name*  → observation.state (N,)
    action:         <topic> (JointState | JointTrajectory | Float64MultiArray) → action (M,)
    task:           fixed text, per bag, or a std_msgs/String topic → the LeRobot "task"

No ROS imports: pure data + YAML, usable from any layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from snapflow_ros.paths import config_path

IMAGE_TYPES = ("Image", "CompressedImage")
ACTION_TYPES = ("JointState", "JointTrajectory", "Float64MultiArray")
TASK_SOURCES = ("fixed", "per_bag", "topic")
STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."

#: ROS message type names as rosbags/typestores spell them.
ROS_TYPES = {
    "Image": "sensor_msgs/msg/Image",
    "CompressedImage": "sensor_msgs/msg/CompressedImage",
    "JointState": "sensor_msgs/msg/JointState",
    "JointTrajectory": "trajectory_msgs/msg/JointTrajectory",
    "Float64MultiArray": "std_msgs/msg/Float64MultiArray",
    "String": "std_msgs/msg/String",
}

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class TopicMapError(ValueError):
    """A topic map that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class CameraSpec:
    """One camera: its topic, message type and the size the policy sees."""

    name: str
    topic: str
    type: str = "Image"
    height: int = 224
    width: int = 224
    model_camera: str = ""  # the simulator's camera name when it differs (e.g. has a '/')

    @property
    def key(self) -> str:
        """The LeRobot feature key, ``observation.images.<name>``."""
        return IMAGE_PREFIX + self.name


@dataclass(frozen=True)
class JointStateSpec:
    """The joint-state topic and the joint names in policy (state vector) order."""

    topic: str
    joints: tuple[str, ...]


@dataclass(frozen=True)
class ActionSpec:
    """Where recorded actions come from and the joints (policy order) they command.

    ``type``: ``JointState`` (command positions by name), ``JointTrajectory`` (the first point
    of each message, by joint name) or ``Float64MultiArray`` (``data`` in ``joints`` order).
    """

    topic: str
    type: str = "JointState"
    joints: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """The language instruction: fixed text, one per bag (``--task`` / metadata), or a topic."""

    source: str = "fixed"
    text: str = ""
    topic: str = ""


@dataclass(frozen=True)
class TopicMap:
    """The whole mapping (see module docstring)."""

    fps: float
    cameras: tuple[CameraSpec, ...]
    joint_states: JointStateSpec
    action: ActionSpec
    task: TaskSpec = field(default_factory=TaskSpec)
    robot_type: str = "unknown"

    @property
    def state_names(self) -> list[str]:
        return list(self.joint_states.joints)

    @property
    def action_names(self) -> list[str]:
        return list(self.action.joints)

    def camera(self, name: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera {name!r} in the topic map (cameras: {self.camera_names})")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def lerobot_features(self, video: bool = False) -> dict[str, dict[str, Any]]:
        """LeRobotDataset ``features``: images (H, W, 3), state (N,), action (M,)."""
        features: dict[str, dict[str, Any]] = {
            cam.key: {
                "dtype": "video" if video else "image",
                "shape": (cam.height, cam.width, 3),
                "names": ["height", "width", "channels"],
            }
            for cam in self.cameras
        }
        features[STATE_KEY] = {"dtype": "float32", "shape": (len(self.state_names),),
                               "names": self.state_names}
        features[ACTION_KEY] = {"dtype": "float32", "shape": (len(self.action_names),),
                                "names": self.action_names}
        return features

    def to_dict(self) -> dict[str, Any]:
        """The YAML layout (``load_topic_map`` reads it back)."""
        return {
            "fps": self.fps,
            "robot_type": self.robot_type,
            "cameras": {c.name: {"topic": c.topic, "type": c.type, "height": c.height,
                                 "width": c.width} for c in self.cameras},
            "joint_states": {"topic": self.joint_states.topic,
                             "joints": list(self.joint_states.joints)},
            "action": {"topic": self.action.topic, "type": self.action.type,
                       "joints": list(self.action.joints)},
            "task": asdict(self.task),
        }


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data or data[key] in (None, ""):
        raise TopicMapError(f"{where}: '{key}' is required")
    return data[key]


def _unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = set(data) - allowed
    if extra:
        raise TopicMapError(f"{where}: unknown keys {sorted(extra)} (known: {sorted(allowed)})")


def _joints(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(j, str) for j in value):
        raise TopicMapError(f"{where}: 'joints' must be a non-empty list of joint names")
    dup = sorted({j for j in value if value.count(j) > 1})
    if dup:
        raise TopicMapError(f"{where}: duplicate joint names {dup}")
    return tuple(value)


def topic_map_from_dict(data: dict[str, Any], source: str = "topic map") -> TopicMap:
    """Validate a parsed topic map; every error names the key at fault."""
    if not isinstance(data, dict):
        raise TopicMapError(f"{source}: expected a mapping at the top level")
    _unknown(data, {"fps", "robot_type", "cameras", "joint_states", "action", "task"}, source)
    fps = float(_require(data, "fps", source))
    if not 0 < fps <= 1000:
        raise TopicMapError(f"{source}: fps must be in (0, 1000], got {fps}")

    cams_raw = _require(data, "cameras", source)
    if not isinstance(cams_raw, dict) or not cams_raw:
        raise TopicMapError(f"{source}: 'cameras' must map camera names to their settings")
    cameras = []
    for name, spec in cams_raw.items():
        where = f"{source}: cameras.{name}"
        if not _NAME.match(str(name)):
            raise TopicMapError(f"{where}: camera names must be identifiers (letters, digits, _)")
        spec = spec or {}
        _unknown(spec, {"topic", "type", "height", "width", "model_camera"}, where)
        cam = CameraSpec(name=str(name), topic=str(_require(spec, "topic", where)),
                         type=str(spec.get("type", "Image")), height=int(spec.get("height", 224)),
                         width=int(spec.get("width", 224)),
                         model_camera=str(spec.get("model_camera") or ""))
        if cam.type not in IMAGE_TYPES:
            raise TopicMapError(f"{where}: type must be one of {IMAGE_TYPES}, got {cam.type!r}")
        if cam.height < 1 or cam.width < 1:
            raise TopicMapError(f"{where}: height and width must be >= 1")
        cameras.append(cam)

    js_raw = _require(data, "joint_states", source) or {}
    _unknown(js_raw, {"topic", "joints"}, f"{source}: joint_states")
    joint_states = JointStateSpec(topic=str(_require(js_raw, "topic", f"{source}: joint_states")),
                                  joints=_joints(js_raw.get("joints"), f"{source}: joint_states"))

    act_raw = _require(data, "action", source) or {}
    _unknown(act_raw, {"topic", "type", "joints"}, f"{source}: action")
    action = ActionSpec(
        topic=str(_require(act_raw, "topic", f"{source}: action")),
        type=str(act_raw.get("type", "JointState")),
        joints=_joints(act_raw["joints"], f"{source}: action") if act_raw.get("joints")
        else joint_states.joints,
    )
    if action.type not in ACTION_TYPES:
        raise TopicMapError(f"{source}: action.type must be one of {ACTION_TYPES}, "
                            f"got {action.type!r}")

    task_raw = data.get("task") or {}
    _unknown(task_raw, {"source", "text", "topic"}, f"{source}: task")
    task = TaskSpec(source=str(task_raw.get("source", "fixed")),
                    text=str(task_raw.get("text", "")), topic=str(task_raw.get("topic", "")))
    if task.source not in TASK_SOURCES:
        raise TopicMapError(f"{source}: task.source must be one of {TASK_SOURCES}, "
                            f"got {task.source!r}")
    if task.source == "topic" and not task.topic:
        raise TopicMapError(f"{source}: task.source is 'topic' but task.topic is empty")

    topics = [c.topic for c in cameras] + [joint_states.topic, action.topic]
    dup = sorted({t for t in topics if topics.count(t) > 1 and t != joint_states.topic})
    if dup:
        raise TopicMapError(f"{source}: topics used twice: {dup}")
    return TopicMap(fps=fps, cameras=tuple(cameras), joint_states=joint_states, action=action,
                    task=task, robot_type=str(data.get("robot_type", "unknown")))


def load_topic_map(path: str | Path | None = None) -> TopicMap:
    """Read a topic map YAML (default: the packaged ``config/topic_map.yaml``)."""
    path = Path(path) if path else config_path("topic_map.yaml")
    if not path.is_file():
        raise TopicMapError(f"topic map '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TopicMapError(f"topic map '{path}' is not valid YAML: {err}") from err
    return topic_map_from_dict(data, source=str(path))


def check_policy_interface(camera_names: Sequence[str], state_dim: int, action_dim: int,
                           cameras: Sequence[str], state_joints: Sequence[str],
                           action_joints: Sequence[str]) -> None:
    """Raise a ValueError unless the topic map provides what the policy reads."""
    problems = []
    missing = [c for c in camera_names if c not in cameras]
    if missing:
        problems.append(f"the policy reads cameras {list(camera_names)} but the topic map has "
                        f"{list(cameras)} (missing {missing})")
    if len(state_joints) != state_dim:
        problems.append(f"the policy's state has {state_dim} dims but the topic map lists "
                        f"{len(state_joints)} joints")
    if len(action_joints) != action_dim:
        problems.append(f"the policy's action has {action_dim} dims but the topic map lists "
                        f"{len(action_joints)} action joints")
    if problems:
        raise ValueError("policy and topic map do not match: " + "; ".join(problems))
