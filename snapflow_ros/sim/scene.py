"""A MuJoCo scene addressed by names: joints, position actuators, cameras, offscreen rendering.

Any MJCF works as long as it has the joints and cameras the topic map names (the map's names
*are* the MJCF names) and one position actuator per commanded joint. Every name error lists
what the scene has. Units: radians (hinge) or metres (slide), seconds; images are (H, W, 3)
uint8 RGB rendered on CPU (EGL/OSMesa) with shadows, reflections and multisampling off.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mujoco
import numpy as np

from snapflow_ros.sim import GL_BACKEND

log = logging.getLogger(__name__)

#: The packaged default scene (6-joint arm, two targets, cameras front and wrist).
DEFAULT_SCENE = "reach_two_targets.xml"
HOME_KEY = "home"


class SceneError(ValueError):
    """A scene that cannot serve the topic map; the message lists what the scene has."""


class RenderError(RuntimeError):
    """Offscreen rendering failed; the message names the GL backend and the fix."""


@dataclass(frozen=True)
class SceneCamera:
    """A camera to render: its name (the topic map's), the image size in pixels, and the MJCF
    camera's name when it differs (``model_camera``: MJCF names may hold '/', ours may not)."""

    name: str
    height: int = 224
    width: int = 224
    model_camera: str = ""

    @property
    def mjcf_name(self) -> str:
        return self.model_camera or self.name


def default_scene_path() -> Path:
    """Path of the packaged default scene (found next to this module, not via share/)."""
    return Path(str(resources.files("snapflow_ros.sim").joinpath("assets", DEFAULT_SCENE)))


def _names(model: mujoco.MjModel, obj: mujoco.mjtObj, count: int) -> list[str]:
    return [mujoco.mj_id2name(model, obj, i) or f"<unnamed {i}>" for i in range(count)]


def load_model(path: str | Path | None) -> mujoco.MjModel:
    """Load an MJCF file (None or "" = the packaged default); errors say what to change."""
    path = Path(path) if path else default_scene_path()
    if not path.is_file():
        raise SceneError(
            f"scene file '{path}' does not exist: set the 'scene' parameter to an MJCF file, or "
            f"leave it empty for the packaged default ({DEFAULT_SCENE})"
        )
    try:
        return mujoco.MjModel.from_xml_path(str(path))
    except ValueError as err:
        raise SceneError(f"scene file '{path}' is not a loadable MJCF model: {err}") from err


class Scene:
    """Model + data + name lookups for the joints and cameras one topic map uses.

    Args:
        model: the loaded model (``load_model``).
        joints: hinge/slide joints whose state is read (N,), in state order.
        cameras: cameras to render.
        physics_rate_hz: overrides the model's timestep (1 / rate); 0 keeps the MJCF's.
        actuated: what the action commands (M,), in action order (default: ``joints``): each
            entry a joint driven by a position actuator, or the name of a position actuator
            itself (any transmission: a tendon gripper, a joint); ``<position>`` makes them
            (an affine bias, ``force = kp·(ctrl − length)``). A joint entry reads and targets
            the joint position; an actuator entry its length (``actuator_length``, the
            tendon's or joint's length times the gear). Motor, velocity or other actuators
            are refused, naming them (this bridge commands positions). ``lower``/``upper``:
            joint ranges, or actuator ctrlranges (±inf where unlimited).
    """

    def __init__(self, model: mujoco.MjModel, joints: Sequence[str],
                 cameras: Sequence[SceneCamera] = (), physics_rate_hz: float = 0.0,
                 actuated: Sequence[str] | None = None, keyframe: str = "") -> None:
        if physics_rate_hz < 0:
            raise SceneError(f"physics_rate_hz must be >= 0 (0 = the MJCF's), got "
                             f"{physics_rate_hz}")
        self.model = model
        self.mjcf_timestep = float(model.opt.timestep)  # the model's own, before any override
        if physics_rate_hz:
            model.opt.timestep = 1.0 / physics_rate_hz
        self.data = mujoco.MjData(model)
        self.joint_names = tuple(joints)
        self.actuated = tuple(actuated) if actuated is not None else self.joint_names
        self.cameras = tuple(cameras)
        jids = self._joint_ids(self.joint_names)
        self.qpos_adr = model.jnt_qposadr[jids].astype(np.intp)
        self.dof_adr = model.jnt_dofadr[jids].astype(np.intp)
        act_jids, self.actuator_ids = self._actuated_entries(self.actuated)
        self._by_actuator = act_jids < 0  # entries read through actuator_length
        joint_rows = np.where(self._by_actuator, 0, act_jids)
        self.act_qpos_adr = np.where(self._by_actuator, -1,
                                     model.jnt_qposadr[joint_rows]).astype(np.intp)
        self.act_dof_adr = np.where(self._by_actuator, -1,
                                    model.jnt_dofadr[joint_rows]).astype(np.intp)
        self._lookup(mujoco.mjtObj.mjOBJ_CAMERA, model.ncam,
                     [c.mjcf_name for c in self.cameras], "camera")
        limited = np.where(self._by_actuator,
                           model.actuator_ctrllimited[self.actuator_ids].astype(bool),
                           model.jnt_limited[joint_rows].astype(bool))
        lo = np.where(self._by_actuator, model.actuator_ctrlrange[self.actuator_ids, 0],
                      model.jnt_range[joint_rows, 0])
        hi = np.where(self._by_actuator, model.actuator_ctrlrange[self.actuator_ids, 1],
                      model.jnt_range[joint_rows, 1])
        self.lower = np.where(limited, lo, -np.inf)
        self.upper = np.where(limited, hi, np.inf)
        self._cameras = CameraRenderer(model, self.cameras)
        self.home_key, self.initial_pose = self._initial_keyframe(keyframe)
        self.reset()

    def _initial_keyframe(self, name: str) -> tuple[int, str]:
        """(keyframe id or -1, a description): ``name`` when given, else ``home`` if the model
        has it, else its first keyframe, else the model's defaults (qpos0)."""
        m = self.model
        if name:
            key = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_KEY, name)
            if key < 0:
                have = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_KEY, k) or f"#{k} (unnamed)"
                        for k in range(m.nkey)]
                raise SceneError(f"the scene has no keyframe {name!r}; its keyframes are "
                                 f"{have or 'none'} (empty keyframe: home, else the first)")
            return key, f"keyframe {name!r}"
        key = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_KEY, HOME_KEY)
        if key >= 0:
            return key, f"keyframe {HOME_KEY!r}"
        if m.nkey > 0:
            label = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_KEY, 0)
            return 0, f"keyframe {label!r}" if label else "the first keyframe (unnamed)"
        return -1, "the model's defaults (qpos0; no keyframe)"

    def _joint_ids(self, names: Sequence[str]) -> np.ndarray:
        jids = self._lookup(mujoco.mjtObj.mjOBJ_JOINT, self.model.njnt, names, "joint")
        hinge_slide = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
        bad = [n for n, j in zip(names, jids, strict=True)
               if int(self.model.jnt_type[j]) not in hinge_slide]
        if bad:
            raise SceneError(f"joints {bad} are not hinge or slide joints; only those can be "
                             f"published and commanded by position")
        return jids

    def _lookup(self, obj: mujoco.mjtObj, count: int, names: Sequence[str],
                kind: str) -> np.ndarray:
        ids = [mujoco.mj_name2id(self.model, obj, n) for n in names]
        missing = [n for n, i in zip(names, ids, strict=True) if i < 0]
        if missing:
            have = _names(self.model, obj, count)
            raise SceneError(
                f"the scene has no {kind}(s) {missing} that the topic map names; the scene's "
                f"{kind}s are {have} (rename them in the MJCF or in the topic map"
                f"{'; or give the MJCF name as model_camera' if kind == 'camera' else ''})"
            )
        return np.asarray(ids, dtype=np.intp)

    def _actuated_entries(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(joint id or -1 for an actuator entry, position actuator id) per action entry."""
        m = self.model
        servos = {a for a in range(m.nu)
                  if int(m.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_AFFINE)
                  and m.actuator_biasprm[a, 1] < 0}
        on_joint = {int(m.actuator_trnid[a, 0]): a for a in sorted(servos)
                    if int(m.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)}
        jids, aids, problems = [], [], []
        for name in names:
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
            aid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name)
            if jid >= 0 and jid in on_joint:
                jids.append(jid)
                aids.append(on_joint[jid])
                self._joint_ids([name])  # hinge or slide
            elif aid >= 0 and aid in servos:
                jids.append(-1)
                aids.append(aid)
            elif aid >= 0:
                problems.append(f"actuator {name!r} is not a position servo (a motor, velocity "
                                f"or other actuator); this bridge commands positions: use "
                                f"<position> for it")
            elif jid >= 0:
                drivers = [_actuator_label(m, a) for a in range(m.nu)
                           if int(m.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)
                           and int(m.actuator_trnid[a, 0]) == jid]
                problems.append(f"joint {name!r} has no position actuator"
                                + (f" (driven by {drivers}, not position servos)" if drivers
                                   else ""))
            else:
                problems.append(f"{name!r} is neither a joint nor an actuator")
        if problems:
            have = [_actuator_label(m, a) for a in range(m.nu)]
            raise SceneError(
                f"the action entries cannot be commanded: {'; '.join(problems)}. Name a joint "
                f"with a position actuator (add <position joint=...> in the MJCF <actuator> "
                f"section) or a position actuator; the scene's actuators are {have}")
        return np.asarray(jids, dtype=np.intp), np.asarray(aids, dtype=np.intp)

    # -- state ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the initial keyframe (``initial_pose``) at rest; the targets hold that pose."""
        if self.home_key >= 0:
            mujoco.mj_resetDataKeyframe(self.model, self.data, self.home_key)
        else:
            mujoco.mj_resetData(self.model, self.data)
        self.data.ctrl[self.actuator_ids] = self.actuated_positions()
        mujoco.mj_forward(self.model, self.data)

    def forward(self) -> None:
        """Recompute kinematics for the current state (``mj_step`` leaves them one step old)."""
        mujoco.mj_forward(self.model, self.data)

    @property
    def timestep(self) -> float:
        """Physics step in seconds."""
        return float(self.model.opt.timestep)

    def step(self, n: int = 1) -> None:
        """Advance ``n`` physics steps."""
        for _ in range(n):
            mujoco.mj_step(self.model, self.data)

    def joint_positions(self) -> np.ndarray:
        """(N,) joint positions in policy order."""
        return self.data.qpos[self.qpos_adr].copy()

    def joint_velocities(self) -> np.ndarray:
        """(N,) joint velocities in policy order."""
        return self.data.qvel[self.dof_adr].copy()

    def actuated_positions(self) -> np.ndarray:
        """(M,) positions of the action entries, in action order: joint positions, and
        actuator lengths for actuator entries."""
        return np.where(self._by_actuator, self.data.actuator_length[self.actuator_ids],
                        self.data.qpos[np.where(self._by_actuator, 0, self.act_qpos_adr)])

    def joint_efforts(self) -> np.ndarray:
        """(N,) actuator forces on the joints (N·m or N)."""
        return self.data.qfrc_actuator[self.dof_adr].copy()

    def joint_targets(self) -> np.ndarray:
        """(M,) current position-actuator targets, in action order."""
        return self.data.ctrl[self.actuator_ids].copy()

    def set_joint_targets(self, q: np.ndarray) -> None:
        """Position targets (M,) in action order, clipped to the actuators' ctrlrange."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.actuated),):
            raise ValueError(f"expected {len(self.actuated)} joint targets "
                             f"{list(self.actuated)}, got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"joint targets must be finite, got {q.tolist()}")
        ids = self.actuator_ids
        limited = self.model.actuator_ctrllimited[ids].astype(bool)
        lo, hi = self.model.actuator_ctrlrange[ids].T
        self.data.ctrl[ids] = np.where(limited, np.clip(q, lo, hi), q)

    # -- rendering --------------------------------------------------------------------------
    def render(self, camera: SceneCamera) -> np.ndarray:
        """(H, W, 3) uint8 RGB from ``camera`` of the current state."""
        self.forward()
        return self._cameras.render(self.data, camera)

    def render_all(self) -> dict[str, np.ndarray]:
        """Every configured camera, by name."""
        self.forward()
        return self._cameras.render_all(self.data)

    def close(self) -> None:
        """Free the GL contexts."""
        self._cameras.close()


class CameraRenderer:
    """Offscreen renderers for a model's cameras, one per image size (an OpenGL context each,
    current in the thread that created it: use an instance from one thread only)."""

    def __init__(self, model: mujoco.MjModel, cameras: Sequence[SceneCamera]) -> None:
        self.model, self.cameras = model, tuple(cameras)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    def _renderer(self, height: int, width: int) -> mujoco.Renderer:
        key = (height, width)
        if key not in self._renderers:
            vis = self.model.vis
            vis.global_.offwidth = max(vis.global_.offwidth, width)
            vis.global_.offheight = max(vis.global_.offheight, height)
            vis.quality.offsamples = 0
            try:
                self._renderers[key] = mujoco.Renderer(self.model, height, width)
                log.debug("offscreen renderer %dx%d (MUJOCO_GL=%s)", width, height, GL_BACKEND)
            except Exception as err:  # the GL backends raise many different types
                raise RenderError(
                    f"offscreen rendering failed with MUJOCO_GL={GL_BACKEND}: {err}. Use "
                    f"MUJOCO_GL=egl (Mesa EGL: libegl1 libegl-mesa0 libgl1-mesa-dri) or "
                    f"MUJOCO_GL=osmesa (libosmesa6), set before the process starts"
                ) from err
        return self._renderers[key]

    def render(self, data: mujoco.MjData, camera: SceneCamera) -> np.ndarray:
        """(H, W, 3) uint8 RGB from ``camera`` of ``data`` (its kinematics computed)."""
        renderer = self._renderer(camera.height, camera.width)
        renderer.update_scene(data, camera=camera.mjcf_name)
        flags = renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return renderer.render()

    def render_all(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """Every camera of ``data``, by name."""
        return {cam.name: self.render(data, cam) for cam in self.cameras}

    def close(self) -> None:
        """Free the GL contexts."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


def _actuator_label(model: mujoco.MjModel, a: int) -> str:
    """``name->target`` for an error message: the joint or tendon it drives, by type."""
    name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, a) or f"#{a}"
    kind = int(model.actuator_trntype[a])
    target, tid = "?", int(model.actuator_trnid[a, 0])
    if kind == int(mujoco.mjtTrn.mjTRN_JOINT):
        target = f"joint {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, tid)}"
    elif kind == int(mujoco.mjtTrn.mjTRN_TENDON):
        target = f"tendon {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_TENDON, tid)}"
    elif kind == int(mujoco.mjtTrn.mjTRN_SITE):
        target = f"site {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_SITE, tid)}"
    return f"{name}->{target}"
