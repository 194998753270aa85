"""One entry point for every policy a tool can name: a built-in random-weight model or a
checkpoint (SnapFlow or plain LeRobot teacher, local directory or hub id)."""

from __future__ import annotations

import difflib
from pathlib import Path

from snapflow_ros.policies.base import teacher_num_steps
from snapflow_ros.policies.checkpoint import CheckpointError, LoadedPolicy, load_policy
from snapflow_ros.policies.registry import BUILTINS, builtin_builder, wrap

#: Built-in random-weight teachers (offline), by name (``registry.BUILTINS``).
BUILTIN_POLICIES = tuple(BUILTINS)


def make_builtin(name: str, *, device: str = "cpu", seed: int = 0) -> LoadedPolicy:
    """A built-in random-weight teacher wrapped for SnapFlow (10-step Euler default)."""
    if name not in BUILTIN_POLICIES:
        close = difflib.get_close_matches(name, BUILTIN_POLICIES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown built-in policy {name!r} (built-ins: {', '.join(BUILTIN_POLICIES)}){hint}"
        )
    _, build, shape = builtin_builder(name)
    lerobot_policy, pre, post = build(shape, seed=seed, device=device)
    steps = teacher_num_steps(lerobot_policy.config)
    policy = wrap(
        lerobot_policy,
        default_num_steps=steps,
        sampler="euler",
        teacher={"source": name, "num_steps": steps, "seed": seed, "shape": shape},
    )
    policy.to(device).eval()
    return LoadedPolicy(policy, pre, post, path=None, is_snapflow=False)


def make_any(
    name_or_path: str | Path, *, device: str = "cpu", num_steps: int | None = None
) -> LoadedPolicy:
    """A built-in name (``registry.BUILTINS``), a checkpoint directory or a hub id."""
    if str(name_or_path) in BUILTIN_POLICIES:
        loaded = make_builtin(str(name_or_path), device=device)
        if num_steps is not None:
            loaded.policy.set_sampling(num_steps, loaded.policy.sampler)
        return loaded
    try:
        return load_policy(name_or_path, device=device, num_steps=num_steps)
    except CheckpointError as err:
        close = difflib.get_close_matches(str(name_or_path), BUILTIN_POLICIES, n=1)
        if close and not Path(name_or_path).exists():
            raise CheckpointError(f"{err}; did you mean the built-in {close[0]!r}?") from err
        raise
