"""A 1-step SnapFlow student as a standard LeRobot policy directory: φ folded into a bias.

At one step the student evaluates φ only at (t, s) = (1, 0), and φ is added to the sinusoidal
time embedding at the input of a linear layer (the adapter's ``time_input``: SmolVLA's and pi0's
``action_time_mlp_in``, the time half of its input; pi0.5's ``time_mlp_in``). So

    W·[a; e(1) + φ(1, 0)] + b  =  W·[a; e(1)] + (b + W_time·φ(1, 0))

and with that constant folded into the layer's bias and the config's step count set to 1,
lerobot's own 1-step Euler sampler (``x₀ = ε − v(ε, 1)``) computes the student's 1-NFE chunk
``ε − F(ε, 1, 0)``, to float rounding. The exported directory has no φ, so the student's 2-step
(or more) outputs are not reproduced there: they need φ at other (t, s).

The directory is what ``save_policy`` writes minus the SnapFlow sidecar (lerobot's config.json
and model.safetensors, the processors, the adapter's files such as SmolVLA's ``vlm/``) plus a
``README.md`` model card. Loading it needs nothing from snapflow_ros; see ``LEROBOT_LOADING``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from snapflow_ros.atomic import atomic_directory
from snapflow_ros.policies._quiet import quiet_stdout
from snapflow_ros.policies.base import STEP_FIELDS, SnapFlowPolicy, step_field
from snapflow_ros.policies.checkpoint import LoadedPolicy, point_names_at_bundled
from snapflow_ros.policies.registry import adapter_class

NOTE_FILE = "snapflow_export.json"


class ExportError(ValueError):
    """The student cannot be written as an exact plain LeRobot policy; the message says why."""


def _step_field(config: Any) -> str:
    field = step_field(config)
    if field is None:
        raise ExportError(f"{type(config).__name__} has no step-count field "
                          f"({' / '.join(STEP_FIELDS)})")
    return field


def folded_bias(policy: SnapFlowPolicy) -> tuple[nn.Linear, torch.Tensor]:
    """The layer φ feeds and its bias with W_time·φ(1, 0) added (float64 sum, layer dtype)."""
    layer, columns = policy.time_input()
    if not isinstance(layer, nn.Linear) or layer.bias is None:
        raise ExportError(
            f"φ enters {type(layer).__name__} of this {policy.policy_type}, not a linear layer "
            f"with a bias: folding φ(1, 0) into it would not be exact")
    width = columns.stop - columns.start
    if width != policy.phi.config.width:
        raise ExportError(f"φ has width {policy.phi.config.width} but the layer's time input "
                          f"has {width} columns")
    with torch.no_grad():
        one, zero = torch.ones(1, device=policy.device), torch.zeros(1, device=policy.device)
        phi = policy.phi(one, zero)[0].double()
        weight = layer.weight[:, columns].double()
        bias = (layer.bias.double() + weight @ phi).to(layer.bias.dtype)
    return layer, bias


@contextlib.contextmanager
def folded(policy: SnapFlowPolicy) -> Iterator[nn.Module]:
    """The wrapped lerobot policy with φ(1, 0) folded into the bias and 1 sampling step; both
    restored on exit (φ's hook stays, but it adds nothing outside the student's own passes)."""
    layer, bias = folded_bias(policy)
    config = policy.config
    field = _step_field(config)
    old_bias, old_steps = layer.bias.detach().clone(), getattr(config, field)
    with torch.no_grad():
        layer.bias.copy_(bias)
    setattr(config, field, 1)
    try:
        yield policy.policy
    finally:
        with torch.no_grad():
            layer.bias.copy_(old_bias)
        setattr(config, field, old_steps)


def export_lerobot(student: LoadedPolicy, directory: str | Path, *,
                   eval_results: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``student`` (a SnapFlow checkpoint) as a plain 1-step LeRobot policy directory.

    ``eval_results``: the distillation's ``eval.json`` (quoted in the model card). Refuses a
    plain teacher (no φ to fold: export a distilled student) and a non-empty ``directory``
    unless ``overwrite``. Written atomically.
    """
    if not student.is_snapflow:
        raise ExportError("this is a plain LeRobot policy (no SnapFlow φ); export a student "
                          "written by distill (its student/ directory)")
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"'{directory}' exists and is not empty; pass overwrite=True")
    policy = student.policy
    with atomic_directory(directory) as tmp:
        with folded(policy) as lerobot_policy, quiet_stdout():
            lerobot_policy.save_pretrained(tmp)
        for processor in (student.preprocessor, student.postprocessor):
            if processor is not None:
                processor.save_pretrained(tmp)
        policy.save_extra(tmp)
        point_names_at_bundled(tmp, directory, type(policy))
        note = {"what": "SnapFlow 1-NFE student exported as a plain LeRobot policy: phi(1, 0) "
                        "folded into a bias, 1 sampling step",
                "policy_type": policy.policy_type, "source": str(student.path),
                "time_layer_bias_folded": True, "teacher": policy.teacher}
        (tmp / NOTE_FILE).write_text(json.dumps(note, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(policy, student.path, eval_results,
                                                  distill=_distill_provenance(student.path)))
    return directory


LEROBOT_LOADING = """\
```python
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_pre_post_processors

d = "{path}"  # this directory, wherever it was copied
cfg = PreTrainedConfig.from_pretrained(d)
{config_line}policy = get_policy_class(cfg.type).from_pretrained(d, config=cfg)
pre, post = make_pre_post_processors(cfg, pretrained_path=d{overrides})
```
"""


def lerobot_loading(policy_type: str, path: str = "path/to/this/directory") -> str:
    """How plain LeRobot loads an exported (or saved) directory offline, from any path.

    LeRobot resolves ``vlm_model_name`` (SmolVLA) and the tokenizer name against the working
    directory or the hub, never against the policy directory, so a bundled ``vlm/`` or
    ``tokenizer/`` is named explicitly: one line for the config, one processor override.
    """
    adapter = adapter_class(policy_type)
    folder = adapter.bundled_tokenizer
    config_line = (f'cfg.vlm_model_name = f"{{d}}/{adapter.bundled_vlm}"; '
                   f'cfg.load_vlm_weights = False\n' if adapter.bundled_vlm else "")
    overrides = (f',\n    preprocessor_overrides={{"tokenizer_processor": '
                 f'{{"tokenizer_name": f"{{d}}/{folder}"}}}}' if folder else "")
    return LEROBOT_LOADING.format(path=path, config_line=config_line, overrides=overrides)


def _distill_provenance(source: Path | None) -> dict[str, Any]:
    sidecar = source / "snapflow.json" if source is not None else None
    if sidecar is None or not sidecar.is_file():
        return {}
    return json.loads(sidecar.read_text()).get("distill", {})


EXPORTED = ("A flow-matching policy distilled with SnapFlow (self-distillation to one step) by "
            "snapflow_ros, written as a standard LeRobot policy: the target-time embedding "
            "φ(1, 0) is folded into the bias of the layer it feeds and the config samples with "
            "1 step, so LeRobot's own sampler computes the 1-NFE student exactly (float "
            "rounding). Only the 1-step output is exact; for 2+ steps use the SnapFlow "
            "checkpoint.")
CHECKPOINT = ("A flow-matching policy distilled with SnapFlow (self-distillation to one step) by "
              "snapflow_ros. This is a SnapFlow checkpoint: LeRobot's files plus φ "
              "(`snapflow_phi.safetensors`, `snapflow.json`); plain LeRobot loads only the base "
              "weights and samples them as the teacher would. For LeRobot's tools, export it: "
              "`python -m snapflow_ros export DIR OUT` (a standard 1-step LeRobot policy).")


def model_card(policy: SnapFlowPolicy, source: Path | None,
               eval_results: dict[str, Any] | None, *, distill: dict[str, Any] | None = None,
               exported: bool = True) -> str:
    """README.md of a student (``exported``: the plain LeRobot export; else the SnapFlow
    checkpoint): what it is, provenance, held-out numbers, how to run it."""
    teacher = policy.teacher or {}
    kind = "exported LeRobot policy" if exported else "SnapFlow checkpoint"
    lines = [f"# SnapFlow 1-NFE {policy.policy_type} ({kind})", "",
             EXPORTED if exported else CHECKPOINT, "",
             "| | |", "|---|---|",
             f"| policy type | `{policy.policy_type}` |",
             f"| teacher | `{teacher.get('source', 'unknown')}` "
             f"({teacher.get('num_steps', '?')} steps) |"]
    if exported:
        lines.append(f"| exported from | `{source}` |")
    for key, value in (distill or {}).items():
        lines.append(f"| distill: {key} | `{json.dumps(value)}` |")
    if eval_results:
        methods = eval_results.get("methods", eval_results)
        lines += ["", "Held-out evaluation (distill's eval.json, normalised action units):", "",
                  "| method | NFE | MSE | P95 abs err |", "|---|---|---|---|"]
        for name, r in methods.items():
            if isinstance(r, dict) and "mse" in r:
                lines.append(f"| {name} | {r.get('nfe', '?')} | {r['mse']:.4f} | "
                             f"{r.get('p95_abs_err', float('nan')):.4f} |")
    if not exported:
        lines += ["", "## Run it", "", "In ROS 2: `ros2 launch snapflow_ros policy.launch.py "
                  "policy_path:=DIR`; in Python: `snapflow_ros.policies.load_policy(DIR)`.", ""]
        return "\n".join(lines)
    lines += ["", "## Run it", "", "In LeRobot (offline, from any path):", "",
              lerobot_loading(policy.policy_type).rstrip(), "",
              "`lerobot-eval --policy.path=DIR ...` and `lerobot-record --policy.path=DIR ...` "
              "take the directory as it is when it stays where it was exported (or its VLM / "
              "tokenizer names are hub ids); the async-inference policy server accepts its "
              f"type (`{policy.policy_type}`).", "",
              "In ROS 2 (snapflow_ros): `ros2 launch snapflow_ros policy.launch.py "
              "policy_path:=DIR`.", ""]
    return "\n".join(lines)
