"""Where a stage's selected output lives, from its record. No data is read here."""

from __future__ import annotations

from pathlib import Path

from .fingerprint import skipped_name
from .model import DATA_SUFFIXES, PARQUET, Stage, Workflow
from .records import StageRecord


def output_files(workflow: Workflow, record: StageRecord) -> list[Path]:
    """Absolute paths of every file in a stage's selected output."""
    if record.output is not None and record.output.kind != "batches":
        return [workflow.project_dir / f.path for f in record.output.files]
    return [workflow.artifacts_root / b.file for b in record.batches]


def input_paths(workflow: Workflow, stage: Stage, record: StageRecord) -> list[Path]:
    """What a dependant sees as a stage input's path: its selected output. That is its
    batches folder, a run stage's declared outputs, or the processed, callback or override
    file(s) that replaced the batches."""
    out = record.output
    if out is None or out.kind == "batches":
        return [workflow.stage_dir(stage.name) / "batches"]
    if out.kind == "files":
        return [workflow.project_dir / p for p in stage.outputs]
    return [workflow.project_dir / f.path for f in out.files]


def tabular_files(workflow: Workflow, record: StageRecord) -> list[Path] | None:
    """The files to read as the stage's table, or None when its output is not tabular.

    A run stage's table is its first declared output: a .parquet, .csv or .jsonl file, or a
    folder's .parquet files in sorted path order (hidden ones left out, as `folder_files`)."""
    files = output_files(workflow, record)
    out = record.output
    if out is None or out.kind != "files":
        return files
    declared = record.spec.get("outputs") or []
    if not declared:
        return None
    first = str(declared[0])
    if any(f.path == first for f in out.files):  # a file
        return [workflow.project_dir / first] if first.lower().endswith(DATA_SUFFIXES) else None
    inside = sorted(f.path for f in out.files
                    if f.path.startswith(first + "/") and f.path.lower().endswith(PARQUET)
                    and not any(map(skipped_name, f.path[len(first) + 1:].split("/"))))
    return [workflow.project_dir / p for p in inside] or None
