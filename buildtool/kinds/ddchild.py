"""The process that runs one `datadesigner:` stage: `python -m buildtool.kinds.ddchild FD`.

Started by kinds/datadesigner.py in the stage's `datadesigner/` folder (its current folder),
with a hermetic environment (DATA_DESIGNER_HOME there, telemetry and plugins off): Data
Designer reads those variables when it is imported, so it runs in a process of its own, never
in dd-build's. It reads `request.json`, runs `DataDesigner.create` into `run/dataset/`
(resuming from the batches found there when asked), and reports on file descriptor FD, one
JSON object a line: `library` (the fingerprint key and state of the installed Data Designer),
`config` (its config fingerprint), one `batch` per finished batch file dd-build may keep, one
`lost` per batch that lost rows because generation failed, then `done`, or `error` (the
exception's type and message) before it exits 1.

Data Designer finishes a batch without the rows whose generation failed (a model call that
kept failing), and also without the rows an expression column drops by design (it renders
empty). The two look alike on disk; its scheduler's events tell them apart: a batch that is
short while a task of it failed for good (or after a failure that can stop the run early) is
`lost`, never kept. A batch short by design is listed in `by_design.jsonl` before it is
reported, so that a resume keeps it; any other short batch file is not trusted (kinds/
datadesigner.py removes it, and Data Designer's resume makes it again).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import IO, Any

DATASET = "dataset"  # run/<DATASET>/parquet-files/batch_NNNNN.parquet
RUN = "run"
BY_DESIGN = "by_design.jsonl"  # batches short by design: {"index", "rows"} a line
_BATCH = re.compile(r"batch_(\d+)\.parquet")
# A provider for configs that call no model: DataDesigner refuses an empty list.
_NO_MODELS = {"name": "dd-build-no-models", "endpoint": "http://127.0.0.1:9/v1",
              "provider_type": "openai", "api_key": "DD_BUILD_NO_MODELS_KEY"}


def _die_with_parent() -> None:
    """A SIGKILLed dd-build must not leave Data Designer writing batches (Linux only; elsewhere
    the child ends when its report pipe breaks)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _send(out: IO[str], event: str, **fields: Any) -> None:
    out.write(json.dumps({"event": event, **fields}) + "\n")
    out.flush()


def batch_rows(index: int, num_records: int, buffer_size: int) -> int:
    """The rows Data Designer's batch `index` is made for (its row group's size)."""
    return max(0, min(buffer_size, num_records - index * buffer_size))


def batch_index(name: str) -> int | None:
    match = _BATCH.fullmatch(name)
    return int(match.group(1)) if match else None


def read_by_design(folder: str) -> dict[int, int]:
    """Batch index → its rows, for the batches short by design (the last line of each)."""
    found: dict[int, int] = {}
    try:
        with open(os.path.join(folder, BY_DESIGN), encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    found[int(entry["index"])] = int(entry["rows"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line: that batch is not trusted
    except FileNotFoundError:
        pass
    return found


def _note_by_design(index: int, rows: int) -> None:
    with open(BY_DESIGN, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"index": index, "rows": rows}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class Watch:
    """What Data Designer's scheduler reports of one run (an event sink it calls in its loop's
    thread): the tasks whose last attempt failed, per row group (a batch), and the first
    warning it logged while running a task of each (why, for the message)."""

    KINDS = frozenset({"retry_deferred", "non_retryable_dropped", "cancelled", "task_completed",
                       "row_group_checkpointed"})

    def __init__(self, out: IO[str], num_records: int, buffer_size: int) -> None:
        self.out = out
        self.num_records = num_records
        self.buffer_size = buffer_size
        self.attached = False  # the sink is in place: else no short batch can be trusted
        self.stopping = False  # a failure that can stop the run early (its rows in any batch)
        self.why: dict[int | None, str] = {}
        self._raised: set[str | None] = set()  # task executions that failed
        self._failed: dict[str | None, int | None] = {}  # task id → row group, while failed

    def accepts_scheduler_event(self, kind: str) -> bool:
        return kind in self.KINDS

    def emit_scheduler_event(self, event: Any) -> None:
        kind = event.event_kind
        correlation = event.captured_correlation
        group = correlation.get("row_group") if isinstance(correlation, dict) else None
        if kind == "task_completed":  # after every attempt but a cancelled one
            if event.task_execution_id in self._raised:
                self._raised.discard(event.task_execution_id)
                self._failed[event.task_id] = group
            else:
                self._failed.pop(event.task_id, None)
        elif kind == "row_group_checkpointed":
            diagnostics = event.diagnostics or {}
            if diagnostics.get("result") == "all_rows_dropped":
                index = int(diagnostics.get("row_group", -1))
                self.lost(index, 0)
        else:
            self._raised.add(event.task_execution_id)
            if kind != "retry_deferred":
                self.stopping = True  # early shutdown drops unfinished rows of every group
            if kind == "cancelled":
                self._failed[event.task_id] = group

    def failures(self, group: int) -> int:
        return sum(1 for g in self._failed.values() if g == group)

    def note_warning(self, group: int | None, message: str) -> None:
        self.why.setdefault(group, message)
        self.why.setdefault(None, message)

    def lost(self, index: int, rows: int) -> None:
        size = batch_rows(index, self.num_records, self.buffer_size)
        _send(self.out, "lost", index=index, rows=rows, size=size, failures=self.failures(index),
              known=self.attached, why=self.why.get(index) or self.why.get(None))

    def on_batch(self, path: Any) -> None:
        """Data Designer finished a batch file: report it, or that it lost rows."""
        import pyarrow.parquet as pq

        index = batch_index(os.path.basename(str(path)))
        if index is None:
            return
        rows = pq.read_metadata(path).num_rows
        size = batch_rows(index, self.num_records, self.buffer_size)
        if rows < size:
            if not self.attached or self.stopping or self.failures(index):
                self.lost(index, rows)
                return
            _note_by_design(index, rows)
        _send(self.out, "batch", path=str(path))


def _attach(designer_class: Any, watch: Watch) -> Any:
    """A DataDesigner whose runs report their scheduler's events to `watch` as well (its
    resource provider carries the run's event sink; no sink otherwise, telemetry off)."""
    from data_designer.engine.observability import fanout_scheduler_event_sinks

    class Watched(designer_class):
        def _create_resource_provider(self, *args: Any, **kwargs: Any) -> Any:
            provider = super()._create_resource_provider(*args, **kwargs)
            provider.scheduler_event_sink = fanout_scheduler_event_sinks(
                provider.scheduler_event_sink, watch)
            watch.attached = True
            return provider

    return Watched


class _WarningsOf(logging.Handler):
    """The warnings of Data Designer's scheduler (a task that failed: "Non-retryable failure
    on …", "Observed retryable model-task error: …"), by the row group whose task logged
    them; not those of its columns (an expression's rows dropped by design)."""

    def __init__(self, watch: Watch) -> None:
        super().__init__(logging.WARNING)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        from data_designer.engine.observability import runtime_correlation_provider

        if not record.name.startswith("data_designer.engine.dataset_builders"):
            return
        correlation = runtime_correlation_provider.current()
        if correlation is not None and correlation.row_group is not None:
            self.watch.note_warning(correlation.row_group, record.getMessage())


class ConfigInvalid(Exception):
    """The config is not one Data Designer reads: a user's mistake, told without a traceback."""


def _builder(builder_class: Any, request: dict[str, Any]) -> Any:
    """The config builder; a config Data Designer refuses is told per column and field:
    `configs/answers.yaml: column 'answer': <what pydantic says>`."""
    from pydantic import ValidationError

    try:
        return builder_class.from_config(request["config"])
    except ValidationError as exc:
        config = request["config"]
        lines = [f"{request.get('config_file', 'the config')}: {_where(config, e['loc'])}"
                 f"{e['msg']}" for e in exc.errors()]
        raise ConfigInvalid("; ".join(dict.fromkeys(lines))) from exc


def _where(config: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """`column 'answer': field prompt: ` for a pydantic error's location in the config."""
    parts = [p for p in loc if p != "data_designer"]  # the builder's wrapper of the config
    columns = config.get("columns")
    if len(parts) >= 2 and parts[0] == "columns" and isinstance(parts[1], int) and \
            isinstance(columns, list) and parts[1] < len(columns):
        column = columns[parts[1]]
        name = column.get("name") if isinstance(column, dict) else None
        rest = [str(p) for p in parts[2:] if not _is_union_tag(p, column)]
        where = f"column '{name}'" if name is not None else f"column {parts[1] + 1}"
        return f"{where}: " + (f"field {'.'.join(rest)}: " if rest else "")
    return f"{'.'.join(map(str, parts))}: " if parts else ""


def _is_union_tag(part: Any, column: Any) -> bool:
    """pydantic names the union member it tried (`llm-text`) in the location: not a field."""
    return isinstance(column, dict) and part == column.get("column_type")


def run(request: dict[str, Any], out: IO[str]) -> None:
    from data_designer.config import (
        DataDesignerConfigBuilder,
        LocalFileSeedSource,
        ModelProvider,
        ResumeMode,
        RunConfig,
    )
    from data_designer.interface.data_designer import DataDesigner

    from ..external import fingerprint_loaded

    key, state = fingerprint_loaded("data_designer.interface.data_designer")
    _send(out, "library", key=key, state=state.to_json(),
          module="data_designer.interface.data_designer")
    watch = Watch(out, request["num_records"], request["buffer_size"])
    logging.getLogger("data_designer").addHandler(_WarningsOf(watch))
    # First: it seeds the (empty, hermetic) home with the library's default model configs,
    # which a config without `model_configs` then gets: every run the same fingerprint.
    providers = [ModelProvider(**p) for p in request.get("providers") or [_NO_MODELS]]
    designer = _attach(DataDesigner, watch)(artifact_path=RUN, model_providers=providers)
    builder = _builder(DataDesignerConfigBuilder, request)
    if request.get("seed"):
        current = builder.build().seed_config
        options: dict[str, Any] = {}
        if current is not None:
            options = {"sampling_strategy": current.sampling_strategy,
                       "selection_strategy": current.selection_strategy}
        builder.with_seed_dataset(LocalFileSeedSource(path=request["seed"]), **options)
    _send(out, "config", fingerprint=builder.build().fingerprint())
    designer.set_run_config(RunConfig(buffer_size=request["buffer_size"],
                                      max_concurrent_row_groups=request["row_groups"],
                                      otel_metrics_port=None))
    designer.create(builder, num_records=request["num_records"], dataset_name=DATASET,
                    resume=ResumeMode.ALWAYS if request["resume"] else ResumeMode.NEVER,
                    on_batch_complete=watch.on_batch)
    _send(out, "done")


def main(argv: list[str]) -> int:
    _die_with_parent()
    out = os.fdopen(int(argv[1]), "w", encoding="utf-8")
    with open("request.json", encoding="utf-8") as fh:
        request = json.load(fh)
    try:
        run(request, out)
    except ConfigInvalid as exc:
        # not in the stage's log too: the failure shows it, and the log's tail with it
        _send(out, "error", type="config", message=str(exc))
        return 1
    except Exception as exc:  # reported to dd-build, which fails the stage with it
        import traceback

        traceback.print_exc()  # into the stage's log
        _send(out, "error", type=type(exc).__name__, message=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
