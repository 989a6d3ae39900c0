"""Spec values compared as JSON values: the same JSON type and the same value.

Python's `==` says `1 == 1.0 == True`, but stage code sees an int, a float or a bool, so a
change of type is a change. A float compares by its shortest repr, which is also its JSON text
(and so what the spec fingerprint hashes): NaN equals NaN, and 0.0 differs from -0.0. A list and
a tuple are one JSON type (an array), as they are in the fingerprint.
"""

from __future__ import annotations

from typing import Any


def json_type(value: Any) -> str:
    """The JSON type of a value, named as Python names it (`int`, `float`, `bool`, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: a bool is an int to isinstance
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def same_value(a: Any, b: Any) -> bool:
    """Equal as JSON values: same type at every level, and equal."""
    kind = json_type(a)
    if kind != json_type(b):
        return False
    if kind == "float":
        return float.__repr__(a) == float.__repr__(b)
    if kind == "list":
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if kind == "dict":
        return _typed_keys(a) == _typed_keys(b) and all(same_value(a[k], b[k]) for k in a)
    return bool(a == b)


def _typed_keys(d: dict[Any, Any]) -> set[tuple[str, Any]]:
    return {(json_type(k), k) for k in d}


def type_change(a: Any, b: Any, at: str = "") -> tuple[str, str, str] | None:
    """(where, old type, new type) of the first place where the JSON types differ, or None.

    `where` is "" for the values themselves, else a path such as `[0].drop[1]`."""
    ta, tb = json_type(a), json_type(b)
    if ta != tb:
        return at, ta, tb
    if ta == "list":
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if (found := type_change(x, y, f"{at}[{i}]")) is not None:
                return found
    elif ta == "dict":
        for key in a:
            if key in b and (found := type_change(a[key], b[key], f"{at}.{key}")) is not None:
                return found
    return None
