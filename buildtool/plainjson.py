"""`params` hold plain JSON: checked on the YAML nodes, so an error points at the exact key.

Plain JSON here is what a JSON document can hold and compare faithfully: mappings with
string keys, lists, strings, integers, finite numbers, booleans and null. YAML can say
more — sets, binary data, dates, ordered maps, keys that read as booleans (`on:`, `yes:`),
numbers or null — which a stage's fingerprint cannot record faithfully (a set has no order;
`True`, `1` and `1.0` are one key to Python; NaN never equals itself), so each is refused
where it is written, with the way to write it as JSON.
"""

from __future__ import annotations

import math
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import WorkflowError
from .yamlsource import Source, describe

_CORE = "tag:yaml.org,2002:"
_SCALARS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
_MERGE = _CORE + "merge"

# Tags the safe loader constructs that JSON cannot hold: what the value is, and how to
# write it instead.
_NOT_JSON: dict[str, tuple[str, str]] = {
    "timestamp": ("a date", "quote it to make it a string: \"{raw}\""),
    "set": ("a set (`!!set`)", "write it as a list: [a, b]"),
    "binary": ("binary data (`!!binary`)", "remove the tag and keep the text as a string"),
    "omap": ("an ordered map (`!!omap`)",
             "write it as a mapping, or as a list of [key, value] pairs, without the tag"),
    "pairs": ("a list of pairs (`!!pairs`)",
              "write it as a list of [key, value] pairs, without the tag"),
}


def check_plain_json(source: Source, node: Node, key: str) -> None:
    """Every value under `node` (the value of `key`) is plain JSON, else a WorkflowError at
    the first offending key or value in document order."""
    seen: set[int] = set()
    stack: list[tuple[Node, str]] = [(node, key)]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias of a node already checked
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            _check_tag(source, node, key, path, _CORE + "map")
            children = [_entry(source, k, v, key, path) for k, v in node.value]
        elif isinstance(node, SequenceNode):
            _check_tag(source, node, key, path, _CORE + "seq")
            children = [(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        else:
            _check_scalar(source, node, key, path)
            children = []
        stack.extend(reversed(children))


def _entry(source: Source, key_node: Node, value: Node, key: str, path: str
           ) -> tuple[Node, str]:
    if key_node.tag == _MERGE:  # `<<: *base` (the constructor has usually merged it already)
        return value, path
    if isinstance(key_node, ScalarNode) and key_node.tag == _CORE + "str":
        return value, f"{path}.{key_node.value}"
    raise _key_error(source, key_node, key, path)


def _key_error(source: Source, node: Node, key: str, path: str) -> WorkflowError:
    if not isinstance(node, ScalarNode):
        what = "a mapping" if isinstance(node, MappingNode) else "a list"
        return source.error(f"`{path}` has a key that is {what}, not a string", node, key=key,
                            hint="keys of params are strings (JSON)")
    raw = node.value
    what = _what(source, node)
    message = f"`{path}` key `{raw}` reads as {what}, not a string" if raw else \
        f"`{path}` has an empty key, which reads as {what}, not a string"
    return source.error(message, node, key=key,
                        hint=f"quote it (`\"{raw}\":`): keys of params are strings (JSON)")


def _check_tag(source: Source, node: Node, key: str, path: str, expected: str) -> None:
    if node.tag != expected:
        raise _value_error(source, node, key, path)


def _check_scalar(source: Source, node: Node, key: str, path: str) -> None:
    if node.tag not in _SCALARS:
        raise _value_error(source, node, key, path)
    if node.tag == _CORE + "bool" and node.value.lower() not in ("true", "false"):
        raise source.error(  # YAML 1.1's "Norway problem": `lang: no` would be False
            f"`{path}` is `{node.value}`, which YAML reads as boolean "
            f"{str(source.construct(node, key)).lower()}", node, key=key,
            hint=f"write true/false for a boolean, or quote it (`\"{node.value}\"`) for a string",
        )
    if node.tag == _CORE + "float":
        value = source.construct(node, key)
        if not math.isfinite(value):
            raise source.error(
                f"`{path}` is {node.value}, a number JSON cannot hold", node, key=key,
                hint="write a finite number, or quote it to make it a string",
            )


def _value_error(source: Source, node: Node, key: str, path: str) -> WorkflowError:
    short = node.tag.removeprefix(_CORE)
    what, hint = _NOT_JSON.get(short, (f"a value tagged `{node.tag}`", "remove the tag"))
    raw = node.value if isinstance(node, ScalarNode) else ""
    return source.error(f"`{path}` is {what}, not plain JSON", node, key=key,
                        hint=hint.format(raw=raw))


def _what(source: Source, node: ScalarNode) -> str:
    """A key that is no string, in words: `on` reads as boolean true."""
    short = node.tag.removeprefix(_CORE)
    if short in _NOT_JSON:
        return _NOT_JSON[short][0]
    value: Any = source.construct(node)
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        return describe(value)
    return f"a value tagged `{node.tag}`"
