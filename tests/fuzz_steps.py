"""The step model (issue 8) in the correctness fuzzer: what the model remembers of each stage,
step by step, and the first step it expects the plan to name.

Used by tests/fuzz_support.py. A stage's chain of steps (README "Steps"):

    generate:  batches → processors → on_success → allow_empty → outputs
    transform: call    → processors → on_success → allow_empty → outputs
    run:       command

The model keeps, per stage, what its last own build was made from (`Built`): the main step's
part (spec without the later steps' keys, code, file inputs, upstream outputs) and each later
step's part. Before a build it predicts (`predict`) the first step the plan must name for
every stage it can tell about: the earliest step whose part changed or whose files were
damaged since; the main step when an upstream will run first; and for a stage whose review
override is held, only its export copies (`outputs`) or nothing. Where it cannot tell (a
stage never completed, a glob over other stages' outputs, an upstream that is empty or
failed) it says nothing, and only the from-scratch oracle judges that stage.

The model knows the generator's stages only: no file in `reviews/` is ever edited, the
processors are deterministic, and row 0 (id 0) survives every processor but EMPTYING.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz_workflows import CALLBACK_FILES, WORKFLOW, Rng, StageGen, WorkflowGen

MAIN = {"generate": "batches", "transform": "call", "run": "command"}
LATER = ("processors", "on_success", "allow_empty", "outputs")
# Running only these steps leaves the selected output as it is: dependants see it unchanged.
KEEP_OUTPUT = ("allow_empty", "outputs")
UNKNOWN = "?"


def chain(kind: str) -> tuple[str, ...]:
    return (MAIN[kind],) if kind == "run" else (MAIN[kind], *LATER)


def earliest(kind: str, steps: list[str]) -> str | None:
    order = chain(kind)
    return min(steps, key=order.index) if steps else None


def sha(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def pattern_states(root: Path, patterns: list[str]) -> tuple[tuple[str, str], ...]:
    paths: set[str] = set()
    for pattern in patterns:
        paths.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    return tuple((p, sha(root / p)) for p in sorted(paths))


@dataclass(frozen=True)
class Built:
    """What a stage's build was made from, step by step."""

    main: tuple[Any, ...]  # spec (main keys), code files, file inputs, upstream outputs
    # The callback's file, when the stage has `code:` entries: then it is code of the main
    # step (buildtool/fingerprint.py callback_only_files), unless the callback went away.
    callback_main: tuple[str, ...]
    steps: tuple[tuple[str, Any], ...]  # each later step's part (tabular stages)
    # What the callback read: the batch files and the processors (deterministic) applied to
    # them. None when not known (before a build).
    cb_input: tuple[Any, ...] | None = None

    def step(self, name: str) -> Any:
        return dict(self.steps).get(name)

    def main_changed(self, now: Built) -> bool:
        """Whether `now` changes the main step of a stage built as `self`."""
        return self.main != now.main or bool(now.callback_main) and \
            now.callback_main != self.callback_main


@dataclass(frozen=True)
class Review:
    """A review override: the file handed to `dd-build override`, and its rows."""

    path: str  # project-relative: reviews/NAME.parquet
    content: tuple[Any, ...]  # fuzz_support.table_content of it


@dataclass
class Model:
    """Per stage: its last own build (`built`), the damage done to it since (batch indices,
    "cb" a callback output, "processed" a processed file, "exports" an export copy, "all"),
    and what the step model adds:

    identity      its selected output as dependants see it (paths and bytes), as last seen
    held          its review override, while held (no own build of it runs)
    failed_empty  its last build failed only because its output had no rows: the record
                  says it stopped in `allow_empty`; the next build starts there (and fails
                  again while allow_empty is off, calling nothing)
    rec_exports   the `outputs` its export copies' trace was last written for
    released      its override was released since its last build: its export copies (written
                  from the review) are rewritten from its own output
    lost          its override file was deleted: the later steps give its output back
    """

    built: dict[str, Built] = field(default_factory=dict)
    damaged: dict[str, set[int | str]] = field(default_factory=dict)
    identity: dict[str, tuple[str, ...]] = field(default_factory=dict)
    held: dict[str, Review] = field(default_factory=dict)
    failed_empty: set[str] = field(default_factory=set)
    rec_exports: dict[str, str] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)

    def forget(self, name: str) -> None:
        """Nothing is known of the stage's build any more (cleaned, skipped)."""
        for table in (self.built, self.damaged, self.identity, self.held, self.rec_exports):
            table.pop(name, None)
        for names in (self.failed_empty, self.released, self.lost):
            names.discard(name)


def stage_key(root: Path, stage: StageGen, ids: dict[str, Any],
              cb_input: tuple[Any, ...] | None = None) -> Built:
    """The stage's parts as its files are now; `ids` gives each upstream's output identity."""
    parts = stage.step_parts()
    code = tuple((f, sha(root / f)) for f in stage.code_files())
    callback = (sha(root / CALLBACK_FILES[stage.on_success]),) if stage.on_success else ()
    main = (parts["main"], code, pattern_states(root, stage.patterns),
            tuple((u, ids.get(u)) for u in stage.upstreams))
    steps: tuple[tuple[str, Any], ...] = ()
    if stage.tabular:
        steps = (("processors", parts["processors"]),
                 ("on_success", (parts["on_success"], () if stage.cross_code else callback)),
                 ("allow_empty", parts["allow_empty"]), ("outputs", parts["outputs"]))
    return Built(main, callback if stage.cross_code else (), steps, cb_input)


def callback_input(root: Path, stage: StageGen, rec: dict[str, Any]) -> tuple[Any, ...]:
    """What the stage's callback read in the build its record `rec` describes."""
    batches = sorted(rec.get("batches") or [], key=lambda b: b["index"])
    files = tuple(sha(root / "artifacts" / WORKFLOW / b["file"]) for b in batches)
    return files, stage.step_parts().get("processors")


def predict(wf: WorkflowGen, model: Model, root: Path, closure: list[str], forced: set[str],
            held: set[str]) -> dict[str, str | None]:
    """The first step the plan must name for each stage of `closure` the model can tell
    about (None: none runs). `forced`: stages --force / --rerun-from / --resume never run;
    `held`: stages whose override stays held through this build."""
    pred: dict[str, str | None] = {}
    for name in closure:  # in topological order
        pred[name] = _predict(wf, model, root, name, forced, held, pred)
    return {name: step for name, step in pred.items() if step != UNKNOWN}


def _predict(wf: WorkflowGen, model: Model, root: Path, name: str, forced: set[str],
             held: set[str], pred: dict[str, str | None]) -> str | None:
    s = wf.stage(name)
    damaged = model.damaged.get(name, set())
    parts = s.step_parts()
    if name in held:  # only its export copies are written (from the review), if stale
        stale = parts.get("outputs") != model.rec_exports.get(name) or "exports" in damaged
        return "outputs" if stale else None
    ups = s.upstreams
    if any(pred.get(u, UNKNOWN) == UNKNOWN for u in ups):
        return UNKNOWN
    settled = [u for u in ups if pred[u] in (None, *KEEP_OUTPUT)]
    if any(u not in model.identity for u in settled):
        return UNKNOWN  # an upstream with no rows (this stage is skipped), or failed
    if name in forced or len(settled) < len(ups):
        return MAIN[s.kind]  # or an upstream will run first: decided again once it is done
    old = model.built.get(name)
    if old is None or "all" in damaged or s.cross:
        return UNKNOWN
    now = stage_key(root, s, {u: model.identity[u] for u in ups})
    if old.main_changed(now) or any(isinstance(d, int) for d in damaged):
        return MAIN[s.kind]
    if not s.tabular:
        return None
    steps = [step for step in ("processors", "on_success", "allow_empty")
             if now.step(step) != old.step(step)]
    # a lost review: its first later step (plan: steps.first_later_step) gives the output back
    lost = "processors" if s.processors else "on_success" if s.on_success else "allow_empty"
    steps += [step for step, on in (
        (lost, name in model.lost),
        ("processors", "processed" in damaged),
        ("on_success", "cb" in damaged),
        ("allow_empty", name in model.failed_empty),
        ("outputs", parts["outputs"] != model.rec_exports.get(name) or "exports" in damaged
         or (name in model.released and bool(s.exports)))) if on]
    return earliest(s.kind, steps)


def derive_review(rng: Rng, table: Any) -> Any:
    """A reviewer's edit of a stage's output: every other row dropped and one `v` changed
    beyond anything the stage code makes (its values are below 1,000,003); every column and
    type kept, and at least one row."""
    import pyarrow as pa

    rows = table.to_pylist()
    kept = rows[rng.randint(0, 1) if len(rows) > 1 else 0::2]
    i = rng.randint(0, len(kept) - 1)
    if "v" in kept[i]:
        kept[i] = {**kept[i], "v": 2_000_000 + rng.randint(0, 10**6)}
    return pa.Table.from_pylist(kept, schema=table.schema)


def planned_steps(stdout: str) -> dict[str, dict[str, Any]] | None:
    """Each stage's entry of a `--json` plan or report, by name (None: no JSON)."""
    try:
        return {s["stage"]: s for s in json.loads(stdout).get("stages", [])}
    except (ValueError, KeyError, AttributeError):
        return None


def step_problems(pred: dict[str, str | None], planned: dict[str, dict[str, Any]],
                  kinds: dict[str, str], what: str) -> list[tuple[str, str, str]]:
    """(kind, stage, message) for each stage whose planned first step is not the predicted
    one: an earlier step runs more than needed (wasteful), a later one less (stale)."""
    found = []
    for name, want in pred.items():
        entry = planned.get(name)
        if entry is None:
            continue
        got = entry.get("step")
        if got == want or (want is None and entry.get("action") == "skip_empty_upstream"):
            continue
        if entry.get("action") == "restore" and want is not None:
            continue  # issue 11: restored from the cache instead (its output is compared)
        order = (*chain(kinds[name]), None)  # an earlier step runs more
        kind = "wasteful" if got in order and want in order and \
            order.index(got) < order.index(want) else "stale"
        reasons = "; ".join(f"{r.get('message')} [{r.get('step')}]"
                            for r in entry.get("reasons", []))
        found.append((kind, name, f"{what} names step {got!r} ({entry.get('action')}), the "
                      f"model expects {want!r}: {reasons or 'no reason'}"))
    return found
