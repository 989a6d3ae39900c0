"""What a Workflowfile refers to: project paths, files and globs, stages, outputs.

Every path stays inside the project folder; a plain name is a stage if one is
called that, else a file (`stage:` / `file:` force either). Outputs, plain paths,
globs and code files are recorded as claims (`claims.py`), checked once every
stage's outputs are known.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TypeVar

from yaml.nodes import Node, SequenceNode

from .claims import Claim, Claims
from .codenames import CodeFile, Problem
from .errors import WorkflowError, suggest
from .globreach import is_glob
from .loadfacts import LoadFacts
from .model import DATA_SUFFIXES, CallableRef, InputRef, Stage
from .yamlsource import Source, describe, expect

_EXPORT_KINDS = ("generate", "transform", "datadesigner")  # their outputs are export copies
_T = TypeVar("_T")


@dataclass(kw_only=True)
class LoadContext(Source):
    """Per-load state: where errors point, what is known so far. Every question about the
    file system or the interpreter goes through `fs`, which records it (loadfacts.py)."""

    project_dir: Path
    fs: LoadFacts
    artifacts: str = "artifacts"
    stage_names: dict[str, None] = field(default_factory=dict)  # ordered, O(1) lookups
    kind: str | None = None
    claims: Claims = field(default_factory=Claims)
    code: dict[str, CodeFile] = field(default_factory=dict)  # code files, each read once
    functions: dict[tuple[str, str], tuple[Problem, str] | None] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)  # outputs written as folders (`out/`)
    broken: dict[str, set[str]] = field(default_factory=dict)  # stage → its wrong keys
    misspelt: set[str] = field(default_factory=set)  # top-level keys an unknown key is like
    # The names of `rate_limits:`, which a stage's `rate_limit` must be one of; None when
    # `rate_limits:` is wrong or misspelt (reported): the names are then not checked.
    limit_names: dict[str, None] | None = field(default_factory=dict)


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
    return _each(ctx, [(entry, entry) for entry in node.value],
                 lambda entry, _: expect(ctx, key, entry, str, item))


def _each(ctx: LoadContext, items: Iterable[tuple[_T, Node]],
          parse: Callable[[_T, Node], str]) -> list[tuple[str, Node]]:
    """`parse` of each item of a list, with its node: an item that fails is reported
    (`LoadContext.report`) and left out, so every item of the list is checked."""
    parsed: list[tuple[str, Node]] = []
    for item, node in items:
        try:
            parsed.append((parse(item, node), node))
        except WorkflowError as error:
            ctx.report(error)
    return parsed


def _unique(ctx: LoadContext, key: str, items: list[tuple[str, Node]]) -> list[tuple[str, Node]]:
    """Items are (identity, node): two nodes with one identity are an error at the second
    (reported; the first is kept)."""
    first: dict[str, Node] = {}
    for identity, node in items:
        if identity in first:
            line = first[identity].start_mark.line + 1
            ctx.report(ctx.error(
                f"`{node.value}` is listed twice in `{key}` (first at line {line})", node, key=key
            ))
            continue
        first[identity] = node
    return [(identity, node) for identity, node in items if first[identity] is node]


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
    if path is not None:
        _check_function(ctx, key, node, ref, path)
    return text


def _code_file(ctx: LoadContext, key: str, node: Node, ref: CallableRef) -> str | None:
    """The project file a callable lives in (None for a module outside the project)."""
    if not ref.is_file:
        return _module_file(ctx, ref.module)
    path = rel_path(ctx, key, node, ref.module)
    if not ctx.fs.is_file(path):
        raise ctx.error(
            f"no file `{ref.module}` for `{key}`", node, key=key, hint=_relative_hint(ctx)
        )
    return path


def _module_file(ctx: LoadContext, module: str) -> str | None:
    """The project file of a dotted module, as `fingerprint.module_file` finds it (a package
    before a module file of the same name), asked through `ctx.fs`."""
    base = PurePosixPath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if ctx.fs.is_file(candidate.as_posix()):
            return candidate.as_posix()
    return None


def _check_function(ctx: LoadContext, key: str, node: Node, ref: CallableRef, path: str
                    ) -> None:
    """The function a callable names is in its project file: read with `ast`, never run
    (codenames.py). A file that may bind it in a way the reading cannot follow is trusted."""
    if (path, ref.function) not in ctx.functions:  # each function checked once per load
        ctx.functions[path, ref.function] = _function_problem(ctx, ref, path)
    found = ctx.functions[path, ref.function]
    if found is None:
        return
    problem, what = found
    where = f"`{path}`" if ref.is_file else f"`{ref.module}` ({path})"
    name = f"`{ref.module}:{ref.function}`"
    if problem == "async":
        raise ctx.error(
            f"{name} is an async function: called, it returns a coroutine, not "
            f"{'a path' if key == 'on_success' else 'rows'}", node, key=key,
            hint="define it with `def`; run async code inside it with `asyncio.run(...)`")
    if problem == "value":
        raise ctx.error(f"{name} is {what}, not a function", node, key=key,
                        hint=f"name a function after `:`, e.g. `def {ref.function}(ctx): ...`")
    names = ctx.code[path].names()
    defined = names.functions() if names is not None else []
    hint = suggest(ref.function, defined) or (
        "functions defined there: " + _listing(defined) if defined else
        f"define `def {ref.function}(ctx): ...` in it, or fix the name after `:`")
    raise ctx.error(f"{where} defines no function `{ref.function}`", node, key=key, hint=hint)


def _function_problem(ctx: LoadContext, ref: CallableRef, path: str
                      ) -> tuple[Problem, str] | None:
    if not ref.is_file and ctx.fs.found_elsewhere(ref.module):
        return None
    folder = PurePosixPath(path).parent
    if PurePosixPath(path).name == "__init__.py" and any(
            ctx.fs.exists((folder / name).as_posix())
            for name in (ref.function, f"{ref.function}.py")):
        return None  # a submodule of the package: an attribute once imported
    if path not in ctx.code:
        ctx.code[path] = CodeFile(ctx.project_dir / path, lambda: ctx.fs.read_bytes(path))
    return ctx.code[path].problem(ref.function)


def parse_paths(ctx: LoadContext, key: str, node: Node) -> tuple[str, ...]:
    items = _string_items(ctx, key, node, "a file path or glob")
    paths = _unique(ctx, key, _each(ctx, items, lambda text, item: rel_path(ctx, key, item, text)))
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
    refs: dict[str, InputRef] = {}

    def resolve(text: str, item: Node) -> str:
        ref = _resolve_ref(ctx, key, item, text)
        refs.setdefault(ref.key, ref)
        return ref.key

    return tuple(refs[ref_key] for ref_key, _ in _unique(ctx, key, _each(ctx, items, resolve)))


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
    missing = None if ctx.fs.exists(path) else _missing(ctx, key, node, written)
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
    if ctx.fs.is_dir(path):
        return
    raise ctx.error(
        f"a seed file must be .parquet, .csv or .jsonl, got `{path}`", node, key=key
    )


# ---------------------------------------------------------------- outputs and claims


def parse_outputs(ctx: LoadContext, key: str, node: Node) -> tuple[str, ...]:
    items = _string_items(ctx, key, node, "a file or folder path")
    paths = _unique(ctx, key, _each(ctx, items, lambda text, item: _output_path(ctx, key, item,
                                                                                text)))
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
    if text.endswith("/"):
        ctx.folders.add(path)
    return path


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# ---------------------------------------------------------------- seeds read as tables


def check_seed_tables(ctx: LoadContext, stages: Iterable[Stage]) -> None:
    """A seed that names a run stage reads its first output as a table: a .parquet, .csv or
    .jsonl file, or a folder of .parquet files. A first output whose extension is none of
    these is a file no seed can read, and is reported. A name without an extension, one
    written as a folder (`out.v1/`), or a folder that is there now, may be a folder: the
    build says."""
    by_name = {stage.name: stage for stage in stages}
    for stage in by_name.values():
        seed = stage.seed
        upstream = by_name.get(seed.value) if seed is not None and seed.kind == "stage" \
            else None
        if upstream is None or upstream.kind != "run" or not upstream.outputs:
            continue
        first = upstream.outputs[0]
        if not _may_be_table(ctx, first):
            ctx.report(stage.error(
                f"seed stage `{upstream.name}` has no table to read: its first output "
                f"`{first}` is not a .parquet, .csv or .jsonl file or a folder", key="seed",
                hint=f"list a data file (or a folder of .parquet files, written `name/`) first "
                     f"under the `outputs` of `{upstream.name}`; to get `{first}` as a path, "
                     f"list `{upstream.name}` under `inputs` instead"))


def _may_be_table(ctx: LoadContext, path: str) -> bool:
    suffix = PurePosixPath(path).suffix.lower()
    return not suffix or suffix in DATA_SUFFIXES or path in ctx.folders or ctx.fs.is_dir(path)
