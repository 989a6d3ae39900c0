"""The scheduler: plan, then run decisions in topological order with early cutoff.

Every write of state goes through here (and the StageRun it drives). Printing does not: the
caller passes a Reporter, and gets a BuildReport back (both in report.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifacts import never_built_notes, refresh_exports, remove_unlisted_overrides
from .boundary import run_boundary
from .capture import TAIL_LINES, append_log, clear_log, log_tail, stage_log
from .errors import (
    BuildError,
    Interrupted,
    ResumeRefused,
    StageFailed,
    StateError,
    UsageError,
    UserCodeFailed,
    describe,
    suggest,
)
from .facts import StageFacts, Upstream, output_view
from .fingerprint import FileState, batch_fingerprint
from .fsutil import atomic_write_json, remove_path
from .graph import build_graph, closure, descendants_in
from .lock import running_now, set_sweep_pending, sweep_pending
from .model import BATCHED_KINDS, Workflow
from .plan import (
    KEEPING,
    RUNNING,
    Decision,
    Options,
    ResumeMode,
    decide,
    plan,
    strict_refusals,
    upstream_view,
)
from .planindex import PlanIndex
from .probe import Kept, probe
from .records import (
    DoneStatus,
    FileIdentity,
    Output,
    StageRecord,
    file_identity,
    remove_leftovers,
    write_record,
)
from .report import BuildReport, InternalFailure, Interruption, Reporter, Result, StageResult
from .stagerun import StageRun
from .steps import MAIN

if TYPE_CHECKING:
    import queue

    from .ratelimit import Limiters
    from .usertrace import Where

SUMMARY_NAME = "workflow.json"  # what the last build did, for people and tools
# Told of each build's planning and report as it ends, under the lock (the CLI's null-build
# stamp, nullstamp.py; None: nobody listens). While set, every planning keeps the stats its
# decisions read (Prepared.kept).
after_build: Callable[[Prepared, BuildReport], None] | None = None


# At most this many stages run at once (`-j`, `jobs:`): more is clamped, with a note.
MAX_JOBS = 32
# fds 1 and 2 of dd-build while stages run at once: what stage code writes to them directly
# (C code, os.write, its child processes) cannot be told apart by stage (capture.py).
SHARED_OUTPUT = ".shared-output.txt"


@dataclass(frozen=True)
class BuildConfig:
    targets: tuple[str, ...] = ()
    resume: ResumeMode = "if-possible"
    force: tuple[str, ...] = ()
    rerun_from: tuple[str, ...] = ()
    dry_run: bool = False
    jobs: int | None = None  # stages at once; None: the Workflowfile's `jobs:`, else 1
    executor: str | None = None  # "local" or "dask" (--executor); None: the Workflowfile's
    scheduler: str | None = None  # --scheduler: a Dask scheduler's address (daskexec.py)


def jobs_for(config: BuildConfig, workflow: Workflow) -> tuple[int, str | None]:
    """How many stages run at once, and the note to print when the asked number is clamped
    (a Workflowfile travels between machines: too many is not an error)."""
    asked, source = (config.jobs, "-j") if config.jobs is not None else (workflow.jobs, "jobs:")
    if asked is None:
        return 1, None
    if asked > MAX_JOBS:
        return MAX_JOBS, (f"{source} {asked} is more than the cap of {MAX_JOBS}: running up to "
                          f"{MAX_JOBS} stages at once")
    return asked, None


@dataclass(frozen=True)
class Prepared:
    """A workflow's closure with its facts and plan: what `status`, dry runs and builds share."""

    workflow: Workflow
    order: list[str]
    upstreams: dict[str, tuple[str, ...]]
    facts: dict[str, StageFacts]
    options: Options
    decisions: list[Decision]
    # The planning index the records were read through (planindex.py); the build refreshes
    # and writes it.
    index: PlanIndex | None = field(default=None, compare=False, repr=False)
    # The stats the decisions read, kept for the null-build stamp (probe.Kept); None unless
    # someone listens (after_build).
    kept: Kept | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Scope:
    """The stages a build needs, in order, and the ones it forces: the graph's answer,
    computed once per build (before the lock, so usage errors come first)."""

    order: list[str]
    forced: dict[str, str]


def scope_of(workflow: Workflow, config: BuildConfig) -> Scope:
    """Reject unknown targets and --force/--rerun-from outside the closure."""
    graph = build_graph(workflow)
    order = closure(graph, config.targets)
    forced: dict[str, str] = {}
    for name in config.rerun_from:
        _check_in_closure(name, order, "--rerun-from", workflow.stages)
        for d in descendants_in(graph, name, order):
            forced.setdefault(d, f"--rerun-from {name}")
    for name in config.force:
        _check_in_closure(name, order, "--force", workflow.stages)
        forced[name] = f"--force {name}"
    return Scope(order, forced)


def prepare(workflow: Workflow, config: BuildConfig, scope: Scope | None = None) -> Prepared:
    scope = scope or scope_of(workflow, config)
    order = scope.order
    upstreams = {n: workflow.graph.upstreams[n] for n in order}
    with _no_cycle_collection():
        index = PlanIndex.load(workflow.artifacts_root)
        kept = Kept() if after_build is not None else None
        facts = probe(workflow, order, index, kept)
        live = running_now(workflow.artifacts_root, {n: f.record for n, f in facts.items()})
        notes = never_built_notes(workflow, [n for n, f in facts.items()
                                             if f.record is None and f.read.problem is None])
        options = Options(resume=config.resume, forced=scope.forced,
                          released=frozenset(config.force + config.rerun_from), live=live,
                          notes=notes, project_dir=workflow.project_dir)
        decisions = plan(order, facts, upstreams, options)
        # (a grow or shrink too: the cache may hold the trace it makes; never in a null build)
        if any(d.action == "run" or d.action in KEEPING for d in decisions):
            from .cachestage import cache_hits

            options, decisions = cache_hits(workflow, order, facts, upstreams, options,
                                            decisions)
    return Prepared(workflow, order, upstreams, facts, options, decisions, index, kept)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Probing and planning allocate objects by the hundred thousand and free none of them
    (no cycles to find): the cyclic garbage collector would walk them again and again, a
    fifth of a null build's time. Paused meanwhile; then what they made goes straight to the
    oldest generation (freeze, then unfreeze: two list splices), so the next young
    collection does not walk it all once more. Nothing is kept from being collected."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if was:
            gc.enable()


def _check_in_closure(name: str, order: list[str], flag: str, stages: Iterable[str] = ()
                      ) -> None:
    if name in order:
        return
    hint = f"`{name}` is not needed by these targets: add it as a target" if name in stages \
        else suggest(name, order) or suggest(name, list(stages)) \
        or "name a stage listed by `dd-build -n` for these targets"
    raise UsageError(f"{flag} {name}: no such stage among the stages this build needs", hint=hint)


def check_strict(prep: Prepared) -> None:
    refused = strict_refusals(prep.decisions, prep.upstreams)
    if not refused:
        return
    lines = [f"  {d.stage}: {reason.message}" for d, reason in refused]
    raise ResumeRefused(
        "--resume always: these stages would start fresh instead of resuming:\n" + "\n".join(lines),
        hint="build with --resume if-possible to run them, or undo the change",
    )


def _warm_up_now(prep: Prepared, wf: Workflow) -> bool:
    """A stage will run on the cluster and a run stage runs before it: the client connects
    while the run stage's command works (importing dask is CPU: beside the build's own Python
    work it would only share the GIL, and slow that work's I/O, so without a run stage to
    wait for, the first stage on the cluster connects when it needs to)."""
    before = False
    for d in prep.decisions:
        if d.action not in RUNNING:
            continue
        kind = wf.stages[d.stage].kind
        if kind in ("generate", "transform") and d.step in (None, MAIN[kind]):
            return before
        before = before or kind == "run"
    return False


def run_build(prep: Prepared, reporter: Reporter, keep_going: bool = False,
              report: BuildReport | None = None, jobs: int = 1, cluster: Any = None
              ) -> BuildReport:
    """Run the plan, up to `jobs` stages at once. Caller holds the lock. A `report` passed in
    is filled in place, so the caller still has every stage's result when an interrupt ends
    the build. `cluster`: a daskexec.Cluster the generate and transform stages run on (closed
    at the end), or None."""
    return _Builder(prep, reporter, keep_going, jobs, cluster).run(report)


class _Builder:
    def __init__(self, prep: Prepared, reporter: Reporter, keep_going: bool,
                 jobs: int = 1, cluster: Any = None) -> None:
        import threading

        self.jobs = jobs
        self.cluster = cluster
        self.cancel = threading.Event()  # every running stage's Job.cancel (-j)
        self._lock = threading.Lock()  # the dicts below, written by stage threads under -j
        self._position = {d.stage: i for i, d in enumerate(prep.decisions)}
        # -j: ready stages that wait for a free job (decided once), ready ones by plan
        # position, each stage's input stages not done yet, and the stages that need each.
        self._decided: dict[str, Decision] = {}
        self._ready: list[tuple[int, str]] = []
        self._missing: dict[str, int] = {}
        self._dependants: dict[str, list[str]] = {}
        self.keep_going = keep_going
        self.prep = prep
        self.wf = prep.workflow
        self.reporter = reporter
        self.known: dict[str, Upstream] = {}
        self.records: dict[str, StageRecord] = {}
        self.results: dict[str, StageResult] = {}
        self.stopped = False
        self.internal: InternalFailure | None = None
        self.interrupted: Interruption | None = None
        self.interrupted_too: list[Interruption] = []  # the other stages running then (-j)
        # Stages whose output the plan could not know (they run): their dependants are
        # decided again once they are built.
        self.waited = {d.stage for d in prep.decisions
                       if upstream_view(prep.facts[d.stage], d).pending}
        self.limiters = _limiters(self.wf)

    def run(self, report: BuildReport | None = None) -> BuildReport:
        if report is None:
            report = BuildReport(self.wf.name, dry_run=False)
        if self.cluster is not None and _warm_up_now(self.prep, self.wf):
            self.cluster.warm_up()  # dask imported, connected, while a run stage before runs
        self._sweep()
        try:
            if self.jobs == 1:
                for planned in self.prep.decisions:
                    result = self._one(planned)
                    self.results[planned.stage] = result
                    self.reporter.finished(result)
            else:
                self._run_at_once()
        finally:
            report.stages = [self.results.get(d.stage) or StageResult(d.stage, d, "not_run")
                             for d in self.prep.decisions]
            report.internal = self.internal
            report.interrupted = self.interrupted
            report.interrupted_too = sorted(
                (i for i in self.interrupted_too if i is not self.interrupted),
                key=lambda i: self._position[i.stage])
            if report.internal or report.interrupted or \
                    any(s.result == "failed" for s in report.stages):
                set_sweep_pending(self.wf.artifacts_root, True)  # what a failure may leave
            self._write_summary(report)
            self._write_index(report)
            if self.limiters is not None:  # waits still open (abandoned threads) end
                self.limiters.close()
            if self.cluster is not None:
                self.cluster.close()
            if after_build is not None:
                after_build(self.prep, report)
        return report

    def _run_at_once(self) -> None:
        """Up to `jobs` stages at once, each in a thread of its own once every input stage
        is done. What needs no work (not run, up to date) is settled here, in plan order;
        results are stored by stage (the report lists them in plan order) and reported as
        they come. A failure without -k starts no more stages and lets the running ones
        finish, as ninja does. SIGINT/SIGTERM (raised here: signals reach the main thread
        only) cancels the running stages and waits until each has recorded what it
        finished; a second one stops the waiting (what still runs is then left as a kill
        leaves it: the next build resumes it)."""
        import queue

        from .capture import shared_output

        plain = self.reporter
        self.reporter = _Serialized(plain)
        self._missing = {d.stage: len(self.prep.upstreams[d.stage]) for d in self.prep.decisions}
        self._dependants = {d.stage: [] for d in self.prep.decisions}
        for d in self.prep.decisions:
            for u in self.prep.upstreams[d.stage]:
                self._dependants[u].append(d.stage)
        self._ready = [(i, d.stage) for i, d in enumerate(self.prep.decisions)
                       if not self._missing[d.stage]]  # a heap by plan position
        running: dict[str, Any] = {}
        ended: queue.SimpleQueue[_Ended] = queue.SimpleQueue()
        try:
            with shared_output(self.wf.artifacts_root / SHARED_OUTPUT) as shared:
                try:
                    self._start(running, ended)
                    while running:
                        self._end(ended.get(), running)
                        self._start(running, ended)
                except BaseException:
                    self.stopped = True
                    self.cancel.set()
                    while running:
                        self._end(ended.get(), running, cancelled=True)
                    raise
            if shared.written:
                self.reporter.note(self.wf.name, "stage code wrote outside any stage's log "
                                   "while stages ran at once (from threads it started itself, "
                                   "or to file descriptors 1 and 2 directly: C code, child "
                                   f"processes): that output is in {_shown(shared.log)}")
        finally:
            self.reporter = plain

    def _start(self, running: dict[str, Any], ended: queue.SimpleQueue[_Ended]) -> None:
        """Settle or start, first in plan order first, each stage whose input stages are
        done (settling one may make others ready); those that need a job wait for one."""
        import heapq
        import threading

        waiting = []
        while self._ready:
            position, name = heapq.heappop(self._ready)
            planned = self.prep.decisions[position]
            settled, decision = self._settle(planned) if name not in self._decided \
                else (None, self._decided.pop(name))
            if settled is None and self.stopped:
                settled = StageResult(name, planned, "not_run",
                                      batches_total=planned.batches_total)
            if settled is not None:
                self._store(settled)
            elif len(running) >= self.jobs:
                self._decided[name] = decision  # decided once: its upstreams are done
                waiting.append((position, name))
            else:
                thread = threading.Thread(target=self._work, args=(planned, decision, ended),
                                          name=f"dd-build stage {name}", daemon=True)
                with signals_held():  # never a thread started that the build does not await
                    running[name] = thread
                    thread.start()
        for item in waiting:
            heapq.heappush(self._ready, item)

    def _work(self, planned: Decision, decision: Decision, ended: queue.SimpleQueue[_Ended]
              ) -> None:
        """A stage's thread: its result, or what it raised, goes to the main thread."""
        try:
            result = self._act(planned, decision)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            ended.put((planned.stage, None, exc))
        else:
            ended.put((planned.stage, result, None))

    def _end(self, item: _Ended, running: dict[str, Any], cancelled: bool = False) -> None:
        """A stage's thread ended: store its result, or raise what it raised (an interrupt
        in its code, a bug in dd-build) unless the build is already ending."""
        name, result, exc = item
        with signals_held():  # its result is stored once its thread is let go
            running.pop(name).join()
            if result is not None:
                self._store(result)
        if exc is not None and not cancelled:
            raise exc

    def _store(self, result: StageResult) -> None:
        """A stage's result (-j): reported, and its dependants one input closer to ready."""
        import heapq

        self.results[result.stage] = result
        self.reporter.finished(result)
        for name in self._dependants[result.stage]:
            self._missing[name] -= 1
            if not self._missing[name]:
                heapq.heappush(self._ready, (self._position[name], name))

    def _sweep(self) -> None:
        """Remove what a killed build (or a failed one) left where no stage that runs now
        would: temp files at the workflow root (of workflow.json, the index) and in stage
        folders, journals no running record names, override files the record does not list.
        Only after such a build (the lock file tells): a stage that runs is swept before it
        runs (`_sweep_stage`), and nothing a stage that does not run holds beyond its record's
        files is ever read."""
        root = self.wf.artifacts_root
        if not sweep_pending(root):
            return
        remove_leftovers(str(root), journals=False)
        for name in self.prep.order:
            self._sweep_stage(name)
        if len(self.prep.order) == len(self.wf.stages):  # else a later build sweeps the rest
            set_sweep_pending(root, False)

    def _sweep_stage(self, name: str) -> None:
        """A stage folder whose record is unreadable is left as found."""
        read = self.prep.facts[name].read
        if read.problem is not None:
            return
        record = read.record
        keep = record.journal if record is not None and record.status == "running" else None
        remove_leftovers(os.path.join(self.wf.artifacts_root, name), keep)
        if record is not None:
            remove_unlisted_overrides(self.wf, record)  # of a killed `dd-build override`

    def _one(self, planned: Decision) -> StageResult:
        settled, decision = self._settle(planned)
        return settled if settled is not None else self._act(planned, decision)

    def _settle(self, planned: Decision) -> tuple[StageResult | None, Decision]:
        """The stage's result when it needs no work (not run, up to date), and its decision
        now. Its upstream stages are done."""
        name = planned.stage
        ups = self.prep.upstreams[name]
        if self.stopped or any(self.results[u].result in ("failed", "not_run") for u in ups):
            return StageResult(name, planned, "not_run", batches_total=planned.batches_total), \
                planned
        facts = self.prep.facts[name]
        decision = planned  # the plan's decision, unless an upstream it waited for ran
        if any(u in self.waited for u in ups):
            decision = decide(facts, {u: self.known[u] for u in ups}, self.prep.options)
            decision = self._from_cache(facts, decision, ups)
        if decision.action == "up_to_date":
            return self._reuse(planned, facts), decision
        return None, decision

    def _from_cache(self, facts: StageFacts, decision: Decision, ups: tuple[str, ...]
                    ) -> Decision:
        """A stage decided again once an upstream ran: restored when the cache holds the
        trace it has now (its key was not known when the plan was made)."""
        from .cachestage import wants_cache

        if not wants_cache(decision):
            return decision
        from .cachestage import cache_hit_now

        return cache_hit_now(self.wf, facts, decision, {u: self.known[u] for u in ups},
                             self.prep.options)

    def _act(self, planned: Decision, decision: Decision) -> StageResult:
        facts = self.prep.facts[planned.stage]
        if decision.restore is not None:
            restored = self._restore(planned, decision, facts)
            if restored is not None:
                return restored
            with self._lock:  # its dependants were planned on the entry's output: they are
                self.waited.add(planned.stage)  # decided again once it has run
            decision = self._unrestored(decision, facts)
        if decision.action == "skip_empty_upstream":
            return self._skip(planned, facts)
        if decision.action == "held" or (_overridden(facts) and decision.step == "outputs"):
            return self._held(planned, decision, facts)  # the review stays
        return self._execute(planned, decision, facts)

    def _unrestored(self, decision: Decision, facts: StageFacts) -> Decision:
        """What a stage whose restore failed does instead. A restore that began replaced the
        stage's record and cleared its folder (batches, steps, a run stage's outputs): then
        nothing the plan would have kept is there, and it runs afresh."""
        from .records import read_record

        was, now = facts.record, read_record(self.wf.stage_dir(facts.name)).record
        if was is not None and now is not None and (now.run_id, now.status) == \
                (was.run_id, was.status):  # nothing of it was touched
            return decide(facts, {u: self.known[u] for u in self.prep.upstreams[facts.name]},
                          replace(self.prep.options, cached={}))
        return replace(decision, action="run", keep=(), rows=None, step=MAIN[facts.kind],
                       restore=None)

    def _restore(self, planned: Decision, decision: Decision, facts: StageFacts
                 ) -> StageResult | None:
        """Restore the stage from the cache entry the decision names; None (with a note)
        when the entry turns out damaged: the stage then runs."""
        from .cache import CacheDamaged
        from .cachestage import restore

        hit = decision.restore
        assert hit is not None
        started = time.monotonic()
        self.reporter.started(decision)
        self._sweep_stage(planned.stage)
        consumed = {u: self.known[u].digest or "" for u in self.prep.upstreams[planned.stage]}
        try:
            record = restore(self.wf, hit, facts, consumed)
        except (CacheDamaged, OSError) as exc:
            self.reporter.note(planned.stage, f"the cache entry built {hit.when} cannot be "
                               f"restored ({exc}): it is ignored, and the stage runs")
            return None
        self._done(record)
        rows = record.output.rows if record.output else None
        return StageResult(record.stage, planned, "restored", rows, record.batches_total, 0,
                           None, time.monotonic() - started)

    def _held(self, planned: Decision, decision: Decision, facts: StageFacts) -> StageResult:
        """An overridden stage keeps its review; its export copies are written from the
        override when they are stale. A copy that cannot be written fails the stage and
        records nothing, so the review stays in force for the next build."""
        from .exportformats import CannotExport

        record = facts.record
        assert record is not None
        started = time.monotonic()
        self.reporter.started(decision)
        if facts.stats_moved:
            record = _touch_up(record, facts)
        result: Result = "held" if decision.action == "held" else "completed"
        if decision.step != "outputs":
            if facts.stats_moved:
                write_record(self.wf.stage_dir(record.stage), record)
            self._done(record)
            rows = None if record.output is None else record.output.rows
            return StageResult(record.stage, planned, result, rows,
                               record.batches_total, 0, None, time.monotonic() - started)
        try:
            self._sweep_stage(record.stage)  # temp files of its copies, unlisted overrides
            record = refresh_exports(self.wf, record, facts.spec)
        except (CannotExport, StateError, OSError) as exc:
            message = exc.message if isinstance(exc, BuildError) else f"cannot write it: {exc}"
            failure = StageFailed(message, stage=record.stage, key="outputs",
                                  hint=getattr(exc, "hint", None))
            self.stopped = not self.keep_going
            return StageResult(record.stage, planned, "failed", None, record.batches_total, 0,
                               failure.render(), time.monotonic() - started)
        self._done(record)
        rows = record.output.rows if record.output else None
        return StageResult(record.stage, planned, result, rows, record.batches_total, 0,
                           None, time.monotonic() - started)

    def _reuse(self, planned: Decision, facts: StageFacts) -> StageResult:
        record = facts.record
        assert record is not None
        if facts.stats_moved:
            self._sweep_stage(record.stage)
            record = _touch_up(record, facts)
            write_record(self.wf.stage_dir(record.stage), record)
        self._done(record)
        rows = record.output.rows if record.output else None
        return StageResult(record.stage, planned, "up_to_date", rows, record.batches_total, 0)

    def _skip(self, planned: Decision, facts: StageFacts) -> StageResult:
        """Record `skipped_empty_upstream` (once: an equal record is kept as it is), leaving no
        output of an earlier run that would claim to be current."""
        name = planned.stage
        consumed = {u: self.known[u].digest or "" for u in self.prep.upstreams[name]}
        record = facts.record
        if record is None or record.status != "skipped_empty_upstream" or \
                record.spec_fingerprint != facts.fingerprint or record.stage_inputs != consumed:
            stage = self.wf.stages[name]
            self._sweep_stage(name)
            run = StageRun(self.wf, stage, facts, consumed, ())
            run.begin(None, None)  # clears its batches and boundary steps' files
            for out in stage.outputs:  # run outputs, export copies: none may look current
                remove_path(self.wf.project_dir / out)
            record = run.finish("skipped_empty_upstream")
        self._done(record)
        return StageResult(name, planned, "skipped_empty_upstream", 0)

    def _done(self, record: StageRecord) -> None:
        with self._lock:
            self.records[record.stage] = record
            self.known[record.stage] = output_view(record)

    def _execute(self, planned: Decision, decision: Decision, facts: StageFacts) -> StageResult:
        from .kinds.loader import track_code

        stage = self.wf.stages[decision.stage]
        self._sweep_stage(stage.name)
        consumed = {u: self.known[u].digest or "" for u in self.prep.upstreams[stage.name]}
        keep = decision.keep if decision.action in KEEPING else ()
        code_deps = track_code(self.wf, facts, bool(keep)) if stage.kind != "run" else None
        run = StageRun(self.wf, stage, facts, consumed, keep, code_deps)
        run.check_keys = decision.action in ("grow", "shrink") or any(
            "growth" in r.detail for r in decision.reasons)  # growth.py: keys compared
        try:
            return self._run_stage(planned, decision, facts, run)
        finally:  # an attempt that wrote no record (its code failed to load) closes it here
            if code_deps is not None:
                code_deps.close()  # (sys.path goes back once no stage's code runs)

    def _run_stage(self, planned: Decision, decision: Decision, facts: StageFacts,
                   run: StageRun) -> StageResult:
        from .kinds import Job, kind_for

        stage = run.stage
        code_deps = run.code_deps
        main = decision.step in (None, MAIN[stage.kind])
        self.reporter.started(decision)
        with self._lock:  # its input stages' records (they are done)
            upstream = {u: self.records[u] for u in self.prep.upstreams[stage.name]}
        job = Job(self.wf, stage, run, upstream, batch_fingerprint(facts.spec),
                  lambda done, total, **figures: self.reporter.progress(
                      stage.name, done, total, **figures),
                  lambda text: self.reporter.note(stage.name, text),
                  lambda command: self.reporter.command_started(stage.name, command),
                  cancel=self.cancel)
        if self.limiters is not None:
            job.limiter = self.limiters.for_stage(stage, job.cancel)
        job.cluster = self.cluster
        started = time.monotonic()
        steps: dict[str, Output] = {}
        try:
            clear_log(stage_log(run.dir))  # this attempt's code output goes to a new log
            if main:
                output = kind_for(stage.kind).execute(job)
            else:  # the main step's trace holds: its batches stay as recorded
                assert facts.record is not None
                run.keep_main_step(facts.record)
                output = run.batches_output()
            if stage.kind != "run":
                if code_deps is not None:
                    code_deps.enter_callback()
                start = MAIN[stage.kind] if decision.step is None else decision.step
                output, steps = run_boundary(job, output, run.previous_steps, start)
            status: DoneStatus = "completed_empty" if output.rows == 0 else "completed"
        except StageFailed as exc:
            exc.stage = exc.stage or stage.name  # raised where the stage is not known
            at = _point_at_user_code(exc, self.wf.project_dir)
            return self._failed(run, planned, exc.render(), started, exc.__cause__, at,
                                user=isinstance(exc, UserCodeFailed))
        except StateError as exc:  # e.g. an upstream's file turned out unreadable
            failure = StageFailed(exc.message, stage=stage.name, key=exc.key, hint=exc.hint)
            return self._failed(run, planned, failure.render(), started)
        except OSError as exc:  # a full disk, a read-only folder: the batches written stay
            failure = StageFailed(f"cannot write its output: {exc}", stage=stage.name,
                                  hint="fix the cause (disk space, permissions) and build "
                                       "again: the finished batches are kept")
            return self._failed(run, planned, failure.render(), started)
        except (KeyboardInterrupt, Interrupted):
            self._interrupted(Interruption(  # batches are worth counting in generate stages
                stage.name, len(run.batches),
                run.record.batches_total if stage.kind in BATCHED_KINDS else None))
            if not run.untouched:
                with signals_held():  # a second Ctrl-C must not leave the record `running`
                    run.finish("interrupted", error="interrupted")
            self.results[stage.name] = StageResult(stage.name, planned, "not_run",
                                                   batches_run=run.batches_run)
            raise
        except Exception as exc:  # a bug in dd-build: recorded, reported, never hidden (exit 70)
            return self._internal(run, planned, exc, started)
        record = run.finish(status, output, steps=steps)
        self._done(record)
        self._keep(record)
        return StageResult(stage.name, planned, status, output.rows, record.batches_total,
                           run.batches_run, None, time.monotonic() - started,
                           warnings=run.warnings)

    def _keep(self, record: StageRecord) -> None:
        """Keep what the stage built in the cache; a cache that cannot be written is said,
        never a failure of the build."""
        from .cache import CacheDamaged
        from .cachestage import store

        try:
            store(self.wf, record)
        except (OSError, CacheDamaged) as exc:
            self.reporter.note(record.stage, f"not kept in the build cache: {exc}")

    def _interrupted(self, at: Interruption) -> None:
        """The build says where it was interrupted: of several stages running, the first
        in plan order."""
        with self._lock:
            self.interrupted_too.append(at)
            if self.interrupted is None or \
                    self._position[at.stage] < self._position[self.interrupted.stage]:
                self.interrupted = at

    def _failed(self, run: StageRun, planned: Decision, message: str, started: float,
                cause: BaseException | None = None, at: Where | None = None,
                user: bool = False) -> StageResult:
        """Record the failure (the batches written so far stay listed) and stop, unless -k.

        The message ends with the last lines the stage's code printed; the traceback of the
        exception (`cause`; when the user's code raised it, from the user's frames on) goes to
        the log. A record that cannot be written (a full disk) must not hide the first error."""
        import traceback  # here: a null build fails nothing

        from .usertrace import user_traceback

        log = stage_log(run.dir)
        message += _output_note(log, log_tail(log))
        trace = None
        if cause is not None:
            trace = user_traceback(cause) if user else "".join(traceback.format_exception(cause))
            try:
                append_log(log, trace)
                message += f"\n  the traceback is in {_shown(log)}"
            except OSError:  # the message above still says what failed
                pass
        result = self._record_failure(run, planned, message, started, log)
        result.at, result.traceback = at, trace
        return result

    def _internal(self, run: StageRun, planned: Decision, exc: Exception, started: float
                  ) -> StageResult:
        """Record the stage `failed`, put the traceback in its log, and end the build."""
        import traceback

        error = describe(exc)
        trace = "".join(traceback.format_exception(exc))
        log = stage_log(run.dir)
        try:
            append_log(log, f"dd-build internal error while running stage "
                            f"'{planned.stage}':\n{trace}")
            where: str | None = _shown(log)
        except OSError:
            where = None
        self.internal = InternalFailure(planned.stage, error, trace, where)
        message = f"dd-build internal error: {error}"
        if where:
            message += f"\n  the traceback is in {where}"
        result = self._record_failure(run, planned, message, started, log)
        self.stopped = True  # even with -k: what it left may not be what the code believes
        return result

    def _record_failure(self, run: StageRun, planned: Decision, message: str, started: float,
                        log: Path) -> StageResult:
        try:
            if not run.untouched:
                run.finish("failed", error=message)
        except OSError as exc:
            message += f"\n(its failed record could not be written either: {exc})"
        self.stopped = not self.keep_going
        return StageResult(planned.stage, planned, "failed", None, run.record.batches_total,
                           run.batches_run, message, time.monotonic() - started,
                           _shown(log) if log_tail(log, 1) else None, warnings=run.warnings)

    def _write_summary(self, report: BuildReport) -> None:
        """workflow.json: what the last build did. Rewritten only when that differs from what
        it holds (`finished_at` aside): a null build after a null build writes nothing."""
        import json

        path = self.wf.artifacts_root / SUMMARY_NAME
        done = report.to_json()
        text = json.dumps(done, ensure_ascii=False)  # kept whole in the index: no digest made
        index = self.prep.index
        if index is not None and index.summary_is(_identity(path), text):
            return
        if not self.wf.artifacts_root.is_dir():
            return
        try:
            atomic_write_json(path, {"finished_at": time.time(), **done})
        except OSError as exc:  # a summary for people and tools; the stage records are the truth
            self.reporter.note(self.wf.name, f"cannot write workflow.json: {exc}")
            return
        if index is not None:
            index.summary_written(_identity(path), text)

    def _write_index(self, report: BuildReport) -> None:
        """Refresh the index entries of the stages whose record this build may have written
        (every stage but one found up to date with its stats as recorded), then write it
        if an entry changed."""
        index = self.prep.index
        if index is None:
            return
        for result in report.stages:
            if result.result != "up_to_date" or self.prep.facts[result.stage].stats_moved:
                index.refresh(result.stage, self.wf.stage_dir(result.stage))
        index.save()


def _limiters(workflow: Workflow) -> Limiters | None:
    """The build's shared rate limits; None (and nothing imported) when there are none."""
    if not workflow.rate_limits:
        return None
    from .ratelimit import Limiters

    return Limiters.of(workflow)


def _identity(path: Path) -> FileIdentity | None:
    try:
        return file_identity(os.stat(path))
    except OSError:
        return None


def _point_at_user_code(exc: StageFailed, project: Path) -> Where | None:
    """Where the user's code raised, when it did: said on a line of the failure's own (after
    its message, before its hint)."""
    from .usertrace import where

    if not isinstance(exc, UserCodeFailed) or exc.__cause__ is None:
        return None
    found = where(exc.__cause__, project)
    if found is not None:
        exc.message += f"\n  {found}"
    return found


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait while the block runs; the first one that came is sent
    again after it. Python-level handlers, not a signal mask: a mask is per thread, and a
    pyarrow thread would take the signal and have it raised here all the same."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only (a build of the Python API in a thread)
        return
    came: list[int] = []
    kinds = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in kinds}
    try:
        yield
    finally:
        for s, handler in before.items():  # None: a handler set outside Python
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if came:
            signal.raise_signal(came[0])


def _shown(path: Path) -> str:
    return os.path.relpath(path)


def _output_note(log: Path, tail: list[str]) -> str:
    if not tail:
        return ""
    lines = "\n".join(f"    | {line}" for line in tail)
    what = f"the last {len(tail)} lines of its output" if len(tail) >= TAIL_LINES else "its output"
    return f"\n  {what} ({_shown(log)}):\n{lines}"


def _overridden(facts: StageFacts) -> bool:
    record = facts.record
    return record is not None and record.output is not None and record.output.kind == "override"


def _touch_up(record: StageRecord, facts: StageFacts) -> StageRecord:
    """The same record with stats as they are now, for the files whose content is as
    recorded: a file whose content changed keeps its recorded state, so a held stage (whose
    changes wait) never takes a change in as built."""
    now: Mapping[str, Any] = facts.outputs_now
    batches = tuple(b._replace(size=now[b.file].size, mtime_ns=now[b.file].mtime_ns)
                    if b.file in now else b for b in record.batches)
    output = record.output
    if output is not None and output.kind != "batches":
        output = replace(output, files=tuple(now.get(f.path, f) for f in output.files))
    steps = {k: replace(v, files=tuple(now.get(f.path, f) for f in v.files))
             for k, v in record.steps.items()}
    discovered = record.discovered and {
        rel: dep._replace(state=_same(dep.state, facts.discovered.get(rel)))
        for rel, dep in record.discovered.items()}
    code = {k: _same(v, facts.code.get(k)) for k, v in record.code.items()}
    inputs = {k: _same(v, facts.file_inputs.get(k)) for k, v in record.file_inputs.items()}
    return replace(record, code=code, file_inputs=inputs, batches=batches, output=output,
                   steps=steps, discovered=discovered)


def _same(recorded: FileState, now: FileState | None) -> FileState:
    """`now` when it has the recorded content (only its stats moved), else as recorded."""
    return now if now is not None and now.digest == recorded.digest else recorded


_Ended = tuple[str, StageResult | None, BaseException | None]  # a stage thread's end (-j)


class _Serialized:
    """The Reporter, called by one stage thread at a time (-j), its echo of a command's
    output too."""

    def __init__(self, reporter: Reporter) -> None:
        import threading

        self._reporter = reporter
        self._lock = threading.RLock()

    def planned(self, decisions: list[Decision]) -> None:
        with self._lock:
            self._reporter.planned(decisions)

    def started(self, decision: Decision) -> None:
        with self._lock:
            self._reporter.started(decision)

    def progress(self, stage: str, done: int, total: int | None, **extra: Any) -> None:
        with self._lock:
            self._reporter.progress(stage, done, total, **extra)

    def note(self, stage: str, text: str) -> None:
        with self._lock:
            self._reporter.note(stage, text)

    def command_started(self, stage: str, command: str) -> Callable[[bytes], None] | None:
        with self._lock:
            echo = self._reporter.command_started(stage, command)
        if echo is None:
            return None

        def echoed(data: bytes) -> None:
            with self._lock:
                echo(data)

        return echoed

    def finished(self, result: StageResult) -> None:
        with self._lock:
            self._reporter.finished(result)
