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


def yaml_text(value: Any) -> str:
    """A JSON value as a Workflowfile spells it, in YAML's flow style: `true`, `null`, `1.0`,
    `[a, b]`, `{limit: 100}`; a string plain where YAML reads it back as that string, else
    double-quoted (`"5"`, `"yes"`, `"a: b"`, `""`), so a change of type stays visible."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        return value if _plain_ok(value) else _quoted(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_text(k)}: {yaml_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _float_text(value: float) -> str:
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "e" in text and "." not in text:  # YAML 1.1 reads `1e+20` as a string, `1.0e+20` not
        mantissa, _, exponent = text.partition("e")
        text = f"{mantissa}.0e{exponent}"
    return text


# Characters that start YAML syntax when first in a plain scalar, and flow indicators (which
# end a plain scalar inside `[...]` or `{...}`).
_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")
_FLOW = set(",[]{}?")  # PyYAML also ends a plain scalar at `?` inside a flow


def _plain_ok(text: str) -> bool:
    if not text or text != text.strip() or not text.isprintable():
        return False
    if text[0] in _INDICATORS and not (text[0] == "-" and text[1:2] not in ("", " ")):
        return False
    if _FLOW & set(text) or ": " in text or " #" in text:
        return False
    if text.endswith(":"):
        return False
    from yaml import ScalarNode
    from yaml.resolver import Resolver

    return bool(Resolver().resolve(ScalarNode, text, (True, False)) == "tag:yaml.org,2002:str")


def _quoted(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)  # JSON's escapes are YAML's too
