"""What a build reports: each stage's result, the build's, and the Reporter that hears of them.

The scheduler (execute.py) fills these in; the printing layer (reporter.py, cli.py) and
explain.py read them. Plain records: no I/O, nothing printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

if TYPE_CHECKING:
    from .plan import Decision


# What happened to a stage in a build (`result` in `build --json`).
Result = Literal["up_to_date", "completed", "completed_empty", "skipped_empty_upstream", "held",
                 "failed", "not_run"]
RESULTS: tuple[Result, ...] = get_args(Result)


@dataclass
class StageResult:
    stage: str
    planned: Decision
    result: Result | None = None  # None in a dry run
    rows: int | None = None
    batches_total: int | None = None
    batches_run: int = 0
    error: str | None = None
    duration_s: float | None = None
    log: str | None = None  # a failed stage's log (its code's output), when it has one

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
        return d


@dataclass(frozen=True)
class InternalFailure:
    """An exception nobody anticipated (a bug in dd-build) ended a stage, and the build."""

    stage: str
    error: str  # "TypeError: ..." on one line
    traceback: str
    log: str | None  # where the traceback was written (None: it could not be)


@dataclass
class BuildReport:
    workflow: str
    dry_run: bool
    stages: list[StageResult] = field(default_factory=list)
    internal: InternalFailure | None = None

    @property
    def ok(self) -> bool:
        return all(s.result not in ("failed", "not_run") for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "dry_run": self.dry_run, "ok": self.ok,
                "stages": [s.to_json() for s in self.stages]}


class Reporter(Protocol):
    def planned(self, decisions: list[Decision]) -> None: ...
    def started(self, decision: Decision) -> None: ...
    def progress(self, stage: str, done: int, total: int | None) -> None: ...
    def note(self, stage: str, text: str) -> None: ...
    def finished(self, result: StageResult) -> None: ...
