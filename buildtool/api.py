"""The Python API: what `dd-build` does, as functions that return data.

    import buildtool

    report = buildtool.build("path/to/project")        # like `dd-build`
    report.ok, report.stage("judged").reasons          # like `dd-build --json`
    buildtool.status("path/to/project").up_to_date      # like `dd-build status --json`
    table = buildtool.read_output("path/to/project", "judged")   # like `dd-build export`

`project` is the project folder (the one holding `Workflowfile`) or the Workflowfile's own
path, relative to the current folder; it is taken as given (no search of parent folders).

Errors are raised as the CLI's exit codes sort them: WorkflowError (exit 2: an invalid
Workflowfile, a target or stage name that is not there, a stage with no output yet, files on
disk that cannot be read), ResumeRefused (3), BuildLocked (4); all are BuildError. A stage
that fails is not an exception: the report says so (`report.ok` is False). KeyboardInterrupt
goes on to the caller once the running stage is recorded `interrupted` (the next build
resumes it).

Each call runs as a fresh `dd-build` would and leaves the process as it was (inprocess.py):
stage code sees the project folder as its current folder, and code edited between two calls
runs as edited. The CLI runs its commands through the same functions (`build_workflow`,
`workflow_status`), with a Reporter that prints; here a build's progress goes to the
`buildtool` logger (LogReporter), silent until logging is configured, but for failures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    BuildError,
    BuildLocked,
    ResumeRefused,
    UsageError,
    WorkflowError,
    suggest,
)
from .report import BuildReport, Reporter, StageResult, WorkflowStatus

if TYPE_CHECKING:
    import pyarrow as pa

    from .execute import BuildConfig, Prepared
    from .model import Workflow
    from .plan import Decision, ResumeMode

__all__ = ["BuildError", "BuildLocked", "BuildReport", "ResumeRefused", "StageResult",
           "WorkflowError", "WorkflowStatus", "build", "read_output", "status"]

WORKFLOWFILE = "Workflowfile"
LOGGER = "buildtool"  # the logger the API reports through (not imported by the CLI: start-up)

Project = str | os.PathLike[str]
Names = str | Iterable[str]


def build(project: Project = ".", targets: Names = (), *,
          resume: ResumeMode = "if-possible", force: Names = (), rerun_from: Names = (),
          dry_run: bool = False, keep_going: bool = False, jobs: int | None = None,
          executor: str | None = None, scheduler: str | None = None) -> BuildReport:
    """Build the targets (default: every stage) and what they need, as `dd-build` does.

    `targets`, `force` and `rerun_from` take stage names (one name, or several); `resume` is
    "if-possible", "never" or "always"; `dry_run` plans and changes nothing (the report has
    no results); `keep_going` still builds what does not need a failed stage; `jobs` runs up
    to that many stages at once (`-j`; default: the Workflowfile's `jobs:`, else 1; above 32,
    32); `executor="dask"` runs generate and transform stages on a Dask cluster, the one at
    `scheduler` (else $DD_BUILD_SCHEDULER, else the Workflowfile's, else a LocalCluster);
    `executor="local"` runs them here whatever the Workflowfile says.

    Returns the BuildReport (`build --json`'s data); a failed stage makes `report.ok` False,
    it raises nothing. Raises WorkflowError, ResumeRefused (before any stage runs) or
    BuildLocked; KeyboardInterrupt after recording the stage it interrupted.
    """
    from .execute import BuildConfig
    from .inprocess import project_call

    config = BuildConfig(_names(targets, "targets"), _resume(resume), _names(force, "force"),
                         _names(rerun_from, "rerun_from"), bool(dry_run), _jobs(jobs),
                         _executor(executor), _scheduler(scheduler))
    workflow = load(project, store=not dry_run)
    with project_call(workflow.project_dir, runs_code=not dry_run):
        report = build_workflow(workflow, config, keep_going=bool(keep_going))
    if report.internal is not None:
        import logging

        logging.getLogger(LOGGER).error(
            "dd-build internal error while running stage '%s' (a bug in dd-build: please "
            "report it):\n%s", report.internal.stage, report.internal.traceback)
    return report


def status(project: Project = ".") -> WorkflowStatus:
    """Each stage: up to date or not, what a build would do and every reason why, and its
    record's status and rows, as `dd-build status --json` says. Changes nothing."""
    from .inprocess import project_call

    workflow = load(project)
    with project_call(workflow.project_dir, runs_code=False):
        return workflow_status(workflow)


def read_output(project: Project, stage: str) -> pa.Table:
    """The stage's selected output (its override, else its processed or own batches, or a run
    stage's first output) as one pyarrow Table: what `dd-build export` writes. Reads the last
    build's output, whether or not the stage is up to date now (see `status`). WorkflowError
    when the stage has no completed output or none that is a table."""
    from .inprocess import project_call

    workflow = load(project)
    with project_call(workflow.project_dir, runs_code=False):
        return selected_table(workflow, stage, "read_output")


# ---------------------------------------------------------------- what the CLI shares


def workflowfile(project: Project) -> Path:
    """The Workflowfile `project` names: its own path, or `Workflowfile` in that folder."""
    path = Path(project)
    if path.is_dir():
        if (path / WORKFLOWFILE).is_file():
            return path / WORKFLOWFILE
        raise UsageError(f"no {WORKFLOWFILE} in {path}",
                         hint="name the project folder (the one holding the Workflowfile), "
                              "or the Workflowfile's path")
    if not path.is_file():
        raise UsageError(f"no such file or folder: {path}",
                         hint="name the project folder or its Workflowfile, relative to "
                              f"the current folder ({os.getcwd()})")
    return path


def load(project: Project, *, store: bool = True) -> Workflow:
    """The validated workflow of `project` (WorkflowError naming where it is invalid); the
    compiled workflow is stored unless `store` is False (a dry run writes nothing)."""
    from . import compiled

    path = workflowfile(project)
    return compiled.load(path, str(path), store=store)


def build_workflow(workflow: Workflow, config: BuildConfig, *, keep_going: bool = False,
                   reporter: Reporter | None = None,
                   on_plan: Callable[[BuildReport], None] | None = None) -> BuildReport:
    """Plan and (unless a dry run) build under the workflow's lock: `build` and `dd-build`.

    `on_plan` gets the report as soon as the plan is made: the build fills it in place, so
    the caller has every stage's result so far should an exception end the build."""
    from .daskexec import ignored_scheduler
    from .execute import jobs_for, prepare, run_build, scope_of
    from .knobs import check
    from .lock import build_lock

    reporter = reporter or LogReporter()
    check()  # a knob that is no number of seconds: said before anything runs
    if config.dry_run:
        return _planned(prepare(workflow, config), True, reporter, on_plan)
    scope = scope_of(workflow, config)  # usage errors before the lock (it makes artifacts/)
    jobs, clamped = jobs_for(config, workflow)
    cluster = _cluster(config, workflow)
    with build_lock(workflow.artifacts_root):
        prep = prepare(workflow, config, scope)
        report = _planned(prep, False, reporter, on_plan)
        for note in (clamped, ignored_scheduler(config.executor, config.scheduler)):
            if note is not None:
                reporter.note(workflow.name, note)
        return run_build(prep, reporter, keep_going, report, jobs, cluster)


def _cluster(config: BuildConfig, workflow: Workflow) -> object | None:
    """The Dask cluster the build's stages run on (connected when a stage first needs it),
    or None; dask is not imported here."""
    from .daskexec import cluster_for, uses_cluster

    if not uses_cluster(config.executor, config.scheduler, workflow):
        return None
    return cluster_for(config, workflow)


def _planned(prep: Prepared, dry_run: bool, reporter: Reporter,
             on_plan: Callable[[BuildReport], None] | None) -> BuildReport:
    """The plan told and reported; ResumeRefused when `resume="always"` refuses it."""
    from .execute import check_strict

    reporter.planned(prep.decisions)
    report = BuildReport(prep.workflow.name, dry_run, [
        StageResult(d.stage, d, rows=d.rows, batches_total=d.batches_total)
        for d in prep.decisions])
    if on_plan is not None:
        on_plan(report)
    if prep.options.resume == "always":
        check_strict(prep)
    return report


def workflow_status(workflow: Workflow) -> WorkflowStatus:
    from .execute import BuildConfig, prepare

    return WorkflowStatus.of(prepare(workflow, BuildConfig(dry_run=True)))


def selected_table(workflow: Workflow, stage: str, what: str) -> pa.Table:
    """The stage's selected output as one table (`what` names the caller in errors)."""
    from .artifacts import completed_record
    from .datasets import read_stage_table
    from .graph import build_graph, check_stage_names

    check_stage_names(build_graph(workflow), [stage], what)
    record = completed_record(workflow, stage)  # a clear error when it has none (or skipped)
    table = read_stage_table(workflow, record)
    if table is None:
        raise UsageError("no tabular output (its first output is not a "
                         ".parquet, .csv or .jsonl file or a folder of .parquet files)",
                         stage=stage)
    return table


# ---------------------------------------------------------------- arguments


def _names(value: Names, what: str) -> tuple[str, ...]:
    """Stage names: one string is one name (not its letters)."""
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what}: stage names are strings, got {type(name).__name__} "
                            f"{name!r}")
    return names


def _jobs(value: int | None) -> int | None:
    """`jobs`: None, or a whole number of 1 or more."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"jobs: a whole number of 1 or more, got {type(value).__name__} "
                        f"{value!r}")
    if value < 1:
        raise UsageError(f"jobs={value}: must be 1 or more",
                         hint="jobs=1 runs one stage at a time; jobs=4 up to 4 at once")
    return value


def _executor(value: str | None) -> str | None:
    if value not in (None, "local", "dask"):
        raise UsageError(f"executor={value!r}: must be \"local\" or \"dask\"",
                         hint="executor=\"dask\" runs generate and transform stages on a Dask "
                              "cluster; None: as the Workflowfile says")
    return value


def _scheduler(value: str | None) -> str | None:
    from .model import scheduler_problem

    if value is None:
        return None
    problem = scheduler_problem(value) if isinstance(value, str) else "it is not a string"
    if problem is not None:
        raise UsageError(f"scheduler={value!r}: {problem}",
                         hint="give tcp://HOST:PORT or HOST:PORT")
    return value


def _resume(value: str) -> ResumeMode:
    from .plan import RESUME_MODES

    for mode in RESUME_MODES:
        if value == mode:
            return mode
    hint = suggest(str(value), RESUME_MODES) or \
        f"one of {', '.join(repr(m) for m in RESUME_MODES)}"
    raise UsageError(f"resume={value!r}: no such resume mode", hint=hint)


# ---------------------------------------------------------------- progress


class LogReporter:
    """The API's Reporter: a build's progress as records of the `buildtool` logger. Each
    stage's start and result at INFO (batches at DEBUG, retries and notes at INFO), a failed
    stage at WARNING. Python prints only WARNING and above until logging is configured
    (`logging.basicConfig(level=logging.INFO)` shows progress), so a build is silent but for
    its failures."""

    def __init__(self) -> None:
        import logging

        self.log = logging.getLogger(LOGGER)
        self.levels = logging.DEBUG, logging.INFO, logging.WARNING

    def planned(self, decisions: list[Decision]) -> None:
        if self.log.isEnabledFor(self.levels[0]):
            from .explain import decision_lines

            for line in decision_lines(decisions):
                self.log.debug("%s", line)

    def started(self, decision: Decision) -> None:
        from .explain import decision_head

        why = "; ".join(r.message for r in decision.reasons)
        self.log.info("%s: %s: %s", decision.stage, decision_head(decision), why)

    def progress(self, stage: str, done: int, total: int | None, *, in_flight: int = 0,
                 rows: int = 0, retries: int = 0) -> None:
        """`answers: batch 3/10 (2 in flight, 60 rows, 1 retry)` at DEBUG; the figures in
        brackets only when there are any (logging is thread-safe: calls come from threads)."""
        if total is None or not self.log.isEnabledFor(self.levels[0]):
            return
        extra = [f"{in_flight} in flight"] if in_flight else []
        extra += [f"{rows} {'row' if rows == 1 else 'rows'}"] if rows else []
        extra += [f"{retries} {'retry' if retries == 1 else 'retries'}"] if retries else []
        more = f" ({', '.join(extra)})" if extra else ""
        self.log.debug("%s: batch %d/%d%s", stage, done, total, more)

    def note(self, stage: str, text: str) -> None:
        self.log.warning("%s: %s", stage, text)  # a retry, or what could not be written: say it

    def command_started(self, stage: str, command: str) -> Callable[[bytes], None] | None:
        self.log.info("%s: $ %s", stage, command)
        return None  # the command's output is in the stage's log.txt

    def finished(self, result: StageResult) -> None:
        from .explain import result_line

        _, info, warn = self.levels
        self.log.log(warn if result.result == "failed" else info, "%s", result_line(result))
        for warning in result.warnings:
            self.log.warning("%s: %s", result.stage, warning.message)
