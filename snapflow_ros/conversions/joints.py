"""sensor_msgs/JointState (and named command arrays) → vectors in policy joint order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_CACHED_NAMES = 256


class JointConversionError(ValueError):
    """Joints missing or repeated in a message, or names and values of different lengths."""


class JointOrder:
    """Maps messages' joint names onto a fixed policy order; caches the index per name list."""

    def __init__(self, joints: Sequence[str]) -> None:
        if not joints:
            raise ValueError("JointOrder needs at least one joint name")
        self.joints = tuple(joints)
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def index(self, names: Sequence[str]) -> np.ndarray:
        """Positions of the policy joints within ``names`` (extra names are ignored)."""
        key = tuple(names)
        idx = self._cache.get(key)
        if idx is None:
            where = {name: i for i, name in enumerate(key)}
            if len(where) != len(key):
                twice = sorted({j for j in self.joints if key.count(j) > 1})
                if twice:
                    raise JointConversionError(
                        f"joint(s) {twice} appear more than once in the message: ambiguous "
                        f"(fix the publisher)")
            missing = [j for j in self.joints if j not in where]
            if missing:
                raise JointConversionError(
                    f"joint(s) {missing} missing from the message; it names {list(key)} "
                    f"(fix the topic map's joint list or the publisher)"
                )
            idx = np.array([where[j] for j in self.joints], dtype=np.intp)
            if len(self._cache) < 64 and len(key) <= MAX_CACHED_NAMES:
                self._cache[key] = idx  # bounded: a hostile publisher cannot grow it
        return idx

    def __call__(self, names: Sequence[str], values: Sequence[float]) -> np.ndarray:
        """``values`` (aligned with ``names``) reordered to the policy joints, float64."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(names),):
            raise JointConversionError(
                f"message has {len(names)} joint names but {values.size} values"
            )
        return values[self.index(names)]
