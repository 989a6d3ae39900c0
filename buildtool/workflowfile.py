"""Workflowfile → validated `model.Workflow` (DESIGN.md §1).

The validator below is driven by `keys.STAGE_KEYS`, the one table of stage keys (which
`schema.py`, the fingerprint and the step model read too). The YAML is read by
`yamlsource` (safe, line-aware nodes); paths and references are checked by
`workflowrefs`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from yaml.nodes import MappingNode, Node, SequenceNode

from .ddkeys import parse_config_file, parse_models_file
from .ddkeys import stage_errors as dd_stage_errors
from .errors import WorkflowError, WorkflowErrors, closest, suggest
from .keys import (
    DASK_KEYS,
    NAME_PATTERN,
    NAME_RULE,
    PROCESSORS,
    RATE_LIMIT_KEYS,
    STAGE_KEYS,
    TOP_KEYS,
)
from .loadfacts import LoadFacts
from .model import (
    ARTIFACT_FILES,
    BATCHED_KINDS,
    KINDS,
    TOOL_WORDS,
    DaskSettings,
    Locations,
    RateLimit,
    Stage,
    Workflow,
    scheduler_problem,
)
from .placeholders import input_index_errors, run_command_errors
from .plainjson import check_plain_json
from .workflowrefs import (
    LoadContext,
    check_seed_tables,
    parse_callable,
    parse_outputs,
    parse_paths,
    parse_ref,
    parse_refs,
    rel_path,
)
from .yamlsource import compose_root, describe, expect, mapping_pairs

_NAME_RE = re.compile(NAME_PATTERN)
_T = TypeVar("_T")
_P = ParamSpec("_P")

# ---------------------------------------------------------------- entry point


def load_workflow(path: Path, display: str | None = None, *, data: bytes | None = None,
                  facts: LoadFacts | None = None) -> Workflow:
    """Read, validate and return the Workflowfile at `path` (its bytes `data`, when the
    caller has read them already).

    Raises WorkflowError when it is invalid: the error itself when there is one, else a
    `WorkflowErrors` holding each, in the file's order. Each part of the file is checked even
    when another part is wrong; a part whose check needs a wrong part (a stage with no kind,
    a run command whose `params` are wrong) is left unchecked. A file that is not YAML, or not
    a mapping, has one error.

    Every question the reading asks of the file system or the interpreter is recorded in
    `facts` (loadfacts.py): with the bytes, all a compiled workflow depends on."""
    display = display or str(path)
    resolved = Path(path).resolve()
    ctx = LoadContext(display, project_dir=resolved.parent,
                      fs=facts or LoadFacts(resolved.parent))
    root = compose_root(resolved, display, data)
    top = _top_pairs(ctx, root)
    name = _reported(ctx, _workflow_name, ctx, root, top) or "workflow"
    artifacts = _reported(ctx, _artifacts, ctx, top) or ctx.artifacts
    jobs = _reported(ctx, _jobs, ctx, top)
    dask = _reported(ctx, _executor, ctx, top)
    cache = _reported(ctx, _cache, ctx, top)
    bodies = _reported(ctx, _stage_bodies, ctx, root, top) or {}
    ctx.stage_names = dict.fromkeys(bodies)
    limits = _rate_limits(ctx, top)
    defaults = _defaults(ctx, top)
    stages: dict[str, Stage] = {}
    for stage_name, (name_node, body) in bodies.items():
        stage = _reported(ctx, _load_stage, ctx, stage_name, name_node, body, defaults)
        if stage is not None:
            stages[stage_name] = stage
    _check_across(ctx, stages, resolved.name, f"{ctx.artifacts}/{name}")
    _raise_errors(ctx.errors)
    return Workflow(name, resolved, resolved.parent, artifacts, stages, jobs, limits, dask=dask,
                    cache=cache)


def _raise_errors(errors: list[WorkflowError]) -> None:
    """Nothing when `errors` is empty; else the one error, or all of them in the file's order
    (errors at one place in the order they were found)."""
    if errors:
        ordered = sorted(errors, key=lambda error: (error.line or 0, error.column or 0))
        raise ordered[0] if len(ordered) == 1 else WorkflowErrors(ordered)


class _Skipped(Exception):
    """A part left unread because of a mistake reported already (a misspelt key)."""


def _reported(ctx: LoadContext, read: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
              ) -> _T | None:
    """What `read(*args)` returns; None when it raises a WorkflowError, which is reported."""
    try:
        return read(*args, **kwargs)
    except WorkflowError as error:
        ctx.report(error)
    except _Skipped:
        ctx.failures += 1
    return None


def _check_across(ctx: LoadContext, stages: dict[str, Stage], workflowfile: str,
                  artifacts: str) -> None:
    """What involves several stages: the paths they claim, the tables their seeds read, the
    paths their commands index."""
    for error in ctx.claims.check(ctx, workflowfile, artifacts):
        ctx.report(error)
    check_seed_tables(ctx, stages.values())  # a wrong seed or outputs is left out: None, ()
    counted = {name: stage for name, stage in stages.items()
               if not ctx.broken[name] & {"outputs", "on_success"}}
    for name, stage in stages.items():
        if not ctx.broken[name] & _COMMAND_KEYS:
            for error in input_index_errors(stage, counted):
                ctx.report(error)


# ---------------------------------------------------------------- top level


def _top_pairs(ctx: LoadContext, root: MappingNode) -> dict[str, tuple[Node, Node]]:
    top = mapping_pairs(ctx, root, "top-level keys")
    for key, (key_node, _) in top.items():
        if key not in TOP_KEYS:
            ctx.misspelt.add(closest(key, TOP_KEYS) or key)
            hint = suggest(key, TOP_KEYS) or "valid keys: " + ", ".join(TOP_KEYS)
            ctx.report(ctx.error(f"unknown top-level key `{key}`", key_node, key=key, hint=hint))
    return {key: pair for key, pair in top.items() if key in TOP_KEYS}


def _required(ctx: LoadContext, root: Node, top: dict[str, tuple[Node, Node]], key: str) -> Node:
    if key not in top:
        if key in ctx.misspelt:  # reported as the unknown key it was misspelt as
            raise _Skipped
        raise ctx.error(f"missing required key `{key}`", root, key=key, hint=TOP_KEYS[key])
    return top[key][1]


def _workflow_name(ctx: LoadContext, root: Node, top: dict[str, tuple[Node, Node]]) -> str:
    node = _required(ctx, root, top, "workflow")
    name = ctx.construct(node, "workflow")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ctx.error(
            f"invalid workflow name: {describe(name)}", node, key="workflow",
            hint=f"use {NAME_RULE}",
        )
    return name


def _artifacts(ctx: LoadContext, top: dict[str, tuple[Node, Node]]) -> str:
    if "artifacts" not in top:
        return ctx.artifacts
    node = top["artifacts"][1]
    text = expect(ctx, "artifacts", node, str, "a folder path (a string)")
    ctx.artifacts = rel_path(ctx, "artifacts", node, text)
    if ctx.fs.is_file(ctx.artifacts):
        raise ctx.error(f"`{text}` is a file, not a folder", node, key="artifacts",
                        hint="name a folder for dd-build's records and data")
    return text


def _cache(ctx: LoadContext, top: dict[str, tuple[Node, Node]]) -> str | None:
    """`cache: PATH`: a folder, relative to the Workflowfile's folder or absolute (a cache
    shared by several projects lives outside each of them)."""
    if "cache" not in top:
        return None
    node = top["cache"][1]
    text = expect(ctx, "cache", node, str, "a folder path (a string)")
    if not text.strip():
        raise ctx.error("`cache` has an empty path", node, key="cache",
                        hint="name a folder for the build cache, e.g. `cache: ../dd-cache`")
    return text


def _jobs(ctx: LoadContext, top: dict[str, tuple[Node, Node]]) -> int | None:
    """`jobs: N`, a whole number of 1 or more (a build clamps it to the cap, with a note)."""
    if "jobs" not in top:
        return None
    node = top["jobs"][1]
    value = ctx.construct(node, "jobs")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ctx.error(f"`jobs` must be a whole number of 1 or more, got {describe(value)}",
                        node, key="jobs",
                        hint="e.g. `jobs: 4` to run up to 4 stages at once (-j overrides it)")
    return value


_EXECUTOR_EXAMPLE = "e.g. executor: {dask: {scheduler: tcp://10.0.0.5:8786}}"


def _executor(ctx: LoadContext, top: dict[str, tuple[Node, Node]]) -> DaskSettings | None:
    """`executor: {dask: {scheduler: ADDRESS}}` (`dask:` empty or without a scheduler: a
    LocalCluster). Each mistake reported at its place."""
    if "executor" not in top:
        return None
    node = top["executor"][1]
    if not isinstance(node, MappingNode):
        raise ctx.error(f"`executor` must be a mapping, got "
                        f"{describe(ctx.construct(node, 'executor'))}", node, key="executor",
                        hint=_EXECUTOR_EXAMPLE)
    pairs = mapping_pairs(ctx, node, "executors")
    for name, (name_node, _) in pairs.items():
        if name != "dask":
            raise ctx.error(f"unknown executor `{name}`", name_node, key="executor",
                            hint=suggest(name, ["dask"]) or "the one executor here is `dask` "
                                 "(`executor: thread` or `process` is a stage key); "
                                 + _EXECUTOR_EXAMPLE)
    if "dask" not in pairs:
        raise ctx.error("`executor` names no executor", node, key="executor",
                        hint=_EXECUTOR_EXAMPLE)
    body = pairs["dask"][1]
    if ctx.construct(body, "executor") is None:  # `dask:` alone: a LocalCluster
        return DaskSettings()
    if not isinstance(body, MappingNode):
        raise ctx.error(f"`executor: dask` must be a mapping, got "
                        f"{describe(ctx.construct(body, 'executor'))}", body, key="executor",
                        hint=_EXECUTOR_EXAMPLE)
    settings = mapping_pairs(ctx, body, "dask keys")
    for key, (key_node, _) in settings.items():
        if key not in DASK_KEYS:
            raise ctx.error(f"unknown key `{key}` in `executor: dask`", key_node,
                            key="executor",
                            hint=suggest(key, DASK_KEYS) or "valid keys: " + ", ".join(DASK_KEYS))
    if "scheduler" not in settings:
        return DaskSettings()
    value_node = settings["scheduler"][1]
    address = ctx.construct(value_node, "executor")
    if address is None:
        return DaskSettings()
    if not isinstance(address, str):
        raise ctx.error(f"`scheduler` must be an address (a string), got {describe(address)}",
                        value_node, key="executor", hint=_EXECUTOR_EXAMPLE)
    problem = scheduler_problem(address)
    if problem is not None:
        raise ctx.error(f"invalid scheduler address {address!r}: {problem}", value_node,
                        key="executor", hint="e.g. tcp://10.0.0.5:8786 or 10.0.0.5:8786")
    return DaskSettings(address)


def _stage_bodies(
    ctx: LoadContext, root: Node, top: dict[str, tuple[Node, Node]]
) -> dict[str, tuple[Node, Node]]:
    node = _required(ctx, root, top, "stages")
    if not isinstance(node, MappingNode) or not node.value:
        raise ctx.error(
            "`stages` must be a non-empty mapping of stage names to stages", node, key="stages"
        )
    bodies = mapping_pairs(ctx, node, "stage names")
    folded: dict[str, tuple[str, Node]] = {}  # name in lower case → (name, node)
    for name, (key_node, _) in bodies.items():
        _reported(ctx, _check_stage_name, ctx, name, key_node)
        first, first_node = folded.setdefault(name.casefold(), (name, key_node))
        if first != name:
            ctx.report(ctx.error(
                f"stage names `{first}` (line {first_node.start_mark.line + 1}) and `{name}` "
                f"(line {key_node.start_mark.line + 1}) differ only in letter case", key_node,
                hint="rename one: on a case-insensitive file system (macOS, Windows) both "
                     "stages would share one folder of records",
            ))
    return bodies


def _check_stage_name(ctx: LoadContext, name: str, node: Node) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ctx.error(f"invalid stage name `{name}`", node, hint=f"use {NAME_RULE}")
    if name in TOOL_WORDS:
        raise ctx.error(
            f"`{name}` is a dd-build command and cannot name a stage", node,
            hint=f"rename the stage, e.g. `{name}-stage`",
        )
    if name.casefold() in (f.casefold() for f in ARTIFACT_FILES):
        raise ctx.error(
            f"`{name}` cannot name a stage: dd-build keeps a file of that name beside the "
            f"stage folders in {ctx.artifacts}/<workflow>/", node,
            hint=f"rename the stage, e.g. `{name.replace('.', '-')}`",
        )


def _defaults(ctx: LoadContext, top: dict[str, tuple[Node, Node]]) -> dict[str, tuple[Node, Node]]:
    """The defaults, each checked once on its own (stage-specific checks come per stage)."""
    if "defaults" not in top:
        return {}
    node = top["defaults"][1]
    if not isinstance(node, MappingNode):
        _reported(ctx, _not_a_mapping, ctx, node)
        return {}
    defaults = mapping_pairs(ctx, node, "stage keys")
    # a wrong default is reported here once, not in each stage it applies to
    return {key: pair for key, pair in defaults.items()
            if _reported(ctx, _default, ctx, key, *pair)}


def _not_a_mapping(ctx: LoadContext, node: Node) -> None:
    raise ctx.error(
        f"`defaults` must be a mapping of stage keys, got {describe(ctx.construct(node))}",
        node, key="defaults",
    )


def _default(ctx: LoadContext, key: str, key_node: Node, value_node: Node) -> bool:
    """True when the default is valid on its own; else a WorkflowError (or False when the
    errors are already reported)."""
    _check_known_key(ctx, key, key_node)
    if key in KINDS:
        raise ctx.error(
            f"`{key}` cannot be a default: each stage names its own kind", key_node, key=key
        )
    before = ctx.failures
    _parse_value(ctx, key, value_node)
    return ctx.failures == before


# ---------------------------------------------------------------- rate limits


def _rate_limits(ctx: LoadContext, top: dict[str, tuple[Node, Node]]) -> dict[str, RateLimit]:
    """The valid entries of `rate_limits:`; each wrong one reported. Every entry's name is
    kept in `ctx.limit_names` (a stage naming a wrong entry is not wrong itself)."""
    if "rate_limits" not in top:
        if "rate_limits" in ctx.misspelt:  # reported as the unknown key it was misspelt as
            ctx.limit_names = None
        return {}
    node = top["rate_limits"][1]
    if not isinstance(node, MappingNode):
        ctx.limit_names = None
        ctx.report(ctx.error(
            f"`rate_limits` must be a mapping of limit names to limits, got "
            f"{describe(ctx.construct(node, 'rate_limits'))}", node, key="rate_limits",
            hint="e.g. rate_limits: {openai: {requests_per_second: 5, max_in_flight: 16}}"))
        return {}
    entries = mapping_pairs(ctx, node, "rate limit names")
    ctx.limit_names = dict.fromkeys(entries)
    limits: dict[str, RateLimit] = {}
    for name, (name_node, body) in entries.items():
        limit = _reported(ctx, _rate_limit, ctx, name, name_node, body)
        if limit is not None:
            limits[name] = limit
    return limits


def _rate_limit(ctx: LoadContext, name: str, name_node: Node, body: Node) -> RateLimit | None:
    """One entry; None when a mistake in it is reported already."""
    if not _NAME_RE.fullmatch(name):
        raise ctx.error(f"invalid rate limit name `{name}`", name_node, key="rate_limits",
                        hint=f"use {NAME_RULE}")
    example = "e.g. {requests_per_second: 5, max_in_flight: 16}"
    if not isinstance(body, MappingNode):
        raise ctx.error(
            f"rate limit `{name}` must be a mapping, got {describe(ctx.construct(body))}", body,
            key="rate_limits", hint=example)
    failures = ctx.failures
    pairs = mapping_pairs(ctx, body, "rate limit keys")
    values: dict[str, Any] = {}
    for key, (key_node, value_node) in pairs.items():
        if key not in RATE_LIMIT_KEYS:
            hint = suggest(key, RATE_LIMIT_KEYS) or "valid keys: " + ", ".join(RATE_LIMIT_KEYS)
            ctx.report(ctx.error(f"unknown key `{key}` in rate limit `{name}`", key_node,
                                 key="rate_limits", hint=hint))
            continue
        value = _reported(ctx, _limit_value, ctx, key, value_node)
        if value is not None:
            values[key] = value
    if ctx.failures != failures:
        return None
    if not values:
        raise ctx.error(f"rate limit `{name}` sets no limit", body, key="rate_limits",
                        hint="set requests_per_second, max_in_flight or both")
    return RateLimit(name, **values)


def _limit_value(ctx: LoadContext, key: str, node: Node) -> float | int:
    value = ctx.construct(node, "rate_limits")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if RATE_LIMIT_KEYS[key][0] == "positive_int":
        if not number or not isinstance(value, int) or value < 1:
            raise ctx.error(f"`{key}` must be a positive integer, got {describe(value)}", node,
                            key="rate_limits")
        return value
    rate = float(value) if number and abs(value) < 1e300 else math.nan
    if not rate > 0 or not math.isfinite(rate):
        raise ctx.error(f"`{key}` must be a number > 0, got {describe(value)}", node,
                        key="rate_limits", hint="e.g. 5, or 0.5 for one request every 2 s")
    return rate


def _parse_limit_name(ctx: LoadContext, key: str, node: Node) -> str:
    name = expect(ctx, key, node, str, "the name of a limit in `rate_limits:`")
    names = ctx.limit_names
    if names is not None and name not in names:
        hint = suggest(name, names) or (
            "known limits: " + ", ".join(names) if names else
            f"define it: rate_limits: {{{name}: {{requests_per_second: 5}}}}")
        raise ctx.error(f"unknown rate limit `{name}`", node, key=key, hint=hint)
    return name


# ---------------------------------------------------------------- stages


# What a run stage's placeholders are checked against: with one of these wrong, they are not.
_COMMAND_KEYS = frozenset({"run", "params", "inputs", "outputs"})


def _load_stage(
    ctx: LoadContext, name: str, name_node: Node, body: Node, defaults: dict[str, tuple[Node, Node]]
) -> Stage:
    """The stage, its wrong keys reported and left at their defaults (`ctx.broken` names
    them); a WorkflowError when it cannot be read at all (not a mapping, no kind)."""
    ctx.stage, ctx.kind = name, None
    broken = ctx.broken.setdefault(name, set())
    own = _stage_pairs(ctx, name_node, body)
    kind = ctx.kind = _stage_kind(ctx, name_node, own)
    own = {key: pair for key, pair in own.items()  # (`or`: no call for the common case)
           if kind in STAGE_KEYS[key].kinds or _passes(ctx, _check_applies, ctx, key, pair[0])}
    nodes = {key: value_node for key, (_, value_node) in own.items()}
    nodes.update(_applicable_defaults(ctx, nodes, defaults))
    values: dict[str, Any] = {}
    for key, node in nodes.items():
        failures = ctx.failures
        try:
            value = _parse_value(ctx, key, node)
        except WorkflowError as exc:
            ctx.report(exc)
        if ctx.failures == failures:
            values[key] = value
        else:
            broken.add(key)
    _check_requirements(ctx, name_node, own, values, nodes, broken)
    locations = Locations(ctx.display, {"": ctx.at(name_node)} |
                          {key: ctx.at(node) for key, node in nodes.items()})
    fields = {key: value for key, value in values.items() if key not in KINDS}
    stage = Stage(name=name, kind=kind, target=values.get(kind, ""), locations=locations,
                  **fields)
    if kind == "run" and not broken & _COMMAND_KEYS:  # with the defaults applied: the
        for placeholder in run_command_errors(stage):  # params and outputs it will run with
            ctx.report(placeholder)
    if kind == "datadesigner":  # its config, params and models: file, read together
        for error in dd_stage_errors(ctx, stage, broken):
            ctx.report(error)
    return stage


def _passes(ctx: LoadContext, check: Callable[_P, object], *args: _P.args, **kwargs: _P.kwargs
            ) -> bool:
    """Whether `check(*args)` finds nothing wrong (what it finds is reported)."""
    failures = ctx.failures
    _reported(ctx, check, *args, **kwargs)
    return ctx.failures == failures


def _stage_pairs(ctx: LoadContext, name_node: Node, body: Node) -> dict[str, tuple[Node, Node]]:
    if not isinstance(body, MappingNode):
        raise ctx.error(
            f"a stage must be a mapping of keys, got {describe(ctx.construct(body))}", body,
            hint="give it a kind: generate, transform, run or datadesigner",
        )
    pairs = mapping_pairs(ctx, body, "stage keys")
    return {key: pair for key, pair in pairs.items()
            if key in STAGE_KEYS or _passes(ctx, _check_known_key, ctx, key, pair[0])}


def _check_known_key(ctx: LoadContext, key: str, key_node: Node) -> None:
    if key not in STAGE_KEYS:
        if ctx.stage is not None:  # the key it is most like counts as given, and wrong
            ctx.broken[ctx.stage].add(closest(key, STAGE_KEYS) or key)
        hint = suggest(key, STAGE_KEYS) or "valid keys: " + ", ".join(STAGE_KEYS)
        raise ctx.error(f"unknown stage key `{key}`", key_node, key=key, hint=hint)


def _stage_kind(ctx: LoadContext, name_node: Node, own: dict[str, tuple[Node, Node]]) -> str:
    kinds = [key for key in own if key in KINDS]
    if not kinds and ctx.stage is not None and ctx.broken[ctx.stage] & set(KINDS):
        raise _Skipped  # its kind is misspelt, and reported
    if not kinds:
        raise ctx.error(
            "the stage has no kind", name_node,
            hint="add exactly one of `generate`, `transform`, `run` or `datadesigner`",
        )
    if len(kinds) > 1:
        raise ctx.error(
            f"the stage has two kinds, `{kinds[0]}` and `{kinds[1]}`", own[kinds[1]][0],
            key=kinds[1], hint="a stage has exactly one of `generate`, `transform`, `run` or `datadesigner`",
        )
    return kinds[0]


def _kinds_phrase(kinds: tuple[str, ...]) -> str:
    words = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
    return words + (" stages only" if len(kinds) < len(KINDS) else " stages")


def _check_applies(ctx: LoadContext, key: str, key_node: Node) -> None:
    spec = STAGE_KEYS[key]
    if ctx.kind not in spec.kinds:
        raise ctx.error(
            f"`{key}` applies to {_kinds_phrase(spec.kinds)}", key_node, key=key,
            hint=f"this is a {ctx.kind} stage; remove `{key}`",
        )


def _applicable_defaults(
    ctx: LoadContext, nodes: dict[str, Node], defaults: dict[str, tuple[Node, Node]]
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
    ctx: LoadContext,
    name_node: Node,
    own: dict[str, tuple[Node, Node]],
    values: dict[str, Any],
    nodes: dict[str, Node],
    broken: set[str],
) -> None:
    """Keys that need others; each is reported. A key that is there but wrong (`broken`)
    counts as there: its own error says what is wrong with it."""
    for key, (key_node, _) in own.items():
        needed = STAGE_KEYS[key].requires
        if needed and needed not in nodes and needed not in broken:
            ctx.report(ctx.error(
                f"`{key}` needs `{needed}`", key_node, key=key, hint=f"add `{needed}` or remove `{key}`"
            ))
    for key, spec in STAGE_KEYS.items():
        if ctx.kind in spec.required_for and key not in broken and not values.get(key):
            broken.add(key)  # what needs it (a run command's `{outputs[0]}`) is not checked
            ctx.report(ctx.error(
                f"a {ctx.kind} stage needs a non-empty `{key}`", nodes.get(key, name_node), key=key,
                hint=f"list what the stage writes under `{key}`",
            ))
    if ctx.kind in BATCHED_KINDS and values.get("num_records") is None and "seed" not in nodes \
            and not broken & {"num_records", "seed"}:
        ctx.report(ctx.error(
            f"a {ctx.kind} stage needs `num_records` or a `seed`", name_node,
            hint="set num_records, or a seed whose row count is the default",
        ))


# ---------------------------------------------------------------- values


def _parse_value(ctx: LoadContext, key: str, node: Node) -> Any:
    return _PARSERS[STAGE_KEYS[key].type](ctx, key, node)


def _parse_string(ctx: LoadContext, key: str, node: Node) -> str:
    return expect(ctx, key, node, str, "a string")


def _parse_bool(ctx: LoadContext, key: str, node: Node) -> bool:
    return expect(ctx, key, node, bool, "true or false")


def _parse_mapping(ctx: LoadContext, key: str, node: Node) -> dict[str, Any]:
    value = expect(ctx, key, node, dict, "a mapping")
    check_plain_json(ctx, node, key)
    return value


def _parse_int(ctx: LoadContext, key: str, node: Node, minimum: int, expected: str) -> int:
    value = expect(ctx, key, node, int, expected)
    if value < minimum:
        raise ctx.error(f"`{key}` must be {expected}, got {value}", node, key=key)
    return value


def _parse_positive_int(ctx: LoadContext, key: str, node: Node) -> int:
    return _parse_int(ctx, key, node, 1, "a positive integer")


def _parse_non_negative_int(ctx: LoadContext, key: str, node: Node) -> int:
    return _parse_int(ctx, key, node, 0, "an integer >= 0")


def _parse_choice(ctx: LoadContext, key: str, node: Node) -> str:
    choices = STAGE_KEYS[key].choices
    value = expect(ctx, key, node, str, "one of " + ", ".join(choices))
    if value not in choices:
        hint = suggest(value, choices) or "use one of " + ", ".join(choices)
        if key == "executor" and value == "dask":  # a cluster is the build's, not a stage's
            hint += ("; a Dask cluster runs the whole build: `--executor dask` (or --scheduler), "
                     "or a top-level `executor: {dask: {scheduler: …}}`")
        raise ctx.error(f"unknown {key} `{value}`", node, key=key, hint=hint)
    return value


def _parse_command(ctx: LoadContext, key: str, node: Node) -> str:
    value = expect(ctx, key, node, str, "a shell command (a string)")
    if not value.strip():
        raise ctx.error(f"`{key}` is an empty command", node, key=key)
    return value


def _parse_processors(ctx: LoadContext, key: str, node: Node) -> tuple[dict[str, Any], ...]:
    if not isinstance(node, SequenceNode):
        raise ctx.error(
            f"`{key}` must be a list of processors, got {describe(ctx.construct(node, key))}",
            node, key=key, hint="e.g. [{drop: [col]}, {limit: 10}]",
        )
    from .processors import validate_processors  # only for a stage with processors: start-up

    failures = ctx.failures
    processors = tuple(found for item in node.value
                       if (found := _reported(ctx, _processor, ctx, key, item)) is not None)
    if ctx.failures != failures:  # each wrong processor is reported
        return processors
    try:
        validate_processors(processors, ctx.stage)  # filter syntax, before anything runs
    except WorkflowError as exc:
        raise ctx.error(exc.message, node, key=key, hint=exc.hint) from None
    return processors


def _processor(ctx: LoadContext, key: str, node: Node) -> dict[str, Any] | None:
    """The processor; None when a mistake in it is reported already (a key given twice)."""
    failures = ctx.failures
    pairs = mapping_pairs(ctx, node, "processor names") if isinstance(node, MappingNode) else {}
    if ctx.failures != failures:
        return None
    if len(pairs) != 1:
        raise ctx.error(
            "each processor is a mapping with one key: " + ", ".join(PROCESSORS), node, key=key,
            hint="e.g. `- drop: [col]`",
        )
    (name, (name_node, value_node)), = pairs.items()
    if name not in PROCESSORS:
        hint = suggest(name, PROCESSORS) or "use one of " + ", ".join(PROCESSORS)
        raise ctx.error(f"unknown processor `{name}`", name_node, key=key, hint=hint)
    value = ctx.construct(value_node, key)
    expected = _PROCESSOR_CHECKS[PROCESSORS[name][0]]
    if not expected[0](value):
        raise ctx.error(
            f"processor `{name}` takes {expected[1]}, got {describe(value)}", value_node, key=key
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

_PARSERS: dict[str, Callable[[LoadContext, str, Node], Any]] = {
    "callable": parse_callable,
    "command": _parse_command,
    "ref": parse_ref,
    "refs": parse_refs,
    "outputs": parse_outputs,
    "paths": parse_paths,
    "mapping": _parse_mapping,
    "positive_int": _parse_positive_int,
    "non_negative_int": _parse_non_negative_int,
    "choice": _parse_choice,
    "processors": _parse_processors,
    "bool": _parse_bool,
    "string": _parse_string,
    "limit_name": _parse_limit_name,
    "config_file": parse_config_file,
    "models_file": parse_models_file,
}
