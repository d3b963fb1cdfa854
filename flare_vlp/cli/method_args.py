"""``flare-vlp run``'s method flags, generated from the registry's typed method configs.

Each field of each registered config becomes one flag (``rho`` -> ``--rho``) with its help text, type and
``Literal`` choices; a field shared by several methods (``anchor_weight`` of FedAID and FedDRA) is one flag, so it
must mean one thing: two methods whose same-named fields differ in type or help text are refused when the flags are
built (:class:`FlagConflictError`; rename one field, as FedOPAL's ``orth_mu`` beside FedProx's ``mu``). Flags
default to "not given", so the YAML ``fl:`` section and then the config class supply what the user did not type.
A flag of another method than ``--method`` is an error naming both.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal

from flare_vlp.methods.registry import fl_settings, get_method, method_names

__all__ = ["FlagConflictError", "add_method_arguments", "given_method_arguments", "fl_settings"]


class FlagConflictError(TypeError):
    """Two registered methods have a config field of the same name (one flag) with another type or help text."""


def _flag_type(tp: Any) -> tuple[Any, dict]:
    """argparse ``type`` and extra kwargs (choices, nargs) for a config field type (``X | None`` as ``X``)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is Literal:
        return str, {"choices": list(typing.get_args(tp)), "metavar": None}
    if tp is list or typing.get_origin(tp) is list:
        return str, {"nargs": "+"}
    if tp in (int, float, str):
        return tp, {}
    raise TypeError(f"no command-line flag for a field of type {tp!r}")


def _fields() -> dict[str, tuple[Any, str, list[str]]]:
    """Field name -> (type, help, methods that have it), across every registered method config.

    Raises:
        FlagConflictError: a field name whose type or help text differs between two methods (names both).
    """
    table: dict[str, tuple[Any, str, list[str]]] = {}
    for name in method_names():
        cls = get_method(name).config_cls
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            mine = (hints[f.name], f.metadata.get("help", ""))
            tp, help_text, methods = table.get(f.name, (*mine, []))
            for what, theirs, ours in (("type", tp, mine[0]), ("help text", help_text, mine[1])):
                if theirs != ours:
                    raise FlagConflictError(
                        f"--{f.name.replace('_', '-')} would mean two things: config field {f.name!r} has {what} "
                        f"{ours!r} in method {name!r} but {theirs!r} in {methods[0]!r}; give one of them another name"
                    )
            table[f.name] = (tp, help_text, [*methods, name])
    return table


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per method-config field, grouped under "method settings"."""
    group = parser.add_argument_group("method settings (from each method's config; see docs/methods.md)")
    for field_name, (tp, help_text, methods) in _fields().items():
        flag_type, extra = _flag_type(tp)
        group.add_argument(
            f"--{field_name.replace('_', '-')}",
            dest=f"method__{field_name}",
            type=flag_type,
            default=None,
            help=f"{help_text} [{', '.join(methods)}]",
            **{"metavar": field_name.upper(), **extra},
        )


def given_method_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The method flags the user typed, as ``{field: value}``; a flag that ``args.method`` does not have is an error."""
    table = _fields()
    given = {
        key.removeprefix("method__"): value
        for key, value in vars(args).items()
        if key.startswith("method__") and value is not None
    }
    wrong = sorted(k for k in given if args.method not in table[k][2])
    if wrong:
        flags = ", ".join(f"--{k.replace('_', '-')} ({'/'.join(table[k][2])})" for k in wrong)
        raise SystemExit(f"flare-vlp run: {flags} not a setting of --method {args.method}")
    return given
