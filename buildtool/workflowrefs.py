"""What a Workflowfile refers to: project paths, files and globs, stages, outputs.

Every path stays inside the project folder; a plain name is a stage if one is
called that, else a file (`stage:` / `file:` force either). Outputs, plain paths,
globs and code files are recorded as claims (`claims.py`), checked once every
stage's outputs are known.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from yaml.nodes import Node, SequenceNode

from .claims import Claim, Claims
from .errors import WorkflowError, suggest
from .fingerprint import module_file
from .globreach import is_glob
from .model import DATA_SUFFIXES, CallableRef, InputRef
from .yamlsource import Source, describe, expect

_EXPORT_KINDS = ("generate", "transform")  # their outputs are export copies


@dataclass(kw_only=True)
class LoadContext(Source):
    """Per-load state: where errors point, what is known so far."""

    project_dir: Path
    artifacts: str = "artifacts"
    stage_names: dict[str, None] = field(default_factory=dict)  # ordered, O(1) lookups
    kind: str | None = None
    claims: Claims = field(default_factory=Claims)


def _listing(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


# ---------------------------------------------------------------- paths


def _relative_hint(ctx: LoadContext) -> str:
    return f"check the path: it is relative to the Workflowfile's folder ({ctx.project_dir})"


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
    path = _code_file(ctx, key, node, ref)
    if path is not None and ctx.stage is not None:
        ctx.claims.code_files.append(Claim(path, ctx.stage, node, key))
    return text


def _code_file(ctx: LoadContext, key: str, node: Node, ref: CallableRef) -> str | None:
    """The project file a callable lives in (None for a module outside the project)."""
    if not ref.is_file:
        return module_file(ctx.project_dir, ref.module)
    path = rel_path(ctx, key, node, ref.module)
    if not (ctx.project_dir / path).is_file():
        raise ctx.error(
            f"no file `{ref.module}` for `{key}`", node, key=key, hint=_relative_hint(ctx)
        )
    return path


def parse_paths(ctx: LoadContext, key: str, node: Node) -> tuple[str, ...]:
    items = _string_items(ctx, key, node, "a file path or glob")
    paths = [(rel_path(ctx, key, item, text), item) for text, item in items]
    _unique(ctx, key, paths)
    for path, item in paths:
        _claim(ctx, key, item, path, path)
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
    _claim(ctx, key, node, path, written)
    return InputRef("file", path, written)


def _claim(ctx: LoadContext, key: str, node: Node, path: str, written: str) -> None:
    """Record a path or glob the stage reads, checked once every output is known (claims.py).
    Defaults are not claimed: they are checked for each stage they apply to."""
    if ctx.stage is None:
        return
    if is_glob(path):
        ctx.claims.globs.append(Claim(path, ctx.stage, node, key))
        return
    missing = None if (ctx.project_dir / path).exists() else _missing(ctx, key, node, written)
    ctx.claims.paths.append(Claim(path, ctx.stage, node, key, missing))


def _missing(ctx: LoadContext, key: str, node: Node, written: str) -> WorkflowError:
    """The error for a missing plain path, raised once every output is known."""
    if key == "code":
        return ctx.error(f"no file `{written}` for `code`", node, key=key,
                         hint=_relative_hint(ctx))
    if written.startswith("file:"):
        name = written.removeprefix("file:")
        return ctx.error(f"no file `{name}`", node, key=key, hint=_relative_hint(ctx))
    hint = suggest(written, ctx.stage_names) or _relative_hint(ctx)
    return ctx.error(f"no stage or file named `{written}`", node, key=key, hint=hint)


def _check_seed_file(ctx: LoadContext, key: str, node: Node, path: str) -> None:
    suffix = PurePosixPath(path).suffix.lower()
    if is_glob(suffix) or not suffix or suffix in DATA_SUFFIXES:
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
        ctx.claims.outputs.extend(Claim(path, ctx.stage, item, key, kind=ctx.kind)
                                  for path, item in paths)
    return tuple(path for path, _ in paths)


def _output_path(ctx: LoadContext, key: str, node: Node, text: str) -> str:
    path = rel_path(ctx, key, node, text)
    if is_glob(path):
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
