"""Every reason a stage's record does not match what is on disk now, as data.

Pure comparisons of the probe's facts with the record: spec keys (typed, old → new), code
files and imported modules, file inputs, upstream outputs, the record's status and its
files. plan.py assigns each reason to a step and decides; this module only finds them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import without_stage
from .external import MISSING, is_external_key
from .facts import StageFacts, Upstream
from .fingerprint import FileState, spec_fingerprint
from .jsonvalues import same_value, type_change, yaml_text
from .model import BATCHED_KINDS
from .records import RESUMABLE_STATUSES, Discovered, Output, StageRecord, batches_digest
from .steps import BOUNDARY, RECORDED, StepName, step_key, step_name, uses
from .wording import counted, noun

# Every reason code (README "When a stage runs, and why" describes each).
ReasonCode = Literal[
    "no_record", "spec_changed", "code_changed", "input_changed", "upstream_will_run",
    "output_missing", "output_modified", "incomplete", "failed_before", "forced",
    "record_unreadable", "format_changed", "callback_output_missing", "step_stale",
    "overridden", "exports_stale", "upstream_empty",
]
REASON_CODES: tuple[ReasonCode, ...] = get_args(ReasonCode)


@dataclass(frozen=True)
class Reason:
    """One reason a stage runs: a code, its message, and its details."""

    code: ReasonCode
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    step: StepName | Literal[""] = ""  # the first step it reruns; set by the planner
    # Lines shown under the message by --explain and status (a diff, a note); the JSON
    # document has them in `detail`.
    more: tuple[str, ...] = ()

    def brief(self) -> str:
        """The reason in a few words: `params.tag changed` (its values are in the message)."""
        if self.code == "spec_changed" and self.detail.get("key"):
            return f"{self.detail['key']} changed"
        return self.message

    def to_json(self) -> dict[str, Any]:
        step = {"step": self.step} if self.step else {}
        return {"code": self.code, "message": self.message, **self.detail, **step}


def collect_reasons(facts: StageFacts, upstreams: Mapping[str, Upstream],
                    live: int | None = None) -> Iterator[Reason]:
    """`live`: the pid of a dd-build running this stage now (its record is `running` and
    that build still holds the lock), or None."""
    if facts.read.problem is not None:
        code, message = facts.read.problem
        yield Reason(code, message)
        return
    record = facts.record
    if record is None:
        yield Reason("no_record", "never built: no record")
        return
    # Each check is skipped where it plainly finds nothing (every stage of a null build):
    # making and running its generator would cost more than the comparison.
    if record.spec_fingerprint != facts.fingerprint or not facts.read.spec_checked:
        yield from _spec_reasons(record, facts)
    if not _same_files(record.code, facts.code):
        yield from _code_reasons(record.code, facts.code)
    if record.discovered is None or record.discovered:
        yield from _import_reasons(record, facts)
    if not _same_files(record.file_inputs, facts.file_inputs):
        yield from _file_reasons("input_changed", "input", "input", record.file_inputs,
                                 facts.file_inputs)
    if upstreams:
        yield from _upstream_reasons(record, upstreams)
    if record.status in RESUMABLE_STATUSES or facts.damaged or _traced_steps(facts, record):
        yield from _status_reasons(facts, record, live)


def _same_files(old: Mapping[str, FileState], new: Mapping[str, FileState]) -> bool:
    """The same keys, each with the same digest: no file reason (nor code reason) to give."""
    return old.keys() == new.keys() and all(new[p] is s or new[p].digest == s.digest
                                            for p, s in old.items())


def _spec_reasons(record: StageRecord, facts: StageFacts) -> Iterator[Reason]:
    if record.spec_fingerprint == facts.fingerprint and \
            (facts.read.spec_checked or spec_fingerprint(record.spec) == facts.fingerprint):
        return  # the same canonical JSON text as the spec now: no key differs (the types
        # of values too: 1, 1.0 and true are spelt apart), so the key by key diff is skipped
    found = False
    for key, before, after in diff_values(record.spec, facts.spec):
        found = True
        yield _spec_reason(key, before, after)
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


def _spec_reason(key: str, before: Any, after: Any) -> Reason:
    """`key changed: old → new`, values spelt as YAML spells them; a long value shown around
    its change, and a change between two multi-line strings as a unified diff of their lines
    (under the message, and as `diff` in the JSON document)."""
    old, new = (None if v is _MISSING else v for v in (before, after))
    detail: dict[str, Any] = {"key": key, "old": old, "new": new}
    if isinstance(before, str) and isinstance(after, str) and "\n" in before + after:
        lines, counts = text_diff(before, after)
        if lines:
            return Reason("spec_changed", f"{key} changed: {counts}",
                          {**detail, "diff": "\n".join(lines)}, more=tuple(lines))
    shown = _show(before), _show(after)
    if sum(len(s) for s in shown) > 2 * _LONG:
        shown = _around_change(*shown)
    return Reason("spec_changed", f"{key} changed: {shown[0]} → {shown[1]}"
                  f"{_type_note(before, after)}", detail)


_LONG = 60  # a value spelt longer is shown around its change
_CONTEXT = 20  # characters shown on each side of a change in a long value
_DIFF_CONTEXT = 2  # lines of context in a diff of multi-line strings
_DIFF_LINES = 20  # diff lines shown at most
_DIFF_WIDTH = 120  # characters of one diff line shown at most


def _show(value: Any) -> str:
    """A value as the Workflowfile spells it: `false`, `null`, `x`, `"5"`, `1.0`, `[a, b]`."""
    if value is _MISSING:
        return "(unset)"
    return yaml_text(value)


def _around_change(old: str, new: str) -> tuple[str, str]:
    """Both texts cut to the part that differs, with a little context, `…` where cut."""
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return _window(old, prefix, len(old) - suffix), _window(new, prefix, len(new) - suffix)


def _window(text: str, start: int, end: int) -> str:
    lo, hi = max(0, start - _CONTEXT), min(len(text), end + _CONTEXT)
    # whole words at the cuts, when a space is near
    space = text.rfind(" ", lo, lo + _CONTEXT // 2) if lo else -1
    lo = space + 1 if space >= 0 and space < start else lo
    space = text.find(" ", hi - _CONTEXT // 2, hi) if hi < len(text) else -1
    hi = space if space >= end else hi
    middle = text[start:end]
    if len(middle) > 2 * _CONTEXT:
        middle = middle[:_CONTEXT] + "…" + middle[-_CONTEXT:]
    return ("…" if lo else "") + text[lo:start] + middle + text[end:hi] + \
        ("…" if hi < len(text) else "")


def text_diff(old: str, new: str) -> tuple[list[str], str]:
    """A compact unified diff of two texts' lines (hunks with a little context, capped), and
    its counts in words (`1 line changed, 2 added`). No lines when only line ends differ."""
    import difflib

    a, b = old.splitlines(), new.splitlines()
    if a == b:
        return [], ""
    changed = added = removed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("replace", "delete", "insert"):
            both = min(i2 - i1, j2 - j1)
            changed, removed, added = changed + both, removed + i2 - i1 - both, added + j2 - j1 - both
    diff = list(difflib.unified_diff(a, b, n=_DIFF_CONTEXT, lineterm=""))[2:]  # no file headers
    lines = [line if len(line) <= _DIFF_WIDTH else line[:_DIFF_WIDTH] + "…" for line in diff]
    if len(lines) > _DIFF_LINES:
        rest = len(lines) - _DIFF_LINES
        lines = lines[:_DIFF_LINES] + [f"… {counted(rest, 'more diff line')}"]
    counts = [(n, what) for n, what in ((changed, "changed"), (added, "added"),
                                         (removed, "removed")) if n]
    words = [f"{counted(counts[0][0], 'line')} {counts[0][1]}"]
    words += [f"{n} {what}" for n, what in counts[1:]]
    return lines, ", ".join(words)


def _type_note(old: Any, new: Any) -> str:
    """` (int → float)` when the JSON types differ, also deep inside a list or mapping."""
    if old is _MISSING or new is _MISSING or old is None or new is None:
        return ""  # `null` shown as the value says it
    change = type_change(old, new)
    if change is None:
        return ""
    where, before, after = change
    return f" ({before} → {after})" if not where else f" (at {where.lstrip('.')}: {before} → {after})"


def _file_reasons(code: ReasonCode, what: str, detail_key: str, old: Mapping[str, FileState],
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
    outside = {k for k in old if is_external_key(k)} | {k for k in new if is_external_key(k)}
    if not outside:
        yield from _file_reasons("code_changed", "code", "file", old, new)
        return
    yield from _file_reasons("code_changed", "code", "file",
                             {k: v for k, v in old.items() if k not in outside},
                             {k: v for k, v in new.items() if k not in outside})
    for key in sorted(outside):
        before, after = old.get(key), new.get(key)
        if before is None or after is None or before.digest != after.digest:
            yield _outside_reason(key, None if before is None else before.digest,
                                  None if after is None else after.digest)


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


def _status_reasons(facts: StageFacts, record: StageRecord, live: int | None
                    ) -> Iterator[Reason]:
    if record.status in RESUMABLE_STATUSES:
        reason = last_run_reason(facts, live)
        assert reason is not None
        yield reason
        if stopped_in(record):  # the steps before it are kept: a damaged file of theirs
            yield from _damage_reasons(facts)  # reruns its step
        return
    if facts.damaged:
        yield from _damage_reasons(facts)
    yield from _stale_traces(facts, record)


def last_run_reason(facts: StageFacts, live: int | None = None, discarded: str | None = None
                    ) -> Reason | None:
    """Why a stage whose last run did not finish runs again (None when it finished): killed
    (its record still `running`, and no live build is running it), interrupted (SIGINT,
    SIGTERM), failed, or being run now by the live build `live`. With `discarded`, the
    plan runs it fresh: the batches it finished are discarded, because of `discarded`."""
    record = facts.record
    if record is None or record.status not in RESUMABLE_STATUSES:
        return None
    kept = sum(1 for b in record.batches if b.file not in facts.damaged)
    step = stopped_in(record)
    drop = f": {counted(kept, 'finished batch')} discarded because {discarded}" \
        if discarded and kept else ""
    if record.status == "failed":
        after = "it runs again" if facts.kind == "run" else \
            "it is called again" if facts.kind == "transform" and step is None else \
            f"{counted(kept, 'batch')} kept"
        where = f" in {step}" if step else ""
        # the first line only: the whole error (hints, a log's tail) stays in the record and
        # in the JSON detail, not in the one-line `▶` and `status` reasons
        first = without_stage((record.error or "no error recorded").strip().splitlines()[0],
                              record.stage)
        detail: dict[str, Any] = {"error": record.error, "batches_done": kept}
        if drop:
            return Reason("failed_before", f"failed last time{where} ({first}){drop}",
                          {**detail, "batches_discarded": kept})
        return Reason("failed_before", f"failed last time{where} ({first}); {after}", detail)
    how = "running" if live is not None and record.status == "running" else \
        "killed" if record.status == "running" else "interrupted"
    detail = {"batches_done": kept, "how": how}
    if how == "running":
        detail["pid"] = live
        return Reason("incomplete", f"a dd-build (pid {live}) is running it now"
                      f"{_so_far(facts.kind, kept, record.batches_total)}", detail)
    stem = f"the last run was {how}" + (f" in {step}" if step else "")
    if drop:
        return Reason("incomplete", stem + drop, {**detail, "batches_discarded": kept})
    if step:
        return Reason("incomplete", stem, detail)
    return Reason("incomplete", _incomplete(facts.kind, how, kept, record.batches_total), detail)


def _so_far(kind: str, kept: int, total: int | None) -> str:
    if kind not in BATCHED_KINDS or total is None:
        return ""
    return f" ({kept} of {total} {noun(total, 'batch')} done so far)"


def _damage_reasons(facts: StageFacts) -> Iterator[Reason]:
    """A reason for each recorded file that is missing or whose content changed."""
    for path, state in facts.damaged.items():
        if state == "missing" and facts.file_groups.get(path) == "callback":
            yield Reason("callback_output_missing", f"callback output {path} is missing",
                         {"file": path})
        elif state == "missing" and facts.file_groups.get(path) == "override":
            yield Reason("output_missing", f"the override {path} is missing: the review is "
                         "lost, and the stage's own output takes its place", {"file": path})
        elif state == "missing":
            yield Reason("output_missing", f"output file {path} is missing", {"file": path})
        elif state == "modified":
            yield Reason("output_modified", f"output file {path} was modified", {"file": path})


def stopped_in(record: StageRecord) -> StepName | None:
    """The step after the main one in which a failed or interrupted attempt ended, if any:
    the steps before it are kept."""
    if record.status not in RESUMABLE_STATUSES:
        return None
    step = step_name(record.extra.get("stopped_in"))
    return step if step in BOUNDARY else None


def _traced_steps(facts: StageFacts, record: StageRecord) -> list[StepName]:
    """The later steps whose traces a finished record must hold: those the stage uses now
    (none for a run stage, nor for a record that did not complete with an output)."""
    if facts.kind == "run" or record.status not in ("completed", "completed_empty") or \
            record.output is None:
        return []
    return [step for step in BOUNDARY if uses(step, facts.spec)]


def _stale_traces(facts: StageFacts, record: StageRecord) -> Iterator[Reason]:
    """Each later step whose recorded trace is not the one its spec, code and input give now.
    A spec or code change of the step says so itself (the planner keeps that reason); this
    one stands alone when nothing else explains it: export copies written before an override
    replaced the output, a record written by an older dd-build, an edited record."""
    steps = _traced_steps(facts, record)
    if not steps:
        return
    assert record.output is not None
    code = facts.code.get(facts.callback_file or "")
    digest: str | None = None  # the batches' digest, taken only when a step is used
    before: str | None = None  # the key of the trace before (the batches have none)
    for step in steps:
        if digest is None:
            digest = batches_digest(record.batches)  # the first used step's input
        if step == "outputs":
            digest = record.output.digest  # copies are written from the selected output
        trace = record.steps.get(RECORDED[step])
        key = step_key(step, facts.spec, code.digest if code else "", digest)
        if trace is None or (trace.key != key and not _none_before(step, trace, before, digest)):
            yield _stale(step, facts, record)
            return  # the steps after it rerun anyway
        digest, before = trace.digest, trace.key


def _none_before(step: str, trace: Output, before: str | None, digest: str) -> bool:
    """A callback that returned None, as the dd-build before the step model recorded it: its
    trace is its input, under that input's key. That dd-build called the callback again on
    every run that reached it, so the trace was made by the spec and code the record holds
    (a change to them is a reason of its own): it stands."""
    return step == "on_success" and trace.kind != "callback" and trace.key == before and \
        trace.digest == digest


def _stale(step: str, facts: StageFacts, record: StageRecord) -> Reason:
    if step != "outputs":
        return Reason("step_stale", f"{step}: its recorded output was not made from what it "
                      "is given now", {"step_name": step})
    outputs = [str(p) for p in facts.spec.get("outputs") or []]
    what = "the override" if record.output and record.output.kind == "override" \
        else "its selected output"
    copies = "export copy {} was" if len(outputs) == 1 else "export copies {} were"
    return Reason("exports_stale", f"{copies.format(', '.join(outputs))} not written from "
                  f"{what}", {"files": outputs})


def batches(count: int | None) -> str:
    """`batch` or `batches`, for `count` (the total in "1 of 1 batch")."""
    return noun(count, "batch")


def _incomplete(kind: str, how: str, kept: int, total: int | None) -> str:
    """A generate stage resumes batch by batch; a run or transform stage has no batches to
    count: its last run was interrupted (SIGINT, SIGTERM), or killed (still `running`)."""
    stem = f"the last run was {how}"
    if kind == "run":
        return f"{stem} while its command ran"
    if kind == "transform":
        return f"{stem} while its function ran"
    if total is None:
        return stem
    return f"{stem} with {kept} of {total} {noun(total, 'batch')} done"
