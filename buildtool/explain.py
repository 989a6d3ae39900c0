"""Render decisions and results as text (rendering only: no decisions are made here)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import without_stage
from .plan import Action, Decision
from .plan import batches as plural
from .steps import BOUNDARY, KEEP_OUTPUT
from .wording import counted

if TYPE_CHECKING:
    from .execute import Prepared
    from .graph import StageGraph
    from .reasons import Reason
    from .report import StageResult

_ACTION_WORDS: dict[Action, str] = {
    "up_to_date": "up to date", "run": "run", "resume": "resume", "grow": "grow",
    "shrink": "shrink",
    "skip_empty_upstream": "skip (empty upstream)", "held": "overridden (held)",
    "restore": "restore",
}


def decision_head(d: Decision) -> str:
    """What runs: `resume (3 of 10 batches kept)`, `run from on_success (4 batches kept)`,
    `overridden (held)`."""
    word = _ACTION_WORDS.get(d.action, d.action)
    later = d.step if d.step in BOUNDARY else None
    if d.action == "held":
        return word + ("; export copies written from the override" if later else "")
    if d.restore is not None:
        renamed = f" as '{d.restore.built_as}'" if d.restore.built_as != d.stage else ""
        return f"restore (from cache: built {d.restore.when}{renamed})"
    if later:
        return f"run from {later} ({len(d.keep)} {plural(len(d.keep))} kept)"
    if d.action in ("resume", "grow", "shrink") and d.batches_total is not None:
        up_to = "up to " if any(r.detail.get("seed_checked") for r in d.reasons) else ""
        return f"{word} ({up_to}{len(d.keep)} of {d.batches_total} {plural(d.batches_total)}" \
               " kept)"
    return word


def decision_lines(decisions: Sequence[Decision]) -> list[str]:
    """One line per stage, then one indented line per reason."""
    width = max((len(d.stage) for d in decisions), default=0)
    lines = []
    for d in decisions:
        lines.append(f"{d.stage.ljust(width)}  {decision_head(d)}")
        for r in d.reasons:
            lines += reason_lines(r, " " * width + "    ")
        if d.action == "held":
            lines.append(f"{' ' * width}    - the review stays: `dd-build override --release "
                         f"{d.stage}` (or `--force {d.stage}`) lets the stage rebuild")
    return lines


def result_line(result: StageResult) -> str:
    name, res = result.stage, result.result
    rows = counted(result.rows, "row") if result.rows is not None else ""
    if res == "up_to_date":
        return f"= {name}: up to date" + (f" ({rows})" if rows else "")
    if res == "completed":
        batches = ""
        if result.batches_total is not None:
            batches = f", {result.batches_run} of {result.batches_total} " \
                      f"{plural(result.batches_total)} run"
        took = f" in {result.duration_s:.1f}s" if result.duration_s is not None else ""
        return f"✓ {name}: completed" + (f" ({rows}{batches})" if rows else "") + took
    if res == "restored":
        hit = result.planned.restore
        when = f", built {hit.when}" if hit is not None else ""
        return f"↺ {name}: restored from the cache" + (f" ({rows}{when})" if rows else "")
    if res == "completed_empty":
        return f"✓ {name}: completed with no rows (allow_empty)"
    if res == "held":
        return f"= {name}: overridden (held): its own changes wait for `dd-build override " \
               f"--release {name}`"
    if res == "skipped_empty_upstream":
        return f"○ {name}: skipped: an upstream stage is empty"
    if res == "failed":
        error = without_stage(result.error or "", name)
        return f"✗ {name}: failed\n    {error.replace(chr(10), chr(10) + '    ')}"
    return f"- {name}: not run (an upstream stage failed or the build stopped)"


def status_lines(prep: Prepared) -> list[str]:
    width = max((len(n) for n in prep.order), default=0)
    lines = []
    for d in prep.decisions:
        record = prep.facts[d.stage].record
        extra = []
        if record is not None and record.output is not None and record.output.rows is not None:
            extra.append(counted(record.output.rows, "row"))
        if record is not None and record.output is not None and record.output.kind == "override":
            extra.append(f"override from {record.extra.get('override', {}).get('source', '?')}")
        if record is not None:
            when = f"last run {_when(record.finished_at or record.started_at)}"
            unfinished = record.status in ("running", "interrupted")  # said in the state
            extra.append(when if unfinished else f"{when}: {record.status}")
            touched = record.extra.get("touched_at")
            if isinstance(touched, (int, float)):  # `dd-build touch` accepted its changes
                extra.append(f"touched {_when(touched)}")
        state = status_state(prep, d)
        lines.append(f"{d.stage.ljust(width)}  {state}" + (f"  [{'; '.join(extra)}]" if extra else ""))
        for r in d.reasons:
            lines += reason_lines(r, " " * width + "    ")
    return lines


def reason_lines(reason: Reason, indent: str) -> list[str]:
    """`- message`, then the lines it shows under it (a diff, a note), indented."""
    return [f"{indent}- {reason.message}"] + [f"{indent}    {line}" for line in reason.more]


def status_state(prep: Prepared, d: Decision) -> str:
    """A stage's state in words: up to date, out of date and what the next build does, or
    how its last run ended when it did not finish (`interrupted (killed): 3 of 6 batches
    kept; the next build resumes`), or running now."""
    facts = prep.facts[d.stage]
    record = facts.record
    if d.action in _STATES:
        return _STATES[d.action]
    pid = prep.options.live.get(d.stage)
    if record is None or record.status not in ("running", "interrupted"):
        return f"out of date ({decision_head(d)})"
    if pid is not None:
        return f"running (dd-build pid {pid})"
    last = "interrupted" if record.status == "interrupted" else "interrupted (killed)"
    later = d.step if d.step in BOUNDARY else None
    if facts.kind == "run":
        return f"{last} while its command ran; the next build reruns it"
    if d.action == "resume" and later:
        return f"{last}: {counted(len(d.keep), 'batch')} kept; the next build runs from {later}"
    if facts.kind == "transform":
        return f"{last} while its function ran; the next build calls it again"
    if d.action in ("resume", "grow", "shrink") and d.batches_total is not None:
        return f"{last}: {len(d.keep)} of {d.batches_total} {plural(d.batches_total)} kept; " \
               "the next build resumes"
    return f"{last}: the next build runs it fresh"


def staleness(d: Decision, decisions: Sequence[Decision] = ()) -> str | None:
    """Why the stage's selected output is not what a build would give now, in a few words
    (None when it is: up to date, held, or only its export copies or checks rerun). A stage
    that runs only because an upstream does names the first stage with a change of its own."""
    if d.action in ("up_to_date", "held") or d.step in KEEP_OUTPUT:
        return None
    by_stage = {x.stage: x for x in decisions}
    root = d
    while root.reasons and all(r.code == "upstream_will_run" for r in root.reasons):
        up = by_stage.get(str(root.reasons[0].detail.get("input")))
        if up is None or up is root:
            break
        root = up
    why = _few(root.reasons) or decision_head(root)
    return why if root is d else f"upstream stage '{root.stage}' will run first: {why}"


def _few(reasons: Sequence[Reason]) -> str:
    more = f"; +{len(reasons) - 2} more" if len(reasons) > 2 else ""
    return "; ".join(r.brief() for r in reasons[:2]) + more


_STATES = {"up_to_date": "up to date", "skip_empty_upstream": "skipped (empty upstream)",
           "held": "overridden (held)"}


def _when(stamp: float | None) -> str:
    return "never" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def dag_text(graph: StageGraph, order: Sequence[str]) -> str:
    lines = []
    for name in order:
        ups = sorted(graph.predecessors(name), key=order.index)
        lines.append(f"{name}" + (f"  <- {', '.join(ups)}" if ups else ""))
    return "\n".join(lines)


def dag_mermaid(graph: StageGraph, order: Sequence[str]) -> str:
    lines = ["flowchart LR"]
    ids = {name: f"s{i}" for i, name in enumerate(order)}
    lines += [f'  {ids[n]}["{n}"]' for n in order]
    lines += [f"  {ids[a]} --> {ids[b]}" for a, b in graph.edges if a in ids and b in ids]
    return "\n".join(lines)


def dag_dot(graph: StageGraph, order: Sequence[str]) -> str:
    lines = ["digraph workflow {", "  rankdir=LR;"]
    lines += [f'  "{n}";' for n in order]
    lines += [f'  "{a}" -> "{b}";' for a, b in graph.edges if a in order and b in order]
    lines.append("}")
    return "\n".join(lines)
