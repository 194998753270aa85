"""The target-time embedding φ: SnapFlow's only new parameters.

φ(s) = W₂·SiLU(W₁·sincos(s) + b₁) + b₂, a (B, width) vector that adapters add where the base
policy injects time (SmolVLA/pi0: the sinusoidal time embedding fused with the action tokens;
pi0.5: the adaRMS conditioning vector).

Only the *last* layer (W₂, b₂) is zero-initialised. Then φ ≡ 0 at init, so the student equals
the teacher bit for bit for every s, while W₁ keeps a random init: zeroing both layers would make
the hidden layer SiLU(0) = 0 and leave ∂L/∂W₂ = ∂L/∂W₁ = 0 forever (only b₂ would learn, and φ
could not tell s = 0 from s = t).

The input is the sinusoidal embedding of s (``input="s"``, default) or of t − s
(``input="t_minus_s"``), with lerobot's periods (``min_period`` 4e-3, ``max_period`` 4.0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

TargetTimeInput = Literal["s", "t_minus_s"]


def sinusoidal_embedding(
    time: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0
) -> Tensor:
    """Sine-cosine features of scalar times, (B,) → (B, dim), float32.

    The same formula as lerobot's ``create_sinusoidal_pos_embedding`` (periods geometrically
    spaced from ``min_period`` to ``max_period``, computed in float64 where the device has it).
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    if time.ndim != 1:
        raise ValueError(f"time must have shape (B,), got {tuple(time.shape)}")
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * time.to(dtype)[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).float()


@dataclass(frozen=True)
class TargetTimeEmbeddingConfig:
    """Shape and input of φ. ``width`` is where it is added (the expert's time-embedding width)."""

    width: int
    hidden: int | None = None  # hidden width of the MLP; default = width
    input: TargetTimeInput = "s"
    min_period: float = 4e-3
    max_period: float = 4.0

    def __post_init__(self) -> None:
        if self.width < 2 or self.width % 2:
            raise ValueError(f"width must be an even number >= 2, got {self.width}")
        if self.hidden is not None and self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        if self.input not in ("s", "t_minus_s"):
            raise ValueError(f"input must be 's' or 't_minus_s', got {self.input!r}")
        if not 0 < self.min_period < self.max_period:
            raise ValueError(
                f"need 0 < min_period < max_period, got {self.min_period}, {self.max_period}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetTimeEmbeddingConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown target-time embedding keys {sorted(unknown)}")
        return cls(**data)


class TargetTimeEmbedding(nn.Module):
    """φ(t, s) → (B, width); exactly zero until trained (last layer zero-initialised)."""

    def __init__(self, config: TargetTimeEmbeddingConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden or config.width
        self.fc1 = nn.Linear(config.width, hidden)
        self.fc2 = nn.Linear(hidden, config.width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, t: Tensor, s: Tensor) -> Tensor:
        """t, s: (B,) → (B, width) in the parameters' dtype."""
        value = s if self.config.input == "s" else t - s
        feats = sinusoidal_embedding(
            value, self.config.width, self.config.min_period, self.config.max_period
        )
        feats = feats.to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(feats)))
