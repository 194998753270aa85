"""One way to configure a tool: a dataclass per tool, parsed by draccus.

The dataclass is the tool's whole interface: its field comments are ``--help`` (draccus reads
them), a YAML file comes through ``--config_path``, flags override it, nested dataclasses are
sections (``--loss.alpha 0.3``). Before draccus sees the command line, ``normalise_argv``
accepts the spellings robotics users type and our older CLIs took:

* ``--max-age 0.1``, ``--max_age 0.1``, ``--max_age=0.1`` (dashes or underscores);
* bare bool flags (``--overwrite``) and their negation (``--no-video``);
* a list field followed by several values (``--num-steps 10 1``), a dict field as repeated
  ``NAME=VALUE`` (``--max-age-for wrist=0.1 --max-age-for state=0.05``);
* positional words into one list field and short aliases (``-o``), where the tool says so;
* string values kept verbatim (draccus would read ``--task yes`` as the bool true).

Errors (unknown option, a value of the wrong type, a range a ``__post_init__`` checks) raise
``ConfigError`` with one line naming the option; ``main``-style callers print it and exit 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import draccus

T = TypeVar("T")
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off"}
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError):
    """A bad command line or config file; the message names the option and the problem."""


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _kind(tp: Any) -> str:
    tp = _strip_optional(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # str | X: text on the line
        return "text" if {str, Path} & set(typing.get_args(tp)) else "value"
    origin = typing.get_origin(tp) or tp
    if tp is bool:
        return "bool"
    if origin in (list, tuple, Sequence, typing.Sequence):
        return "list"
    if origin in (dict, Mapping, typing.Mapping):
        return "dict"
    if tp in (str, Path, Any):
        return "text"
    return "value"


def field_kinds(cls: type, prefix: str = "") -> dict[str, str]:
    """``{"dotted.name": kind}`` for every leaf field (kinds: bool, list, dict, text, value)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        tp = _strip_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            out.update(field_kinds(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = _kind(tp)
    return out


def _scalar(text: str) -> str:
    """A list/dict element as YAML: numbers and null as they are, anything else quoted."""
    return text if _NUMBER.match(text) or text in ("null", "true", "false") else json.dumps(text)


def _is_value(token: str) -> bool:
    return not token.startswith("-") or bool(_NUMBER.match(token))


class _Line:
    """The command line being rewritten: draccus flags, list/dict values, positional words."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.lists: dict[str, list[str]] = {}
        self.dicts: dict[str, dict[str, str]] = {}
        self.words: list[str] = []

    def add(self, name: str, kind: str, values: list[str]) -> None:
        """``--name values...`` of a field of ``kind``."""
        if kind == "bool":
            if values and values[0].lower() not in _BOOL_WORDS:
                self.words.append(values.pop())  # a positional word after a bare flag
            self.out += [f"--{name}", values[0] if values else "true"]
        elif kind == "list":
            if len(values) == 1 and values[0].lstrip().startswith("["):
                self.out += [f"--{name}", values[0]]  # a YAML list as it is
            else:
                self.lists.setdefault(name, []).extend(values)
        elif kind == "dict":
            for item in values:
                key, sep, val = item.partition("=")
                if sep:
                    self.dicts.setdefault(name, {})[key] = val
                elif item.lstrip().startswith("{"):
                    self.out += [f"--{name}", item]  # a YAML mapping as it is
                else:
                    raise ConfigError(f"--{name}: expected NAME=VALUE, got {item!r}")
        elif not values:
            raise ConfigError(f"--{name} needs a value")
        elif kind == "text" and values[0] != "null":
            self.out += [f"--{name}", json.dumps(values[0])]
        else:
            self.out += [f"--{name}", values[0]]

    def render(self, positional: str | None) -> list[str]:
        if self.words:
            if positional is None:
                raise ConfigError(f"unexpected argument {self.words[0]!r} (options are "
                                  f"--NAME VALUE)")
            self.lists[positional] = self.words + self.lists.get(positional, [])
        out = list(self.out)
        for name, items in self.lists.items():
            out += [f"--{name}", "[" + ", ".join(map(_scalar, items)) + "]"]
        for name, mapping in self.dicts.items():
            out += [f"--{name}", "{" + ", ".join(f"{json.dumps(k)}: {_scalar(v)}"
                                                 for k, v in mapping.items()) + "}"]
        return out


def normalise_argv(cls: type, argv: Sequence[str], *, positional: str | None = None,
                   short: Mapping[str, str] | None = None) -> list[str]:
    """``argv`` in the spelling draccus parses (see the module docstring)."""
    kinds = field_kinds(cls)
    short = dict(short or {})
    line = _Line()
    i = 0
    while i < len(argv):
        token = short.get(argv[i], argv[i])
        i += 1
        if token == "--":
            line.words += argv[i:]
            break
        if not token.startswith("--") or len(token) == 2:
            if token.startswith("-") and not _NUMBER.match(token):
                raise ConfigError(f"unknown option {token!r}")
            line.words.append(token)
            continue
        name, eq, value = token[2:].partition("=")
        name = name.replace("-", "_")
        if name not in kinds and name.startswith("no_") and kinds.get(name[3:]) == "bool":
            if eq:
                raise ConfigError(f"--{name.replace('_', '-')} takes no value")
            line.out += [f"--{name[3:]}", "false"]
            continue
        kind = kinds.get(name)
        values = [value] if eq else []
        if not eq:  # the values that follow: all of them for a list or dict, else one
            take = len(argv) - i if kind in ("list", "dict") else 1
            while take and i < len(argv) and _is_value(argv[i]):
                values.append(argv[i])
                i += 1
                take -= 1
        if kind is None:  # config_path, help, or unknown: draccus decides
            line.out += [f"--{name}", *values]
        else:
            line.add(name, kind, values)
    return line.render(positional)


def option_value(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name V`` / ``--name=V`` in ``argv`` (last one wins), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def without_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``--name V`` / ``--name=V``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == f"--{name}":
            skip = True
        elif not arg.startswith(f"--{name}="):
            out.append(arg)
    return out


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def print_help(cls: type, prog: str, *, usage: str = "") -> None:
    """draccus's help (every field: type, default, comment), after ``usage`` if given."""
    if usage:
        print(usage)  # noqa: T201
    print("Options are --NAME VALUE or --NAME=VALUE (dashes or underscores); a bool option "  # noqa: T201
          "alone means true, --no-NAME false; --config_path FILE.yaml sets any of them, flags "
          "override it; a section's fields are --SECTION.NAME.\n")
    sys.stdout.flush()
    with contextlib.suppress(SystemExit):  # argparse's help exits
        draccus.parse(cls, args=["--help"], prog=prog)
    sys.stdout.flush()


def parse(cls: type[T], argv: Sequence[str] | None = None, *, prog: str,
          positional: str | None = None, short: Mapping[str, str] | None = None,
          config_path: str | Path | None = None) -> T:
    """Build ``cls`` from the command line (``sys.argv[1:]`` by default) and an optional YAML
    file (``--config_path``, or ``config_path`` when the line names none). Raises
    ``ConfigError``; ``--help`` is for the caller (``wants_help`` / ``print_help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = normalise_argv(cls, argv, positional=positional, short=short)
    paths = [args[k + 1] for k, a in enumerate(args[:-1]) if a == "--config_path"]
    if config_path is not None and not paths:
        args = ["--config_path", str(config_path), *args]
        paths = [str(config_path)]
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"config file '{path}' does not exist")
    try:
        return draccus.parse(cls, args=args, prog=prog, exit_on_error=False)
    except draccus.utils.DecodingError as err:  # names the field: "`jobs`: Couldn't parse..."
        raise ConfigError(f"invalid configuration: {err}") from err
    except draccus.utils.DraccusException as err:  # a range check's message, unknown options
        cause = err.__cause__ if isinstance(err.__cause__, ValueError) else err
        raise ConfigError(f"invalid configuration: {cause}") from err
    except ValueError as err:  # a field's range check (__post_init__)
        raise ConfigError(f"invalid configuration: {err}") from err
    except SystemExit as err:  # argparse: unknown option, missing value
        raise ConfigError(f"invalid command line: {' '.join(argv)} (see --help)") from err


def from_command_line(cls: type[T], argv: Sequence[str] | None = None, *, prog: str,
                      usage: str = "", positional: str | None = None,
                      short: Mapping[str, str] | None = None) -> T:
    """``parse`` for a tool's ``main``: ``--help`` prints the help and exits 0, a bad line
    prints one ``prog: error`` line and exits 2 (as argparse does)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        print_help(cls, prog, usage=usage)
        raise SystemExit(0)
    try:
        return parse(cls, argv, prog=prog, positional=positional, short=short)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
