"""What a build reports: each stage's result, the build's, and the Reporter that hears of them;
and what `status` reports of each stage.

The scheduler (execute.py) fills these in; the printing layer (reporter.py, cli.py) and
explain.py read them, and `buildtool.build` / `buildtool.status` return them. Plain records:
no I/O, nothing printed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, get_args

if TYPE_CHECKING:
    from .execute import Prepared
    from .plan import Action, Decision
    from .reasons import Reason
    from .records import RecordStatus, StageRecord
    from .steps import StepName
    from .usertrace import Where


# What happened to a stage in a build (`result` in `build --json`).
Result = Literal["up_to_date", "completed", "completed_empty", "skipped_empty_upstream", "held",
                 "restored", "failed", "not_run"]
RESULTS: tuple[Result, ...] = get_args(Result)


@dataclass(frozen=True)
class StageWarning:
    """Something a stage did that the user should know of, though it did not fail it."""

    code: Literal["input_changed_by_command"]
    message: str
    file: str | None = None
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        found = {"code": self.code, "message": self.message, "file": self.file, "hint": self.hint}
        return {k: v for k, v in found.items() if v is not None}


@dataclass
class StageResult:
    """One stage of a build (one entry of `build --json`'s `stages`).

    `stage` its name; `action`, `step` and `reasons` what the plan said before the build
    (`planned` is that whole decision); `result` what happened (None in a dry run); `rows`
    its output's rows (when known); `batches_total` and `batches_run` (this build's);
    `error` the failure message of a failed stage, `log` the path of its log, `at` where in
    the user's code it raised (`str(at)`: `at stages/x.py:7 in make`); `warnings` what it did
    that did not fail it (a command that changed one of its own inputs)."""

    stage: str
    planned: Decision
    result: Result | None = None  # None in a dry run
    rows: int | None = None
    batches_total: int | None = None
    batches_run: int = 0
    error: str | None = None
    duration_s: float | None = None
    log: str | None = None  # a failed stage's log (its code's output), when it has one
    at: Where | None = None  # where in the user's code a failed stage's code raised
    traceback: str | None = None  # the user's exception's traceback (printed with -v)
    warnings: list[StageWarning] = field(default_factory=list)

    @property
    def action(self) -> Action:
        """What the plan said: `up_to_date`, `run`, `resume`, `skip_empty_upstream`, `held`."""
        return self.planned.action

    @property
    def step(self) -> StepName | None:
        """The first step the plan ran (None when none runs): see the README's "Steps"."""
        return self.planned.step

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """Every reason for the action, each with `.code`, `.message` and `.to_json()`."""
        return self.planned.reasons

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "stage": self.stage, "action": self.planned.action, "step": self.planned.step,
            "reasons": [r.to_json() for r in self.planned.reasons],
            "rows": self.rows, "batches_total": self.batches_total,
            "batches_run": self.batches_run,
        }
        if self.result is not None:
            d["result"] = self.result
            d["error"] = self.error
        if self.log is not None:
            d["log"] = self.log
        if self.at is not None:
            d["at"] = self.at.to_json()
        if self.warnings:
            d["warnings"] = [w.to_json() for w in self.warnings]
        return d


@dataclass(frozen=True)
class InternalFailure:
    """An exception nobody anticipated (a bug in dd-build) ended a stage, and the build."""

    stage: str
    error: str  # "TypeError: ..." on one line
    traceback: str
    log: str | None  # where the traceback was written (None: it could not be)


@dataclass(frozen=True)
class Interruption:
    """A signal ended the build while this stage ran; its record lists the batches kept."""

    stage: str
    batches_kept: int
    batches_total: int | None


@dataclass
class BuildReport:
    """What a build did (`build --json`): the workflow's name, whether it was a dry run, and
    its stages in topological order (only those the targets need). `internal` is set when a
    bug in dd-build ended the build (the stage it hit is `failed`)."""

    workflow: str
    dry_run: bool
    stages: list[StageResult] = field(default_factory=list)
    internal: InternalFailure | None = None
    interrupted: Interruption | None = None
    interrupted_too: list[Interruption] = field(default_factory=list)  # the others running

    @property
    def ok(self) -> bool:
        """No stage failed, and none was left not run."""
        return all(s.result not in ("failed", "not_run") for s in self.stages)

    def stage(self, name: str) -> StageResult:
        """The result of the stage called `name` (KeyError when the build did not have it)."""
        return _named(self.stages, name)

    def to_json(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "dry_run": self.dry_run, "ok": self.ok,
                "stages": [s.to_json() for s in self.stages]}


@dataclass(frozen=True)
class StageStatus:
    """One stage as `status` sees it (one entry of `status --json`'s `stages`): whether it is
    up to date, what a build would do and why, and its record's `status`, `rows` and
    `finished_at` (a Unix time), None when it has no record."""

    stage: str
    action: Action
    step: StepName | None
    reasons: tuple[Reason, ...]
    status: RecordStatus | None  # a record a killed build left `running` is `interrupted`
    rows: int | None
    finished_at: float | None
    state: str = ""  # the state in words, as `dd-build status` prints it
    killed: bool = False  # its last run was killed (SIGKILL, a crash): status `interrupted`
    batches_kept: int = 0  # what the next build keeps of its batches
    batches_total: int | None = None
    pid: int | None = None  # the live dd-build running it now, when status is `running`
    touched_at: float | None = None  # when `dd-build touch` accepted its changes, if it did

    @property
    def up_to_date(self) -> bool:
        """A build would run none of it: its record holds, or it stays skipped as recorded
        (its upstream still empty)."""
        return self.action == "up_to_date" or (
            self.action == "skip_empty_upstream" and self.status == "skipped_empty_upstream")

    def to_json(self) -> dict[str, Any]:
        doc = {"stage": self.stage, "up_to_date": self.up_to_date, "action": self.action,
               "step": self.step, "state": self.state,
               "reasons": [r.to_json() for r in self.reasons], "status": self.status,
               "killed": self.killed, "rows": self.rows, "batches_kept": self.batches_kept,
               "batches_total": self.batches_total, "finished_at": self.finished_at,
               "touched_at": self.touched_at}
        return doc if self.pid is None else {**doc, "pid": self.pid}


@dataclass(frozen=True)
class WorkflowStatus:
    """Every stage of a workflow, in topological order, as `dd-build status` shows them."""

    workflow: str
    stages: tuple[StageStatus, ...]
    # The planner's view behind it, which dd-build's own text rendering reads.
    prepared: Prepared = field(repr=False, compare=False)

    @property
    def up_to_date(self) -> bool:
        """Every stage is up to date: a build would run nothing."""
        return all(s.up_to_date for s in self.stages)

    def stage(self, name: str) -> StageStatus:
        """The status of the stage called `name` (KeyError when the workflow has none)."""
        return _named(self.stages, name)

    def to_json(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "ok": True,
                "stages": [s.to_json() for s in self.stages]}

    @classmethod
    def of(cls, prep: Prepared) -> WorkflowStatus:
        from .explain import status_state

        stages = []
        for d in prep.decisions:
            record = prep.facts[d.stage].record
            output = record.output if record is not None else None
            pid = prep.options.live.get(d.stage)
            killed = record is not None and record.status == "running" and pid is None
            stages.append(StageStatus(
                d.stage, d.action, d.step, d.reasons,
                "interrupted" if killed else record.status if record else None,
                output.rows if output is not None else None,
                record.finished_at if record else None, status_state(prep, d), killed,
                len(d.keep) if d.action in ("resume", "grow", "shrink") else 0, d.batches_total, pid,
                _touched_at(record)))
        return cls(prep.workflow.name, tuple(stages), prep)


def _touched_at(record: StageRecord | None) -> float | None:
    at = record.extra.get("touched_at") if record is not None else None
    return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None


_Named = TypeVar("_Named", StageResult, StageStatus)


def _named(items: Sequence[_Named], name: str) -> _Named:
    for item in items:
        if item.stage == name:
            return item
    raise KeyError(f"no stage {name!r} (stages: {', '.join(i.stage for i in items)})")


class Reporter(Protocol):
    """Hears of a build as it goes: the plan, each stage as it starts, its batches, notes
    (a retry), and each stage's result. The CLI prints them (reporter.py); the Python API's
    default logs them (api.py)."""

    def planned(self, decisions: list[Decision]) -> None: ...
    def started(self, decision: Decision) -> None: ...
    # done of total batches (None: not counted in batches); in_flight: batches running now;
    # rows and retries: so far in this run. Called from the threads that run them.
    def progress(self, stage: str, done: int, total: int | None, *, in_flight: int = 0,
                 rows: int = 0, retries: int = 0) -> None: ...
    def note(self, stage: str, text: str) -> None: ...
    def command_started(self, stage: str, command: str) -> Callable[[bytes], None] | None: ...
    def finished(self, result: StageResult) -> None: ...
