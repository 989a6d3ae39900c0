"""`dd-build touch STAGE...`: accept a stage's current spec, code and inputs as built,
without running it (Make's `-t`, Snakemake's `--touch`, `dvc commit`).

A touch rewrites the stage's record: the spec, code digests, imported modules, file inputs
and upstream outputs it holds become the ones of now, and each later step's trace key is
made again from them; batches and outputs stay as they are, so the stage's output digest —
what its dependants consumed — is unchanged and they stay up to date. The record says when
it was touched and what was accepted (`extra.touched_at`, `extra.touched`).

Refused (exit 2, before any record is written) for a stage that has nothing to accept as
built: never built, an unreadable record, a last run that did not finish (running,
interrupted, failed), skipped for an empty upstream, restored from the build cache by the
next build (the cache holds what it makes now), an output missing or modified, an
upstream whose output will not be the one the stage was built from (it runs, resumes, grows,
shrinks or is restored first, or already has another output: rebuilt, or a review set on it;
an upstream touched in the same command keeps its output), or a change that would make its
output other than what is on disk
(num_records, batch_size, sampling, seed, export copies or a run stage's outputs, a step
added or removed). The new record is checked by the planner before it is written: a touched
stage must be up to date."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from .errors import StateError
from .facts import made_facts
from .records import batches_digest, read_of, write_record
from .steps import BOUNDARY, RECORDED, step_key, uses

if TYPE_CHECKING:
    from .execute import Prepared
    from .model import Workflow
    from .plan import Decision
    from .reasons import Reason
    from .records import StageRecord

# What a touch accepts as built: a change of the stage's own spec, code or inputs.
# An upstream stage's output that changed is not (`_upstream_refusal`): the output on disk
# was made from the one it had.
_ACCEPTED = frozenset({"spec_changed", "code_changed", "input_changed"})
# Spec keys whose change makes the output other than the one on disk: never accepted.
_OUTPUT_KEYS = frozenset({"num_records", "batch_size", "sampling", "seed", "outputs"})


@dataclass(frozen=True)
class Touched:
    """One stage a touch accepted (or would accept, with -n): the reasons it would have rerun."""

    stage: str
    accepted: tuple[Reason, ...]
    touched_at: float | None  # None: already up to date (nothing to accept), or a dry run

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "touched": bool(self.accepted),
                "accepted": [r.to_json() for r in self.accepted],
                "touched_at": self.touched_at}


def touch(workflow: Workflow, names: list[str], dry_run: bool) -> list[Touched]:
    """Touch `names` in the order of the stage graph (a touched upstream leaves its
    dependants' inputs as they were built). The caller holds the lock unless `dry_run`."""
    from .execute import BuildConfig, prepare

    prep = prepare(workflow, BuildConfig(targets=tuple(names), dry_run=True))
    refusals = [f"  {n}: {why}" for n in prep.order if n in names
                for why in [_refusal(prep, n, names)] if why]
    if refusals:
        raise StateError("touch: refused, nothing was touched:\n" + "\n".join(refusals),
                         hint="build these stages instead (`dd-build STAGE`); a touch accepts "
                              "only changes of a built stage's own spec, code or input files, "
                              "never a change of an upstream stage's output")
    done = []
    for name in [n for n in prep.order if n in names]:
        d = _decision(prep, name)
        if d.action == "up_to_date":
            done.append(Touched(name, (), None))
            continue
        if dry_run:  # checked as a touch checks it, unless an upstream is touched first
            if not any(u in names for u in prep.upstreams[name]):
                _touched_record(prep, name, d)
            done.append(Touched(name, d.reasons, None))
            continue
        record = _touched_record(prep, name, d)
        write_record(workflow.stage_dir(name), record)
        _keep(workflow, record)
        prep = prepare(workflow, BuildConfig(targets=tuple(names), dry_run=True))
        done.append(Touched(name, d.reasons, record.extra["touched_at"]))
    return done


def _keep(workflow: Workflow, record: StageRecord) -> None:
    """The touched state in the build cache, as a build keeps what it built: a revert to it
    is then restored. A cache that cannot be written does not undo the touch."""
    from .cache import CacheDamaged
    from .cachestage import store

    try:
        store(workflow, record)
    except (OSError, CacheDamaged):
        pass


def _decision(prep: Prepared, name: str) -> Decision:
    return next(d for d in prep.decisions if d.stage == name)


def _refusal(prep: Prepared, name: str, names: list[str]) -> str | None:
    """Why `name` cannot be touched, or None."""
    facts, d = prep.facts[name], _decision(prep, name)
    record = facts.record
    if facts.read.problem is not None:
        return f"its record cannot be used ({facts.read.problem[1]})"
    if record is None:
        return "never built: there is no output to accept"
    if name in prep.options.live:
        return f"a dd-build (pid {prep.options.live[name]}) is running it now"
    if record.status in ("running", "interrupted", "failed"):
        how = "was killed" if record.status == "running" else record.status
        return f"its last run {how}: build it to finish it"
    if d.action == "skip_empty_upstream" or record.status == "skipped_empty_upstream":
        return "it was skipped (an upstream stage is empty): there is no output to accept"
    if d.restore is not None:  # what it makes now is known, and may not be what is on disk
        return (f"the build cache holds its output for its spec, code and inputs now (built "
                f"{d.restore.when}): build it to restore that (nothing runs)")
    for up in prep.upstreams[name]:
        why = _upstream_refusal(prep, up, record.stage_inputs.get(up), names)
        if why:
            return why
    for r in d.reasons:
        why = _refused_reason(r, prep, names)
        if why:
            return why
    return _steps_changed(facts.spec, record)


def _upstream_refusal(prep: Prepared, up: str, consumed: str | None, names: list[str]
                      ) -> str | None:
    """Why the output upstream `up` will have after this build (or after its own touch, when
    it is touched first) may not be `consumed`, the one the stage was built from, or None.
    A touch accepts the stage's own changes only: its output was made from `consumed`."""
    from .facts import output_view

    record = prep.facts[up].record
    if up in names:
        if _refusal(prep, up, names) is not None:
            return f"upstream stage '{up}' cannot be touched (see above): build it"
        assert record is not None
        now = output_view(record)  # a touch leaves its output as it is
    else:
        d = _decision(prep, up)
        if d.action == "restore":
            return (f"upstream stage '{up}' will be restored from the build cache first, "
                    "so its output changes: build it")
        if d.action not in ("up_to_date", "held") or record is None:
            return f"upstream stage '{up}' will run first: build it (or touch it too)"
        now = output_view(record)
    if consumed is None:
        return f"stage '{up}' is a new input: its output was not built from it; build it"
    if now.digest != consumed:
        what = "a reviewed override as its output, not the one" if now.overridden else \
            "a different output than the one"
        return f"upstream stage '{up}' has {what} this stage was built from: build it"
    return None


def _refused_reason(r: Reason, prep: Prepared, names: list[str]) -> str | None:
    if r.code == "upstream_will_run":
        return None  # an upstream touched first, in graph order (_upstream_refusal)
    if r.code in ("output_missing", "output_modified", "callback_output_missing"):
        return f"{r.message}: build it"
    if r.code == "spec_changed" and str(r.detail.get("key", "")).split(".")[0] in _OUTPUT_KEYS:
        return f"{r.brief()}: its output on disk is not what that asks for; build it"
    if r.code not in _ACCEPTED:
        return f"{r.message}: build it"
    return None


def _steps_changed(spec: dict[str, Any], record: StageRecord) -> str | None:
    """A later step added or removed: the output on disk is not that chain's."""
    if record.kind == "run":
        return None
    for step in BOUNDARY:
        if step not in RECORDED:
            continue
        had, has = RECORDED[step] in record.steps, uses(step, spec)
        if had != has:
            what = "added" if has else "removed"
            return f"{step} {what}: its output on disk is not what the stage makes now; build it"
    return None


def _touched_record(prep: Prepared, name: str, d: Decision) -> StageRecord:
    """The record with what the stage is given now, as built; checked up to date by the
    planner (StateError otherwise: nothing is written)."""
    from .execute import _touch_up
    from .plan import decide, upstream_view

    facts = prep.facts[name]
    record = _touch_up(facts.record, facts) if facts.record is not None else None
    assert record is not None
    known = {x.stage: x for x in prep.decisions}
    ups = {u: upstream_view(prep.facts[u], known[u]) if u in known else None
           for u in prep.upstreams[name]}
    stage_inputs = {u: v.digest for u, v in ups.items() if v is not None and v.digest}
    discovered = None if record.discovered is None else {
        k: dep._replace(state=facts.discovered[k]) for k, dep in record.discovered.items()
        if k in facts.discovered}
    now = time.time()
    extra = {**record.extra, "touched_at": now, "touched": [r.message for r in d.reasons]}
    if facts.kind == "datadesigner" and "datadesigner" in extra:
        extra["datadesigner"] = _config_now(prep, name, extra["datadesigner"])
    touched = replace(record, spec=facts.spec, spec_fingerprint=facts.fingerprint,
                      code=dict(facts.code), file_inputs=dict(facts.file_inputs),
                      stage_inputs=stage_inputs, discovered=discovered,
                      steps=_rekeyed(facts, record),
                      extra=extra)
    values = {f.name: getattr(facts, f.name) for f in fields(facts)}
    check = made_facts({**values, "read": read_of(touched, False), "damaged": {},
                        "outputs_now": {}, "stats_moved": False})
    after = decide(check, {u: v for u, v in ups.items() if v is not None}, prep.options)
    if after.action != "up_to_date":
        left = "; ".join(r.message for r in after.reasons) or after.action
        raise StateError(f"touch: stage '{name}' would still not be up to date ({left})",
                         hint="build it instead")
    return touched


def _rekeyed(facts: Any, record: StageRecord) -> dict[str, Any]:
    """Each later step's trace with the key its spec, code and input give now."""
    steps = dict(record.steps)
    if record.kind == "run" or record.output is None:
        return steps
    code = facts.code.get(facts.callback_file or "")
    digest = batches_digest(record.batches)
    for step in BOUNDARY:
        if step not in RECORDED or not uses(step, facts.spec):
            continue
        if step == "outputs":
            digest = record.output.digest
        trace = steps.get(RECORDED[step])
        if trace is None:
            continue
        steps[RECORDED[step]] = replace(trace, key=step_key(step, facts.spec,
                                                            code.digest if code else "", digest))
        digest = trace.digest
    return steps


def _config_now(prep: Prepared, name: str, kept: dict[str, Any]) -> dict[str, Any]:
    """A datadesigner stage's stored config, as it is now: the next change is explained
    from what was accepted (not from the config before the touch)."""
    from .ddconfig import load_config

    stage = prep.workflow.stages[name]
    config = load_config(prep.workflow.project_dir, stage.target, stage.params, name)
    return {**kept, "config": config}
