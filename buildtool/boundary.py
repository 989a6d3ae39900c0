"""A stage's boundary steps, after its batches: processors → on_success callback → export copies.

Each step has a key (its spec and its input's digest). A step whose key and files are as the
previous record says is reused, so a processor change never regenerates batches and a missing
callback output reruns only the callback.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .capture import captured, stage_log
from .errors import StageFailed, UserCodeFailed, exc_text
from .fingerprint import FileState, callable_file, check_file, digest_strings
from .fsutil import atomic_write_bytes, remove_temp_files_of
from .records import Output
from .steps import BOUNDARY, RECORDED, StepName, position, step_key, uses

if TYPE_CHECKING:
    from .kinds import Job


@dataclass
class CallbackContext:
    """What an on_success callback is given. Its name and the paths into its folder are
    noted when read (records.NAME_READS): a renamed stage whose callback read them runs
    again rather than being restored from a cache entry built under its old name."""

    _stage_name: str = field(repr=False)
    # the stage's dataset so far: its batches folder or processed file
    _stage_output: str = field(repr=False)
    _out_dir: str = field(repr=False)  # an empty folder inside the stage's artifacts
    params: dict[str, Any]
    _reads: set[str] = field(default_factory=set, repr=False)

    @property
    def stage_name(self) -> str:
        self._reads.add("stage_name")
        return self._stage_name

    @property
    def stage_output(self) -> str:
        """The stage's dataset so far: its batches folder or processed file."""
        self._reads.add("stage_output")
        return self._stage_output

    @property
    def out_dir(self) -> str:
        """An empty folder inside the stage's artifacts to write into."""
        self._reads.add("out_dir")
        return self._out_dir


def run_boundary(job: Job, batches: Output, previous: dict[str, Output], start: StepName
                 ) -> tuple[Output, dict[str, Output]]:
    """Run the stage's later steps from `start` on; the ones before it are kept as recorded
    (the planner checked their traces). A step that runs is still reused when its key comes
    out as recorded and its files are intact: early cutoff, step by step. Returns the
    selected output and the steps' traces."""
    current = batches
    spec = job.run.record.spec
    code = job.run.record.code.get(callable_file(job.workflow, job.stage.on_success) or "")
    kept = position(job.stage.kind, start)
    for step in BOUNDARY:
        job.run.step = step
        if step == "allow_empty":
            _check_empty(job, current)
            continue
        if not uses(step, spec):
            continue
        key = step_key(step, spec, code.digest if code else "", current.digest)
        old = previous.get(RECORDED[step])
        if position(job.stage.kind, step) < kept and old is not None:
            out = old
        else:
            out = _reuse(job, old, key) or _runner(step)(job, current, key)
        job.run.steps[RECORDED[step]] = out
        if step != "outputs":
            current = out
    job.run.step = None
    return current, dict(job.run.steps)


def _check_empty(job: Job, output: Output) -> None:
    """An empty selected output fails the stage unless it allows it (`completed_empty`)."""
    if output.rows == 0 and not job.stage.allow_empty:
        job.run.touch()  # the failure is recorded: a record of another check must not stand
        raise StageFailed("the stage's selected output has no rows", stage=job.stage.name,
                          hint="check its code and inputs, or set `allow_empty: true`")


def _reuse(job: Job, old: Output | None, key: str) -> Output | None:
    """The previous step's output when it was made from the same input and is intact."""
    if old is None or old.key != key:
        return None
    root = job.workflow.project_dir
    fresh = [check_file(root / f.path, f.path, f) for f in old.files]
    if any(f is None or f.digest != o.digest for f, o in zip(fresh, old.files, strict=True)):
        return None
    return old


def _rel(job: Job, path: Path) -> str:
    """Project-relative when inside the project (a moved project still finds it), else absolute."""
    try:
        return path.resolve().relative_to(job.workflow.project_dir).as_posix()
    except ValueError:
        return str(path.resolve())


def _table(job: Job, out: Output) -> Any:
    from .datasets import read_parquet_files

    if out.kind == "batches":
        root = job.workflow.artifacts_root
        return read_parquet_files([root / b.file for b in job.run.sorted_batches()])
    return read_parquet_files([job.workflow.project_dir / f.path for f in out.files])


def _write_table(job: Job, folder: str, table: Any, kind: str, key: str) -> Output:
    from .tables import parquet_bytes

    target = job.run.dir / folder
    shutil.rmtree(target, ignore_errors=True)
    path = target / "data.parquet"
    atomic_write_bytes(path, parquet_bytes(table))
    state = check_file(path, _rel(job, path), None)
    assert state is not None
    return Output(kind, table.num_rows, state.digest, (state,), key)


def _process(job: Job, current: Output, key: str) -> Output:
    from .processors import apply_processors

    table = apply_processors(_table(job, current), job.stage.processors, job.stage.name)
    job.run.touch()
    return _write_table(job, "processed", table, "processed", key)


def _callback(job: Job, current: Output, key: str) -> Output:
    from .kinds.loader import load_callable

    stage = job.stage
    ref = stage.on_success or ""
    log = stage_log(job.run.dir)
    with captured(log):  # what the module prints on import
        fn = load_callable(job.workflow, ref, stage.name)
    job.run.touch()  # after loading: a callback that cannot load leaves the last record
    out_dir = job.run.dir / "callback"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    ctx = CallbackContext(stage.name, str(_dataset_path(job, current)), str(out_dir),
                          copy.deepcopy(stage.params))
    with captured(log):
        try:
            result = fn(ctx)
        except (Exception, SystemExit) as exc:  # the callback raised (or exited): batches stay
            raise UserCodeFailed(f"on_success {ref} raised {type(exc).__name__}: {exc_text(exc)}",
                                 stage=stage.name, key="on_success") from exc
    reads = tuple(sorted(ctx._reads))
    if result is None:  # the output stays what it was; the trace is the callback's own
        return replace(current, key=key, reads=reads)
    if not isinstance(result, (str, os.PathLike)):
        from .tables import kind_of

        raise StageFailed(f"on_success {ref} returned {kind_of(result)}, not a path",
                          stage=stage.name, key="on_success", hint=_CALLBACK_RETURNS)
    return replace(_callback_output(job, Path(result), ref, key), reads=reads)


_CALLBACK_RETURNS = "return the path (a str or Path) of a parquet file or folder it wrote, or None"


def _dataset_path(job: Job, out: Output) -> Path:
    if out.kind == "batches":
        return job.run.dir / "batches"
    return job.workflow.project_dir / out.files[0].path


def _callback_output(job: Job, path: Path, ref: str, key: str) -> Output:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_absolute():
        path = job.workflow.project_dir / path
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    problem = None
    shown = _rel(job, path)  # errors land in the record: keep paths relative there too
    if not path.exists():
        problem = f"returned {shown}, which does not exist"
    elif not files or any(f.suffix.lower() != ".parquet" for f in files):
        problem = f"returned {shown}, which is not a parquet file or a folder of them"
    if problem:
        raise StageFailed(f"on_success {ref} {problem}", stage=job.stage.name, key="on_success",
                          hint=_CALLBACK_RETURNS)
    states = []
    schemas = []
    rows = 0
    for f in files:
        state = check_file(f, _rel(job, f), None)
        assert state is not None
        states.append(state)
        try:
            meta = pq.ParquetFile(f)
            rows += meta.metadata.num_rows
            schemas.append(meta.schema_arrow)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise StageFailed(f"on_success {ref} returned {_rel(job, f)}, which is not readable "
                              f"parquet: {exc}", stage=job.stage.name, key="on_success") from exc
    try:
        pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise StageFailed(f"on_success {ref} returned {shown}, whose parquet files disagree on "
                          f"a column's type: {exc}", stage=job.stage.name, key="on_success",
                          hint="write files of one schema") from exc
    return Output("callback", rows, digest_strings([s.digest for s in states]), tuple(states), key)


def _export(job: Job, current: Output, key: str) -> Output:
    from .exportformats import CannotExport

    try:
        data = export_data(_table(job, current), job.stage.outputs)
    except CannotExport as exc:
        raise StageFailed(exc.message, stage=job.stage.name, key="outputs",
                          hint=exc.hint) from exc
    job.run.touch()
    return write_exports(job.workflow.project_dir, data, key)


def export_data(table: Any, outputs: Sequence[str]) -> list[tuple[str, bytes]]:
    """Each export copy's bytes (format by extension), all made before any is written.
    CannotExport names the copy and the column its format cannot hold."""
    from .exportformats import CannotExport, export_bytes

    data = []
    for rel in outputs:
        try:
            data.append((rel, export_bytes(table, Path(rel))))
        except CannotExport as exc:
            raise CannotExport(f"export copy {rel}: {exc.message}", hint=exc.hint) from exc
    return data


def write_exports(project_dir: Path, data: list[tuple[str, bytes]], key: str) -> Output:
    """Write the export copies (each atomically); the exports step's record."""
    states: list[FileState] = []
    for rel, blob in data:
        path = project_dir / rel
        remove_temp_files_of(path)  # a kill during an earlier attempt's copy leaves its temp file
        atomic_write_bytes(path, blob)
        state = check_file(path, rel, None)
        assert state is not None
        states.append(state)
    return Output("exports", None, digest_strings([s.digest for s in states]), tuple(states), key)



def _runner(step: str) -> Callable[[Job, Output, str], Output]:
    """Looked up when a step runs (not bound at import), so a test's probe can wrap them."""
    return {"processors": _process, "on_success": _callback, "outputs": _export}[step]
