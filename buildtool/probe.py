"""Gather the planner's facts: records, file stats, and digests only where stats moved."""

from __future__ import annotations

from pathlib import Path

from .errors import WorkflowError
from .fingerprint import (
    FileState,
    callback_only_files,
    canonical_spec,
    check_file,
    code_files,
    expand_glob,
    spec_fingerprint,
)
from .model import Stage, Workflow
from .plan import StageFacts
from .records import StageRecord, read_record


def probe(workflow: Workflow, names: list[str]) -> dict[str, StageFacts]:
    return {name: probe_stage(workflow, workflow.stages[name]) for name in names}


def probe_stage(workflow: Workflow, stage: Stage) -> StageFacts:
    read = read_record(workflow.stage_dir(stage.name))
    record = read.record
    spec = canonical_spec(stage)
    code_paths = code_files(workflow, stage)
    code, code_moved = _states(workflow.project_dir, code_paths, record.code if record else {})
    code_missing = sorted(set(code_paths) - set(code))
    if code_missing:
        raise _missing_code(stage, code_missing[0])
    files, inputs_moved = _states(workflow.project_dir, file_inputs(workflow, stage),
                                  record.file_inputs if record else {})
    groups = recorded_files(workflow, record) if record else []
    file_states, outputs_now, outputs_moved = _output_states(groups)
    return StageFacts(
        name=stage.name, kind=stage.kind, spec=spec, fingerprint=spec_fingerprint(spec),
        code=code, file_inputs=files, read=read, file_states=file_states, outputs_now=outputs_now,
        file_groups={f.path: group for group, _, f in groups},
        callback_code=callback_only_files(workflow, stage),
        refreshed=code_moved or inputs_moved or outputs_moved,
    )


def file_inputs(workflow: Workflow, stage: Stage) -> list[str]:
    """Project-relative paths of every file the stage's seed and inputs name, globs expanded."""
    paths: list[str] = []
    for ref in stage.dependencies:
        if ref.kind != "file":
            continue
        matched = expand_glob(workflow.project_dir, ref.value)
        if not matched:
            key = "seed" if ref is stage.seed else "inputs"
            loc = stage.location(key)
            raise WorkflowError(
                f"input '{ref.written}' matches no file",
                file=loc.file if loc else None, line=loc.line if loc else None,
                column=loc.column if loc else None, stage=stage.name, key=key,
                hint="create the file, or fix the path or glob",
            )
        paths.extend(matched)
    return sorted(set(paths))


def _states(root: Path, paths: list[str], known: dict[str, FileState]
            ) -> tuple[dict[str, FileState], bool]:
    """Current states of `paths` (missing ones left out) and whether any stats moved."""
    states: dict[str, FileState] = {}
    moved = False
    for rel in paths:
        state = check_file(root / rel, rel, known.get(rel))
        if state is None:
            continue
        states[rel] = state
        moved = moved or (rel in known and state is not known[rel])
    return states, moved


def recorded_files(workflow: Workflow, record: StageRecord) -> list[tuple[str, Path, FileState]]:
    """(group, absolute path, recorded state) of every file the record says the stage made."""
    found = [("batches", workflow.artifacts_root / b.file, b.state()) for b in record.batches]
    outputs = [record.output] if record.output and record.output.kind != "batches" else []
    seen = {f.path for _, _, f in found}
    for out in outputs + list(record.steps.values()):
        for f in out.files:
            if f.path not in seen:
                seen.add(f.path)
                found.append((out.kind, workflow.project_dir / f.path, f))
    return found


def _output_states(groups: list[tuple[str, Path, FileState]]
                   ) -> tuple[dict[str, str], dict[str, FileState], bool]:
    """ok / missing / modified per recorded file, the good files' states, whether stats moved."""
    states: dict[str, str] = {}
    now_ok: dict[str, FileState] = {}
    moved = False
    for _, path, known in groups:
        now = check_file(path, known.path, known)
        if now is None:
            states[known.path] = "missing"
        elif now.digest != known.digest:
            states[known.path] = "modified"
        else:
            states[known.path] = "ok"
            now_ok[known.path] = now
            moved = moved or now is not known
    return states, now_ok, moved


def _missing_code(stage: Stage, path: str) -> WorkflowError:
    loc = stage.location(stage.kind)
    return WorkflowError(
        f"code file {path} does not exist",
        file=loc.file if loc else None, line=loc.line if loc else None,
        column=loc.column if loc else None, stage=stage.name, key=stage.kind,
        hint="fix the path before `:` in the callable reference",
    )
