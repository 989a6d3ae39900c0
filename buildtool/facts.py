"""What the probe saw for each stage, and how a stage's output looks to its dependants. Data only."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from .fingerprint import FileState
from .records import RecordRead, StageRecord

# What a stage whose upstream is empty consumes in place of an output digest:
# fingerprint.digest_strings(["(empty)"]), spelt out so that importing this makes no digest
# (tests/test_c14e_lazy_imports.py checks it).
EMPTY_DIGEST = "sha256:990e48d7916f234b4f099878c0175b5d6ce41fa4850bed7c5f0d833582723d02"


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
    callback_file: str | None = None  # the project file of the on_success callback now
    stats_moved: bool = False  # content is the same but stats moved: the record may be touched up

    @cached_property
    def record(self) -> StageRecord | None:  # asked a dozen times per stage per build
        return self.read.record


_FACT_FIELDS = frozenset(f.name for f in fields(StageFacts))


def made_facts(values: dict[str, Any]) -> StageFacts:
    """The StageFacts whose fields are `values` (each one given), made as pickle makes an
    instance: a frozen dataclass's __init__ sets each field through object.__setattr__, more
    than the rest of a stage's facts cost on a null build."""
    if values.keys() != _FACT_FIELDS:
        raise TypeError(f"StageFacts fields: {sorted(values.keys() ^ _FACT_FIELDS)} differ")
    made = object.__new__(StageFacts)
    made.__dict__.update(values)
    made.__dict__["record"] = values["read"].record  # the cached property, filled
    return made


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


def output_view(record: StageRecord) -> Upstream:
    """How dependants see a stage whose record is final."""
    if record.status == "skipped_empty_upstream" or record.output is None:
        return Upstream(EMPTY_DIGEST, 0)
    out = record.output
    # Upstream(out.digest, out.rows, overridden=...), made without its frozen __init__: asked
    # about three times per stage per build.
    view = object.__new__(Upstream)
    view.__dict__.update(digest=out.digest, rows=out.rows, overridden=out.kind == "override")
    return view
