"""The rebuilder: pure. Given what was recorded and what is on disk now, decide per stage.

No I/O: the probe gathers facts (records, stats, digests), reasons.py compares them, and this
module assigns every reason to the step it reruns (steps.py) and decides, per stage, the first
step that must run, what is kept, and why. `--explain`, `status`, `--json` and the executor
all use that one decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from .facts import EMPTY_DIGEST, StageFacts, Upstream, output_view
from .growth import plan_growth
from .model import BATCHED_KINDS
from .reasons import (
    Reason,
    ReasonCode,
    batches,
    collect_reasons,
    diff_values,
    last_run_reason,
    stopped_in,
)
from .records import RESUMABLE_STATUSES
from .steps import (
    KEEP_OUTPUT,
    MAIN,
    StepName,
    earliest,
    first_later_step,
    position,
    step_name,
    step_of_key,
)
from .wording import counted

if TYPE_CHECKING:
    from .cache import CacheHit

__all__ = ["EMPTY_DIGEST", "RUNNING", "Action", "Decision", "Options", "Reason", "StageFacts", "Upstream",
           "batches", "collect_reasons", "decide", "diff_values", "output_view", "plan",
           "strict_refusals", "upstream_view"]

# What the plan says a stage does (`action` in `build --json`).
Action = Literal["up_to_date", "run", "resume", "grow", "shrink", "skip_empty_upstream", "held",
                 "restore"]
# Actions that keep some of the main step's batches (`Decision.keep`) and run the rest.
KEEPING: frozenset[Action] = frozenset({"resume", "grow", "shrink"})
# Actions that run the stage's code (all of it, or the batches not kept).
RUNNING: frozenset[Action] = KEEPING | {"run"}
ResumeMode = Literal["if-possible", "never", "always"]  # `--resume`
RESUME_MODES: tuple[ResumeMode, ...] = get_args(ResumeMode)
# Reasons that mean "this stage itself changed": strict resume refuses to run such a stage fresh.
_OWN_CHANGE: set[ReasonCode] = {"spec_changed", "code_changed", "output_missing",
                                 "output_modified", "record_unreadable", "format_changed"}
# Reasons of the main step that still let it keep the batches its record lists.
_KEEPS_BATCHES: set[ReasonCode] = {"incomplete", "failed_before", "output_missing",
                                    "output_modified", "upstream_will_run"}
# Reasons that only say a later step's trace is stale: another reason for the same or an
# earlier step already explains it.
_STALE: set[ReasonCode] = {"step_stale", "exports_stale"}
# An upstream not decided before its dependant (outside the plan's order): not known yet.
_PENDING = Upstream(None)
# Where a recorded file belongs: the step that wrote it (batch files are the main step's).
_FILE_STEPS: dict[str, StepName] = {"processed": "processors", "callback": "on_success",
                                     "exports": "outputs"}


@dataclass(frozen=True)
class Options:
    """How the planner decides: --resume, --force/--rerun-from, live builds, notes."""

    resume: ResumeMode = "if-possible"
    forced: Mapping[str, str] = field(default_factory=dict)  # stage -> why it is forced
    # Stages named by --force or --rerun-from: their review overrides are let go.
    released: frozenset[str] = frozenset()
    # Stage → pid of a live dd-build running it now (`lock.running_now`): its `running`
    # record is not a killed build's.
    live: Mapping[str, int] = field(default_factory=dict)
    # Stage → lines shown under its `no_record` reason (`artifacts.never_built_notes`).
    notes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Stage → an entry of the build cache for the key it may have now (cachestage.py, the
    # probe's part): the stage is restored from it when that key is its key.
    cached: Mapping[str, CacheHit] = field(default_factory=dict)
    # The project folder: a datadesigner stage's reason names what changed in its config.
    project_dir: Path | None = None


@dataclass(frozen=True)
class Decision:
    """What the plan says one stage does, and why."""

    stage: str
    action: Action
    reasons: tuple[Reason, ...] = ()
    keep: tuple[int, ...] = ()  # batch indices kept
    batches_total: int | None = None
    rows: int | None = None
    step: StepName | None = None  # the first step that runs; None when none does
    restore: CacheHit | None = None  # action `restore`: the cache entry it comes from

    @property
    def codes(self) -> list[ReasonCode]:
        return [r.code for r in self.reasons]


def plan(
    order: Sequence[str],
    facts: Mapping[str, StageFacts],
    upstreams: Mapping[str, Sequence[str]],
    options: Options,
) -> list[Decision]:
    """Decide every stage in `order`; a stage whose upstream will run sees it as pending."""
    known: dict[str, Upstream] = {}
    decisions = []
    for name in order:
        ups = {u: known[u] if u in known else _PENDING for u in upstreams[name]}
        decision = decide(facts[name], ups, options)
        decisions.append(decision)
        known[name] = upstream_view(facts[name], decision)
    return decisions


def upstream_view(facts: StageFacts, decision: Decision) -> Upstream:
    """How dependants see a stage before it is built: its recorded output when the decision
    keeps it (up to date, held, or only steps after the output run), else not known yet."""
    if decision.action == "skip_empty_upstream":
        return Upstream(EMPTY_DIGEST, 0)
    record = facts.record
    if decision.restore is not None:
        return Upstream(decision.restore.digest, decision.restore.rows)
    if record is None or record.output is None:
        return Upstream(None)
    if decision.action in ("up_to_date", "held"):
        return output_view(record)
    if decision.step in KEEP_OUTPUT and not _lost_review(facts):  # a lost review's place is
        return output_view(record)  # taken by the stage's own output, whatever step runs
    return Upstream(None)


def decide(facts: StageFacts, upstreams: Mapping[str, Upstream], options: Options) -> Decision:
    decision = _decide(facts, upstreams, options)
    hit = options.cached.get(facts.name) if options.cached else None
    return decision if hit is None else _restored(decision, hit, facts, upstreams, options)


def _restored(decision: Decision, hit: CacheHit, facts: StageFacts,
              upstreams: Mapping[str, Upstream], options: Options) -> Decision:
    """A stage that must run because its trace changed is restored from the cache when an
    entry of the trace it has now exists: nothing of it runs. Its reasons say what changed,
    as found: none of what the run would have done (growth's batches kept, batches of an
    unfinished run kept or run again)."""
    from .cachestage import key_now, wants_cache

    if not wants_cache(decision) or key_now(facts, upstreams) != hit.key:
        return decision
    reasons = tuple(_as_restored(r, facts) for r in _reasons(facts, upstreams, options))
    return Decision(facts.name, "restore", reasons, (), decision.batches_total, hit.rows, None,
                    hit)


def _as_restored(reason: Reason, facts: StageFacts) -> Reason:
    if reason.code not in ("incomplete", "failed_before") or reason.detail.get("how") == "running":
        return reason
    found = last_run_reason(facts, restored=True)
    return reason if found is None else replace(found, step=reason.step)


def _reasons(facts: StageFacts, upstreams: Mapping[str, Upstream], options: Options
             ) -> list[Reason]:
    """Why the stage's record does not match, each tagged with the step it reruns."""
    reasons = _tagged(facts, collect_reasons(facts, upstreams, options.live.get(facts.name)))
    if facts.kind == "datadesigner" and options.project_dir is not None and reasons:
        from .ddconfig import config_reasons

        reasons = config_reasons(facts, reasons, options.project_dir)
    notes = options.notes.get(facts.name)
    if notes:
        reasons = [replace(r, more=notes, detail={**r.detail, "notes": list(notes)})
                   if r.code == "no_record" else r for r in reasons]
    return reasons


def _decide(facts: StageFacts, upstreams: Mapping[str, Upstream], options: Options) -> Decision:
    reasons = _reasons(facts, upstreams, options)
    forced = options.forced.get(facts.name)
    if options.resume == "never" and forced is None:
        forced = "--resume never runs every stage fresh"
    if _holds_review(facts, reasons, options):
        return _held(facts, reasons, forced)
    empty = [n for n, u in upstreams.items() if u.digest is not None and u.rows == 0]
    if empty:
        return Decision(facts.name, "skip_empty_upstream", tuple(
            Reason("upstream_empty", f"upstream stage '{n}' has no rows", {"input": n})
            for n in empty))
    main = MAIN[facts.kind]
    if forced is not None:
        if _overridden(facts):
            forced += " (the review override is let go)"
        reasons.insert(0, Reason("forced", forced, step=main))
        return Decision(facts.name, "run", tuple(_discarding(facts, reasons, forced, options)),
                        batches_total=_total(facts, upstreams), step=main)
    record = facts.record
    if not reasons:
        assert record is not None
        return _up_to_date(facts.name, record.batches_total,
                           record.output.rows if record.output else None)
    step = earliest(facts.kind, [r.step for r in reasons if r.step])  # each is tagged
    if step != main:  # the main step's trace holds: every batch is kept
        assert record is not None
        keep = tuple(b.index for b in record.batches)
        return Decision(facts.name, "resume", tuple(reasons), keep, record.batches_total,
                        step=step)
    grown = plan_growth(facts, reasons, upstreams, _total(facts, upstreams))
    if grown is not None:  # only num_records or the seed's rows changed (growth.py)
        action, keep, reasons, total = grown
        if action == "run":
            because = "the stage's code reads what changed" if any(
                "reads" in r.detail for r in reasons) else "its batches have no keys"
            reasons = _discarding(facts, reasons, because, options)
            return Decision(facts.name, "run", tuple(reasons), (), total, step=main)
        return Decision(facts.name, action, tuple(reasons), keep,  # type: ignore[arg-type]
                        total, step=main)
    kept = _resumable_batches(facts, reasons)
    if kept is None:
        fresh = [r for r in reasons if r.step == main and r.code not in _KEEPS_BATCHES]
        if fresh:
            more = f" (and {counted(len(fresh) - 1, 'other change')})" if len(fresh) > 1 else ""
            reasons = _discarding(facts, reasons, fresh[0].brief() + more, options)
    return Decision(facts.name, "run" if kept is None else "resume", tuple(reasons), kept or (),
                    _total(facts, upstreams), step=main)


def _up_to_date(stage: str, batches_total: int | None, rows: int | None) -> Decision:
    """Decision(stage, "up_to_date", batches_total=..., rows=...), made without its frozen
    __init__ (every stage of a null build gets one; every field is set here)."""
    made = object.__new__(Decision)
    made.__dict__.update(stage=stage, action="up_to_date", reasons=(), keep=(),
                         batches_total=batches_total, rows=rows, step=None, restore=None)
    return made


def _discarding(facts: StageFacts, reasons: list[Reason], because: str, options: Options
                ) -> list[Reason]:
    """A stage that runs fresh drops the batches its unfinished last run left: the reason
    that names that run says so, and why, instead of counting them as if they were kept."""
    if facts.name in options.live:
        return reasons
    found = last_run_reason(facts, discarded=because)
    if found is None or "batches_discarded" not in found.detail:
        return reasons
    return [replace(found, step=r.step) if r.code == found.code else r for r in reasons]


def _tagged(facts: StageFacts, found: Iterable[Reason]) -> list[Reason]:
    """Each reason with the step it reruns; a stale-trace reason only when nothing else
    explains its step."""
    tagged = [(r, _step_of(r, facts)) for r in found]
    if not tagged:
        return []
    other = [position(facts.kind, step) for r, step in tagged if r.code not in _STALE]
    return [replace(r, step=step) for r, step in tagged if r.code not in _STALE
            or not any(p <= position(facts.kind, step) for p in other)]


def _step_of(reason: Reason, facts: StageFacts) -> StepName:
    main = MAIN[facts.kind]
    code, detail = reason.code, reason.detail
    if code == "spec_changed":
        return step_of_key(facts.kind, str(detail.get("key", "")))
    if code == "code_changed":
        only_callback = "imported_by" not in detail and detail.get("file") in facts.callback_code
        return "on_success" if only_callback else main
    if code in ("output_missing", "output_modified"):
        group = facts.file_groups.get(str(detail.get("file")), "")
        if group == "override":  # a lost review: the later steps' traces give the output back
            return main if facts.kind == "run" else first_later_step(facts.spec)
        return _FILE_STEPS.get(group, main)
    if code == "callback_output_missing":
        return "on_success"
    if code == "exports_stale":
        return "outputs"
    if code == "step_stale":
        return step_name(detail["step_name"]) or main
    if code in ("failed_before", "incomplete") and facts.record is not None:
        return stopped_in(facts.record) or main
    return main


def _holds_review(facts: StageFacts, reasons: Sequence[Reason], options: Options) -> bool:
    """An override stays the stage's selected output until the user lets it go (`override
    --release`, `--force STAGE`, `--rerun-from STAGE`), or its file is gone."""
    if not _overridden(facts):
        return False
    return not _lost_review(facts) and facts.name not in options.released


def _lost_review(facts: StageFacts) -> bool:
    """The override file the record lists is gone or changed."""
    return any(facts.file_groups.get(p) == "override" for p in facts.damaged)


def _overridden(facts: StageFacts) -> bool:
    record = facts.record
    return record is not None and record.output is not None and record.output.kind == "override"


def _held(facts: StageFacts, reasons: list[Reason], forced: str | None) -> Decision:
    """The review stays: the stage's own changes are reported, not run; only its export
    copies are written (from the override) when they are stale."""
    record = facts.record
    assert record is not None and record.output is not None
    if forced is not None:
        reasons.insert(0, Reason("forced", f"{forced} (the override is held)",
                                 step=MAIN[facts.kind]))
    exports = [r for r in reasons if r.step == "outputs"]
    keep = tuple(b.index for b in record.batches)
    step: StepName | None = "outputs" if exports else None
    if len(exports) == len(reasons):
        action: Action = "resume" if exports else "up_to_date"
        return Decision(facts.name, action, tuple(reasons), keep, record.batches_total,
                        record.output.rows, step)
    return Decision(facts.name, "held", tuple(reasons), keep, record.batches_total,
                    record.output.rows, step)


def _total(facts: StageFacts, upstreams: Mapping[str, Upstream]) -> int | None:
    if facts.kind not in BATCHED_KINDS:
        return None
    n = facts.spec.get("num_records")
    if n is None:
        seed = (facts.spec.get("seed") or "").removeprefix("stage:")
        n = upstreams[seed].rows if seed in upstreams else None
        if n is None and facts.record is not None and not _changed_upstream(facts, upstreams):
            n = facts.record.num_records
    if n is None:
        return None
    size = int(facts.spec["batch_size"])
    return -(-int(n) // size)


def _changed_upstream(facts: StageFacts, upstreams: Mapping[str, Upstream]) -> bool:
    record = facts.record
    assert record is not None
    return any(u.pending or record.stage_inputs.get(n) != u.digest for n, u in upstreams.items())




def _resumable_batches(facts: StageFacts, reasons: list[Reason]) -> tuple[int, ...] | None:
    """Batch indices the main step keeps, or None when it must run fresh."""
    record = facts.record
    main = MAIN[facts.kind]
    if facts.kind == "run" or record is None or not record.batches:
        return None
    if not all(r.code in _KEEPS_BATCHES for r in reasons if r.step == main):
        return None
    if all(r.code == "upstream_will_run" for r in reasons):
        return None  # nothing of its own to resume: it waits to see the upstream's output
    if record.status not in RESUMABLE_STATUSES + ("completed", "completed_empty"):
        return None  # completed_empty too: a filter that removed every row keeps the batches
    if facts.kind == "transform" and record.status == "failed" and stopped_in(record) is None:
        return None  # its one call failed: it is called again
    return tuple(b.index for b in record.batches if b.file not in facts.damaged)


def strict_refusals(
    decisions: Sequence[Decision], upstreams: Mapping[str, Sequence[str]]
) -> list[tuple[Decision, Reason]]:
    """Stages `--resume always` must refuse: they would run fresh because of their own change."""
    actions = {d.stage: d.action for d in decisions}
    refused = []
    for d in decisions:
        if d.action != "run" or "forced" in d.codes:
            continue
        all_reused = all(actions.get(u) == "up_to_date" for u in upstreams[d.stage])
        for reason in d.reasons:
            if _is_own_change(reason, actions, all_reused):
                refused.append((d, reason))
                break
    return refused


def _is_own_change(reason: Reason, actions: Mapping[str, Action], all_reused: bool) -> bool:
    if reason.code in _OWN_CHANGE:
        return True
    if reason.code == "no_record":
        return all_reused
    if reason.code == "input_changed":
        # A file input changed, or a stage input changed while that stage is reused as it is.
        source = reason.detail.get("input")
        return not isinstance(source, str) or source not in actions \
            or actions[source] == "up_to_date"
    return False
