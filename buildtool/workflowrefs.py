"""What a Workflowfile refers to: project paths, files and globs, stages, outputs.

Every path stays inside the project folder; a plain name is a stage if one is
called that, else a file (`stage:` / `file:` force either); no two stages claim
one output, and no file input is a stage's output. Plain file inputs are
checked by `check_claims` once every stage's outputs are known.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from yaml.nodes import Node, SequenceNode

from .errors import WorkflowError
from .model import CallableRef, InputRef
from .yamlsource import Source, describe, expect

GLOB_CHARS = frozenset("*?[")
DATA_SUFFIXES = (".parquet", ".csv", ".jsonl")
_EXPORT_KINDS = ("generate", "transform")  # their outputs are export copies


@dataclass(frozen=True)
class Claim:
    """A path some stage declared: an output, or a plain file input still to check."""

    path: str
    stage: str
    node: Node
    key: str
    error: WorkflowError | None = None  # raised when an input is missing or is an output


@dataclass(kw_only=True)
class LoadContext(Source):
    """Per-load state: where errors point, what is known so far."""

    project_dir: Path
    artifacts: str = "artifacts"
    stage_names: dict[str, None] = field(default_factory=dict)  # ordered, O(1) lookups
    kind: str | None = None
    outputs: list[Claim] = field(default_factory=list)
    file_inputs: list[Claim] = field(default_factory=list)


def suggest(word: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean `{close[0]}`?" if close else None


def _listing(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


# ---------------------------------------------------------------- paths


def _relative_hint(ctx: LoadContext) -> str:
    return f"check the path: it is relative to the Workflowfile's folder ({ctx.project_dir})"


def _is_glob(text: str) -> bool:
    return any(ch in GLOB_CHARS for ch in text)


def rel_path(ctx: LoadContext, key: str, node: Node, text: str) -> str:
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


def _string_items(ctx: LoadContext, key: str, node: Node, item: str) -> list[tuple[str, Node]]:
    """A list of strings (each `item`), with their nodes."""
    if not isinstance(node, SequenceNode):
        value = ctx.construct(node, key)
        hint = f"write it as a list: [{value}]" if isinstance(value, str) else None
        raise ctx.error(
            f"`{key}` must be a list, got {describe(value)}", node, key=key, hint=hint
        )
    return [(expect(ctx, key, entry, str, item), entry) for entry in node.value]


def _unique(ctx: LoadContext, key: str, items: list[tuple[str, Node]]) -> None:
    """Items are (identity, node): two nodes with one identity are an error at the second."""
    first: dict[str, Node] = {}
    for identity, node in items:
        if identity in first:
            line = first[identity].start_mark.line + 1
            raise ctx.error(
                f"`{node.value}` is listed twice in `{key}` (first at line {line})", node, key=key
            )
        first[identity] = node


def parse_callable(ctx: LoadContext, key: str, node: Node) -> str:
    text = expect(ctx, key, node, str, "a callable reference (a string)")
    ref = CallableRef.parse(text)
    if ref is None:
        raise ctx.error(
            f"`{key}` must name a function, got {text!r}", node, key=key,
            hint="write `path/to/file.py:function` or `package.module:function`",
        )
    if ref.is_file:
        path = rel_path(ctx, key, node, ref.module)
        if not (ctx.project_dir / path).is_file():
            raise ctx.error(
                f"no file `{ref.module}` for `{key}`", node, key=key, hint=_relative_hint(ctx)
            )
    return text


def parse_paths(ctx: LoadContext, key: str, node: Node) -> tuple[str, ...]:
    items = _string_items(ctx, key, node, "a file path or glob")
    paths = [(rel_path(ctx, key, item, text), item) for text, item in items]
    _unique(ctx, key, paths)
    for path, item in paths:
        if not _is_glob(path) and not (ctx.project_dir / path).exists():
            raise ctx.error(f"no file `{path}` for `{key}`", item, key=key, hint=_relative_hint(ctx))
    return tuple(path for path, _ in paths)


# ---------------------------------------------------------------- stage or file


def parse_ref(ctx: LoadContext, key: str, node: Node) -> InputRef:
    text = expect(ctx, key, node, str, "a stage name or a file path (a string)")
    ref = _resolve_ref(ctx, key, node, text)
    if ref.kind == "file":
        _check_seed_file(ctx, key, node, ref.value)
    return ref


def parse_refs(ctx: LoadContext, key: str, node: Node) -> tuple[InputRef, ...]:
    items = _string_items(ctx, key, node, "a stage name or a file path")
    refs = [(_resolve_ref(ctx, key, item, text), item) for text, item in items]
    _unique(ctx, key, [(ref.key, item) for ref, item in refs])
    return tuple(ref for ref, _ in refs)


def _resolve_ref(ctx: LoadContext, key: str, node: Node, text: str) -> InputRef:
    if text.startswith("stage:"):
        return _stage_ref(ctx, key, node, text, text.removeprefix("stage:"))
    if text.startswith("file:"):
        return _file_ref(ctx, key, node, text, text.removeprefix("file:"))
    if text in ctx.stage_names:
        return _stage_ref(ctx, key, node, text, text)
    return _file_ref(ctx, key, node, text, text)


def _stage_ref(ctx: LoadContext, key: str, node: Node, written: str, name: str) -> InputRef:
    if name not in ctx.stage_names:
        hint = suggest(name, ctx.stage_names) or "stages: " + _listing(ctx.stage_names)
        raise ctx.error(f"no stage named `{name}`", node, key=key, hint=hint)
    if name == ctx.stage:
        raise ctx.error(
            f"stage depends on itself (`{key}: {written}`)", node, key=key,
            hint="a stage can only use other stages",
        )
    return InputRef("stage", name, written)


def _file_ref(ctx: LoadContext, key: str, node: Node, written: str, text: str) -> InputRef:
    path = rel_path(ctx, key, node, text)
    if not _is_glob(path) and ctx.stage is not None:
        missing = None if (ctx.project_dir / path).exists() else _missing(ctx, key, node, written)
        ctx.file_inputs.append(Claim(path, ctx.stage, node, key, missing))
    return InputRef("file", path, written)


def _missing(ctx: LoadContext, key: str, node: Node, written: str) -> WorkflowError:
    """The error for a missing plain path, raised once every output is known."""
    if written.startswith("file:"):
        name = written.removeprefix("file:")
        return ctx.error(f"no file `{name}`", node, key=key, hint=_relative_hint(ctx))
    hint = suggest(written, ctx.stage_names) or _relative_hint(ctx)
    return ctx.error(f"no stage or file named `{written}`", node, key=key, hint=hint)


def _check_seed_file(ctx: LoadContext, key: str, node: Node, path: str) -> None:
    suffix = PurePosixPath(path).suffix.lower()
    if _is_glob(suffix) or not suffix or suffix in DATA_SUFFIXES:
        return
    if (ctx.project_dir / path).is_dir():
        return
    raise ctx.error(
        f"a seed file must be .parquet, .csv or .jsonl, got `{path}`", node, key=key
    )


# ---------------------------------------------------------------- outputs and claims


def parse_outputs(ctx: LoadContext, key: str, node: Node) -> tuple[str, ...]:
    items = _string_items(ctx, key, node, "a file or folder path")
    paths = [(_output_path(ctx, key, item, text), item) for text, item in items]
    _unique(ctx, key, paths)
    if ctx.stage is not None:
        ctx.outputs.extend(Claim(path, ctx.stage, item, key) for path, item in paths)
    return tuple(path for path, _ in paths)


def _output_path(ctx: LoadContext, key: str, node: Node, text: str) -> str:
    path = rel_path(ctx, key, node, text)
    if _is_glob(path):
        raise ctx.error(f"an output cannot be a glob: `{text}`", node, key=key)
    art = ctx.artifacts
    if _is_within(path, art) or _is_within(art, path):
        raise ctx.error(
            f"output `{text}` overlaps the artifacts folder `{art}`", node, key=key,
            hint="dd-build owns the artifacts folder; write outputs elsewhere",
        )
    suffix = PurePosixPath(path).suffix.lower()
    if ctx.kind in _EXPORT_KINDS and suffix not in DATA_SUFFIXES:
        raise ctx.error(
            f"an export output must end in .parquet, .csv or .jsonl, got `{text}`", node,
            key=key, hint=f"{ctx.kind} stages export their output in the format of the extension",
        )
    return path


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_claims(ctx: LoadContext) -> None:
    """Outputs don't overlap; a plain file input is present and is no stage's output."""
    owners: dict[str, Claim] = {}
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


def _owner(owners: dict[str, Claim], path: str) -> Claim | None:
    """The output claim on `path` or on a folder that holds it."""
    while path:
        if path in owners:
            return owners[path]
        path = posixpath.dirname(path)
    return None


def _overlap_error(ctx: LoadContext, claim: Claim, other: Claim) -> WorkflowError:
    ctx.stage = claim.stage
    return ctx.error(
        f"output `{claim.path}` overlaps output `{other.path}` of stage `{other.stage}`",
        claim.node, key=claim.key, hint="each file or folder has one producing stage",
    )


def _produced_error(ctx: LoadContext, claim: Claim, producer: Claim) -> WorkflowError:
    if producer.stage == claim.stage:
        return ctx.error(
            f"stage depends on itself: `{claim.path}` is one of its outputs", claim.node,
            key=claim.key,
        )
    return ctx.error(
        f"`{claim.path}` is an output of stage `{producer.stage}`", claim.node, key=claim.key,
        hint=f"depend on the stage instead: `{producer.stage}`",
    )
