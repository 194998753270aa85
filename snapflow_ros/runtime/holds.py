"""Why the robot is held: one enum of reasons for the observation buffer, the safety gate and
the engine (counters ``hold_<kind>`` / ``refused_<kind>``, ``/diagnostics``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class HoldKind(str, Enum):
    """A hold's class; compares and formats as its value (``"stale"``)."""

    MISSING = "missing"            # an input has no message yet
    STALE = "stale"                # an input older than max_obs_age_s
    SKEW = "skew"                  # inputs further apart than max_skew_s
    FUTURE = "future"              # the newest message is stamped ahead of this node's clock
    CLOCK = "clock"                # the clock jumped back: chunks and inputs were reset
    WAITING = "waiting"            # no observation newer than the current chunk's
    STARVED = "starved"            # no chunk to execute
    LATE = "late"                  # a chunk older than the one being executed (dropped)
    BAD_INPUT = "bad_input"        # a message that cannot be decoded
    NAN = "nan"                    # NaN or inf in a state, measured position, target or output
    OUT_OF_BOUND = "out_of_bound"  # an implausible state (max_abs_state, far outside limits)
    NO_REFERENCE = "no_reference"  # no fresh, plausible measured position to start from
    SHAPE = "shape"                # a target of the wrong shape
    OUTSIDE_LIMITS = "outside_limits"  # the arm is further outside the limits than one step

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Hold:
    """No consistent set / no command now; ``kind`` classifies, ``reason`` explains."""

    kind: HoldKind
    reason: str
