"""``mujoco_bridge`` parameters: a frozen dataclass, mirrored by ``config/mujoco_bridge.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field

from snapflow_ros.nodes.params import check_fields
from snapflow_ros.sim.runner import GATES, MODES, RunnerConfig

RO = {"read_only": True}


@dataclass(frozen=True)
class MujocoBridgeParams:
    """Parameters of the MuJoCo bridge (all read-only except ``seed``, used at each reset)."""

    scene: str = field(default="", metadata={
        **RO, "help": "MJCF scene file; empty: the packaged reach_two_targets arm. Its joint "
                      "and camera names must be the topic map's"})
    task: str = field(default="", metadata={
        **RO, "help": "episode scoring: reach_two_targets (random target places) or "
                      "reach_two_fixed_targets (both need the packaged scene's targets), none, "
                      "or module:Class (a Task of your own, sim/tasks.py); empty: "
                      "reach_two_targets on the packaged scene, none on your own scene"})
    topic_map: str = field(default="", metadata={
        **RO, "help": "topic map YAML (cameras, joints, action topic); empty: the packaged "
                      "config/topic_map.yaml"})
    trajectory_topic: str = field(default="action_chunk", metadata={
        **RO, "help": "trajectory_msgs/JointTrajectory input (positions-only chunks, sampled "
                      "on sim time like joint_trajectory_controller)"})
    mode: str = field(default="realtime", metadata={
        **RO, "help": "realtime: sim follows wall time x real_time_factor; lockstep: as fast "
                      "as the command sender allows (see lockstep_gate); free: as fast as "
                      "possible", "choices": MODES})
    real_time_factor: float = field(default=1.0, metadata={
        **RO, "help": "realtime mode: sim seconds per wall second", "min": 0.01, "max": 100.0})
    keyframe: str = field(default="", metadata={
        **RO, "help": "MJCF keyframe of the initial pose; empty: 'home' if the model has it, "
                      "else its first keyframe, else the model's defaults (logged at start)"})
    physics_rate_hz: float = field(default=500.0, metadata={
        **RO, "help": "physics steps per sim second; 0 keeps the MJCF timestep",
        "min": 0.0, "max": 20000.0})
    camera_rate_hz: float = field(default=30.0, metadata={
        **RO, "help": "camera frames per sim second (all cameras render together)",
        "min": 0.1, "max": 1000.0})
    render_thread: bool = field(default=True, metadata={
        **RO, "help": "realtime mode: render cameras in their own thread, so physics keeps its "
                      "rate and a slow camera lowers the frame rate instead (lockstep and free "
                      "modes always render inline, at the frame's physics step)"})
    joint_state_rate_hz: float = field(default=100.0, metadata={
        **RO, "help": "joint_states (and /clock) messages per sim second",
        "min": 0.1, "max": 10000.0})
    lockstep_gate: str = field(default="chunk", metadata={
        **RO, "help": "lockstep mode: chunk = run at most lockstep_lead_s past the end of the "
                      "newest JointTrajectory (chunking policies on /clock); lead = at most "
                      "lockstep_lead_s past the last command of any kind; frame = after each "
                      "camera frame wait for a command stamped >= the frame (reproducible)",
        "choices": GATES})
    lockstep_lead_s: float = field(default=0.1, metadata={
        **RO, "help": "chunk and lead gates: sim seconds the bridge may run ahead; must "
                      "exceed the sender's control period", "min": 0.001, "max": 60.0})
    lockstep_timeout_s: float = field(default=10.0, metadata={
        **RO, "help": "lockstep: wall seconds to wait for a command before going on anyway "
                      "(0 = wait forever)", "min": 0.0, "max": 3600.0})
    seed: int = field(default=0, metadata={
        "help": "seed of the next reset (the ~/reset service uses the current value); -1 = a "
                "fresh random seed each reset", "min": -1, "max": 2**31 - 1})
    episode_timeout_s: float = field(default=0.0, metadata={
        **RO, "help": "episode time limit in sim seconds; 0 = the task's own (5 s for "
                      "reach_two_targets, 6 s for so101_pick_cube, none for task none)",
        "min": 0.0, "max": 86400.0})
    tick_period_s: float = field(default=0.005, metadata={
        **RO, "help": "wall period of the stepping timer (realtime: catch-up granularity; "
                      "lockstep: how often a wait is re-checked)", "min": 0.0005, "max": 0.1})
    diagnostics_period_s: float = field(default=1.0, metadata={
        **RO, "help": "wall period of /diagnostics messages", "min": 0.05, "max": 60.0})

    def __post_init__(self) -> None:
        check_fields(self)
        self.runner_config()  # the runner re-checks rates and choices

    def runner_config(self) -> RunnerConfig:
        """The stepping schedule these parameters describe."""
        return RunnerConfig(
            camera_rate_hz=self.camera_rate_hz, joint_state_rate_hz=self.joint_state_rate_hz,
            mode=self.mode, real_time_factor=self.real_time_factor, gate=self.lockstep_gate,
            lead_s=self.lockstep_lead_s, timeout_s=self.lockstep_timeout_s,
            render_thread=self.render_thread,
        )
