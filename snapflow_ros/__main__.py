"""``python -m snapflow_ros <tool> [args]``: run any executable of the package.

The same tools are installed as console scripts (``ros2 run snapflow_ros <tool>`` under colcon).
"""

from __future__ import annotations

import importlib
import sys

from snapflow_ros._tools import DESCRIPTIONS, TOOLS


def _usage() -> str:
    width = max(map(len, TOOLS))
    lines = ["usage: python -m snapflow_ros <tool> [args]", "", "tools:"]
    lines += [f"  {name:<{width}}  {DESCRIPTIONS.get(name, '')}" for name in TOOLS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())  # noqa: T201
        return 0
    name, rest = argv[0], argv[1:]
    if name not in TOOLS:
        print(f"unknown tool {name!r}\n\n{_usage()}", file=sys.stderr)  # noqa: T201
        return 2
    module, func = TOOLS[name].split(":")
    sys.argv = [f"snapflow_ros {name}", *rest]
    result = getattr(importlib.import_module(module), func)()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
