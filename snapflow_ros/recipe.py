"""The SnapFlow recipe file (``config/snapflow.yaml``): loss, φ and sampling defaults.

The packaged file is ``share/snapflow_ros/config/snapflow.yaml`` (see ``paths.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from snapflow_ros.core import SnapFlowLossConfig
from snapflow_ros.paths import config_path

PHI_KEYS = ("hidden", "input")
SAMPLING_KEYS = ("num_steps", "sampler")


@dataclass(frozen=True)
class Recipe:
    """What ``config/snapflow.yaml`` holds."""

    loss: SnapFlowLossConfig = field(default_factory=SnapFlowLossConfig)
    phi: dict[str, Any] = field(default_factory=lambda: {"hidden": None, "input": "s"})
    num_steps: int = 1
    sampler: str = "snap"


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Read a recipe YAML; unknown or missing sections/keys are errors that name them."""
    path = Path(path) if path else config_path("snapflow.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"SnapFlow recipe '{path}' does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"loss", "phi", "sampling"}
    if unknown:
        raise ValueError(
            f"'{path}': unknown sections {sorted(unknown)} (known: loss, phi, sampling)")
    phi = data.get("phi") or {}
    sampling = data.get("sampling") or {}
    for section, keys, allowed in (("phi", phi, PHI_KEYS), ("sampling", sampling, SAMPLING_KEYS)):
        extra = set(keys) - set(allowed)
        if extra:
            raise ValueError(
                f"'{path}': unknown {section} keys {sorted(extra)} (known: {allowed})")
    return Recipe(
        loss=SnapFlowLossConfig.from_dict(data.get("loss") or {}),
        phi={"hidden": phi.get("hidden"), "input": phi.get("input", "s")},
        num_steps=int(sampling.get("num_steps", 1)),
        sampler=str(sampling.get("sampler", "snap")),
    )
