"""``policy_node``: cameras + joint states in, action chunks and per-step commands out.

A lifecycle node (``autostart`` configures and activates it on start). Topics are relative, so
namespaces and remaps apply; inputs and the action topic come from the topic map::

    camera/<name>/image_raw (Image | CompressedImage) ─┐        ┌─► action_chunk (JointTrajectory)
    joint_states (JointState) ─────────────────────────┼─ node ─┼─► <map action topic> (per step)
    task (String, latched) ────────────────────────────┘        └─► /diagnostics

Subscriptions only store the newest message; a worker thread runs inference (at most one in
flight) when the control timer asks for a chunk; the control timer (ROS clock, so
``use_sim_time`` works) sends one safety-filtered command per period. See runtime/engine.py.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.conversions.image import ImageConversionError, resize_rgb, to_rgb
from snapflow_ros.conversions.joints import JointConversionError, JointOrder
from snapflow_ros.conversions.stamps import NS, stamp_to_ns
from snapflow_ros.conversions.trajectory import chunk_to_trajectory
from snapflow_ros.nodes.params import declare, help_requested, updated, usage
from snapflow_ros.nodes.policy_node_params import PolicyNodeParams
from snapflow_ros.runtime.chunking import ChunkScheduler
from snapflow_ros.runtime.engine import BadInput, ChunkEngine, ChunkResult, Decoded
from snapflow_ros.runtime.observation import ObservationBuffer, Snapshot
from snapflow_ros.runtime.safety import SafetyFilter
from snapflow_ros.topic_map import TopicMap, load_topic_map

JOINTS = "joint_states"
DYNAMIC = ("num_steps", "n_action_steps", "replan_lead_steps", "blend_steps", "max_obs_age_s",
           "max_obs_skew_s", "max_step_delta", "dry_run", "task", "joint_lower_limits",
           "joint_upper_limits")


class PolicyNode(LifecycleNode):
    """The policy node; ``runner`` may be injected (tests), else it is loaded on configure."""

    def __init__(self, runner: Any = None, **kwargs: Any) -> None:
        super().__init__("policy_node", **kwargs)
        self.params = declare(self, PolicyNodeParams)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.runner, self.engine, self.topic_map = runner, None, None
        self._injected = runner is not None
        self._state, self._error, self._task = "unconfigured", "", ""
        self._active = False
        self._wake, self._stop = threading.Event(), threading.Event()
        self._worker: threading.Thread | None = None
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._control_timer = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # wall-clock (steady) diagnostics: they keep coming when sim time is paused
        self.create_timer(self.params.diagnostics_period_s, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- lifecycle ---------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        try:
            self.topic_map = load_topic_map(p.topic_map or None)
            if self.runner is None:
                if not p.policy_path:
                    raise ValueError("parameter policy_path is empty: give a SnapFlow checkpoint "
                                     "directory, a LeRobot policy directory or a hub id")
                from snapflow_ros.policies.runner import PolicyRunner

                self.runner = PolicyRunner.load(p.policy_path, device=p.device, dtype=p.dtype,
                                                num_steps=p.num_steps, seed=p.seed)
                self.runner.warmup(p.warmup_iters)
            tm = self.topic_map
            self.runner.check_interface(tm.camera_names, tm.state_names, tm.action_names)
            self.engine = self._make_engine(tm, p)
        except Exception as err:  # every configure failure is reported, never raised
            self._fail(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self._task = p.task or tm.task.text
        self._state_order = JointOrder(tm.state_names)
        self._action_order = JointOrder(tm.action_names)
        self._create_interfaces(tm)
        self._stop.clear()
        self._worker = threading.Thread(target=self._inference_loop, name="inference",
                                        daemon=True)
        self._worker.start()
        self._state, self._error = "inactive", ""
        self.get_logger().info(f"configured: {len(tm.cameras)} cameras, "
                               f"{len(tm.action_names)} action joints at {self._rate(tm):g} Hz")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._control_timer = self.create_timer(
            1.0 / self._rate(self.topic_map), self._control_tick,
            callback_group=MutuallyExclusiveCallbackGroup())
        self._active, self._state = True, "active"
        self._wake.set()  # the first chunk now: a lock-stepped sim may be paused, waiting for it
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active, self._state = False, "inactive"
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
        self.engine.reset()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self._active = False
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._subs, self._pubs = [], {}
        if not self._injected:
            self.runner = None  # frees the model (and its GPU memory)

    # -- construction helpers ------------------------------------------------------------

    def _rate(self, tm: TopicMap) -> float:
        return self.params.control_rate_hz or tm.fps

    def _make_engine(self, tm: TopicMap, p: PolicyNodeParams) -> ChunkEngine:
        names = [*tm.camera_names, JOINTS]
        buffer = ObservationBuffer(names, int(p.max_obs_age_s * NS), int(p.max_obs_skew_s * NS))
        scheduler = ChunkScheduler(int(NS / self._rate(tm)),
                                   p.n_action_steps or self.runner.n_action_steps,
                                   blend_steps=p.blend_steps,
                                   replan_lead_steps=p.replan_lead_steps)
        safety = SafetyFilter(len(tm.action_names), p.joint_lower_limits, p.joint_upper_limits,
                              p.max_step_delta)
        return ChunkEngine(buffer, scheduler, safety)

    def _create_interfaces(self, tm: TopicMap) -> None:
        for cam in tm.cameras:
            msg_type = CompressedImage if cam.type == "CompressedImage" else Image
            self._subs.append(self.create_subscription(
                msg_type, cam.topic, lambda m, n=cam.name: self._store(n, m),
                qos_profile_sensor_data))
        self._subs.append(self.create_subscription(
            JointState, tm.joint_states.topic, lambda m: self._store(JOINTS, m), 10))
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs.append(self.create_subscription(
            String, tm.task.topic or "task", self._on_task, latched))
        self._pubs = {
            "chunk": self.create_publisher(JointTrajectory, "action_chunk", 10),
            "debug_chunk": self.create_publisher(JointTrajectory, "~/debug/action_chunk", 10),
        }
        command_type = self.params.command_type
        if command_type != "none":
            msg_type = JointState if command_type == "JointState" else Float64MultiArray
            self._pubs["command"] = self.create_publisher(msg_type, tm.action.topic, 10)
            self._pubs["debug_command"] = self.create_publisher(msg_type, "~/debug/command", 10)

    # -- callbacks (short: store, tick, publish) -----------------------------------------

    def _store(self, name: str, msg: Any) -> None:
        self.engine.buffer.put(name, stamp_to_ns(msg.header.stamp), msg)

    def _on_task(self, msg: String) -> None:
        self._task = msg.data

    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _control_tick(self) -> None:
        now = self.get_clock().now()
        command, want = self.engine.tick(now.nanoseconds)
        if command is not None and "command" in self._pubs:
            self._publish_command(command, now.to_msg())
        if want:
            self._wake.set()

    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.2) or self._stop.is_set():
                continue
            self._wake.clear()
            if not self._active:
                continue
            try:
                result = self.engine.infer(self._now, self._decode, self._predict)
                if isinstance(result, ChunkResult):
                    self._publish_chunk(result)
                elif result.kind != "waiting":
                    self.get_logger().warn(f"holding: {result.reason}",
                                           throttle_duration_sec=2.0)
            except Exception as err:  # a failing model must not kill the node: hold, report
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down (e.g. SIGTERM while publishing): nothing to report
                self.engine.counters["errors"] += 1
                self._error = f"inference failed: {err}"
                self.get_logger().error(self._error, throttle_duration_sec=5.0)

    def _decode(self, snap: Snapshot) -> Decoded:
        tm, images = self.topic_map, {}
        for cam in tm.cameras:
            try:
                rgb = to_rgb(snap.items[cam.name].msg)
            except ImageConversionError as err:
                raise BadInput(f"camera {cam.name}: {err}") from err
            images[cam.name] = resize_rgb(rgb, cam.height, cam.width)
        js = snap.items[JOINTS].msg
        try:
            state = self._state_order(js.name, js.position)
        except JointConversionError as err:
            raise BadInput(f"joint_states: {err}") from err
        try:
            measured = self._action_order(js.name, js.position)
        except JointConversionError:
            measured = None
        return Decoded(images, state, measured)

    def _predict(self, decoded: Decoded, timer: Any) -> Any:
        return self.runner.predict_chunk(decoded.images, decoded.state, self._task, timer)

    def _publish_chunk(self, result: Any) -> None:
        # only the steps this node will execute: the next chunk replaces the rest, and a
        # trajectory controller (or a lock-stepped simulator) should not run past them
        steps = self.engine.scheduler.n_action_steps
        msg = chunk_to_trajectory(result.positions[:steps], self.topic_map.action_names,
                                  result.stamp_ns, self.engine.scheduler.dt_ns)
        self._pubs["debug_chunk" if self.params.dry_run else "chunk"].publish(msg)

    def _publish_command(self, command: Any, stamp: Any) -> None:
        pub = self._pubs["debug_command" if self.params.dry_run else "command"]
        if self.params.command_type == "JointState":
            msg = JointState(name=list(self.topic_map.action_names),
                             position=[float(v) for v in command])
            msg.header.stamp = stamp  # the tick time the command was chosen for
        else:
            msg = Float64MultiArray(data=[float(v) for v in command])
        pub.publish(msg)

    def _fail(self, message: str) -> None:
        self._error, self._state = message, "error"
        self.get_logger().error(message)

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="snapflow_ros: policy_node",
                                  hardware_id=self.params.policy_path or "injected")
        values = self.engine.status() if self.engine is not None else {}
        hold = values.get("last_hold", "")
        if self._error:
            status.level, status.message = DiagnosticStatus.ERROR, self._error
        elif self._active and hold:
            status.level, status.message = DiagnosticStatus.WARN, f"holding: {hold}"
        else:
            status.level, status.message = DiagnosticStatus.OK, self._state
        values.update(state=self._state, dry_run=self.params.dry_run)
        if self.runner is not None:
            values["num_steps"] = self.runner.num_steps
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        try:
            new = updated(self.params, parameters)
        except (ValueError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        if self.engine is not None:
            eng = self.engine
            eng.buffer.set_limits(int(new.max_obs_age_s * NS), int(new.max_obs_skew_s * NS))
            eng.scheduler.blend_steps = new.blend_steps
            eng.scheduler.replan_lead_steps = new.replan_lead_steps
            if new.n_action_steps:
                eng.scheduler.n_action_steps = new.n_action_steps
            try:
                eng.safety = SafetyFilter(len(self.topic_map.action_names),
                                          new.joint_lower_limits, new.joint_upper_limits,
                                          new.max_step_delta)
            except ValueError as err:
                return SetParametersResult(successful=False, reason=str(err))
        if self.runner is not None and new.num_steps != self.params.num_steps:
            self.runner.set_num_steps(new.num_steps)
        if new.task != self.params.task and new.task:
            self._task = new.task
        self.params = new
        return SetParametersResult(successful=True)


def main(args: list[str] | None = None) -> int:
    argv = sys.argv if args is None else args
    if help_requested(argv):
        print(usage("policy_node", "Runs a SnapFlow / LeRobot flow-matching policy on camera "  # noqa: T201
                    "and joint-state topics.", PolicyNodeParams))
        return 0
    rclpy.init(args=argv)
    node = PolicyNode()
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    try:
        if node.params.autostart and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._teardown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
