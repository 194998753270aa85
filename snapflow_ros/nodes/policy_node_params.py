"""``policy_node`` parameters: one frozen dataclass, mirrored by ``config/policy.yaml``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from snapflow_ros.nodes.params import check_fields

RO = {"read_only": True}


def _available_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class PolicyNodeParams:
    """Parameters of the policy node (structural ones are read-only, tunables dynamic)."""

    policy_path: str = field(default="", metadata={
        **RO, "help": "SnapFlow checkpoint dir, LeRobot policy dir, hub id, or a built-in "
                      "(smolvla-tiny, pi0-tiny, pi05-tiny) for testing"})
    topic_map: str = field(default="", metadata={
        **RO, "help": "topic map YAML (cameras, joints, action topic); empty: the packaged "
                      "config/topic_map.yaml"})
    device: str = field(default="auto", metadata={
        **RO, "help": "auto (cuda when present), cpu, cuda or cuda:N"})
    dtype: str = field(default="auto", metadata={
        **RO, "help": "auto (bfloat16 on CUDA, float32 on CPU), float32 or bfloat16",
        "choices": ("auto", "float32", "bfloat16")})
    engine: str = field(default="auto", metadata={
        **RO, "help": "inference engine: auto (graph on CUDA, eager on CPU), eager, static, "
                      "compile or graph (CUDA only); prepared (compiled, captured) at configure",
        "choices": ("auto", "eager", "static", "compile", "graph")})
    num_steps: int = field(default=0, metadata={
        "help": "expert passes per chunk; 0 = the checkpoint's default (1 for SnapFlow)",
        "min": 0, "max": 100})
    seed: int = field(default=-1, metadata={
        **RO, "help": ">= 0: same noise for every chunk (deterministic, for tests); -1: fresh"})
    control_rate_hz: float = field(default=0.0, metadata={
        **RO, "help": "per-step command rate and chunk step spacing; 0 = the topic map's fps",
        "min": 0.0, "max": 1000.0})
    n_action_steps: int = field(default=0, metadata={
        "help": "steps of each chunk to execute before the next is needed; 0 = the policy's",
        "min": 0, "max": 1000})
    replan_lead_steps: int = field(default=0, metadata={
        "help": "request the next chunk when this many executable steps are left; 0 = auto "
                "(the measured inference latency p90 plus one period)", "min": 0, "max": 1000})
    overrun_steps: int = field(default=-1, metadata={
        "help": "while the next chunk is late (not while holding), keep executing the current "
                "chunk's own predicted steps past n_action_steps for up to this many steps "
                "(never past its end); -1 = as many as n_action_steps, 0 = stop and wait",
        "min": -1, "max": 1000})
    blend_steps: int = field(default=0, metadata={
        "help": "cross-fade overlapping chunks over this many steps (0 = switch at once)",
        "min": 0, "max": 1000})
    max_obs_age_s: float = field(default=0.2, metadata={
        "help": "inputs older than this (on the ROS clock) mean hold: no new chunk",
        "min": 1e-3, "max": 60.0})
    max_obs_skew_s: float = field(default=0.1, metadata={
        "help": "max stamp difference between the cameras and joint states of one observation",
        "min": 1e-3, "max": 60.0})
    joint_lower_limits: tuple[float, ...] = field(default=(), metadata={
        "help": "per action joint lower position limits (empty: no clamp)"})
    joint_upper_limits: tuple[float, ...] = field(default=(), metadata={
        "help": "per action joint upper position limits (empty: no clamp)"})
    future_tolerance_s: float = field(default=0.3, metadata={
        "help": "input stamps further ahead of this node's clock are refused (clock sanity)",
        "min": 0.0, "max": 60.0})
    max_step_delta: float = field(default=0.0, metadata={
        "help": "max change of a joint command per control step, from the last command the "
                "robot received or the measured position (0 = unlimited)",
        "min": 0.0, "max": 1e6})
    max_abs_state: float = field(default=1e4, metadata={
        "help": "a joint state value beyond +-this (or an action joint more than its limit "
                "range outside its limits) is implausible: hold", "min": 1e-6, "max": 1e12})
    max_image_scale: float = field(default=100.0, metadata={
        **RO, "help": "largest accepted camera image, in multiples of the topic map's size "
                      "(pixels); larger ones are dropped before decoding",
        "min": 1.0, "max": 1e4})
    max_task_chars: int = field(default=2000, metadata={
        **RO, "help": "longest accepted task instruction (longer ones are refused)",
        "min": 1, "max": 1_000_000})
    command_type: str = field(default="JointState", metadata={
        **RO, "help": "per-step command message on the topic map's action topic",
        "choices": ("JointState", "Float64MultiArray", "none")})
    dry_run: bool = field(default=False, metadata={
        "help": "compute and publish on ~/debug/* only; command nothing"})
    task: str = field(default="", metadata={
        "help": "task instruction; empty: the topic map's text (a latched 'task' topic "
                "overrides both)"})
    cpu_threads: int = field(default=0, metadata={
        **RO, "help": "torch/OpenMP threads of the model (0 = the cores left after the node's "
                      "own thread, at least 1)", "min": 0, "max": 1024})
    inference_cpus: tuple[int, ...] = field(default=(), metadata={
        **RO, "help": "CPU ids the inference process may run on (empty: any); e.g. the last "
                      "core, kept free of drivers, for steadier model times"})
    inference_process: bool = field(default=True, metadata={
        **RO, "help": "run the model in a process of its own (its own GIL: the executor cannot "
                      "stall it); false: a thread of the node process"})
    warmup_iters: int = field(default=2, metadata={
        **RO, "help": "chunks run on blank inputs during configure", "min": 0, "max": 100})
    diagnostics_period_s: float = field(default=1.0, metadata={
        **RO, "help": "period of /diagnostics messages", "min": 0.05, "max": 60.0})
    autostart: bool = field(default=True, metadata={
        **RO, "help": "configure and activate on start (false: wait for lifecycle transitions)"})

    def __post_init__(self) -> None:
        check_fields(self)
        lower, upper = self.joint_lower_limits, self.joint_upper_limits
        if lower and upper and len(lower) != len(upper):
            raise ValueError(f"joint_lower_limits ({len(lower)} values) and joint_upper_limits "
                             f"({len(upper)} values) need the same length")
        for name, values in (("joint_lower_limits", lower), ("joint_upper_limits", upper)):
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name}={list(values)} must be finite (NaN/inf are not limits)")
        bad = [i for i, (lo, hi) in enumerate(zip(lower, upper, strict=False)) if lo > hi]
        if bad:
            i = bad[0]
            raise ValueError(f"joint_lower_limits[{i}]={lower[i]} exceeds "
                             f"joint_upper_limits[{i}]={upper[i]}")
        cores = _available_cpus()
        bad_cpus = [c for c in self.inference_cpus if c not in cores]
        if bad_cpus:
            raise ValueError(f"inference_cpus={list(self.inference_cpus)}: {bad_cpus} not among "
                             f"this process's CPUs {sorted(cores)}")
        if len(self.task) > self.max_task_chars:
            raise ValueError(f"task has {len(self.task)} characters, over max_task_chars="
                             f"{self.max_task_chars}")
        if self.device != "auto" and not (self.device in ("cpu", "cuda")
                                          or self.device.startswith("cuda:")):
            raise ValueError(f"device={self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.engine == "graph" and self.device == "cpu":
            raise ValueError("engine='graph' needs CUDA (CUDA graphs) but device='cpu'; use "
                             "engine 'compile', 'eager' or 'auto' on a CPU")
