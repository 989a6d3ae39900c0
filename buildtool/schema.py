"""JSON Schema (draft 2020-12) of the Workflowfile, generated from `workflowfile.STAGE_KEYS`.

For editors. It checks shapes only; what needs the project on disk (files exist,
stage references resolve) or `defaults` (a key supplied there) is left to
`load_workflow`, so the schema never rejects a Workflowfile the loader accepts
for those reasons.
"""

from __future__ import annotations

import copy
from typing import Any

from .keys import (
    DASK_KEYS,
    NAME_PATTERN,
    PROCESSORS,
    RATE_LIMIT_KEYS,
    STAGE_KEYS,
    TOP_KEYS,
    KeySpec,
)
from .model import ARTIFACT_FILES, KINDS, TOOL_WORDS

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
CALLABLE_PATTERN = rf"^(.+\.py|{_IDENT}(\.{_IDENT})*):{_IDENT}$"
_PATH: dict[str, Any] = {"type": "string", "minLength": 1}

# One fragment per value type named in STAGE_KEYS (see workflowfile._PARSERS).
_TYPE_SCHEMAS: dict[str, dict[str, Any]] = {
    "callable": {"type": "string", "pattern": CALLABLE_PATTERN},
    "command": {"type": "string", "pattern": r"\S"},
    "ref": _PATH,
    "refs": {"type": "array", "items": _PATH, "uniqueItems": True},
    "outputs": {"type": "array", "items": _PATH, "uniqueItems": True},
    "paths": {"type": "array", "items": _PATH, "uniqueItems": True},
    "mapping": {"type": "object"},
    "positive_int": {"type": "integer", "minimum": 1},
    "non_negative_int": {"type": "integer", "minimum": 0},
    "choice": {"type": "string"},
    "processors": {"type": "array", "items": {"$ref": "#/$defs/processor"}},
    "bool": {"type": "boolean"},
    "string": {"type": "string"},
    "limit_name": {"type": "string", "pattern": f"^{NAME_PATTERN}$"},
    "config_file": {"type": "string", "pattern": r"\.([Yy][Aa]?[Mm][Ll]|[Jj][Ss][Oo][Nn])$"},
    "models_file": {"type": "string", "pattern": r"\.([Yy][Aa]?[Mm][Ll]|[Jj][Ss][Oo][Nn])$"},
}

# One fragment per value type named in RATE_LIMIT_KEYS.
_LIMIT_SCHEMAS: dict[str, dict[str, Any]] = {
    "positive_number": {"type": "number", "exclusiveMinimum": 0},
    "positive_int": {"type": "integer", "minimum": 1},
}

# One fragment per processor value type named in PROCESSORS.
_PROCESSOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "columns": {"type": "array", "items": {"type": "string"}},
    "rename": {"type": "object", "additionalProperties": {"type": "string"}},
    "expression": {"type": "string", "pattern": r"\S"},
    "count": {"type": "integer", "minimum": 0},
}


def workflow_json_schema() -> dict[str, Any]:
    """The Workflowfile's JSON Schema as a JSON-serialisable dict (a fresh copy each call)."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "dd-build Workflowfile",
        "type": "object",
        "required": ["workflow", "stages"],
        "additionalProperties": False,
        "properties": _top_properties(),
        "$defs": {"stage": _stage_schema(), "processor": _processor_schema()},
    }
    return copy.deepcopy(schema)


def _top_properties() -> dict[str, Any]:
    reserved = [{"enum": list(TOOL_WORDS)}] + [{"pattern": _any_case(f)} for f in ARTIFACT_FILES]
    # (names that differ only in letter case are refused by the loader: not a schema rule)
    stage_names = {"pattern": f"^{NAME_PATTERN}$", "not": {"anyOf": reserved}}
    defaults = {k: _key_schema(k, s) for k, s in STAGE_KEYS.items() if k not in KINDS}
    shapes: dict[str, dict[str, Any]] = {
        "workflow": {"type": "string", "pattern": f"^{NAME_PATTERN}$"},
        "artifacts": {"type": "string", "minLength": 1, "default": "artifacts"},
        "defaults": {"type": "object", "additionalProperties": False, "properties": defaults},
        "jobs": {"type": "integer", "minimum": 1, "default": 1},
        "cache": {"type": "string", "minLength": 1},
        "stages": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": stage_names,
            "additionalProperties": {"$ref": "#/$defs/stage"},
        },
        "executor": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {"dask": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {key: {"description": meaning, "type": ["string", "null"],
                                     "minLength": 1}
                               for key, meaning in DASK_KEYS.items()},
            }},
        },
        "rate_limits": {
            "type": "object",
            "propertyNames": {"pattern": f"^{NAME_PATTERN}$"},
            "additionalProperties": _rate_limit_schema(),
        },
    }
    return {key: {"description": TOP_KEYS[key], **shape} for key, shape in shapes.items()}


def _rate_limit_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {key: {"description": meaning, **_LIMIT_SCHEMAS[value_type]}
                       for key, (value_type, meaning) in RATE_LIMIT_KEYS.items()},
    }


def _any_case(word: str) -> str:
    """A pattern matching `word` in any letter case (JSON Schema patterns have no flags)."""
    parts = (f"[{c.upper()}{c.lower()}]" if c.isalpha() else "\\." if c == "." else c
             for c in word)
    return "^" + "".join(parts) + "$"


def _key_schema(key: str, spec: KeySpec) -> dict[str, Any]:
    kinds = ", ".join(spec.kinds)
    schema: dict[str, Any] = {"description": f"{spec.description} (kinds: {kinds})"}
    schema |= _TYPE_SCHEMAS[spec.type]
    if spec.choices:
        schema["enum"] = list(spec.choices)
    if spec.default not in (None, (), {}):
        schema["default"] = spec.default
    return schema


def _stage_schema() -> dict[str, Any]:
    """A stage: known keys only, and exactly one kind key with the keys valid for that kind."""
    return {
        "type": "object",
        "description": "A stage: exactly one of generate, transform, run or datadesigner, plus its keys.",
        "properties": {key: _key_schema(key, spec) for key, spec in STAGE_KEYS.items()},
        "additionalProperties": False,
        "oneOf": [_kind_branch(kind) for kind in KINDS],
    }


def _kind_branch(kind: str) -> dict[str, Any]:
    valid = [key for key, spec in STAGE_KEYS.items() if kind in spec.kinds]
    return {"required": [kind], "propertyNames": {"enum": valid}}


def _processor_schema() -> dict[str, Any]:
    branches = [
        {
            "type": "object",
            "description": meaning,
            "properties": {name: _PROCESSOR_SCHEMAS[value_type]},
            "required": [name],
            "additionalProperties": False,
        }
        for name, (value_type, meaning) in PROCESSORS.items()
    ]
    return {"oneOf": branches}
