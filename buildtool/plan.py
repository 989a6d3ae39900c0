"""The rebuilder: pure. Given what was recorded and what is on disk now, decide per stage.

No I/O: the probe gathers facts (records, stats, digests); this module only compares them and
returns every reason for every decision, as data. `--explain`, `status` and `--json` render it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .external import MISSING, is_external_key
from .fingerprint import POST_KEYS, FileState, digest_strings, exports_key
from .jsonvalues import same_value, type_change
from .records import RESUMABLE_STATUSES, Discovered, RecordRead, StageRecord

RESUME_MODES = ("if-possible", "never", "always")
# Reasons that mean "this stage itself changed": strict resume refuses to run such a stage fresh.
_OWN_CHANGE = {"spec_changed", "code_changed", "output_missing", "output_modified",
               "record_unreadable", "format_changed"}
# Reasons that do not stop a stage's kept batches from being reused.
_RESUMABLE_REASONS = {"incomplete", "failed_before", "output_missing", "output_modified",
                      "upstream_will_run", "callback_output_missing", "exports_stale"}
# What a stage whose upstream is empty consumes in place of an output digest.
EMPTY_DIGEST = digest_strings(["(empty)"])


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.detail}


@dataclass(frozen=True)
class StageFacts:
    """What the probe saw for one stage. Data only."""

    name: str
    kind: str
    spec: dict[str, Any]
    fingerprint: str
    code: dict[str, FileState]
    file_inputs: dict[str, FileState]
    read: RecordRead
    discovered: dict[str, FileState] = field(default_factory=dict)  # recorded imports found now
    damaged: dict[str, str] = field(default_factory=dict)  # recorded file -> missing | modified
    outputs_now: dict[str, FileState] = field(default_factory=dict)  # same content, new stats
    file_groups: dict[str, str] = field(default_factory=dict)  # recorded file -> output/step kind
    callback_code: frozenset[str] = frozenset()  # code files only the on_success callback uses
    stats_moved: bool = False  # content is the same but stats moved: the record may be touched up

    @property
    def record(self) -> StageRecord | None:
        return self.read.record


@dataclass(frozen=True)
class Upstream:
    """An upstream stage as its dependants see it: output digest and rows, or not known yet."""

    digest: str | None
    rows: int | None = None
    overridden: bool = False  # its output is a reviewed file set by `dd-build override`

    @property
    def pending(self) -> bool:
        return self.digest is None

    @property
    def empty(self) -> bool:
        return self.rows == 0


@dataclass(frozen=True)
class Options:
    resume: str = "if-possible"
    forced: Mapping[str, str] = field(default_factory=dict)  # stage -> why it is forced


@dataclass(frozen=True)
class Decision:
    stage: str
    action: str  # up_to_date | run | resume | not_run
    reasons: tuple[Reason, ...] = ()
    keep: tuple[int, ...] = ()  # batch indices a resume keeps
    batches_total: int | None = None
    rows: int | None = None

    @property
    def codes(self) -> list[str]:
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
        ups = {u: known.get(u, Upstream(None)) for u in upstreams[name]}
        decision = decide(facts[name], ups, options)
        decisions.append(decision)
        known[name] = upstream_view(facts[name], decision)
    return decisions


def upstream_view(facts: StageFacts, decision: Decision) -> Upstream:
    if decision.action == "skip_empty_upstream":
        return Upstream(EMPTY_DIGEST, 0)
    record = facts.record
    if decision.action != "up_to_date" or record is None or record.output is None:
        return Upstream(None)
    return output_view(record)


def output_view(record: StageRecord) -> Upstream:
    """How dependants see a stage whose record is final."""
    if record.status == "skipped_empty_upstream" or record.output is None:
        return Upstream(EMPTY_DIGEST, 0)
    out = record.output
    return Upstream(out.digest, out.rows, overridden=out.kind == "override")


def decide(facts: StageFacts, upstreams: Mapping[str, Upstream], options: Options) -> Decision:
    empty = [n for n, u in upstreams.items() if not u.pending and u.empty]
    if empty:
        return Decision(facts.name, "skip_empty_upstream", tuple(
            Reason("upstream_empty", f"upstream stage '{n}' has no rows", {"input": n})
            for n in empty))
    reasons = list(collect_reasons(facts, upstreams))
    forced = options.forced.get(facts.name)
    if options.resume == "never" and forced is None:
        forced = "--resume never runs every stage fresh"
    if forced is not None:
        reasons.insert(0, Reason("forced", forced))
        return Decision(facts.name, "run", tuple(reasons), batches_total=_total(facts, upstreams))
    if not reasons:
        record = facts.record
        assert record is not None
        rows = record.output.rows if record.output else None
        return Decision(facts.name, "up_to_date", (), batches_total=record.batches_total,
                        rows=rows)
    if exports_only(facts, reasons):  # the override stays; only its export copies are written
        record = facts.record
        assert record is not None
        keep = tuple(b.index for b in record.batches)
        return Decision(facts.name, "resume", tuple(reasons), keep, record.batches_total)
    keep = _resumable_batches(facts, reasons)
    action = "resume" if keep is not None else "run"
    return Decision(facts.name, action, tuple(reasons), keep or (), _total(facts, upstreams))


def _total(facts: StageFacts, upstreams: Mapping[str, Upstream]) -> int | None:
    if facts.kind != "generate":
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
    """Batch indices to keep, or None when the stage must run fresh."""
    record = facts.record
    if facts.kind == "run" or record is None or not record.batches:
        return None
    if not all(r.code in _RESUMABLE_REASONS or _boundary_only(r, facts) for r in reasons):
        return None
    if all(r.code == "upstream_will_run" for r in reasons):
        return None  # nothing of its own to resume: it waits to see the upstream's output
    if record.status not in RESUMABLE_STATUSES + ("completed", "completed_empty"):
        return None  # completed_empty too: a filter that removed every row keeps the batches
    if facts.kind == "transform" and record.status == "failed":
        return None  # its one call is the whole stage: after a failure it is called again
    return tuple(b.index for b in record.batches if b.file not in facts.damaged)


def exports_only(facts: StageFacts, reasons: Sequence[Reason]) -> bool:
    """A stage whose selected output is a reviewed override, and whose only change is to its
    export copies (stale, missing, modified, or other paths declared): the executor writes them
    from the override, which stays in force."""
    record = facts.record
    if record is None or record.output is None or record.output.kind != "override":
        return False
    return bool(reasons) and all(_export_reason(r, facts) for r in reasons)


def _export_reason(reason: Reason, facts: StageFacts) -> bool:
    if reason.code == "exports_stale":
        return True
    if reason.code in ("output_missing", "output_modified"):
        return facts.file_groups.get(reason.detail.get("file", "")) == "exports"
    return reason.code == "spec_changed" and reason.detail.get("key") == "outputs"


def _boundary_only(reason: Reason, facts: StageFacts) -> bool:
    """A change that reruns the boundary steps but leaves the batches as they are."""
    if reason.code == "spec_changed":
        return str(reason.detail.get("key", "")).split(".")[0] in POST_KEYS
    return reason.code == "code_changed" and "imported_by" not in reason.detail and \
        reason.detail.get("file") in facts.callback_code


def collect_reasons(facts: StageFacts, upstreams: Mapping[str, Upstream]) -> Iterator[Reason]:
    if facts.read.problem is not None:
        code, message = facts.read.problem
        yield Reason(code, message)
        return
    record = facts.record
    if record is None:
        yield Reason("no_record", "never built: no record")
        return
    yield from _spec_reasons(record, facts)
    yield from _code_reasons(record.code, facts.code)
    yield from _import_reasons(record, facts)
    yield from _file_reasons("input_changed", "input", "input", record.file_inputs, facts.file_inputs)
    yield from _upstream_reasons(record, upstreams)
    yield from _status_reasons(facts, record)


def _spec_reasons(record: StageRecord, facts: StageFacts) -> Iterator[Reason]:
    found = False
    for key, before, after in diff_values(record.spec, facts.spec):
        found = True
        old, new = (None if v is _MISSING else v for v in (before, after))
        yield Reason("spec_changed",
                     f"{key} changed: {_show(before)} → {_show(after)}{_type_note(before, after)}",
                     {"key": key, "old": old, "new": new})
    if not found and record.spec_fingerprint != facts.fingerprint:
        # A backstop: the fingerprint hashes the same canonical spec the keys are compared on,
        # so this needs a record written with another canonical form (or edited by hand).
        yield Reason("spec_changed", "the spec fingerprint changed although no spec key differs",
                     {"key": "spec_fingerprint", "old": record.spec_fingerprint,
                      "new": facts.fingerprint})


_MISSING: Any = object()


def diff_values(old: Any, new: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs as a JSON value (so 1, 1.0 and true
    all differ); params are compared key by key. A key on one side only has `_MISSING` on the
    other."""
    if isinstance(old, dict) and isinstance(new, dict) and (prefix in ("", "params") or
                                                            prefix.startswith("params.")):
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{prefix}.{key}" if prefix else str(key)
            a, b = old.get(key, _MISSING), new.get(key, _MISSING)
            if a is _MISSING or b is _MISSING or not same_value(a, b):
                yield from diff_values(a, b, sub)
        return
    yield prefix, old, new


def _show(value: Any) -> str:
    """A value as the Workflowfile and `--json` spell it: `false`, `null`, `"x"`, `1.0`."""
    if value is _MISSING:
        return "(unset)"
    return json.dumps(value, ensure_ascii=False, default=str)


def _type_note(old: Any, new: Any) -> str:
    """` (int → float)` when the JSON types differ, also deep inside a list or mapping."""
    if old is _MISSING or new is _MISSING:
        return ""
    change = type_change(old, new)
    if change is None:
        return ""
    where, before, after = change
    return f" ({before} → {after})" if not where else f" (at {where.lstrip('.')}: {before} → {after})"


def _file_reasons(code: str, what: str, detail_key: str, old: Mapping[str, FileState],
                  new: Mapping[str, FileState]) -> Iterator[Reason]:
    for path in sorted(set(old) | set(new)):
        if path not in new:
            yield Reason(code, f"{what} file {path} is no longer used", {detail_key: path})
        elif path not in old:
            yield Reason(code, f"{what} file {path} is new", {detail_key: path})
        elif old[path].digest != new[path].digest:
            yield Reason(code, f"{what} file {path} changed", {detail_key: path})


def _code_reasons(old: Mapping[str, FileState], new: Mapping[str, FileState]
                  ) -> Iterator[Reason]:
    """Declared code files, then code outside the project (`dist:` and `module:` keys)."""
    outside = {k for k in set(old) | set(new) if is_external_key(k)}
    yield from _file_reasons("code_changed", "code", "file",
                             {k: v for k, v in old.items() if k not in outside},
                             {k: v for k, v in new.items() if k not in outside})
    for key in sorted(outside):
        before, after = old.get(key), new.get(key)
        if before is None or after is None or before.digest != after.digest:
            yield _outside_reason(key, before and before.digest, after and after.digest)


def _outside_reason(key: str, old: str | None, new: str | None) -> Reason:
    kind, _, name = key.partition(":")
    if kind == "dist":
        detail: dict[str, Any] = {"dist": name, "old": old, "new": new}
        if new is None:
            return Reason("code_changed", f"code: installed {name} {old} is no longer used", detail)
        if old is None:
            return Reason("code_changed", f"code: installed {name} {new} is new", detail)
        return Reason("code_changed", f"code: installed {name} changed: {old} → {new}", detail)
    detail = {"module": name}
    if new == MISSING:
        return Reason("code_changed", f"code: module {name} cannot be found (outside the "
                      "project, on no sys.path entry)", detail)
    where = "outside the project, not installed"
    if new is None:
        return Reason("code_changed", f"code: module {name} ({where}) is no longer used", detail)
    if old is None:
        return Reason("code_changed", f"code: module {name} ({where}) is new", detail)
    if old == MISSING:
        return Reason("code_changed", f"code: module {name} ({where}) is found now", detail)
    return Reason("code_changed", f"code: module {name} changed ({where})", detail)


def _import_reasons(record: StageRecord, facts: StageFacts) -> Iterator[Reason]:
    """The project modules its code imported last time, as they are now."""
    if record.discovered is None:
        if facts.kind != "run":
            yield Reason("format_changed", "stage.json does not list the modules its code "
                         "imports (written by an older dd-build)")
        return
    for path, dep in sorted(record.discovered.items()):
        if path in facts.code and path not in facts.callback_code:
            continue  # a declared code file now: its own reason says what changed
        how = f"imported by {dep.by}" if dep.by else "loaded with the stage's code"
        now = facts.discovered.get(path)
        if is_external_key(path):
            reason = _outside_import_reason(path, dep, now, how)
            if reason is not None:
                yield reason
            continue
        detail = {"file": path, "imported_by": dep.by}
        if now is None:
            yield Reason("code_changed", f"code file {path} is gone ({how})", detail)
        elif now.digest != dep.state.digest:
            yield Reason("code_changed", f"code file {path} changed ({how})", detail)


def _outside_import_reason(key: str, dep: Discovered, now: FileState | None, how: str
                           ) -> Reason | None:
    """A module outside the project its code imported: `now.path` is the key it has now."""
    kind, _, name = key.partition(":")
    old = dep.state.digest
    detail: dict[str, Any] = {"module": dep.module or name, "imported_by": dep.by}
    if now is None or (now.path != key and now.digest == MISSING):
        return Reason("code_changed", f"code: module {dep.module or name} cannot be found "
                      f"({how}; outside the project, on no sys.path entry)", detail)
    if now.path != key:
        return Reason("code_changed", f"code: module {dep.module or name} is now "
                      f"{_found_as(now)}, was {_found_as(dep.state)} ({how})",
                      {**detail, "old": f"{key} {old}", "new": f"{now.path} {now.digest}"})
    if now.digest == old:
        return None
    if kind == "dist":
        return Reason("code_changed", f"code: installed {name} changed: {old} → {now.digest} "
                      f"({how})", {**detail, "dist": name, "old": old, "new": now.digest})
    where = "outside the project, not installed"
    if now.digest == MISSING:
        return Reason("code_changed", f"code: module {name} cannot be found ({how}; outside "
                      "the project, on no sys.path entry)", detail)
    if old == MISSING:
        return Reason("code_changed", f"code: module {name} is found now ({how}; {where})",
                      detail)
    return Reason("code_changed", f"code: module {name} changed ({how}; {where})", detail)


def _found_as(state: FileState) -> str:
    kind, _, name = state.path.partition(":")
    if kind == "dist":
        return f"installed {name} {state.digest}"
    return "not found" if state.digest == MISSING else "outside the project, not installed"


def _upstream_reasons(record: StageRecord, upstreams: Mapping[str, Upstream]) -> Iterator[Reason]:
    for name, up in upstreams.items():
        if up.pending:
            yield Reason("upstream_will_run", f"upstream stage '{name}' will run first",
                         {"input": name})
        elif name not in record.stage_inputs:
            yield Reason("input_changed", f"stage '{name}' is a new input", {"input": name})
        elif record.stage_inputs[name] != up.digest and up.overridden:
            yield Reason("overridden", f"stage '{name}' has a reviewed override as its output",
                         {"input": name})
        elif record.stage_inputs[name] != up.digest:
            yield Reason("input_changed",
                         f"stage '{name}' has a different output than this stage was built from",
                         {"input": name})


def _status_reasons(facts: StageFacts, record: StageRecord) -> Iterator[Reason]:
    total = record.batches_total
    if record.status in RESUMABLE_STATUSES:
        kept = sum(1 for b in record.batches if b.file not in facts.damaged)
    if record.status in ("running", "interrupted"):
        yield Reason("incomplete", _incomplete(facts.kind, record.status, kept, total),
                     {"batches_done": kept})
        return
    if record.status == "failed":
        after = "it is called again" if facts.kind == "transform" else \
            f"{kept} {batches(kept)} kept"
        # the first line only: the whole error (hints, a log's tail) stays in the record and
        # in the JSON detail, not in the one-line `▶` and `status` reasons
        first = (record.error or "no error recorded").strip().splitlines()[0]
        yield Reason("failed_before", f"failed last time ({first}); {after}",
                     {"error": record.error})
        return
    for path, state in facts.damaged.items():
        if state == "missing" and facts.file_groups.get(path) == "callback":
            yield Reason("callback_output_missing", f"callback output {path} is missing",
                         {"file": path})
        elif state == "missing":
            yield Reason("output_missing", f"output file {path} is missing", {"file": path})
        elif state == "modified":
            yield Reason("output_modified", f"output file {path} was modified", {"file": path})
    yield from _exports_reasons(facts, record)


def _exports_reasons(facts: StageFacts, record: StageRecord) -> Iterator[Reason]:
    """Export copies are written from the selected output, and their step's key names its
    digest: a key that names another digest (copies written before `dd-build override`
    replaced the output, by a dd-build that did not rewrite them) rewrites them."""
    outputs = record.spec.get("outputs") or []
    if facts.kind == "run" or not outputs or record.output is None or \
            record.status not in ("completed", "completed_empty"):
        return
    step = record.steps.get("exports")
    if step is not None and step.key == exports_key(outputs, record.output.digest):
        return
    what = "the override" if record.output.kind == "override" else "its selected output"
    copies = "export copy {} was" if len(outputs) == 1 else "export copies {} were"
    yield Reason("exports_stale", f"{copies.format(', '.join(map(str, outputs)))} not written "
                 f"from {what}", {"files": list(outputs)})


def batches(count: int | None) -> str:
    """`batch` or `batches`, for `count` (the total in "1 of 1 batch")."""
    return "batch" if count == 1 else "batches"


def _incomplete(kind: str, status: str, kept: int, total: int | None) -> str:
    """A generate stage resumes batch by batch; a run or transform stage has no batches to
    count: its last run was interrupted (SIGINT, SIGTERM), or killed (still `running`)."""
    if kind != "generate" or total is None:
        return "the last run was " + ("interrupted" if status == "interrupted" else "killed")
    return f"{kept} of {total} {batches(total)} done"


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


def _is_own_change(reason: Reason, actions: Mapping[str, str], all_reused: bool) -> bool:
    if reason.code in _OWN_CHANGE:
        return True
    if reason.code == "no_record":
        return all_reused
    if reason.code == "input_changed":
        # A file input changed, or a stage input changed while that stage is reused as it is.
        source = reason.detail.get("input")
        return source not in actions or actions[source] == "up_to_date"
    return False
