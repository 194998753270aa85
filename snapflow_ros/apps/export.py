"""``python -m snapflow_ros export STUDENT OUT``: a SnapFlow student as a plain 1-step LeRobot
policy (``policies/export.py``: φ(1, 0) folded into a bias), for lerobot-eval, lerobot-record
and LeRobot's async-inference server."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from snapflow_ros import config_cli

USAGE = "usage: export STUDENT OUT [--overwrite] [--device cpu]"


@dataclass
class ExportConfig:
    """Write a SnapFlow student as a standard LeRobot policy that samples its 1-NFE chunk."""

    # STUDENT OUT: the SnapFlow checkpoint (distill's student/) and the output directory
    paths: list[str] = field(default_factory=list)
    overwrite: bool = False  # replace a non-empty OUT
    device: str = "cpu"  # where the student is loaded for the fold (cpu is enough)


def main(argv: list[str] | None = None) -> int:
    args = config_cli.from_command_line(ExportConfig, argv, prog="export", usage=USAGE,
                                        positional="paths")
    if len(args.paths) != 2:
        print(f"export: error: give the student checkpoint and the output directory\n{USAGE}",  # noqa: T201
              file=sys.stderr)
        return 2
    from snapflow_ros.policies import CheckpointError, load_policy
    from snapflow_ros.policies.export import ExportError, export_lerobot

    student_dir, out = Path(args.paths[0]), Path(args.paths[1])
    eval_path = student_dir.parent / "eval.json"  # distill's run directory, when it is one
    results = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    try:
        student = load_policy(student_dir, device=args.device)
        export_lerobot(student, out, eval_results=results, overwrite=args.overwrite)
    except (CheckpointError, ExportError, FileExistsError) as err:
        print(f"export: error: {err}", file=sys.stderr)  # noqa: T201
        return 1
    print(f"exported {student.policy.policy_type} 1-NFE student to {out} (a plain LeRobot "  # noqa: T201
          f"policy; see {out / 'README.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
