"""``mujoco_bridge``: a MuJoCo scene on the topic map's topics, with sim time on ``/clock``.

::

    /clock (rosgraph_msgs/Clock) ◄─┐
    <camera topics> (Image rgb8) ◄─┤            ┌─◄ <action topic> (JointState by name, or the
    joint_states (JointState)    ◄─┼─ MuJoCo ◄──┤    map's action type): per-step targets
    episode/status (String JSON) ◄─┤  sim/      └─◄ action_chunk (JointTrajectory): sampled on
    episode/{success,done,active} ◄┘                 sim time like joint_trajectory_controller
    ~/reset (std_srvs/Trigger): new episode seeded by the ``seed`` parameter
    /diagnostics: rates, render time, rejected commands, lock-step waits

Every stamp is sim time (ns since the bridge started; monotonic across resets). The bridge
steps on a steady wall-clock timer, so it must not itself run with ``use_sim_time``. Bad
commands are rejected with a throttled warning and counted in /diagnostics; the node keeps
running. The stepping logic lives in ``sim/runner.py``; this file only converts.
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.conversions.image import fill_image_msg
from snapflow_ros.conversions.joints import JointConversionError, JointOrder
from snapflow_ros.conversions.stamps import NS, fill_stamp, stamp_to_ns
from snapflow_ros.nodes import shutdown
from snapflow_ros.nodes.mujoco_bridge_params import MujocoBridgeParams
from snapflow_ros.nodes.params import declare, help_requested, updated, usage
from snapflow_ros.sim.env import EpisodeStatus, MujocoEnv
from snapflow_ros.sim.runner import SimRunner
from snapflow_ros.sim.scene import Scene, SceneCamera, load_model
from snapflow_ros.sim.tasks import make_task
from snapflow_ros.sim.trajectory import TrajectoryError
from snapflow_ros.topic_map import TopicMap, load_topic_map

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def task_name(params: MujocoBridgeParams) -> str:
    """The task to run: the parameter, or for an empty one the packaged scene's task on the
    packaged scene and none on a scene of the user's (which has no reach targets)."""
    return params.task or ("none" if params.scene else "reach_two_targets")


def build_runner(params: MujocoBridgeParams, topic_map: TopicMap) -> SimRunner:
    """Scene + task + env + runner from the parameters; raises ``SceneError`` naming names."""
    cameras = [SceneCamera(c.name, c.height, c.width, c.model_camera) for c in topic_map.cameras]
    scene = Scene(load_model(params.scene), topic_map.state_names, cameras,
                  params.physics_rate_hz, actuated=topic_map.action_names,
                  keyframe=params.keyframe)
    env = MujocoEnv(scene, make_task(task_name(params), scene), params.episode_timeout_s)
    return SimRunner(env, params.runner_config())


class _Publishers:
    """The runner's ``Sink``: turns its outputs into messages."""

    def __init__(self, node: Node, topic_map: TopicMap) -> None:
        self.clock_pub = node.create_publisher(ClockMsg, "/clock", 10)
        self.joint_pub = node.create_publisher(JointState, topic_map.joint_states.topic, 10)
        self.image_pubs = {c.name: node.create_publisher(Image, c.topic, 5)
                           for c in topic_map.cameras}
        self.status_pub = node.create_publisher(String, "episode/status", LATCHED)
        self.success_pub = node.create_publisher(Bool, "episode/success", LATCHED)
        self.done_pub = node.create_publisher(Bool, "episode/done", LATCHED)
        self.active_pub = node.create_publisher(Bool, "episode/active", LATCHED)
        self.joint_names = list(topic_map.state_names)
        self.context = node.context

    def clock(self, stamp_ns: int) -> None:
        msg = ClockMsg()
        fill_stamp(msg.clock, stamp_ns)
        self.clock_pub.publish(msg)

    def joints(self, stamp_ns: int, position: np.ndarray, velocity: np.ndarray,
               effort: np.ndarray) -> None:
        msg = JointState(name=self.joint_names, position=position.tolist(),
                         velocity=velocity.tolist(), effort=effort.tolist())
        fill_stamp(msg.header.stamp, stamp_ns)
        self.joint_pub.publish(msg)

    def frame(self, stamp_ns: int, images: dict[str, np.ndarray]) -> None:
        """Publish one frame set (from the render thread in realtime mode: a frame finished
        while the process shuts down, with the ROS context gone, is dropped)."""
        try:
            for name, rgb in images.items():
                msg = fill_image_msg(Image(), rgb)
                fill_stamp(msg.header.stamp, stamp_ns)
                msg.header.frame_id = name
                self.image_pubs[name].publish(msg)
        except Exception:
            if self.context.ok():
                raise

    def status(self, status: EpisodeStatus) -> None:
        self.status_pub.publish(String(data=status.to_json()))
        self.success_pub.publish(Bool(data=status.success))
        self.done_pub.publish(Bool(data=status.done))
        self.active_pub.publish(Bool(data=not status.done))  # the recorder's episode marker


class MujocoBridgeNode(Node):
    """Runs the MuJoCo scene and speaks the topic map's topics (see module docstring)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("mujoco_bridge", **kwargs)  # type: ignore[arg-type]
        self.params = declare(self, MujocoBridgeParams)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.topic_map = load_topic_map(self.params.topic_map or None)
        self.runner = build_runner(self.params, self.topic_map)
        self.sink = _Publishers(self, self.topic_map)
        self.action_order = JointOrder(self.topic_map.action_names)
        self.rejected, self.last_rejection = 0, ""
        self._subscribe_commands()
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self.params.tick_period_s, self._on_tick, clock=steady)
        self.create_timer(self.params.diagnostics_period_s, self._on_diagnostics, clock=steady)
        self._diag_mark = (steady.now().nanoseconds, 0, 0)
        self._steady = steady
        self._slow_since: int | None = None
        self._skipped_mark = self._skipping = 0  # frames_skipped at the last diagnostics,
        # diagnostics periods in a row with skipped frames
        if self.get_parameter("use_sim_time").value:
            self.get_logger().warn("use_sim_time is true on the bridge, which *publishes* "
                                   "/clock; its stamps come from the simulation anyway")
        status = self.runner.reset(self.params.seed, self.sink)
        self.get_logger().info(
            f"scene {self.params.scene or 'packaged reach_two_targets.xml'}, task "
            f"{task_name(self.params)}, mode {self.params.mode}, episode seed {status.seed}, "
            f"initial pose: {self.runner.env.scene.initial_pose}, {self._physics_rate()}")

    def _physics_rate(self) -> str:
        scene = self.runner.env.scene
        text = f"physics {1.0 / scene.timestep:g} Hz"
        if abs(scene.timestep - scene.mjcf_timestep) > 1e-12:
            text += (f" (physics_rate_hz overrides the MJCF's timestep {scene.mjcf_timestep:g} s;"
                     f" 0 keeps it)")
        return text

    def _subscribe_commands(self) -> None:
        action, trajectory_topic = self.topic_map.action, self.params.trajectory_topic
        if trajectory_topic == action.topic and action.type != "JointTrajectory":
            raise ValueError(f"trajectory_topic '{trajectory_topic}' is the topic map's action "
                             f"topic, which carries {action.type}: choose another topic")
        if action.type == "JointState":
            self.create_subscription(JointState, action.topic, self._on_joint_command, 10)
        elif action.type == "Float64MultiArray":
            self.create_subscription(Float64MultiArray, action.topic, self._on_array_command, 10)
        else:
            self.create_subscription(JointTrajectory, action.topic, self._on_trajectory, 10)
        if self.params.trajectory_topic and self.params.trajectory_topic != action.topic:
            self.create_subscription(JointTrajectory, self.params.trajectory_topic,
                                     self._on_trajectory, 10)

    # -- callbacks --------------------------------------------------------------------------
    def _on_tick(self) -> None:
        self.runner.advance(self.sink)

    def _on_joint_command(self, msg: JointState) -> None:
        try:
            if msg.name:
                q = self.action_order(msg.name, msg.position)
            else:
                q = self._unnamed(msg.position, "JointState without names")
            self.runner.command_positions(q, stamp_to_ns(msg.header.stamp))
        except (JointConversionError, ValueError) as err:
            self._reject("joint command", err)

    def _on_array_command(self, msg: Float64MultiArray) -> None:
        try:
            self.runner.command_positions(self._unnamed(msg.data, "Float64MultiArray"), 0)
        except ValueError as err:
            self._reject("array command", err)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            self.runner.command_trajectory(
                msg.joint_names, stamp_to_ns(msg.header.stamp),
                [stamp_to_ns(p.time_from_start) for p in msg.points],
                [p.positions for p in msg.points])
        except (TrajectoryError, ValueError) as err:
            self._reject("trajectory", err)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        status = self.runner.reset(self.params.seed, self.sink)
        response.success, response.message = True, status.to_json()
        self.get_logger().info(f"reset: episode {status.episode}, seed {status.seed}")
        return response

    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        try:
            self.params = updated(self.params, parameters)
        except (ValueError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _on_diagnostics(self) -> None:
        self.diagnostics_pub.publish(self.diagnostics())

    def _check_realtime(self, rtf: float, render_ms: float) -> bool:
        """realtime mode: True (and a throttled WARN with the costs) once the real-time factor
        stays below 90 % of the requested one for 2 s of diagnostics periods."""
        wanted = self.params.real_time_factor
        if self.params.mode != "realtime" or rtf >= 0.9 * wanted:
            self._slow_since = None
            return False
        now = self._steady.now().nanoseconds
        self._slow_since = self._slow_since or now
        if now - self._slow_since < 2 * NS:
            return False
        step_ms = self.runner.env.scene.timestep * 1e3
        if self.runner.worker is not None:
            cost = (f"rendering runs in its own thread ({render_ms:.1f} ms per frame set); "
                    f"physics steps of {step_ms:g} ms alone are too slow for this CPU: raise "
                    f"physics_rate_hz's step (lower rate), or use mode lockstep")
        else:
            share = render_ms * self.params.camera_rate_hz * rtf / 10.0  # % of wall time
            cost = (f"rendering takes {render_ms:.1f} ms per frame set ({share:.0f} % of wall "
                    f"time at {self.params.camera_rate_hz:g} Hz), physics steps of "
                    f"{step_ms:g} ms: lower camera_rate_hz or the cameras' sizes, set "
                    f"render_thread true, or use mode lockstep")
        self.get_logger().warn(f"behind real time: {rtf:.2f}x instead of {wanted:g}x; {cost}",
                               throttle_duration_sec=10.0)
        return True

    def _check_frame_rate(self, fps: float, render_ms: float) -> bool:
        """render thread: a throttled WARN once it skipped frames in two diagnostics periods
        in a row (the camera rate is not kept; one slow first frame is not worth a WARN);
        returns whether it is skipping so."""
        skipped = self.runner.frames_skipped
        self._skipping = self._skipping + 1 if skipped > self._skipped_mark else 0
        if self._skipping >= 2:
            self.get_logger().warn(
                f"cameras at {fps / max(self.params.real_time_factor, 1e-9):.1f} frames per "
                f"sim second instead of {self.params.camera_rate_hz:g}: "
                f"rendering takes {render_ms:.1f} ms per frame set ({skipped} frames skipped "
                f"so far); lower camera_rate_hz or the cameras' sizes", throttle_duration_sec=10.0)
        self._skipped_mark = skipped
        return self._skipping >= 2

    # -- helpers ----------------------------------------------------------------------------
    def _unnamed(self, values: object, what: str) -> np.ndarray:
        q = np.asarray(values, dtype=np.float64)
        joints = self.topic_map.action_names
        if q.shape != (len(joints),):
            raise ValueError(f"{what} has {q.size} values, expected {len(joints)} "
                             f"(one per joint {joints}, in that order)")
        return q

    def _reject(self, what: str, err: Exception) -> None:
        self.rejected += 1
        self.last_rejection = f"{what} ignored: {err}"
        self.get_logger().warn(self.last_rejection, throttle_duration_sec=2.0)

    def diagnostics(self) -> DiagnosticArray:
        """One DiagnosticStatus with the bridge's counters since start and the last period's
        real-time factor (sim seconds per wall second)."""
        r, env = self.runner, self.runner.env
        now = self._steady.now().nanoseconds
        wall0, sim0, frames0 = self._diag_mark
        rtf = (env.time_ns - sim0) / max(now - wall0, 1)
        fps = (r.frames - frames0) * 1e9 / max(now - wall0, 1)
        self._diag_mark = (now, env.time_ns, r.frames)
        times = r.render_times
        render_ms = 1e3 * float(np.median(times)) if times else float("nan")
        values = {"sim_time_s": env.time_ns / 1e9, "real_time_factor": rtf,
                  "camera_fps_wall": fps, "render_ms_all_cameras_p50": render_ms,
                  "episode": env.status.episode, "seed": env.status.seed,
                  "episode_done": env.status.done, "episode_success": env.status.success,
                  "rejected_commands": self.rejected, "last_rejection": self.last_rejection,
                  "lockstep_timeouts": r.gate_timeouts, "realtime_overruns": r.overruns,
                  "render_thread": r.worker is not None, "frames_skipped": r.frames_skipped}
        values["behind_real_time"] = behind = self._check_realtime(rtf, render_ms)
        values["skipping_frames"] = skipping = self._check_frame_rate(fps, render_ms)
        warn = bool(self.rejected or r.gate_timeouts or r.overruns or behind or skipping)
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if warn else DiagnosticStatus.OK,
            name=f"{self.get_name()}: simulation", hardware_id="mujoco",
            message=self.last_rejection or f"{self.params.mode}, rtf {rtf:.2f}",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    def destroy_node(self) -> None:
        """Free the GL contexts too (also after a failed construction)."""
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """``mujoco_bridge [--ros-args -p name:=value ...]``; exits 1 on a bad configuration, 0 when
    stopped by SIGINT/SIGTERM (also during start-up)."""
    argv = sys.argv if args is None else args
    if help_requested(argv):
        print(usage("mujoco_bridge", __doc__.split("\n")[0], MujocoBridgeParams))  # noqa: T201
        return 0
    rclpy.init(args=argv)
    log = rclpy.logging.get_logger("mujoco_bridge")
    try:
        node = MujocoBridgeNode()
    except KeyboardInterrupt:  # a signal during start-up (see nodes/shutdown.py)
        rclpy.try_shutdown()
        return 0
    except Exception as err:
        stopping = _stopping()  # a signal shut the context down under a publish or a service
        rclpy.try_shutdown()
        if stopping:
            return 0
        log.fatal(str(err))  # a bad scene, map or parameter: say what and stop
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()  # a signal: rclpy shuts the context down, spin ends (nodes/shutdown.py)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if not _stopping():
            raise
        # SIGTERM/SIGINT shut the context down in the middle of a callback: a clean exit
    finally:
        sim_s, episode = node.runner.env.time_ns / 1e9, node.runner.env.status.episode
        node.destroy_node()  # first: with the node gone its logger no longer goes to /rosout
        rclpy.try_shutdown()
        log.info(f"stopped at sim time {sim_s:.3f} s, episode {episode}")
    return 0


def _stopping() -> bool:
    """True once a signal (or anyone) has shut the default context down."""
    return not rclpy.ok() or shutdown.received() is not None


if __name__ == "__main__":
    sys.exit(main())
