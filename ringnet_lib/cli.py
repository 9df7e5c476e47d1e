"""Dataclass configs as command lines: one helper for ``ringnet_lib.train`` and ``ringnet_lib.data.synthesize``.

A config is a dataclass whose fields carry their type hints and, in ``field(metadata=...)``,
a ``help`` text and a ``group`` (the section it is listed under). From that alone:

* :func:`add_arguments` adds one flag per field (``--ring-size`` for ``ring_size``; booleans as
  ``--flag/--no-flag``; ``Literal`` types become choices; ``X | None`` accepts ``none``);
* :func:`coerce` turns a command-line or papermill value into the field's type;
* :func:`check_finite_fields` refuses NaN and infinite floats, naming the field;
* :func:`to_args` writes the flags that rebuild given values.

No list of flags is kept by hand anywhere.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from pathlib import Path


class ConfigError(ValueError):
    """A config value of the wrong type or out of range; the message names the field."""


def field_types(cls) -> dict[str, object]:
    """``{field name: its resolved type hint}``."""
    return typing.get_type_hints(cls)


def _parts(hint) -> tuple[list, bool]:
    """The non-None members of a type hint and whether None is allowed."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = list(typing.get_args(hint))
        return [m for m in members if m is not type(None)], type(None) in members
    return [hint], False


def coerce(cls, name: str, value):
    """``value`` (a string from a command line, or what papermill passes) as field ``name``'s type."""
    hint = field_types(cls)[name]
    members, optional = _parts(hint)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "")):
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required, got {value!r}")
    errors = []
    for member in members:
        try:
            if typing.get_origin(member) is typing.Literal:
                choices = typing.get_args(member)
                if value in choices:
                    return value
                errors.append(f"one of {list(choices)}")
            elif member is bool:
                if isinstance(value, bool):
                    return value
                if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                    return value.lower() in ("true", "1", "yes")
                errors.append("true or false")
            elif member is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError  # 2.5 identities is a mistake, not 2
                return int(value)
            elif member is float:
                if isinstance(value, bool):
                    raise ValueError
                return float(value)
            elif member is Path:
                return Path(value).expanduser()
            elif member is str:
                return str(value)
            else:
                return member(value)
        except (TypeError, ValueError):
            errors.append(getattr(member, "__name__", str(member)))
    raise ConfigError(f"{name}: {value!r} is not {' or '.join(errors)}" + (" or none" if optional else ""))


def non_finite_field(config) -> str | None:
    """The first float field of the dataclass ``config`` that is NaN or infinite, or None."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            return item.name
    return None


def check_finite_fields(config) -> None:
    """Raise :class:`ConfigError` naming the first float field of the dataclass ``config`` that is NaN or
    infinite (``float("inf")`` passes every ``>= 0`` check, and a loss weight of inf trains nothing)."""
    name = non_finite_field(config)
    if name is not None:
        raise ConfigError(f"{name}: must be a finite number; got {getattr(config, name)!r}")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass ``cls``, in argument groups; unset flags are absent from the namespace."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for item in dataclasses.fields(cls):
        if item.name in skip:
            continue
        group_name = item.metadata.get("group", "options")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        group = groups[group_name]
        members, optional = _parts(field_types(cls)[item.name])
        help_text = item.metadata.get("help", "")
        if members == [bool]:
            group.add_argument(flag(item.name), dest=item.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
            continue
        choices = [c for m in members if typing.get_origin(m) is typing.Literal for c in typing.get_args(m)]
        metavar = "|".join(str(c) for c in choices) if choices else "/".join(
            getattr(m, "__name__", "VALUE").upper() for m in members if typing.get_origin(m) is not typing.Literal)
        if optional:
            metavar += "|none"
        group.add_argument(flag(item.name), dest=item.name, default=argparse.SUPPRESS, metavar=metavar,
                           type=lambda text, name=item.name: _parse(cls, name, text), help=help_text)


def _parse(cls, name: str, text: str):
    try:
        return coerce(cls, name, text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def to_args(values: dict) -> list[str]:
    """Flags that set ``values`` (``{field: value}``): ``--name value``, ``--flag``/``--no-flag``, ``none``."""
    args = []
    for name, value in values.items():
        if isinstance(value, bool):
            args.append(flag(name) if value else "--no-" + name.replace("_", "-"))
        else:
            args += [flag(name), "none" if value is None else str(value)]
    return args
