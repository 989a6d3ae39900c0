"""Workflowfile (YAML, safe and line-aware) → validated `model.Workflow` (DESIGN.md §1).

The YAML is composed into nodes, never loaded blindly, so every key and value
keeps its line and column. `STAGE_KEYS` is the one table of stage keys: the
validator below and `schema.py` (the JSON Schema) are both driven by it.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import WorkflowError
from .model import (
    DEFAULT_BATCH_SIZE,
    KINDS,
    SAMPLINGS,
    TOOL_WORDS,
    CallableRef,
    InputRef,
    Location,
    Stage,
    Workflow,
)

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"
GLOB_CHARS = frozenset("*?[")
DATA_SUFFIXES = (".parquet", ".csv", ".jsonl")
_NAME_RE = re.compile(NAME_PATTERN)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Hostile-input bounds, checked on the event stream before any node is composed: nesting
# deeper than this crashes libyaml's recursive composer (and Python's constructor), and
# aliases may add at most this many values beyond the document's own (a "billion laughs"
# file expands exponentially while staying tiny).
MAX_DEPTH = 64
MAX_ALIAS_VALUES = 100_000

_ALL = KINDS
_GEN = ("generate",)
_GEN_TRANSFORM = ("generate", "transform")


@dataclass(frozen=True)
class KeySpec:
    """One stage key: the kinds it applies to, its value type (a key of `_PARSERS`), its meaning."""

    kinds: tuple[str, ...]
    type: str
    description: str
    choices: tuple[str, ...] = ()
    requires: str | None = None  # another key the stage must also have
    required_for: tuple[str, ...] = ()  # kinds for which the key is required
    default: Any = None


# The one table of stage keys. Each key is also the name of the `model.Stage` field it
# fills, except the kind keys, which fill `Stage.kind` and `Stage.target`.
STAGE_KEYS: dict[str, KeySpec] = {
    "generate": KeySpec(
        ("generate",), "callable",
        "Generate stage: `path/to/file.py:function` or `package.module:function`, "
        "called once per batch.",
    ),
    "transform": KeySpec(
        ("transform",), "callable",
        "Transform stage: `path/to/file.py:function` or `package.module:function`, "
        "called once over all inputs (fan-in).",
    ),
    "run": KeySpec(
        ("run",), "command",
        "Run stage: a shell command; {inputs}, {outputs}, {inputs[0]}, {params.key} expand.",
    ),
    "seed": KeySpec(
        _GEN, "ref",
        "A stage name or a data file/glob (.parquet .csv .jsonl) whose rows seed the batches. "
        "`stage:NAME` / `file:PATH` force either reading.",
    ),
    "inputs": KeySpec(
        _ALL, "refs",
        "Extra dependencies: stage names or project-relative file paths/globs. "
        "`stage:NAME` / `file:PATH` force either reading.",
    ),
    "outputs": KeySpec(
        _ALL, "outputs",
        "Project-relative files or folders: what a run stage writes (required), or export "
        "copies of a generate/transform stage's output (format by extension).",
        required_for=("run",),
    ),
    "params": KeySpec(
        _ALL, "mapping", "Any YAML mapping, handed to the code; part of the fingerprint.",
        default={},
    ),
    "num_records": KeySpec(
        _GEN, "positive_int", "Rows requested (default: the seed's row count).",
    ),
    "batch_size": KeySpec(
        _GEN, "positive_int", "Rows per batch.", default=DEFAULT_BATCH_SIZE,
    ),
    "sampling": KeySpec(
        _GEN, "choice", "How seed rows are taken.", choices=SAMPLINGS, default=SAMPLINGS[0],
    ),
    "processors": KeySpec(
        _GEN_TRANSFORM, "processors",
        "Built-in output transforms applied in order: drop, keep, rename, filter, dedupe, limit.",
        default=(),
    ),
    "on_success": KeySpec(
        _GEN_TRANSFORM, "callable",
        "`callable(ctx) -> path`: may replace the stage's selected output with a parquet "
        "file or folder it wrote.",
    ),
    "on_success_version": KeySpec(
        _GEN_TRANSFORM, "string",
        "Explicit identity of the on_success callback, added to the fingerprint.",
        requires="on_success",
    ),
    "allow_empty": KeySpec(
        _GEN_TRANSFORM, "bool",
        "An empty selected output is `completed_empty` instead of an error.", default=False,
    ),
    "code": KeySpec(
        _ALL, "paths", "Extra files/globs whose content is part of the code fingerprint.",
        default=(),
    ),
    "retries": KeySpec(
        _GEN, "non_negative_int",
        "Attempts per batch on exception, with backoff (not part of the fingerprint).",
        default=0,
    ),
    "description": KeySpec(_ALL, "string", "Free text, not part of the fingerprint.", default=""),
}

# Built-in processors: name → (value type, meaning). Value types: columns, rename, expression, count.
PROCESSORS: dict[str, tuple[str, str]] = {
    "drop": ("columns", "Drop these columns."),
    "keep": ("columns", "Keep only these columns."),
    "rename": ("rename", "Rename columns: {old: new}."),
    "filter": ("expression", "Keep the rows for which the expression is true."),
    "dedupe": ("columns", "Drop rows that repeat these columns."),
    "limit": ("count", "Keep the first N rows."),
}

TOP_KEYS: dict[str, str] = {
    "workflow": f"Required: the workflow's durable identity ({NAME_RULE}).",
    "artifacts": "Folder for build records and data, relative to this file's folder.",
    "defaults": "Stage keys applied to every stage that omits them, where valid for its kind.",
    "stages": "Required: the stages, by name, in declaration order.",
}


@dataclass(frozen=True)
class _Claim:
    """A path some stage declared: an output, or a plain file input still to check."""

    path: str
    stage: str
    node: Node
    key: str
    error: WorkflowError | None = None  # raised when an input is missing or is an output


@dataclass
class _Ctx:
    """Per-load state: where errors point, what is known so far."""

    display: str
    project_dir: Path
    artifacts: str = "artifacts"
    stage_names: dict[str, None] = field(default_factory=dict)  # ordered, O(1) lookups
    stage: str | None = None
    kind: str | None = None
    constructor: SafeConstructor = field(default_factory=SafeConstructor)
    outputs: list[_Claim] = field(default_factory=list)
    file_inputs: list[_Claim] = field(default_factory=list)

    def loc(self, node: Node) -> Location:
        return Location(self.display, node.start_mark.line + 1, node.start_mark.column + 1)

    def error(
        self, message: str, node: Node | None, key: str | None = None, hint: str | None = None
    ) -> WorkflowError:
        line = node.start_mark.line + 1 if node is not None else None
        column = node.start_mark.column + 1 if node is not None else None
        return WorkflowError(
            message, file=self.display, line=line, column=column, stage=self.stage, key=key,
            hint=hint,
        )

    def construct(self, node: Node, key: str | None = None) -> Any:
        """The Python value of `node` (safe constructors only), after checking its keys."""
        if isinstance(node, ScalarNode) and node.tag == _STR_TAG:
            return node.value
        _check_duplicates(self, node)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            hint = None
            if node.tag.startswith("tag:yaml.org,2002:python/") or "constructor for the tag" \
                    in _problem(exc):
                hint = "remove the tag: the Workflowfile is read with a safe loader (plain YAML)"
            raise self.error(f"invalid YAML value: {_problem(exc)}", node, key=key,
                             hint=hint) from exc


# ---------------------------------------------------------------- entry point


def load_workflow(path: Path, display: str | None = None) -> Workflow:
    """Read, validate and return the Workflowfile at `path`; WorkflowError when it is invalid."""
    display = display or str(path)
    resolved = Path(path).resolve()
    ctx = _Ctx(display, resolved.parent)
    root = _compose(_read(resolved, display), display)
    top = _top_pairs(ctx, root)
    name = _workflow_name(ctx, root, top)
    artifacts = _artifacts(ctx, top)
    bodies = _stage_bodies(ctx, root, top)
    ctx.stage_names = dict.fromkeys(bodies)
    defaults = _defaults(ctx, top)
    stages = {n: _load_stage(ctx, n, kn, body, defaults) for n, (kn, body) in bodies.items()}
    _check_claims(ctx)
    return Workflow(name, resolved, resolved.parent, artifacts, stages)


def _read(path: Path, display: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise WorkflowError(
            "no Workflowfile here", file=display, hint="create one, or name it with -f FILE"
        ) from exc
    except OSError as exc:
        raise WorkflowError(f"cannot read the Workflowfile: {exc}", file=display) from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise WorkflowError(
            f"the Workflowfile is not UTF-8 text (byte 0x{raw[exc.start]:02x})", file=display,
            line=line, column=column, hint="save it as UTF-8 text (YAML)",
        ) from exc


def _compose(text: str, display: str) -> MappingNode:
    try:
        _check_bounds(text, display)
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        line, column = _error_position(exc, text)
        raise WorkflowError(
            f"invalid YAML: {_problem(exc)}", file=display, line=line, column=column,
            hint=_tab_hint(exc, text) or _context_hint(exc),
        ) from exc
    if root is None:
        raise WorkflowError(
            "the Workflowfile is empty", file=display, line=1, column=1,
            hint="start with `workflow: NAME` and a `stages:` mapping",
        )
    if not isinstance(root, MappingNode):
        raise WorkflowError(
            "the Workflowfile must be a mapping of keys (workflow, stages, ...)",
            file=display, line=root.start_mark.line + 1, column=root.start_mark.column + 1,
            hint="start with `workflow: NAME` and a `stages:` mapping",
        )
    return root


def _check_bounds(text: str, display: str) -> None:
    """Refuse too deep nesting and alias bombs in one pass over the events, before composing:
    each alias counts the values of its anchor, so nothing is ever expanded."""
    sizes: dict[str, int] = {}  # anchor -> values under it, once its node is complete
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, values so far)
    own = extra = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _bounds_error(f"values nested more than {MAX_DEPTH} levels deep",
                                    event, display, "flatten the structure")
            stack.append((event.anchor, 1))
            own += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
            if stack:
                stack[-1] = (stack[-1][0], stack[-1][1] + size)
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            size = 1
            if isinstance(event, yaml.ScalarEvent):
                own += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                size = sizes.get(event.anchor, 1)  # unknown or still open: the composer says
                extra += size
                if extra > MAX_ALIAS_VALUES and extra > 10 * own:
                    raise _bounds_error(
                        f"aliases (*name) expand the Workflowfile by more than "
                        f"{MAX_ALIAS_VALUES} values (a YAML alias bomb?)", event, display,
                        "write the values out, or use fewer nested aliases (*name)")
            if stack:
                stack[-1] = (stack[-1][0], stack[-1][1] + size)


def _bounds_error(message: str, event: yaml.Event, display: str, hint: str) -> WorkflowError:
    mark = event.start_mark
    return WorkflowError(message, file=display, line=mark.line + 1, column=mark.column + 1,
                         hint=hint)


def _error_position(exc: yaml.YAMLError, text: str) -> tuple[int | None, int | None]:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return mark.line + 1, mark.column + 1
    position = getattr(exc, "position", None)  # ReaderError: an index into the text
    if isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        return line, position - (text.rfind("\n", 0, position) + 1) + 1
    return None, None


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    return str(getattr(exc, "problem", None) or exc).strip()


def _tab_hint(exc: yaml.YAMLError, text: str) -> str | None:
    """YAML's own message for a tab in the indentation does not say "tab"."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None and 0 <= mark.index < len(text) and text[mark.index] == "\t":
        return "this line has a tab: YAML indents with spaces only"
    return None


def _context_hint(exc: yaml.YAMLError) -> str | None:
    mark, context = getattr(exc, "context_mark", None), getattr(exc, "context", None)
    if mark is None or not context:
        return None
    return f"{context} at line {mark.line + 1}, column {mark.column + 1}"


# ---------------------------------------------------------------- YAML nodes


def _check_duplicates(ctx: _Ctx, root: Node) -> None:
    """Every mapping under `root`, in document order: a key given twice is an error."""
    seen: set[int] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            _check_mapping_keys(ctx, node)
            stack.extend(reversed([n for pair in node.value for n in pair]))
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))


def _check_mapping_keys(ctx: _Ctx, node: MappingNode) -> None:
    first: dict[Any, Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key = ctx.construct(key_node)
        if key in first:
            line = first[key].start_mark.line + 1
            raise ctx.error(
                f"duplicate key `{key}` at line {key_node.start_mark.line + 1} "
                f"(first given at line {line})",
                key_node, key=str(key), hint="give each key once",
            )
        first[key] = key_node


def _pairs(ctx: _Ctx, node: MappingNode, what: str) -> dict[str, tuple[Node, Node]]:
    """A mapping's string keys → (key node, value node); `<<` merges applied, own keys win."""
    _check_mapping_keys(ctx, node)
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            _check_duplicates(ctx, value_node)
    try:
        ctx.constructor.flatten_mapping(node)
    except yaml.YAMLError as exc:
        raise ctx.error(f"invalid merge (<<): {_problem(exc)}", node) from exc
    pairs: dict[str, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        key = ctx.construct(key_node)
        if not isinstance(key, str):
            raise ctx.error(
                f"{what} must be strings, got {_describe(key)}", key_node, hint="quote it"
            )
        pairs[key] = (key_node, value_node)
    return pairs


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if value is None:
        return "null (an empty value)"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


def _listing(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _suggest(word: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean `{close[0]}`?" if close else None


# ---------------------------------------------------------------- top level


def _top_pairs(ctx: _Ctx, root: MappingNode) -> dict[str, tuple[Node, Node]]:
    top = _pairs(ctx, root, "top-level keys")
    for key, (key_node, _) in top.items():
        if key not in TOP_KEYS:
            hint = _suggest(key, TOP_KEYS) or "valid keys: " + ", ".join(TOP_KEYS)
            raise ctx.error(f"unknown top-level key `{key}`", key_node, key=key, hint=hint)
    return top


def _required(ctx: _Ctx, root: Node, top: dict[str, tuple[Node, Node]], key: str) -> Node:
    if key not in top:
        raise ctx.error(f"missing required key `{key}`", root, key=key, hint=TOP_KEYS[key])
    return top[key][1]


def _workflow_name(ctx: _Ctx, root: Node, top: dict[str, tuple[Node, Node]]) -> str:
    node = _required(ctx, root, top, "workflow")
    name = ctx.construct(node, "workflow")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ctx.error(
            f"invalid workflow name: {_describe(name)}", node, key="workflow",
            hint=f"use {NAME_RULE}",
        )
    return name


def _artifacts(ctx: _Ctx, top: dict[str, tuple[Node, Node]]) -> str:
    if "artifacts" not in top:
        return ctx.artifacts
    node = top["artifacts"][1]
    text = _expect(ctx, "artifacts", node, str, "a folder path (a string)")
    ctx.artifacts = _rel_path(ctx, "artifacts", node, text)
    if (ctx.project_dir / ctx.artifacts).is_file():
        raise ctx.error(f"`{text}` is a file, not a folder", node, key="artifacts",
                        hint="name a folder for dd-build's records and data")
    return text


def _stage_bodies(
    ctx: _Ctx, root: Node, top: dict[str, tuple[Node, Node]]
) -> dict[str, tuple[Node, Node]]:
    node = _required(ctx, root, top, "stages")
    if not isinstance(node, MappingNode) or not node.value:
        raise ctx.error(
            "`stages` must be a non-empty mapping of stage names to stages", node, key="stages"
        )
    bodies = _pairs(ctx, node, "stage names")
    for name, (key_node, _) in bodies.items():
        _check_stage_name(ctx, name, key_node)
    return bodies


def _check_stage_name(ctx: _Ctx, name: str, node: Node) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ctx.error(f"invalid stage name `{name}`", node, hint=f"use {NAME_RULE}")
    if name in TOOL_WORDS:
        raise ctx.error(
            f"`{name}` is a dd-build command and cannot name a stage", node,
            hint=f"rename the stage, e.g. `{name}-stage`",
        )


def _defaults(ctx: _Ctx, top: dict[str, tuple[Node, Node]]) -> dict[str, tuple[Node, Node]]:
    """The defaults, each checked once on its own (stage-specific checks come per stage)."""
    if "defaults" not in top:
        return {}
    node = top["defaults"][1]
    if not isinstance(node, MappingNode):
        raise ctx.error(
            f"`defaults` must be a mapping of stage keys, got {_describe(ctx.construct(node))}",
            node, key="defaults",
        )
    defaults = _pairs(ctx, node, "stage keys")
    for key, (key_node, value_node) in defaults.items():
        _check_known_key(ctx, key, key_node)
        if key in KINDS:
            raise ctx.error(
                f"`{key}` cannot be a default: each stage names its own kind", key_node, key=key
            )
        _parse_value(ctx, key, value_node)
    return defaults


# ---------------------------------------------------------------- stages


def _load_stage(
    ctx: _Ctx, name: str, name_node: Node, body: Node, defaults: dict[str, tuple[Node, Node]]
) -> Stage:
    ctx.stage, ctx.kind = name, None
    own = _stage_pairs(ctx, name_node, body)
    kind = ctx.kind = _stage_kind(ctx, name_node, own)
    for key, (key_node, _) in own.items():
        _check_applies(ctx, key, key_node)
    nodes = {key: value_node for key, (_, value_node) in own.items()}
    nodes.update(_applicable_defaults(ctx, nodes, defaults))
    values = {key: _parse_value(ctx, key, node) for key, node in nodes.items()}
    _check_requirements(ctx, name_node, own, values, nodes)
    locations = {"": ctx.loc(name_node)} | {key: ctx.loc(node) for key, node in nodes.items()}
    fields = {key: value for key, value in values.items() if key not in KINDS}
    return Stage(name=name, kind=kind, target=values[kind], locations=locations, **fields)


def _stage_pairs(ctx: _Ctx, name_node: Node, body: Node) -> dict[str, tuple[Node, Node]]:
    if not isinstance(body, MappingNode):
        raise ctx.error(
            f"a stage must be a mapping of keys, got {_describe(ctx.construct(body))}", body,
            hint="give it a kind: generate, transform or run",
        )
    pairs = _pairs(ctx, body, "stage keys")
    for key, (key_node, _) in pairs.items():
        _check_known_key(ctx, key, key_node)
    return pairs


def _check_known_key(ctx: _Ctx, key: str, key_node: Node) -> None:
    if key not in STAGE_KEYS:
        hint = _suggest(key, STAGE_KEYS) or "valid keys: " + ", ".join(STAGE_KEYS)
        raise ctx.error(f"unknown stage key `{key}`", key_node, key=key, hint=hint)


def _stage_kind(ctx: _Ctx, name_node: Node, own: dict[str, tuple[Node, Node]]) -> str:
    kinds = [key for key in own if key in KINDS]
    if not kinds:
        raise ctx.error(
            "the stage has no kind", name_node,
            hint="add exactly one of `generate`, `transform` or `run`",
        )
    if len(kinds) > 1:
        raise ctx.error(
            f"the stage has two kinds, `{kinds[0]}` and `{kinds[1]}`", own[kinds[1]][0],
            key=kinds[1], hint="a stage has exactly one of `generate`, `transform` or `run`",
        )
    return kinds[0]


def _kinds_phrase(kinds: tuple[str, ...]) -> str:
    return " and ".join(kinds) + (" stages only" if len(kinds) < len(KINDS) else " stages")


def _check_applies(ctx: _Ctx, key: str, key_node: Node) -> None:
    spec = STAGE_KEYS[key]
    if ctx.kind not in spec.kinds:
        raise ctx.error(
            f"`{key}` applies to {_kinds_phrase(spec.kinds)}", key_node, key=key,
            hint=f"this is a {ctx.kind} stage; remove `{key}`",
        )


def _applicable_defaults(
    ctx: _Ctx, nodes: dict[str, Node], defaults: dict[str, tuple[Node, Node]]
) -> dict[str, Node]:
    """Defaults the stage omits and its kind accepts (in table order, so requirements see them)."""
    applied: dict[str, Node] = {}
    for key, spec in STAGE_KEYS.items():
        if key not in defaults or key in nodes or ctx.kind not in spec.kinds:
            continue
        if spec.requires and spec.requires not in nodes and spec.requires not in applied:
            continue
        applied[key] = defaults[key][1]
    return applied


def _check_requirements(
    ctx: _Ctx,
    name_node: Node,
    own: dict[str, tuple[Node, Node]],
    values: dict[str, Any],
    nodes: dict[str, Node],
) -> None:
    for key, (key_node, _) in own.items():
        needed = STAGE_KEYS[key].requires
        if needed and needed not in values:
            raise ctx.error(
                f"`{key}` needs `{needed}`", key_node, key=key, hint=f"add `{needed}` or remove `{key}`"
            )
    for key, spec in STAGE_KEYS.items():
        if ctx.kind in spec.required_for and not values.get(key):
            raise ctx.error(
                f"a {ctx.kind} stage needs a non-empty `{key}`", nodes.get(key, name_node), key=key,
                hint=f"list what the stage writes under `{key}`",
            )
    if ctx.kind == "generate" and values.get("num_records") is None and "seed" not in values:
        raise ctx.error(
            "a generate stage needs `num_records` or a `seed`", name_node,
            hint="set num_records, or a seed whose row count is the default",
        )


# ---------------------------------------------------------------- values


def _parse_value(ctx: _Ctx, key: str, node: Node) -> Any:
    return _PARSERS[STAGE_KEYS[key].type](ctx, key, node)


def _expect(ctx: _Ctx, key: str, node: Node, kind: type, expected: str) -> Any:
    value = ctx.construct(node, key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        hint = "quote it to make it a string" if kind is str and isinstance(node, ScalarNode) else None
        raise ctx.error(
            f"`{key}` must be {expected}, got {_describe(value)}", node, key=key, hint=hint
        )
    return value


def _parse_string(ctx: _Ctx, key: str, node: Node) -> str:
    return _expect(ctx, key, node, str, "a string")


def _parse_bool(ctx: _Ctx, key: str, node: Node) -> bool:
    return _expect(ctx, key, node, bool, "true or false")


def _parse_mapping(ctx: _Ctx, key: str, node: Node) -> dict[Any, Any]:
    return _expect(ctx, key, node, dict, "a mapping")


def _parse_int(ctx: _Ctx, key: str, node: Node, minimum: int, expected: str) -> int:
    value = _expect(ctx, key, node, int, expected)
    if value < minimum:
        raise ctx.error(f"`{key}` must be {expected}, got {value}", node, key=key)
    return value


def _parse_positive_int(ctx: _Ctx, key: str, node: Node) -> int:
    return _parse_int(ctx, key, node, 1, "a positive integer")


def _parse_non_negative_int(ctx: _Ctx, key: str, node: Node) -> int:
    return _parse_int(ctx, key, node, 0, "an integer >= 0")


def _parse_choice(ctx: _Ctx, key: str, node: Node) -> str:
    choices = STAGE_KEYS[key].choices
    value = _expect(ctx, key, node, str, "one of " + ", ".join(choices))
    if value not in choices:
        hint = _suggest(value, choices) or "use one of " + ", ".join(choices)
        raise ctx.error(f"unknown {key} `{value}`", node, key=key, hint=hint)
    return value


def _parse_command(ctx: _Ctx, key: str, node: Node) -> str:
    value = _expect(ctx, key, node, str, "a shell command (a string)")
    if not value.strip():
        raise ctx.error(f"`{key}` is an empty command", node, key=key)
    return value


def _parse_callable(ctx: _Ctx, key: str, node: Node) -> str:
    text = _expect(ctx, key, node, str, "a callable reference (a string)")
    ref = CallableRef.parse(text)
    if ref is None:
        raise ctx.error(
            f"`{key}` must name a function, got {text!r}", node, key=key,
            hint="write `path/to/file.py:function` or `package.module:function`",
        )
    if ref.is_file:
        path = _rel_path(ctx, key, node, ref.module)
        if not (ctx.project_dir / path).is_file():
            raise ctx.error(
                f"no file `{ref.module}` for `{key}`", node, key=key, hint=_relative_hint(ctx)
            )
    return text


def _string_items(ctx: _Ctx, key: str, node: Node, item: str) -> list[tuple[str, Node]]:
    """A list of strings (each `item`), with their nodes."""
    if not isinstance(node, SequenceNode):
        value = ctx.construct(node, key)
        hint = f"write it as a list: [{value}]" if isinstance(value, str) else None
        raise ctx.error(
            f"`{key}` must be a list, got {_describe(value)}", node, key=key, hint=hint
        )
    return [(_expect(ctx, key, entry, str, item), entry) for entry in node.value]


def _unique(ctx: _Ctx, key: str, items: list[tuple[str, Node]]) -> None:
    """Items are (identity, node): two nodes with one identity are an error at the second."""
    first: dict[str, Node] = {}
    for identity, node in items:
        if identity in first:
            line = first[identity].start_mark.line + 1
            raise ctx.error(
                f"`{node.value}` is listed twice in `{key}` (first at line {line})", node, key=key
            )
        first[identity] = node


# ---------------------------------------------------------------- paths and references


def _relative_hint(ctx: _Ctx) -> str:
    return f"check the path: it is relative to the Workflowfile's folder ({ctx.project_dir})"


def _is_glob(text: str) -> bool:
    return any(ch in GLOB_CHARS for ch in text)


def _rel_path(ctx: _Ctx, key: str, node: Node, text: str) -> str:
    """`text` as a normalised project-relative posix path; errors for absolute or escaping paths."""
    if not text:
        raise ctx.error(f"`{key}` has an empty path", node, key=key)
    if text.startswith(("/", "\\", "~")) or PureWindowsPath(text).drive:
        raise ctx.error(
            f"`{text}` is an absolute path", node, key=key,
            hint="write paths relative to the Workflowfile's folder",
        )
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise ctx.error(
            f"`{text}` leaves the project folder", node, key=key,
            hint="every path must stay inside the Workflowfile's folder",
        )
    if norm == ".":
        raise ctx.error(
            f"`{text}` is the project folder itself", node, key=key,
            hint="name a file or folder inside it",
        )
    return norm


def _parse_ref(ctx: _Ctx, key: str, node: Node) -> InputRef:
    text = _expect(ctx, key, node, str, "a stage name or a file path (a string)")
    ref = _resolve_ref(ctx, key, node, text)
    if ref.kind == "file":
        _check_seed_file(ctx, key, node, ref.value)
    return ref


def _parse_refs(ctx: _Ctx, key: str, node: Node) -> tuple[InputRef, ...]:
    items = _string_items(ctx, key, node, "a stage name or a file path")
    refs = [(_resolve_ref(ctx, key, item, text), item) for text, item in items]
    _unique(ctx, key, [(ref.key, item) for ref, item in refs])
    return tuple(ref for ref, _ in refs)


def _resolve_ref(ctx: _Ctx, key: str, node: Node, text: str) -> InputRef:
    if text.startswith("stage:"):
        return _stage_ref(ctx, key, node, text, text.removeprefix("stage:"))
    if text.startswith("file:"):
        return _file_ref(ctx, key, node, text, text.removeprefix("file:"))
    if text in ctx.stage_names:
        return _stage_ref(ctx, key, node, text, text)
    return _file_ref(ctx, key, node, text, text)


def _stage_ref(ctx: _Ctx, key: str, node: Node, written: str, name: str) -> InputRef:
    if name not in ctx.stage_names:
        hint = _suggest(name, ctx.stage_names) or "stages: " + _listing(ctx.stage_names)
        raise ctx.error(f"no stage named `{name}`", node, key=key, hint=hint)
    if name == ctx.stage:
        raise ctx.error(
            f"stage depends on itself (`{key}: {written}`)", node, key=key,
            hint="a stage can only use other stages",
        )
    return InputRef("stage", name, written)


def _file_ref(ctx: _Ctx, key: str, node: Node, written: str, text: str) -> InputRef:
    path = _rel_path(ctx, key, node, text)
    if not _is_glob(path) and ctx.stage is not None:
        missing = None if (ctx.project_dir / path).exists() else _missing(ctx, key, node, written)
        ctx.file_inputs.append(_Claim(path, ctx.stage, node, key, missing))
    return InputRef("file", path, written)


def _missing(ctx: _Ctx, key: str, node: Node, written: str) -> WorkflowError:
    """The error for a missing plain path, raised once every output is known."""
    if written.startswith("file:"):
        name = written.removeprefix("file:")
        return ctx.error(f"no file `{name}`", node, key=key, hint=_relative_hint(ctx))
    hint = _suggest(written, ctx.stage_names) or _relative_hint(ctx)
    return ctx.error(f"no stage or file named `{written}`", node, key=key, hint=hint)


def _check_seed_file(ctx: _Ctx, key: str, node: Node, path: str) -> None:
    suffix = PurePosixPath(path).suffix.lower()
    if _is_glob(suffix) or not suffix or suffix in DATA_SUFFIXES:
        return
    if (ctx.project_dir / path).is_dir():
        return
    raise ctx.error(
        f"a seed file must be .parquet, .csv or .jsonl, got `{path}`", node, key=key
    )


def _parse_outputs(ctx: _Ctx, key: str, node: Node) -> tuple[str, ...]:
    items = _string_items(ctx, key, node, "a file or folder path")
    paths = [(_output_path(ctx, key, item, text), item) for text, item in items]
    _unique(ctx, key, paths)
    if ctx.stage is not None:
        ctx.outputs.extend(_Claim(path, ctx.stage, item, key) for path, item in paths)
    return tuple(path for path, _ in paths)


def _output_path(ctx: _Ctx, key: str, node: Node, text: str) -> str:
    path = _rel_path(ctx, key, node, text)
    if _is_glob(path):
        raise ctx.error(f"an output cannot be a glob: `{text}`", node, key=key)
    art = ctx.artifacts
    if _is_within(path, art) or _is_within(art, path):
        raise ctx.error(
            f"output `{text}` overlaps the artifacts folder `{art}`", node, key=key,
            hint="dd-build owns the artifacts folder; write outputs elsewhere",
        )
    suffix = PurePosixPath(path).suffix.lower()
    if ctx.kind in _GEN_TRANSFORM and suffix not in DATA_SUFFIXES:
        raise ctx.error(
            f"an export output must end in .parquet, .csv or .jsonl, got `{text}`", node,
            key=key, hint=f"{ctx.kind} stages export their output in the format of the extension",
        )
    return path


def _parse_paths(ctx: _Ctx, key: str, node: Node) -> tuple[str, ...]:
    items = _string_items(ctx, key, node, "a file path or glob")
    paths = [(_rel_path(ctx, key, item, text), item) for text, item in items]
    _unique(ctx, key, paths)
    for path, item in paths:
        if not _is_glob(path) and not (ctx.project_dir / path).exists():
            raise ctx.error(f"no file `{path}` for `{key}`", item, key=key, hint=_relative_hint(ctx))
    return tuple(path for path, _ in paths)


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _check_claims(ctx: _Ctx) -> None:
    """Outputs don't overlap; a plain file input is present and is no stage's output."""
    owners: dict[str, _Claim] = {}
    for claim in ctx.outputs:
        other = owners.setdefault(claim.path, claim)
        if other is not claim:
            raise _overlap_error(ctx, claim, other)
    for claim in ctx.outputs:
        other = _owner(owners, posixpath.dirname(claim.path))
        if other is not None:
            raise _overlap_error(ctx, claim, other)
    for claim in ctx.file_inputs:
        producer = _owner(owners, claim.path)
        ctx.stage = claim.stage
        if producer is not None:
            raise _produced_error(ctx, claim, producer)
        if claim.error is not None:
            raise claim.error


def _owner(owners: dict[str, _Claim], path: str) -> _Claim | None:
    """The output claim on `path` or on a folder that holds it."""
    while path:
        if path in owners:
            return owners[path]
        path = posixpath.dirname(path)
    return None


def _overlap_error(ctx: _Ctx, claim: _Claim, other: _Claim) -> WorkflowError:
    ctx.stage = claim.stage
    return ctx.error(
        f"output `{claim.path}` overlaps output `{other.path}` of stage `{other.stage}`",
        claim.node, key=claim.key, hint="each file or folder has one producing stage",
    )


def _produced_error(ctx: _Ctx, claim: _Claim, producer: _Claim) -> WorkflowError:
    if producer.stage == claim.stage:
        return ctx.error(
            f"stage depends on itself: `{claim.path}` is one of its outputs", claim.node,
            key=claim.key,
        )
    return ctx.error(
        f"`{claim.path}` is an output of stage `{producer.stage}`", claim.node, key=claim.key,
        hint=f"depend on the stage instead: `{producer.stage}`",
    )


def _parse_processors(ctx: _Ctx, key: str, node: Node) -> tuple[dict[str, Any], ...]:
    if not isinstance(node, SequenceNode):
        raise ctx.error(
            f"`{key}` must be a list of processors, got {_describe(ctx.construct(node, key))}",
            node, key=key, hint="e.g. [{drop: [col]}, {limit: 10}]",
        )
    from .processors import validate_processors  # it imports this module's PROCESSORS

    processors = tuple(_processor(ctx, key, item) for item in node.value)
    try:
        validate_processors(processors, ctx.stage)  # filter syntax, before anything runs
    except WorkflowError as exc:
        raise ctx.error(exc.message, node, key=key, hint=exc.hint) from None
    return processors


def _processor(ctx: _Ctx, key: str, node: Node) -> dict[str, Any]:
    pairs = _pairs(ctx, node, "processor names") if isinstance(node, MappingNode) else {}
    if len(pairs) != 1:
        raise ctx.error(
            "each processor is a mapping with one key: " + ", ".join(PROCESSORS), node, key=key,
            hint="e.g. `- drop: [col]`",
        )
    (name, (name_node, value_node)), = pairs.items()
    if name not in PROCESSORS:
        hint = _suggest(name, PROCESSORS) or "use one of " + ", ".join(PROCESSORS)
        raise ctx.error(f"unknown processor `{name}`", name_node, key=key, hint=hint)
    value = ctx.construct(value_node, key)
    expected = _PROCESSOR_CHECKS[PROCESSORS[name][0]]
    if not expected[0](value):
        raise ctx.error(
            f"processor `{name}` takes {expected[1]}, got {_describe(value)}", value_node, key=key
        )
    return {name: value}


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_rename(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_PROCESSOR_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "columns": (_is_str_list, "a list of column names"),
    "rename": (_is_rename, "a mapping {old: new} of column names"),
    "expression": (_is_expression, "a non-empty expression (a string)"),
    "count": (_is_count, "an integer >= 0"),
}

_PARSERS: dict[str, Callable[[_Ctx, str, Node], Any]] = {
    "callable": _parse_callable,
    "command": _parse_command,
    "ref": _parse_ref,
    "refs": _parse_refs,
    "outputs": _parse_outputs,
    "paths": _parse_paths,
    "mapping": _parse_mapping,
    "positive_int": _parse_positive_int,
    "non_negative_int": _parse_non_negative_int,
    "choice": _parse_choice,
    "processors": _parse_processors,
    "bool": _parse_bool,
    "string": _parse_string,
}
