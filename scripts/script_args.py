"""Command-line helpers of the benchmark scripts (plain argparse: scripts are not the package,
whose tools are configured through ``snapflow_ros/config_cli.py``)."""

from __future__ import annotations

import argparse

from snapflow_ros.cpu_threads import resolve_cpu_threads


def cpu_threads_arg(text: str) -> int:
    """``argparse`` type of ``--cpu-threads``: an integer >= 0; the error names ``cpu_threads``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cpu_threads must be an integer >= 0 (0 = auto), got {text!r}") from None
    try:
        resolve_cpu_threads(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def add_cpu_threads_argument(parser: argparse.ArgumentParser, *, reserved: int = 1,
                             alias: str | None = None) -> None:
    """Add ``--cpu-threads N`` (dest ``cpu_threads``, default 0 = auto) to ``parser``.

    Args:
        parser: the tool's parser.
        reserved: the cores auto leaves free, as the tool passes it to ``apply_cpu_threads``
            (shown in the help).
        alias: an old option name kept as a hidden synonym (e.g. ``--threads``).
    """
    parser.add_argument(
        "--cpu-threads", type=cpu_threads_arg, default=0, metavar="N",
        help=f"torch/OpenMP CPU threads: 0 = auto (cores in the affinity mask minus {reserved}, "
             f"at least 1), N = exactly N (default: 0)")
    if alias:
        parser.add_argument(alias, dest="cpu_threads", type=cpu_threads_arg,
                            help=argparse.SUPPRESS)
