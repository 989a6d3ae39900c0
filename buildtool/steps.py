"""The step model: a stage is a short chain of steps, each with a trace.

    generate:  batches  → processors → on_success → allow_empty → outputs
    transform: call     → processors → on_success → allow_empty → outputs
    run:       command

The first step is the stage's own work (`MAIN`): its trace is the record's spec, code digests,
input digests and batch files, kept key by key so a change can be named. Each later step's
trace is a key — a digest of its spec slice, the code it runs and the digest of its input (the
previous step's output) — and the files it wrote. `allow_empty` is a check, not a producer: it
has no trace and no files. A change to a key (keys.py says which step each key belongs to)
reruns its step and every step after it; the steps before it are kept. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, get_args

from .fingerprint import digest_strings
from .keys import STAGE_KEYS

MainStep = Literal["batches", "call", "command"]  # a stage's own work, by kind
BoundaryStep = Literal["processors", "on_success", "allow_empty", "outputs"]  # in this order
StepName = MainStep | BoundaryStep
MAIN: dict[str, MainStep] = {"generate": "batches", "transform": "call", "run": "command",
                             "datadesigner": "batches"}
BOUNDARY: tuple[BoundaryStep, ...] = get_args(BoundaryStep)
STEP_NAMES: tuple[StepName, ...] = get_args(MainStep) + BOUNDARY
# Where a boundary step's trace is kept in stage.json's `steps` (names of record format 1).
RECORDED: dict[StepName, str] = {"processors": "processed", "on_success": "callback",
                                 "outputs": "exports"}
# Steps after which the stage's selected output is what it was: running only these changes
# no dependant's input.
KEEP_OUTPUT: frozenset[StepName] = frozenset({"allow_empty", "outputs"})


def chain(kind: str) -> tuple[StepName, ...]:
    """Every step a stage of `kind` can have, in order (a step a stage does not use is skipped
    when it runs, but still has a place: removing a callback reruns from `on_success`)."""
    return (MAIN[kind],) if kind == "run" else (MAIN[kind], *BOUNDARY)


def position(kind: str, step: StepName) -> int:
    return chain(kind).index(step)


def earliest(kind: str, steps: Sequence[StepName]) -> StepName | None:
    if not steps:
        return None
    return min(steps, key=lambda s: position(kind, s))


def step_name(value: object) -> StepName | None:
    """`value` (e.g. read from a record) as a step name, or None when it is not one."""
    return next((s for s in STEP_NAMES if s == value), None)


def step_of_key(kind: str, key: str) -> StepName:
    """The step a spec key (`params.x`, `on_success`, …) belongs to; the main step for keys
    outside the table (`kind`, `spec_fingerprint`)."""
    spec = STAGE_KEYS.get(key.split(".")[0])
    step = None if spec is None else (spec.run_step if kind == "run" and spec.run_step
                                      else spec.step)
    return MAIN[kind] if step is None or step == "main" else step


def fingerprinted_keys(kind: str) -> list[str]:
    """The keys of the canonical spec of a stage of `kind` (besides `kind` itself)."""
    return [k for k, s in STAGE_KEYS.items()
            if kind in s.kinds and s.step is not None and k != "code"]


def processors_key(processors: Sequence[Any], input_digest: str) -> str:
    return digest_strings(["processors", json.dumps(list(processors), sort_keys=True),
                           input_digest])


def callback_key(ref: str, version: str | None, code_digest: str, input_digest: str) -> str:
    return digest_strings(["callback", ref, version or "", code_digest, input_digest])


def exports_key(outputs: Sequence[str], input_digest: str) -> str:
    """Export copies: their paths and the digest of the selected output they copy, so the
    copies always equal that output."""
    return digest_strings(["exports", *outputs, input_digest])


def step_key(step: StepName, spec: dict[str, Any], code_digest: str, input_digest: str) -> str:
    """The trace key of boundary step `step` for a canonical `spec`."""
    if step == "processors":
        return processors_key(spec.get("processors") or [], input_digest)
    if step == "on_success":
        return callback_key(spec.get("on_success") or "", spec.get("on_success_version"),
                            code_digest, input_digest)
    if step == "outputs":
        return exports_key([str(p) for p in spec.get("outputs") or []], input_digest)
    raise ValueError(f"step {step} has no trace")


# The spec key whose value says a stage has the boundary step (allow_empty writes no trace).
_USED_BY: dict[str, str] = {"processors": "processors", "on_success": "on_success",
                            "outputs": "outputs"}


def uses(step: StepName, spec: dict[str, Any]) -> bool:
    """Whether a stage with canonical `spec` has boundary step `step` (it writes a trace)."""
    return bool(spec.get(_USED_BY.get(step, "")))


def first_later_step(spec: dict[str, Any]) -> BoundaryStep:
    """The first later step a stage with canonical `spec` has (`allow_empty` always is)."""
    return next(s for s in BOUNDARY if uses(s, spec) or s == "allow_empty")
