"""Edits of the artifacts folder outside a build: review overrides and clean. Caller holds the lock."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .boundary import export_data, write_exports
from .errors import StateError, UsageError
from .fingerprint import FileState, digest_bytes, digest_strings, spec_fingerprint
from .fsutil import atomic_write_bytes, remove_temp_files_of
from .model import Workflow
from .outputs import tabular_files
from .records import RECORD_NAME, Output, RecordStatus, StageRecord, read_record, write_record
from .steps import exports_key
from .wording import counted, noun

OVERRIDE = "override"
_UNFINISHED: dict[str, str] = {  # a record that is not completed: why there is nothing to read
    "running": "its build is running now, or was killed (a build replaces the output it had "
               "before)",
    "interrupted": "its last build was interrupted before its output was complete",
    "failed": "its last build failed before its output was complete",
}


def completed_record(workflow: Workflow, stage: str) -> StageRecord:
    """The stage's record when it has an output to read; a clear error otherwise."""
    read = read_record(workflow.stage_dir(stage))
    record = read.record
    if record is not None and record.status == "skipped_empty_upstream":
        raise _skipped_error(workflow, record)
    if record is None or record.status not in ("completed", "completed_empty") or not record.output:
        if record is not None and record.status in _UNFINISHED:  # begun, not completed
            raise UsageError(f"no output yet: {_UNFINISHED[record.status]}",
                             stage=stage, hint=f"`dd-build status` says more; `dd-build {stage}` "
                                               "finishes it")
        why = read.problem[1] if read.problem else "it has no completed build"
        raise UsageError(f"no output yet: {why}", stage=stage,
                         hint=f"build it first: dd-build {stage}")
    return record


def _skipped_error(workflow: Workflow, record: StageRecord) -> UsageError:
    """A skipped stage has no output (its old one was removed when it was skipped): say why."""
    stage = workflow.stages.get(record.stage)
    ups = stage.upstream_stages if stage is not None else tuple(record.stage_inputs)
    empty = [u for u in ups if (r := read_record(workflow.stage_dir(u)).record) is not None
             and r.status in ("completed_empty", "skipped_empty_upstream")]
    why = (f"upstream {noun(len(empty), 'stage')} {', '.join(repr(u) for u in empty)} had no rows"
           if empty
           else "an upstream stage had no rows")
    return UsageError(f"no output: it was skipped in the last build ({why})", stage=record.stage,
                      hint="it runs once its upstream has rows again; see `dd-build status`")


def override_output(workflow: Workflow, stage: str, source: Path, shown: str | None = None
                    ) -> StageRecord:
    """Copy a reviewed parquet file in as the stage's selected output, after checking it.
    `shown`: what the record names as its source (default: `source`)."""
    import pyarrow.parquet as pq

    from .exportformats import CannotExport

    record = completed_record(workflow, stage)
    try:
        data = source.read_bytes()
        table = pq.read_table(source)
    except FileNotFoundError:
        raise UsageError(f"no file {source}", stage=stage,
                         hint="name the reviewed parquet file (a path from here)") from None
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError)
        raise StateError(f"{source} is not a readable parquet file: {exc}", stage=stage,
                         hint="export with `dd-build export STAGE file.parquet`, edit, "
                              "and save it as parquet") from exc
    _check_compatible(workflow, record, table, source)
    exports = _exports_of(record)
    try:  # every export copy must be able to hold the review, before anything is written
        copies = export_data(table, exports)
    except CannotExport as exc:
        raise StateError(f"{source}: {exc.message}", stage=stage, key="outputs",
                         hint=exc.hint) from exc
    # A new file under a new name, the export copies, the record, then the old files: a kill
    # at any point leaves the old review or the new one in force, and only unlisted files
    # behind (export copies the record does not list are rewritten by the next build).
    name = source.name if source.suffix == ".parquet" else "data.parquet"
    unique = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(4).hex()}"
    path = workflow.stage_dir(stage) / OVERRIDE / unique / name
    atomic_write_bytes(path, data)
    st = os.stat(path)
    state = FileState(path.relative_to(workflow.project_dir).as_posix(), st.st_size,
                      st.st_mtime_ns, digest_bytes(data))
    output = Output("override", table.num_rows, state.digest, (state,))
    steps = {k: v for k, v in record.steps.items() if k != "exports"}
    if exports:
        steps["exports"] = write_exports(workflow.project_dir, copies,
                                         exports_key(exports, output.digest))
    replaced = _replaced_output(workflow, record).to_json()
    extra = {**record.extra, "override": {"source": shown or str(source), "at": time.time(),
                                          "replaced": replaced}}
    status: RecordStatus = "completed" if table.num_rows else "completed_empty"
    record = replace(record, status=status, output=output, steps=steps, extra=extra)
    write_record(workflow.stage_dir(stage), record)
    remove_unlisted_overrides(workflow, record)
    return record


def release_override(workflow: Workflow, stage: str) -> StageRecord:
    """Let a review go: the stage's selected output is again the one the override replaced,
    so the next build rebuilds the stage if its spec, code or inputs changed meanwhile, and
    reruns its dependants (they consumed the override)."""
    record = completed_record(workflow, stage)
    if record.output is None or record.output.kind != "override":
        raise UsageError("has no override to release", stage=stage,
                         hint="`dd-build status` shows which stages have one")
    output = _replaced_output(workflow, record)
    extra = {k: v for k, v in record.extra.items() if k != "override"}
    status: RecordStatus = "completed_empty" if output.rows == 0 else "completed"
    record = replace(record, status=status, output=output, extra=extra)
    write_record(workflow.stage_dir(stage), record)
    remove_unlisted_overrides(workflow, record)
    return record


def _replaced_output(workflow: Workflow, record: StageRecord) -> Output:
    """The stage's own output: the record's when no override is in force, else the one the
    override replaced — recorded with it, or (an override set by an older dd-build) the last
    later step's output, the batches', or a run stage's declared files as they are now."""
    if record.output is not None and record.output.kind != "override":
        return record.output
    saved = (record.extra.get("override") or {}).get("replaced")
    if isinstance(saved, dict):
        return Output.from_json(saved)
    for step in ("callback", "processed"):
        if step in record.steps:
            return record.steps[step]
    if record.kind == "run":
        from .errors import StageFailed
        from .kinds.command import files_output

        try:
            return files_output(workflow, [str(p) for p in record.spec.get("outputs") or []],
                                record.stage)
        except StageFailed as exc:
            raise StateError(f"cannot restore the stage's own output: {exc.message}",
                             stage=record.stage,
                             hint=f"rebuild it instead: dd-build --force {record.stage}"
                             ) from exc
    rows = sum(b.rows for b in record.batches)
    return Output("batches", rows, digest_strings([b.digest for b in record.batches]))


def _exports_of(record: StageRecord) -> list[str]:
    """The export copies the record's spec declares (a run stage's outputs are its own)."""
    if record.kind == "run":
        return []
    return [str(p) for p in record.spec.get("outputs") or []]


def refresh_exports(workflow: Workflow, record: StageRecord, spec: dict[str, Any]
                    ) -> StageRecord:
    """Write a stage's export copies from the override in force, and record them with the
    `outputs` of `spec` (the spec now); the rest of the recorded spec stays as built, so a held
    change is still reported. The override stays. Nothing is recorded when a copy cannot be
    written: CannotExport, UnreadableData (a StateError) or OSError, for the caller to report."""
    from .datasets import read_parquet_files

    assert record.output is not None and record.output.kind == "override"
    exports = [str(p) for p in spec.get("outputs") or []]
    table = read_parquet_files([workflow.project_dir / f.path for f in record.output.files])
    copies = export_data(table, exports)
    steps = {k: v for k, v in record.steps.items() if k != "exports"}
    if exports:
        steps["exports"] = write_exports(workflow.project_dir, copies,
                                         exports_key(exports, record.output.digest))
    built = {**record.spec, "outputs": spec.get("outputs") or []}
    record = replace(record, spec=built, spec_fingerprint=spec_fingerprint(built), steps=steps)
    write_record(workflow.stage_dir(record.stage), record)
    return record


def remove_unlisted_overrides(workflow: Workflow, record: StageRecord) -> None:
    """Remove what the stage's override folder holds beyond the override its record lists: the
    old review once a new one is recorded, or the new file of an override killed before its
    record was written; and temp files a killed write of its export copies left beside them."""
    exports = record.steps.get("exports")
    for f in exports.files if exports is not None else ():
        remove_temp_files_of(workflow.project_dir / f.path)
    folder = workflow.stage_dir(record.stage) / OVERRIDE
    listed = set()
    if record.output is not None and record.output.kind == "override":
        for f in record.output.files:
            parts = Path(os.path.relpath(workflow.project_dir / f.path, folder)).parts
            if parts and parts[0] != "..":
                listed.add(parts[0])
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no override folder
        return
    for entry in entries:
        if entry.name in listed:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _check_compatible(workflow: Workflow, record: StageRecord, table: object,
                      source: Path) -> None:
    """Every column the stage's output has must be there, with a type it can be cast to."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert isinstance(table, pa.Table)
    files = tabular_files(workflow, record)
    if files is None:
        raise StateError("cannot override it: its output is not a table "
                         "(its first output is not a .parquet, .csv or .jsonl file or a folder "
                         "of .parquet files)", stage=record.stage,
                         hint="a review override replaces a tabular output only")
    if not files or files[0].suffix.lower() != ".parquet":
        return
    current = pq.read_schema(files[0])
    missing = [n for n in current.names if n not in table.column_names]
    if missing:
        raise StateError(f"{source} lacks the {noun(len(missing), 'column')} "
                         f"{', '.join(missing)} that the stage outputs", stage=record.stage,
                         hint="keep every column of `dd-build export`; extra columns are fine")
    for field in current:
        have = table.schema.field(field.name).type
        if have != field.type and not _castable(table.column(field.name), field.type):
            raise StateError(f"{source}: column '{field.name}' is {have}; the stage outputs "
                             f"{field.type}", stage=record.stage)


def _castable(column: object, to: object) -> bool:
    import pyarrow as pa

    try:
        column.cast(to, safe=True)  # type: ignore[attr-defined]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
        return False
    return True


def orphan_stages(workflow: Workflow) -> list[str]:
    """Stage folders in the artifacts that no stage of the Workflowfile owns."""
    root = workflow.artifacts_root
    if not root.is_dir():
        return []
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and e.name not in workflow.stages)


def never_built_notes(workflow: Workflow, names: list[str]) -> dict[str, tuple[str, ...]]:
    """Notes for stages never built (no record) when the artifacts suggest a rename: folders
    of stages no longer in the Workflowfile, or records of a stage of that name in another
    workflow's folder (the `workflow:` name changed). One scandir when nothing matches."""
    if not names:
        return {}
    orphans = orphan_stages(workflow)
    common: tuple[str, ...] = ()
    if orphans:
        shown = ", ".join(_orphan_text(workflow, o) for o in orphans[:5])
        if len(orphans) > 5:
            shown += f" and {len(orphans) - 5} more"
        what = "a stage" if len(orphans) == 1 else f"{len(orphans)} stages"
        common = (f"artifacts of {what} no longer in the Workflowfile exist: {shown}",
                  "hint: a renamed stage is restored from the build cache under its new name "
                  "when the cache holds its build (else it builds fresh); `dd-build clean "
                  "--orphans` removes the artifacts of stages no longer in the Workflowfile")
    others = _other_workflows(workflow)
    notes = {}
    for name in names:
        found = [w for w in others if (workflow.artifacts_root.parent / w / name /
                                       RECORD_NAME).is_file()]
        lines = common
        if found:
            where = os.path.relpath(workflow.artifacts_root.parent / found[0] / name)
            lines += (f"{where} holds records of a stage '{name}' of workflow '{found[0]}': "
                      f"if this workflow was renamed, set `workflow: {found[0]}` again to use "
                      "them",)
        if lines:
            notes[name] = lines
    return notes


def _orphan_text(workflow: Workflow, name: str) -> str:
    """`judge (generate stage, 200 rows, built 2026-01-31 12:00)`, or the name alone."""
    record = read_record(workflow.stage_dir(name)).record
    if record is None:
        return name
    parts = [f"{record.kind} stage"]
    if record.output is not None and record.output.rows is not None:
        parts.append(counted(record.output.rows, "row"))
    if record.finished_at is not None:
        parts.append("built " + time.strftime("%Y-%m-%d %H:%M", time.localtime(record.finished_at)))
    return f"{name} ({', '.join(parts)})"


def _other_workflows(workflow: Workflow) -> list[str]:
    """Folders beside this workflow's in the artifacts folder (other workflows' records)."""
    try:
        with os.scandir(workflow.artifacts_root.parent) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False)
                          and e.name != workflow.name)
    except OSError:
        return []


def remove_stage_artifacts(workflow: Workflow, names: list[str]) -> list[Path]:
    removed = []
    for name in names:
        folder = workflow.stage_dir(name)
        if folder.is_dir():
            shutil.rmtree(folder)
            removed.append(folder)
    return removed
