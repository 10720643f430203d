"""Checking that dataclasses built from JSON hold the types their fields declare.

JSON carries no schema: `Limits(**{"max_batch": "8"})` builds happily and fails far away (`2 * n > "8"`). The
manifest's dataclasses already declare every field's type; this walks them once after loading. int is accepted
where float is declared (JSON writes 5.0 as 5); bool is never an int here; NaN and infinity are refused.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing


def type_problems(obj, where: str = "") -> list[str]:
    """'field.path: expected T, got V' for every field of dataclass `obj` (recursively) whose value is off-type."""
    hints = typing.get_type_hints(type(obj))
    problems: list[str] = []
    for field in dataclasses.fields(obj):
        problems += _check(getattr(obj, field.name), hints[field.name], f"{where}{field.name}")
    return problems


def _check(value, hint, where: str) -> list[str]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_check(value, option, where) for option in args]
        return [] if any(not r for r in results) else results[0]
    if hint is type(None):
        return [] if value is None else [f"{where}: expected null, got {value!r}"]
    if dataclasses.is_dataclass(hint):
        return type_problems(value, f"{where}.") if isinstance(value, hint) else [f"{where}: expected an object"]
    if origin is list or hint is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [p for i, item in enumerate(value) for p in (_check(item, args[0], f"{where}[{i}]") if args else [])]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        problems = [f"{where}: key {key!r} is not a string" for key in value if not isinstance(key, str)]
        return problems + [p for key, item in value.items() for p in (_check(item, args[1], f"{where}.{key}")
                                                                         if args else [])]
    accepted = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(hint, (object,))
    if not isinstance(value, accepted) or (isinstance(value, bool) and hint is not bool):
        return [f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}"]
    if isinstance(value, float) and not math.isfinite(value):  # Python's json reads NaN and Infinity
        return [f"{where}: expected a finite number, got {value!r}"]
    return []
