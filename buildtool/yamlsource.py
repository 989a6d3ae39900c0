"""The Workflowfile's YAML, read safely and line-aware (DESIGN.md §1).

The text is checked against hostile-input bounds on the event stream, then
composed into nodes, never loaded blindly, so every key and value keeps its
line and column. Values are built by the safe constructor only, after a check
for keys given twice. Every YAML error becomes a `WorkflowError` that points
at the line and column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import WorkflowError

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Hostile-input bounds, checked on the event stream before any node is composed: nesting
# deeper than this crashes libyaml's recursive composer (and Python's constructor), and
# aliases may add at most this many values beyond the document's own (a "billion laughs"
# file expands exponentially while staying tiny).
MAX_DEPTH = 64
MAX_ALIAS_VALUES = 100_000


@dataclass
class Source:
    """The YAML being read: where errors point (file, and the stage being read)."""

    display: str
    stage: str | None = None
    constructor: SafeConstructor = field(default_factory=SafeConstructor)
    # The errors found so far, each reported once (see `report`), and how many reports were
    # made in all: a caller compares `failures` before and after reading a part to learn
    # whether the part failed, even when its error repeats one reported before.
    errors: list[WorkflowError] = field(default_factory=list)
    failures: int = 0
    _reported: set[tuple[object, ...]] = field(default_factory=set)

    def report(self, error: WorkflowError) -> None:
        """Keep `error` for the report of every error, and read on. An error at the same place
        with the same message (a default's mistake, met again in each stage it applies to) is
        kept once."""
        self.failures += 1
        where = (error.file, error.line, error.column, error.key, error.message)
        if where not in self._reported:
            self._reported.add(where)
            self.errors.append(error)

    def at(self, node: Node) -> tuple[int, int]:
        """The 1-based line and column of `node`."""
        return node.start_mark.line + 1, node.start_mark.column + 1

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
            elif "unhashable key" in _problem(exc):
                hint = "a key is a plain value: quote it to make it a string"
            error = self.error(f"invalid YAML value: {_problem(exc)}", node, key=key, hint=hint)
            mark = getattr(exc, "problem_mark", None)  # the value at fault, inside `node`
            if mark is not None:
                error.line, error.column = mark.line + 1, mark.column + 1
            raise error from exc
        except _SCALAR_ERRORS as exc:  # a scalar its tag cannot read: `2024-02-30`, `!!int x`
            raise self._bad_scalar(node, key, exc) from exc

    def _bad_scalar(self, root: Node, key: str | None, exc: Exception) -> WorkflowError:
        """The scalar under `root` that its (resolved or explicit) tag cannot read."""
        for node in (n for n in _nodes(root) if isinstance(n, ScalarNode)):
            try:
                SafeConstructor().construct_object(node)
            except _SCALAR_ERRORS as error:
                kind = node.tag.removeprefix("tag:yaml.org,2002:")
                why = f" ({error})" if isinstance(error, ValueError) else ""
                return self.error(
                    f"invalid YAML value: `{node.value}` is not a valid {kind}{why}", node,
                    key=key, hint="quote it to make it a string, or fix the value")
        return self.error(f"invalid YAML value: {exc}", root, key=key)


# What PyYAML's safe constructors raise for a scalar their tag cannot read (a date that
# does not exist, `!!int abc`, `!!bool maybe`, `!!timestamp soon`).
_SCALAR_ERRORS = (ValueError, KeyError, AttributeError, TypeError)


def _nodes(root: Node) -> Iterator[Node]:
    """Every node under `root`, keys included, each once (aliases share nodes), in document
    order."""
    seen: set[int] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, MappingNode):
            stack.extend(reversed([n for pair in node.value for n in pair]))
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))


# ---------------------------------------------------------------- reading and composing


def compose_root(path: Path, display: str, raw: bytes | None = None) -> MappingNode:
    """The root mapping node of the Workflowfile at `path` (or of its bytes `raw`, read
    already); WorkflowError when unreadable."""
    return _compose(_decode(_read(path, display) if raw is None else raw, display), display)


def _read(path: Path, display: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise WorkflowError(
            "no Workflowfile here", file=display, hint="create one, or name it with -f FILE"
        ) from exc
    except OSError as exc:
        raise WorkflowError(f"cannot read the Workflowfile: {exc}", file=display) from exc


def _decode(raw: bytes, display: str) -> str:
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
    """Refuse too deep nesting and alias bombs before anything is composed.

    libyaml (PyYAML >= 6.0.4) has a nesting guard of its own (1000 levels) that can fire
    first, because its scanner reads up to 1024 characters ahead (`[[[[...`). On any YAML
    error the nesting is measured again by the pure-Python scanner, token by token, so too
    deep nesting always gets our message whatever the PyYAML version; any other error is
    reported as the fast parser gave it."""
    try:
        _check_events(yaml.parse(text, Loader=_LOADER), display)
    except yaml.YAMLError:
        _check_depth_slowly(text, display)
        raise


def _check_events(events: Iterator[yaml.Event], display: str) -> None:
    """One pass over the events: each alias counts the values of its anchor, so nothing is
    ever expanded."""
    sizes: dict[str, int] = {}  # anchor -> values under it, once its node is complete
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, values so far)
    own = extra = 0
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise _too_deep(event.start_mark, display)
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
                # unknown or still open: the composer says
                size = 1 if event.anchor is None else sizes.get(event.anchor, 1)
                extra += size
                if extra > MAX_ALIAS_VALUES and extra > 10 * own:
                    raise _bounds_error(
                        f"aliases (*name) expand the Workflowfile by more than "
                        f"{MAX_ALIAS_VALUES} values (a YAML alias bomb?)", event.start_mark,
                        display, "write the values out, or use fewer nested aliases (*name)")
            if stack:
                stack[-1] = (stack[-1][0], stack[-1][1] + size)


class _TooDeep(Exception):
    def __init__(self, mark: Mark) -> None:
        super().__init__(mark)
        self.mark = mark


_COLLECTION_STARTS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
                      yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)


class _DepthCheckingLoader(yaml.SafeLoader):
    """The pure-Python parser, its nesting measured after every token it scans (so before
    any read-ahead can reach a nesting guard of its own). The open flow collections plus
    the open block collections (`indents`) are never more than the nesting of the values."""

    def fetch_more_tokens(self) -> None:
        super().fetch_more_tokens()
        if self.flow_level + len(self.indents) > MAX_DEPTH:
            opened = [t for t in self.tokens if isinstance(t, _COLLECTION_STARTS)]
            raise _TooDeep(opened[-1].start_mark if opened else self.get_mark())


def _check_depth_slowly(text: str, display: str) -> None:
    """Our error if `text` nests more than MAX_DEPTH levels; nothing for any other problem."""
    try:
        _check_events(yaml.parse(text, Loader=_DepthCheckingLoader), display)
    except _TooDeep as exc:
        raise _too_deep(exc.mark, display) from None
    except yaml.YAMLError:
        return


class _Position(Protocol):
    """A mark of the pure-Python parser (`yaml.error.Mark`) or of libyaml's (`yaml._yaml.Mark`)."""

    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...


def _too_deep(mark: _Position | None, display: str) -> WorkflowError:
    return _bounds_error(f"values nested more than {MAX_DEPTH} levels deep", mark, display,
                         "flatten the structure")


def _bounds_error(message: str, mark: _Position | None, display: str, hint: str) -> WorkflowError:
    """`mark` is None only for an event built without one (the parsers always set it)."""
    line, column = (None, None) if mark is None else (mark.line + 1, mark.column + 1)
    return WorkflowError(message, file=display, line=line, column=column, hint=hint)


# ---------------------------------------------------------------- YAML errors


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


# ---------------------------------------------------------------- nodes → values


def _check_duplicates(source: Source, root: Node) -> None:
    """Every mapping under `root`, in document order: a key given twice is an error."""
    for node in _nodes(root):
        if isinstance(node, MappingNode):
            _check_mapping_keys(source, node)


def _check_mapping_keys(source: Source, node: MappingNode) -> None:
    repeats = _repeated_keys(source, node)
    if repeats:
        raise repeats[0][1]


def _repeated_keys(source: Source, node: MappingNode) -> list[tuple[Node, WorkflowError]]:
    """Each key given again, at its second (third, ...) place, with its error."""
    first: dict[Any, Node] = {}
    repeats: list[tuple[Node, WorkflowError]] = []
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key = source.construct(key_node)
        if key not in first:
            first[key] = key_node
            continue
        line = first[key].start_mark.line + 1
        repeats.append((key_node, source.error(
            f"duplicate key `{key}` at line {key_node.start_mark.line + 1} "
            f"(first given at line {line})",
            key_node, key=str(key), hint="give each key once",
        )))
    return repeats


def mapping_pairs(source: Source, node: MappingNode, what: str) -> dict[str, tuple[Node, Node]]:
    """A mapping's string keys → (key node, value node); `<<` merges applied, own keys win.

    A key given twice, or a key that is not a string, is reported (`Source.report`) and left
    out, so the rest of the mapping is still read."""
    repeated = set()
    for key_node, error in _repeated_keys(source, node):
        source.report(error)
        repeated.add(id(key_node))
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            _check_duplicates(source, value_node)
    try:
        source.constructor.flatten_mapping(node)
    except yaml.YAMLError as exc:
        raise source.error(f"invalid merge (<<): {_problem(exc)}", node) from exc
    result: dict[str, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        if id(key_node) in repeated:
            continue
        key = source.construct(key_node)
        if not isinstance(key, str):
            source.report(source.error(
                f"{what} must be strings, got {describe(key)}", key_node, hint="quote it"))
            continue
        result[key] = (key_node, value_node)
    return result


def expect(source: Source, key: str, node: Node, kind: type, expected: str) -> Any:
    """The value of `node`, which must be of type `kind` (`expected` says so in words)."""
    value = source.construct(node, key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        hint = "quote it to make it a string" if kind is str and isinstance(node, ScalarNode) else None
        raise source.error(
            f"`{key}` must be {expected}, got {describe(value)}", node, key=key, hint=hint
        )
    return value


def describe(value: Any) -> str:
    """A constructed value in words, for error messages."""
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
