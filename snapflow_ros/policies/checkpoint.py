"""SnapFlow policy directories: save, load, and load plain LeRobot policies as teachers.

A SnapFlow checkpoint is a LeRobot policy directory plus a small sidecar::

    config.json, model.safetensors          lerobot's own (``PreTrainedPolicy.save_pretrained``)
    policy_preprocessor*.json/.safetensors  lerobot's processors (normalisation stats, tokenizer)
    policy_postprocessor*...
    (adapter files)                         what the adapter needs besides lerobot's files, e.g.
                                            SmolVLA's vlm/ (VLM config + tokenizer + processor):
                                            the directory loads offline anywhere
    snapflow.json                           sidecar: φ config, default step count and sampler,
                                            teacher provenance
    snapflow_phi.safetensors                φ's weights

The base weights stay loadable by LeRobot's own ``from_pretrained`` (it ignores the sidecar).
A directory without ``snapflow.json`` is a *teacher*: it loads with a fresh zero-output φ, its
own step count (e.g. 10) and Euler sampling, so it behaves exactly like the LeRobot policy.

``load_policy`` accepts a local directory, or a Hugging Face hub id when online (or cached).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from snapflow_ros import __version__
from snapflow_ros.atomic import atomic_directory
from snapflow_ros.core import TargetTimeEmbedding, TargetTimeEmbeddingConfig
from snapflow_ros.policies._quiet import quiet_stdout
from snapflow_ros.policies.base import SnapFlowPolicy, teacher_num_steps
from snapflow_ros.policies.registry import ADAPTERS, FLOW_MATCHING_TYPES, adapter_class

SIDECAR = "snapflow.json"
PHI_WEIGHTS = "snapflow_phi.safetensors"
FORMAT = "snapflow_ros.checkpoint/1"
#: The lerobot policy types with a SnapFlow adapter.
SUPPORTED_TYPES = tuple(ADAPTERS)


class CheckpointError(ValueError):
    """A directory or hub id that is not a usable (SnapFlow or LeRobot) policy checkpoint."""


@dataclass
class LoadedPolicy:
    """A SnapFlow policy with the processors saved beside it (None when there were none)."""

    policy: SnapFlowPolicy
    preprocessor: Any | None
    postprocessor: Any | None
    path: Path | None  # None for built-in models
    is_snapflow: bool  # False: a plain LeRobot teacher wrapped with a zero φ


def resolve_checkpoint(path_or_id: str | Path) -> Path:
    """A local policy directory for ``path_or_id`` (downloading a hub id when online)."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"'{path}' is a file; a policy checkpoint is a directory")
        return path
    text = str(path_or_id)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise CheckpointError(
            f"no checkpoint at '{text}': it is not a directory, nor a Hugging Face hub id of "
            f"the form owner/name"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=text))
    except Exception as err:  # offline, unknown repo, auth: all mean "not available here"
        raise CheckpointError(
            f"'{text}' is not a local directory and could not be fetched from the Hugging Face "
            f"hub ({type(err).__name__}: {err}). Offline, download it once when online "
            f"(huggingface-cli download {text}) or pass a local policy directory."
        ) from err


def read_policy_type(directory: Path) -> str:
    """The lerobot policy type in ``directory/config.json``, with errors that name the fix."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"'{directory}' is not a LeRobot policy directory: config.json is missing (a policy "
            f"directory holds config.json and model.safetensors, as written by save_pretrained)"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"'{config_path}' is not valid JSON: {err}") from err
    policy_type = config.get("type") if isinstance(config, dict) else None
    if not policy_type:
        raise CheckpointError(f"'{config_path}' has no policy 'type'; is it a LeRobot policy?")
    if policy_type not in FLOW_MATCHING_TYPES:
        raise CheckpointError(
            f"'{directory}' holds a '{policy_type}' policy, which is not a flow-matching policy; "
            f"SnapFlow needs one of: {', '.join(FLOW_MATCHING_TYPES)}"
        )
    if policy_type not in SUPPORTED_TYPES:
        raise CheckpointError(
            f"'{directory}' holds a '{policy_type}' policy; its SnapFlow adapter is not "
            f"available yet (supported: {', '.join(SUPPORTED_TYPES)})"
        )
    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"'{directory}' has config.json but no model.safetensors")
    return str(policy_type)


def _load_processors(directory: Path, config: Any, adapter_overrides: dict[str, Any],
                     device: str) -> tuple:
    if not (directory / "policy_preprocessor.json").is_file():
        return None, None
    from lerobot.policies.factory import make_pre_post_processors

    overrides: dict[str, Any] = {"device_processor": {"device": device}, **adapter_overrides}
    return make_pre_post_processors(
        config, pretrained_path=str(directory), preprocessor_overrides=overrides
    )


def point_names_at_bundled(written: Path, final: Path, adapter: type[SnapFlowPolicy]) -> None:
    """Make the VLM and tokenizer names in ``written``'s config.json and preprocessor point at
    the copies bundled in the checkpoint (at ``final``, where it is being moved), instead of
    the folders the model was built from: plain LeRobot then loads the directory where it is.
    Hub ids (no bundled copy) stay hub ids. A copy elsewhere: ``export.lerobot_loading``."""
    final = final.resolve()
    if adapter.bundled_vlm and (written / adapter.bundled_vlm / "config.json").is_file():
        path = written / "config.json"
        config = json.loads(path.read_text())
        config["vlm_model_name"] = str(final / adapter.bundled_vlm)
        path.write_text(json.dumps(config, indent=4) + "\n")
    if adapter.bundled_tokenizer and (written / adapter.bundled_tokenizer).is_dir():
        for path in written.glob("policy_preprocessor*.json"):
            pipeline = json.loads(path.read_text())
            for step in pipeline.get("steps", []):
                if "tokenizer_name" in step.get("config", {}):
                    step["config"]["tokenizer_name"] = str(final / adapter.bundled_tokenizer)
            path.write_text(json.dumps(pipeline, indent=2) + "\n")


def load_policy(
    path_or_id: str | Path,
    *,
    device: str = "cpu",
    num_steps: int | None = None,
    sampler: str | None = None,
) -> LoadedPolicy:
    """Load a SnapFlow checkpoint, or a plain LeRobot flow-matching policy as a teacher.

    Args:
        path_or_id: a local policy directory, or a hub id (online or cached).
        device: "cpu", "cuda", "cuda:1", ...
        num_steps: override the default step count (SnapFlow: 1; teacher: its config's).
        sampler: override the sampler ("snap" for SnapFlow, "euler" for teachers).
    """
    directory = resolve_checkpoint(path_or_id)
    adapter = adapter_class(read_policy_type(directory))
    sidecar_path = directory / SIDECAR
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else None
    lerobot_policy, overrides = adapter.load_lerobot(directory, device)
    if sidecar is None:
        steps = teacher_num_steps(lerobot_policy.config)
        policy = adapter(
            lerobot_policy,
            default_num_steps=steps,
            sampler="euler",
            teacher={"source": str(path_or_id), "num_steps": steps},
        )
    else:
        if sidecar.get("format") != FORMAT:
            raise CheckpointError(
                f"'{sidecar_path}' has format {sidecar.get('format')!r}; this snapflow_ros "
                f"reads {FORMAT!r}"
            )
        from safetensors.torch import load_file

        phi = TargetTimeEmbedding(TargetTimeEmbeddingConfig.from_dict(sidecar["phi"]))
        phi.load_state_dict(load_file(str(directory / PHI_WEIGHTS)))
        policy = adapter(
            lerobot_policy,
            phi,
            default_num_steps=int(sidecar["default_num_steps"]),
            sampler=sidecar["sampler"],
            teacher=sidecar.get("teacher"),
        )
    policy.to(device).eval()
    if num_steps is not None or sampler is not None:
        policy.set_sampling(num_steps or policy.default_num_steps, sampler or policy.sampler)
    pre, post = _load_processors(directory, lerobot_policy.config, overrides, device)
    return LoadedPolicy(policy, pre, post, directory, is_snapflow=sidecar is not None)


def save_policy(
    policy: SnapFlowPolicy,
    directory: str | Path,
    *,
    preprocessor: Any | None = None,
    postprocessor: Any | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``policy`` as a SnapFlow checkpoint directory (atomically: all or nothing).

    Args:
        policy: the SnapFlow policy.
        directory: target directory; refused if it exists and is not empty, unless ``overwrite``.
        preprocessor, postprocessor: lerobot processor pipelines to save beside it.
        extra: more JSON-able provenance for the sidecar (e.g. the distillation recipe).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"'{directory}' exists and is not empty; pass overwrite=True")
    with atomic_directory(directory) as tmp:
        with quiet_stdout():
            policy.policy.save_pretrained(tmp)
        for processor in (preprocessor, postprocessor):
            if processor is not None:
                processor.save_pretrained(tmp)
        policy.save_extra(tmp)
        point_names_at_bundled(tmp, directory, type(policy))
        save_file({k: v.detach().cpu().contiguous() for k, v in policy.phi.state_dict().items()},
                  str(tmp / PHI_WEIGHTS))
        sidecar = {
            "format": FORMAT,
            "snapflow_ros_version": __version__,
            "policy_type": policy.policy_type,
            "default_num_steps": policy.default_num_steps,
            "sampler": policy.sampler,
            "phi": policy.phi.config.to_dict(),
            "teacher": policy.teacher,
            "torch_version": torch.__version__,
            **(extra or {}),
        }
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    return directory
