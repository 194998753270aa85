"""``policy_node``: cameras + joint states in, action chunks and per-step commands out.

A lifecycle node (``autostart`` configures and activates it on start). Topics are relative, so
namespaces and remaps apply; inputs and the action topic come from the topic map::

    camera/<name>/image_raw (Image | CompressedImage) ─┐        ┌─► action_chunk (JointTrajectory)
    joint_states (JointState) ─────────────────────────┼─ node ─┼─► <map action topic> (per step)
    task (String, latched) ────────────────────────────┘        └─► /diagnostics

Threads (and why): one single-threaded executor runs the callbacks, each O(1) — cameras and
joint states arrive *raw*, the callback reads the header stamp from the bytes, checks the size
and keeps the newest bytes; a **control thread** (``ClockLoop``, ROS clock) sends one gated
command per period and never waits behind a message callback; an **inference thread**
decodes only the messages a chunk uses and hands them to the model, which runs in a **process
of its own** (``inference_process``, default) so the executor's Python work never starves it of
the GIL. The decisions (sync, holds, the safety gate, scheduling) are in runtime/engine.py.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from snapflow_ros.conversions.cdr import header_stamp_ns
from snapflow_ros.conversions.image import ImageConversionError, resize_rgb, to_rgb
from snapflow_ros.conversions.joints import JointConversionError, JointOrder
from snapflow_ros.conversions.stamps import NS
from snapflow_ros.conversions.trajectory import chunk_to_trajectory
from snapflow_ros.nodes.clock_loop import ClockLoop, JumpSignal
from snapflow_ros.nodes.lifecycle_cleanup import destroy_lifecycle_state_machine
from snapflow_ros.nodes.params import ParameterError, declare, help_requested, updated, usage
from snapflow_ros.nodes.policy_node_params import PolicyNodeParams
from snapflow_ros.runtime.engine import BadInput, ChunkEngine, ChunkResult, Decoded, EngineSettings
from snapflow_ros.runtime.holds import HoldKind
from snapflow_ros.runtime.observation import Snapshot
from snapflow_ros.runtime.safety import SafetyLimits
from snapflow_ros.topic_map import TopicMap, load_topic_map

JOINTS = "joint_states"
MAX_JOINT_STATE_BYTES = 1 << 16  # ~800 joints with names: plenty for any robot
NAME = "snapflow_ros: policy_node"


class PolicyNode(LifecycleNode):
    """The policy node; ``runner`` may be injected (tests: runs in a thread), else it is
    loaded on configure (in a process of its own unless ``inference_process`` is false)."""

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
        self._control: ClockLoop | None = None
        self._jumps = JumpSignal(self.get_clock())  # once: see nodes/clock_loop.py
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._rejected: dict[str, int] = {}
        self._received: dict[str, int] = {}
        self._frame_wake = False  # the last wake-up came from a fresh camera frame
        self._last_rejection = ""
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # wall-clock (steady) diagnostics: they keep coming when sim time is paused
        self.create_timer(self.params.diagnostics_period_s, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- lifecycle ---------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        try:
            self.topic_map = tm = load_topic_map(p.topic_map or None)
            self._stop.clear()
            if self.runner is None:
                self.runner = self._load_runner(p, tm)
            self.runner.check_interface(tm.camera_names, tm.state_names, tm.action_names)
            self._state_order = JointOrder(tm.state_names)
            self._action_order = JointOrder(tm.action_names)
            self.engine = ChunkEngine([*tm.camera_names, JOINTS], int(NS / self._rate(tm)),
                                      self._settings(p), self._measure, joints=JOINTS)
        except Exception as err:  # every configure failure is reported, never raised
            self._fail(f"configure failed: {err}")
            self._release_runner()
            return TransitionCallbackReturn.FAILURE
        self.engine.set_dry_run(p.dry_run)
        self._task = p.task or tm.task.text
        self._max_bytes = {cam.name: int(cam.height * cam.width * p.max_image_scale * 5) + 4096
                           for cam in tm.cameras}
        self._max_bytes[JOINTS] = MAX_JOINT_STATE_BYTES
        self._create_interfaces(tm)
        self._worker = threading.Thread(target=self._inference_loop, name="inference",
                                        daemon=True)
        self._worker.start()
        self._state, self._error = "inactive", ""
        where = "own process" if hasattr(self.runner, "info") else "node process"
        self.get_logger().info(f"configured: {len(tm.cameras)} cameras, "
                               f"{len(tm.action_names)} action joints at {self._rate(tm):g} Hz; "
                               f"{self.engine.scheduler.n_action_steps} steps of each "
                               f"{self.runner.chunk_size}-step chunk executed; "
                               f"model in its {where}")
        return TransitionCallbackReturn.SUCCESS

    def _load_runner(self, p: PolicyNodeParams, tm: TopicMap) -> Any:
        if not p.policy_path:
            raise ValueError("parameter policy_path is empty: give a SnapFlow checkpoint "
                             "directory, a LeRobot policy directory or a hub id")
        if p.inference_process:
            from snapflow_ros.inference.process_runner import ProcessRunner

            shapes = {cam.name: (cam.height, cam.width) for cam in tm.cameras}
            return ProcessRunner(p.policy_path, shapes, device=p.device, dtype=p.dtype,
                                 engine=p.engine,
                                 num_steps=p.num_steps, seed=p.seed, cpu_threads=p.cpu_threads,
                                 cpus=p.inference_cpus,
                                 warmup_iters=p.warmup_iters,
                                 should_stop=lambda: self._stop.is_set() or not self.context.ok())
        from snapflow_ros.cpu_threads import apply_cpu_threads
        from snapflow_ros.policies.runner import PolicyRunner

        apply_cpu_threads(p.cpu_threads, reserved=1)
        runner = PolicyRunner.load(p.policy_path, device=p.device, dtype=p.dtype,
                                   num_steps=p.num_steps, seed=p.seed, engine=p.engine)
        runner.warmup(p.warmup_iters, {cam.name: (cam.height, cam.width) for cam in tm.cameras})
        return runner

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if hasattr(self.runner, "alive") and not self.runner.alive:
            self._fail("cannot activate: the inference process is not running (cleanup and "
                       "configure again)")
            return TransitionCallbackReturn.FAILURE
        self.engine.reset(clear_inputs=False)  # next command starts from the measured position
        self._active, self._state = True, "active"
        self._control = ClockLoop(self._jumps, self.engine.scheduler.dt_ns,
                                  self._control_tick)
        self._wake.set()  # the first chunk now: a lock-stepped sim may be paused, waiting for it
        self.get_logger().info("active: sending commands" if not self.params.dry_run
                               else "active (dry run: commands on ~/debug/* only)")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active, self._state = False, "inactive"
        self._stop_control()
        self.engine.reset()
        self.get_logger().info("inactive: commands stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._state = "unconfigured"
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        if getattr(self, "_jumps", None) is not None:  # None: __init__ failed before it
            self._jumps.close()
        super().destroy_node()
        destroy_lifecycle_state_machine(self)  # else the node outlives this call (rclpy 9)

    def _stop_control(self) -> None:
        if self._control is not None:
            self._control.stop()
            self._control = None

    def _teardown(self) -> None:
        self._active = False
        self._stop.set()
        self._wake.set()
        self._stop_control()
        self._release_runner()  # unblocks an inference waiting on the worker
        if self._worker is not None:
            self._worker.join(timeout=1.0)
            self._worker = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._subs, self._pubs = [], {}
        self.engine = None

    def _release_runner(self) -> None:
        if self._injected or self.runner is None:
            return
        if hasattr(self.runner, "close"):
            self.runner.close()
        self.runner = None  # frees the model (and its GPU memory)

    # -- construction helpers ------------------------------------------------------------

    def _rate(self, tm: TopicMap) -> float:
        return self.params.control_rate_hz or tm.fps

    def _settings(self, p: PolicyNodeParams) -> EngineSettings:
        """Engine settings from parameters; raises ValueError (nothing changes) when invalid."""
        limits = SafetyLimits(len(self.topic_map.action_names), p.joint_lower_limits,
                              p.joint_upper_limits, p.max_step_delta)
        return EngineSettings(
            limits=limits, max_age_ns=int(p.max_obs_age_s * NS),
            max_skew_ns=int(p.max_obs_skew_s * NS),
            future_tolerance_ns=int(p.future_tolerance_s * NS),
            n_action_steps=p.n_action_steps or self.runner.n_action_steps,
            replan_lead_steps=p.replan_lead_steps, blend_steps=p.blend_steps,
            max_abs_state=p.max_abs_state, overrun_steps=p.overrun_steps)

    def _create_interfaces(self, tm: TopicMap) -> None:
        for cam in tm.cameras:
            msg_type = CompressedImage if cam.type == "CompressedImage" else Image
            self._subs.append(self.create_subscription(
                msg_type, cam.topic, lambda raw, n=cam.name: self._store(n, raw),
                qos_profile_sensor_data, raw=True))
        self._subs.append(self.create_subscription(
            JointState, tm.joint_states.topic, lambda raw: self._store(JOINTS, raw), 10,
            raw=True))
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs.append(self.create_subscription(
            String, tm.task.topic or "task", self._on_task, latched, raw=True))
        self._msg_types = {cam.name: CompressedImage if cam.type == "CompressedImage" else Image
                           for cam in tm.cameras}
        self._pubs = {
            "chunk": self.create_publisher(JointTrajectory, "action_chunk", 10),
            "debug_chunk": self.create_publisher(JointTrajectory, "~/debug/action_chunk", 10),
        }
        command_type = self.params.command_type
        if command_type != "none":
            msg_type = JointState if command_type == "JointState" else Float64MultiArray
            self._pubs["command"] = self.create_publisher(msg_type, tm.action.topic, 10)
            self._pubs["debug_command"] = self.create_publisher(msg_type, "~/debug/command", 10)

    # -- callbacks (O(1): check, store) ------------------------------------------------------

    def _store(self, name: str, raw: bytes) -> None:
        self._received[name] = self._received.get(name, 0) + 1
        if len(raw) > self._max_bytes[name]:
            self._reject(name, f"{len(raw)} bytes, over the cap of {self._max_bytes[name]} "
                               f"(max_image_scale × the topic map's size)")
            return
        try:
            stamp = header_stamp_ns(raw)
        except ValueError as err:
            self._reject(name, str(err))
            return
        reason = self.engine.buffer.put(name, stamp, raw, self._now())
        if reason:
            self._reject(name, reason)
        elif name != JOINTS and self.engine.frame_ready():
            self._frame_wake = True
            self._wake.set()  # a chunk is due: make it from this fresh frame

    def _on_task(self, raw: bytes) -> None:
        limit = self.params.max_task_chars
        if len(raw) > 4 * limit + 64:  # UTF-8: at most 4 bytes a character
            self._reject("task", f"{len(raw)} bytes, over max_task_chars={limit}; task unchanged")
            return
        try:
            text = _deserialize(raw, String, "task").data
        except BadInput as err:
            self._reject("task", str(err))
            return
        if len(text) > limit:
            self._reject("task", f"{len(text)} characters, over max_task_chars={limit}; "
                                 f"task unchanged")
            return
        self._task = text

    def _reject(self, name: str, reason: str) -> None:
        self._rejected[name] = self._rejected.get(name, 0) + 1
        self._last_rejection = f"{name}: {reason}"
        self.get_logger().warn(f"dropped a message on {name}: {reason}",
                               throttle_duration_sec=2.0)

    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _control_tick(self, now_ns: int) -> None:
        tick = self.engine.tick(now_ns, lambda cmd, dry: self._publish_command(cmd, now_ns, dry))
        if tick.want_chunk:
            self._wake.set()

    # -- inference thread -------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.2) or self._stop.is_set():
                continue
            self._wake.clear()
            if not self._active:
                continue
            trigger = "frame" if self._frame_wake else "deadline"
            self._frame_wake = False
            if trigger == "deadline" and not self.engine.wants_chunk(self._now()):
                continue  # a chunk made from a fresh frame meanwhile answered the request
            try:
                result = self.engine.infer(self._now, self._decode, self._predict,
                                           publish=self._publish_chunk)
                if isinstance(result, ChunkResult):
                    self.engine.counters[f"chunks_on_{trigger}"] += 1
                    if self._error.startswith("inference failed"):
                        self._error = ""  # the model works again
                elif result.kind is not HoldKind.WAITING:
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
            msg = _deserialize(snap.items[cam.name].msg, self._msg_types[cam.name], cam.name)
            try:
                rgb = to_rgb(msg, max_pixels=int(cam.height * cam.width
                                                 * self.params.max_image_scale))
            except ImageConversionError as err:
                hint = " (max_pixels = max_image_scale × the topic map's size)" \
                    if "max_pixels" in str(err) else ""
                raise BadInput(f"camera {cam.name}: {err}{hint}") from err
            images[cam.name] = resize_rgb(rgb, cam.height, cam.width)
        js = _deserialize(snap.items[JOINTS].msg, JointState, JOINTS)
        try:
            state = self._state_order(js.name, js.position)
        except JointConversionError as err:
            raise BadInput(f"joint_states: {err}") from err
        try:
            measured = self._action_order(js.name, js.position)
        except JointConversionError:
            measured = None
        return Decoded(images, state, measured)

    def _measure(self, raw: bytes) -> Any:
        """Measured action-joint positions from raw joint-state bytes (the gate's start)."""
        js = _deserialize(raw, JointState, JOINTS)
        try:
            return self._action_order(js.name, js.position)
        except JointConversionError as err:
            raise BadInput(str(err)) from err

    def _predict(self, decoded: Decoded, timer: Any) -> Any:
        return self.runner.predict_chunk(decoded.images, decoded.state, self._task, timer)

    # -- publishing ---------------------------------------------------------------------------

    def _publish_chunk(self, result: Any) -> None:
        # only the steps this node will execute: the next chunk replaces the rest, and a
        # trajectory controller (or a lock-stepped simulator) should not run past them
        steps = self.engine.scheduler.n_action_steps
        msg = chunk_to_trajectory(result.positions[:steps], self.topic_map.action_names,
                                  result.stamp_ns, self.engine.scheduler.dt_ns)
        self._publish("debug_chunk" if result.dry_run else "chunk", msg)

    def _publish_command(self, command: Any, now_ns: int, dry_run: bool) -> None:
        if self.params.command_type == "JointState":
            msg = JointState(name=list(self.topic_map.action_names),
                             position=[float(v) for v in command])
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, NS)
        else:
            msg = Float64MultiArray(data=[float(v) for v in command])
        self._publish("debug_command" if dry_run else "command", msg)

    def _publish(self, key: str, msg: Any) -> None:
        self._send(self._pubs.get(key), msg)

    def _send(self, pub: Any, msg: Any) -> None:
        """Publish unless the node is stopping. A stop shuts the context down from another
        thread and can land between the check and the publish (rclpy then raises "publisher's
        context is invalid"): that message is dropped; any other error is raised."""
        if pub is None or not self.context.ok():
            return
        try:
            pub.publish(msg)
        except Exception:
            if self.context.ok():
                raise

    def _fail(self, message: str) -> None:
        self._error, self._state = message, "error"
        self.get_logger().error(message)

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=NAME, hardware_id=self.params.policy_path or "injected")
        values = self.engine.status() if self.engine is not None else {}
        hold = values.get("last_hold", "")
        if self._error:
            status.level, status.message = DiagnosticStatus.ERROR, self._error
        elif self._active and hold:
            status.level, status.message = DiagnosticStatus.WARN, f"holding: {hold}"
        else:
            status.level, status.message = DiagnosticStatus.OK, self._state
        values.update(state=self._state, dry_run=self.params.dry_run,
                      **{f"received_{k}": v for k, v in self._received.items()},
                      **{f"rejected_{k}": v for k, v in self._rejected.items()},
                      last_rejection=self._last_rejection)
        if self.engine is not None:
            values["replan_lead_steps"] = self.engine.scheduler.replan_lead_steps
            values["overrun_steps"] = self.engine.scheduler.overrun_steps
        if self.runner is not None:
            values["num_steps"] = self.runner.num_steps
            values["engine"] = getattr(self.runner, "engine_name", "")
            info = getattr(self.runner, "info", None)
            values["inference"] = "thread" if info is None else f"process {info['pid']}"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._send(self._diag_pub, array)

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        """Validate the whole change first; apply it only if every part is valid (atomic)."""
        try:
            new = updated(self.params, parameters)
            settings = self._settings(new) if self.engine is not None else None
        except (ValueError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        if settings is not None:
            self.engine.reconfigure(settings)
        if self.runner is not None and new.num_steps != self.params.num_steps:
            self.runner.set_num_steps(new.num_steps)
        if new.task != self.params.task and new.task:
            self._task = new.task
        if self.engine is not None:
            self.engine.set_dry_run(new.dry_run)
        self.params = new
        return SetParametersResult(successful=True)


def _deserialize(raw: bytes, msg_type: Any, name: str) -> Any:
    try:
        return deserialize_message(raw, msg_type)
    except Exception as err:  # malformed bytes (a raw publisher): a bad input, not a crash
        raise BadInput(f"{name}: cannot deserialize a {msg_type.__name__} ({err})") from err


def main(args: list[str] | None = None) -> int:
    argv = sys.argv if args is None else args
    if help_requested(argv):
        print(usage("policy_node", "Runs a SnapFlow / LeRobot flow-matching policy on camera "  # noqa: T201
                    "and joint-state topics.", PolicyNodeParams))
        return 0
    rclpy.init(args=argv)
    try:
        node = PolicyNode()
    except ParameterError as err:
        rclpy.logging.get_logger("policy_node").error(str(err))
        rclpy.try_shutdown()
        return 2
    sys.setswitchinterval(0.001)  # short GIL turns: the control thread never waits long
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        if node.params.autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 1  # the reason is logged; a node asked to start that cannot, exits
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._teardown()
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
    return code
