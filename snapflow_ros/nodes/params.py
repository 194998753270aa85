"""Frozen dataclasses as the one source of truth for ROS node parameters.

A parameter dataclass declares each field with ``field(default=..., metadata={"help": ...,
"read_only": bool, "min": x, "max": y, "choices": (...)})`` and checks itself in
``__post_init__`` (``check_fields`` does the generic range/choice checks). ``declare`` declares
every field on a node with a described ``ParameterDescriptor`` and returns the dataclass built
from the node's values (YAML / overrides applied); ``updated`` validates a set-parameters
request by building a new dataclass. The YAML in ``config/`` mirrors the fields (tested).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_ARRAY_TYPES = {float: "PARAMETER_DOUBLE_ARRAY", int: "PARAMETER_INTEGER_ARRAY",
                str: "PARAMETER_STRING_ARRAY", bool: "PARAMETER_BOOL_ARRAY"}
_SCALAR_TYPES = {float: "PARAMETER_DOUBLE", int: "PARAMETER_INTEGER", str: "PARAMETER_STRING",
                 bool: "PARAMETER_BOOL"}


def check_fields(obj: Any) -> None:
    """Range and choice checks from field metadata; raises ValueError naming the field."""
    for f in dataclasses.fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name}={value!r} must be a finite number")
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError(f"{f.name}={value!r} is not one of {list(meta['choices'])}")
        if "min" in meta and value < meta["min"]:
            raise ValueError(f"{f.name}={value!r} is below its minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise ValueError(f"{f.name}={value!r} is above its maximum {meta['max']}")


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def _ros_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return _ARRAY_TYPES[typing.get_args(tp)[0]]
    return _SCALAR_TYPES[tp]


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        elem = typing.get_args(tp)[0]
        return tuple(elem(v) for v in value)
    return float(value) if tp is float else value


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) for each field, e.g. for ``--help`` and the README table."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, default, f.metadata.get("help", "")))
    return out


def declare(node: Any, cls: type[T]) -> T:
    """Declare every field of ``cls`` on ``node`` and return the validated dataclass."""
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )
    from rclpy.exceptions import ParameterException

    values = {}
    for name, default, help_text in describe(cls):
        f = cls.__dataclass_fields__[name]
        tp = _field_type(cls, f)
        ros_type = getattr(ParameterType, _ros_type(tp))
        desc = ParameterDescriptor(description=help_text, type=ros_type,
                                   read_only=bool(f.metadata.get("read_only", False)))
        if "choices" in f.metadata:
            desc.additional_constraints = f"one of {list(f.metadata['choices'])}"
        if tp is float and "min" in f.metadata and "max" in f.metadata:
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(f.metadata["min"]), to_value=float(f.metadata["max"]))]
        if tp is int and "min" in f.metadata and "max" in f.metadata:
            desc.integer_range = [IntegerRange(from_value=int(f.metadata["min"]),
                                               to_value=int(f.metadata["max"]), step=0)]
        if isinstance(default, (tuple, list)) and not default:
            # rclpy infers the type from the value, and [] would become a byte array: declare
            # the type instead (an uninitialised parameter reads as None = the empty default)
            from rclpy.parameter import Parameter

            default_value = Parameter.Type(ros_type)
        else:
            default_value = list(default) if isinstance(default, tuple) else default
        try:
            value = node.declare_parameter(name, default_value, desc).value
        except ParameterException as err:
            detail = str(err).removesuffix(f": {name}")
            raise ParameterError(f"invalid parameter {name}: {detail}; {_allowed(f, tp)}") from err
        values[name] = default if value is None else _coerce(tp, value)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"invalid parameters: {err}") from err


class ParameterError(ValueError):
    """A node's start-up parameters are invalid; the message names the parameter and fix."""


def _allowed(f: dataclasses.Field, tp: Any) -> str:
    """What a field accepts, in words."""
    meta = f.metadata
    if "choices" in meta:
        return f"allowed: one of {list(meta['choices'])}"
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, "a list of numbers")
    if "min" in meta and "max" in meta:
        return f"allowed: {kind} from {meta['min']} to {meta['max']}"
    return f"allowed: {kind}"


def updated(current: T, parameters: list[Any]) -> T:
    """A new dataclass with ``parameters`` (rclpy Parameters) applied; raises ValueError."""
    cls = type(current)
    changes = {}
    for p in parameters:
        if p.name in cls.__dataclass_fields__:
            tp = _field_type(cls, cls.__dataclass_fields__[p.name])
            changes[p.name] = _coerce(tp, p.value)
    return dataclasses.replace(current, **changes)


def help_requested(argv: list[str]) -> bool:
    """``-h``/``--help`` among the arguments before ``--ros-args``."""
    user = argv[1: argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    return "-h" in user or "--help" in user


def usage(executable: str, summary: str, cls: type) -> str:
    """A node's ``--help`` text: how to pass parameters, then each one with default and help."""
    lines = [f"usage: {executable} [--ros-args -p NAME:=VALUE ... | --params-file FILE]", "",
             summary, "", "parameters:"]
    lines += [f"  {name} (default {default!r}): {help_text}"
              for name, default, help_text in describe(cls)]
    return "\n".join(lines)
