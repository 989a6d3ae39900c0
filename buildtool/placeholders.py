"""The placeholders of a `run` command, checked when the Workflowfile is read. No I/O.

A placeholder that cannot expand would otherwise fail only when the stage runs, after every
stage before it has run (and cost what it costs). Near misses of the placeholder words
(`{input}`, `{param.x}`, `{params}`) are surely mistakes and refused too; other braces
(`{a,b}`, `${VAR}`, awk's `'{print $1}'`, find's `{}`) are the shell's and left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from .errors import WorkflowError, closest, suggest
from .globreach import is_glob
from .model import InputRef, Stage
from .wording import counted

# A name may hold a glob's `[...]` (`{inputs[data/x[0-9].csv]}`).
_NAME = r"(?:[^\[\]{}]|\[[^\[\]{}]*\])"
# What `kinds/command.py` expands. Groups: `inputs`/`outputs` and an index; an input's name
# (`{inputs[judged]}`, `{inputs[prompts/a.txt]}`); `stages`/`files` (`{inputs.stages}`); a
# parameter's dotted key.
PLACEHOLDER = re.compile(r"\{(inputs|outputs)(?:\[(\d+)\])?\}|\{inputs\[(?!\d+\])(" + _NAME +
                         r"+)\]\}|\{inputs\.(stages|files)\}|\{params\.([A-Za-z_][\w.]*)\}")
# A brace holding a placeholder word, perhaps misspelt, with an index or a dotted suffix
# (no commas, spaces or `=`: those are shell brace expansions and awk programs).
_CANDIDATE = re.compile(r"(?<!\$)\{(inputs?|outputs?|params?)(\[" + _NAME +
                        r"*\]|\.[^{}\s,]*)?\}")
_HELP = ("placeholders: {inputs}, {inputs[N]}, {inputs[NAME]} (a stage input by name, a file "
         "input by path), {inputs.stages}, {inputs.files}, {outputs}, {outputs[N]}, "
         "{params.KEY}")


def check_run_command(stage: Stage) -> None:
    """A WorkflowError at the stage's `run` for the first placeholder that cannot expand."""
    for match in _CANDIDATE.finditer(stage.target):
        text = match.group(0)
        if not PLACEHOLDER.fullmatch(text):
            raise stage.error(f"unknown placeholder `{text}`" + _near_miss(match), key="run",
                              hint=_HELP)
        _check_known(stage, text)


def _near_miss(match: re.Match[str]) -> str:
    word, suffix = match.group(1), match.group(2) or ""
    if word == "inputs" and suffix.startswith("."):
        close = closest(suffix[1:], ("stages", "files"))
        return f"; did you mean `{{inputs.{close}}}`?" if close else \
            "; `{inputs.stages}` and `{inputs.files}` name the inputs of one kind"
    if word == "outputs" and suffix.startswith("["):
        return "; outputs are named by number: `{outputs[N]}`"
    if word in ("input", "output"):
        index = suffix if suffix.startswith("[") else ""
        return f"; did you mean `{{{word}s{index}}}`?"
    if word == "param" and suffix.startswith("."):
        return f"; did you mean `{{params{suffix}}}`?"
    if word == "params":
        return "; name one parameter: `{params.KEY}`"
    return f"; did you mean `{{{word}}}` or `{{{word}[N]}}`?"


def _check_known(stage: Stage, text: str) -> None:
    match = PLACEHOLDER.fullmatch(text)
    assert match is not None
    group, index, name, kind, param = match.groups()
    if name is not None:
        _check_name(stage, text, name)
        return
    if kind is not None:
        if not any((ref.kind == "stage") == (kind == "stages") for ref in stage.dependencies):
            raise stage.error(f"`{text}`: the stage has no {kind[:-1]} inputs", key="run",
                              hint=f"list {'stages' if kind == 'stages' else 'files'} under "
                                   "`inputs:` (a script the command runs belongs under `code:`)")
        return
    if param is not None:
        if not _has_param(stage.params, param):
            raise stage.error(f"`{text}`: the stage has no parameter `{param}`", key="run",
                              hint=_param_hint(stage.params, param))
        return
    if index is None:
        return
    count = len(stage.outputs) if group == "outputs" else _input_count(stage)
    if count is not None and int(index) >= count:
        raise stage.error(
            f"`{text}`: the stage has only {counted(count, group[:-1])}",
            key="run", hint=f"{group} are numbered from 0: the last is `{{{group}[{count - 1}]}}`"
            if count else f"the stage has no {group}",
        )


def input_named(stage: Stage, name: str) -> InputRef | None:
    """The input `{inputs[name]}` names: a stage input by its name, a file input (or glob) by
    its path as written or normalised, or either as written with its `stage:`/`file:` prefix."""
    for ref in stage.dependencies:
        if name in (ref.value, ref.written, ref.key):
            return ref
    return None


def _check_name(stage: Stage, text: str, name: str) -> None:
    if input_named(stage, name) is not None:
        return
    names = [ref.value if ref.kind == "stage" else ref.written for ref in stage.dependencies]
    hint = suggest(name, names) or ("the stage's inputs: " + ", ".join(names[:8]) if names
                                    else "the stage has no inputs: list them under `inputs:`")
    raise stage.error(f"`{text}`: `{name}` is not an input of the stage", key="run", hint=hint)


def _has_param(params: dict[str, Any], dotted: str) -> bool:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _param_paths(params: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in params.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from _param_paths(value, f"{prefix}{key}.")


def _param_hint(params: dict[str, Any], dotted: str) -> str:
    paths = list(_param_paths(params))
    if not paths:
        return "the stage has no params: add it under `params:`"
    return suggest(dotted, paths) or "the stage's params: " + ", ".join(paths[:8])


def _input_count(stage: Stage) -> int | None:
    """How many paths `{inputs}` expands to, when that is known before anything runs: each
    plain file (or folder, passed as itself) is one. A glob matches what is there when the
    stage runs, and a stage input's paths are what its record says (an override, a callback's
    files): then None, and an index is checked when the stage runs."""
    count = 0
    for ref in stage.dependencies:
        if ref.kind == "stage" or is_glob(ref.value):
            return None
        count += 1
    return count


# ---------------------------------------------------------------- every error at once


def run_command_errors(stage: Stage) -> list[WorkflowError]:
    """Every placeholder of the stage's `run` that cannot expand, each with its error (what
    `check_run_command` raises for the first), so that all are reported at once."""
    errors: list[WorkflowError] = []
    for match in _CANDIDATE.finditer(stage.target):
        try:
            check_run_command(replace(stage, target=match.group(0)))
        except WorkflowError as error:
            errors.append(error)
    return errors


def input_index_errors(stage: Stage, stages: Mapping[str, Stage]) -> list[WorkflowError]:
    """`{inputs[N]}` past every path `{inputs}` can expand to, when the stage has stage inputs
    (plain files alone are checked by `check_run_command`). A stage input expands to its
    selected output: one path for a generate or transform stage (its batches folder, or the
    file its processors or an override wrote), but any number of files when its `on_success`
    may return a folder; a run stage's declared outputs (one file when overridden). A glob
    matches what is there when the stage runs. When any count is open, an index past the
    known ones is checked when the stage runs."""
    if stage.kind != "run" or _input_count(stage) is not None:
        return []
    most = _most_inputs(stage, stages)
    if most is None:
        return []
    errors = []
    for match in PLACEHOLDER.finditer(stage.target):
        group, index = match.group(1), match.group(2)
        if group == "inputs" and index is not None and int(index) >= most:
            errors.append(stage.error(
                f"`{match.group(0)}`: the stage has at most {counted(most, 'input')}", key="run",
                hint=f"inputs are numbered from 0: the last is `{{inputs[{most - 1}]}}`; a run "
                     "stage input gives one path per output, another stage one path"
                if most else "the stage has no inputs"))
    return errors


def _most_inputs(stage: Stage, stages: Mapping[str, Stage]) -> int | None:
    """The most paths `{inputs}` can expand to, or None when there is no bound."""
    most = 0
    for ref in stage.dependencies:
        upstream = stages.get(ref.value) if ref.kind == "stage" else None
        if ref.kind == "stage" and upstream is None or is_glob(ref.value) and ref.kind == "file":
            return None
        if upstream is None:
            most += 1
        elif upstream.kind == "run":
            most += max(1, len(upstream.outputs))
        elif upstream.on_success:
            return None
        else:
            most += 1
    return most
