"""Growth: a generate stage whose `num_records` or seed rows changed keeps every batch whose
identity is unchanged and runs only the others.

A batch's identity is what its function can see. What is the same for every batch of a stage
— its spec but `num_records` (params, callable, batch_size, sampling, seed and inputs as
named), its code, its inputs as consumed (the seed's content aside), and with them `ctx.rng`'s
seed (fingerprint.batch_fingerprint) — is compared stage-wide by the planner's reasons. What
differs per batch is its key (`BatchEntry.key`): its index, offset, size, the digest of its
seed rows, and `num_records` when its code read `ctx.num_records` (noticed by the context and
kept per batch in `reads`; so is a read of the whole seed through `ctx.inputs`). So when only `num_records` or the seed's rows changed,
the batches whose key is unchanged are kept: 600 → 700 rows runs the new batches only, 700 →
600 runs none (or again the last, partial one, whose size changed), and the output is what a
build from scratch writes, batch file by batch file.

Pure here but for `rows_digest` (a table's bytes, called where the batch runs): the planner
computes what it can from the record (sizes); a seed's rows are compared by key when the stage
runs (`GenerateContext` reads the seed anyway)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .fingerprint import digest_bytes, digest_strings
from .wording import counted

if TYPE_CHECKING:
    import pyarrow as pa

    from .facts import StageFacts, Upstream
    from .reasons import Reason

# Reasons of the main step that still let a growth keep batches (plan._KEEPS_BATCHES but
# upstream_will_run, which is allowed for the seed stage only).
_KEEPS: frozenset[str] = frozenset({"incomplete", "failed_before", "output_missing",
                                    "output_modified"})
_DONE_OR_RESUMABLE = ("completed", "completed_empty", "running", "interrupted", "failed")


def batch_key(index: int, offset: int, size: int, seed_digest: str | None,
              num_records: int | None, whole_seed: str | None = None) -> str:
    """A batch's key; `num_records` only when its code read `ctx.num_records`, `whole_seed`
    (the seed's digest) only when it read the seed through `ctx.inputs`."""
    parts = ["batch", str(index), str(offset), str(size), seed_digest or "-"]
    if num_records is not None:
        parts.append(f"num_records={num_records}")
    if whole_seed is not None:
        parts.append(f"seed={whole_seed}")
    return digest_strings(parts)


def rows_digest(table: pa.Table | None) -> str | None:
    """The digest of a batch's seed rows: their values and types, not how they are chunked
    nor the schema's metadata (a seed file rewritten by another writer keeps its batches)."""
    if table is None:
        return None
    import pyarrow as pa

    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return digest_bytes(sink.getvalue().to_pybytes())


def size_at(index: int, batch_size: int, num_records: int) -> int:
    """The rows batch `index` asks for, of `num_records` in batches of `batch_size`."""
    return max(0, min(batch_size, num_records - index * batch_size))


def plan_growth(facts: StageFacts, reasons: list[Reason], upstreams: Mapping[str, Upstream],
                total: int | None
                ) -> tuple[str, tuple[int, ...], list[Reason], int | None] | None:
    """(action, batches kept, reasons) when only `num_records` or the seed's rows changed
    (with, at most, a last run that did not finish or damaged batch files): action `grow`,
    `shrink` or `resume` (the seed changed, its row count not known before it is read).
    Action `run` (every batch runs, a reason saying why) when the stage's code reads
    `ctx.num_records`. None when growth does not apply. The last item is the batches' total
    (None when the seed's row count is not known before it is read)."""
    record = facts.record
    if facts.kind != "generate" or record is None or not record.batches or \
            record.status not in _DONE_OR_RESUMABLE:
        return None
    main = [r for r in reasons if r.step == "batches"]
    seed = _seed_of(facts)
    grows = [r for r in main if _is_growth(r, seed, facts)]
    if not grows or any(r not in grows and r.code not in _KEEPS for r in main):
        return None
    if all(r.code == "upstream_will_run" for r in grows) and \
            not any(r.code in _KEEPS for r in main):
        return None  # nothing of its own: it waits to see the seed stage's output
    batches = tuple(record.batches)
    if any(not b.key for b in batches) or record.num_records is None:
        return None  # written before batch keys: no batch can be told unchanged
    n = _num_records(facts, upstreams, seed)
    size = int(facts.spec["batch_size"])
    total = None if n is None else -(-n // size)
    reads = {r for b in batches for r in b.reads}
    seed_changed = any(r.code == "input_changed" for r in grows)
    if "seed" in reads and not seed_changed and any(r.code == "upstream_will_run" for r in grows):
        return None  # it reads its whole seed, which is not known yet: decided again then
    if ("num_records" in reads and (n is None or n != record.num_records)) or \
            ("seed" in reads and seed_changed):
        what = "ctx.num_records" if "num_records" in reads and \
            (n is None or n != record.num_records) else "its whole seed (through ctx.inputs)"
        return "run", (), [_reads_reason(r, what) if r in grows else r for r in reasons], total
    seeded = facts.spec.get("seed") is not None
    keep = tuple(b.index for b in batches if b.file not in facts.damaged and (
        n is None or size_at(b.index, size, n) == size_at(b.index, size, record.num_records)))
    action = "resume" if n is None or n == record.num_records else \
        "grow" if n > record.num_records else "shrink"
    note = _note(len(keep), total, seeded, record.num_records, n)
    detail = {"growth": action, "batches_kept": len(keep), "batches_total": total,
              "seed_checked": seeded}
    return action, keep, [replace(r, message=f"{r.message} ({note})",
                                  detail={**r.detail, **detail}) if r in grows else r
                          for r in reasons], total


def _note(kept: int, total: int | None, seeded: bool, old: int, new: int | None) -> str:
    of = f" of {total}" if total is not None else ""
    if seeded:
        return (f"batches whose seed rows are unchanged are kept, up to {kept}{of}; "
                "their seed rows are compared as it runs")
    runs = (total or 0) - kept
    return f"{kept}{of} {'batch' if kept == 1 and not of else 'batches'} kept, " \
        f"{counted(runs, 'batch')} to run" if new is not None and new != old else \
        f"{kept}{of} batches kept"


def _reads_reason(r: Reason, what: str) -> Reason:
    return replace(r, message=f"{r.message}; the stage's code reads {what}, so every batch "
                   "runs again", detail={**r.detail, "reads": what})


def _is_growth(r: Reason, seed: tuple[str, Any] | None, facts: StageFacts) -> bool:
    if r.code == "spec_changed":
        return r.detail.get("key") == "num_records"
    if seed is None or r.code not in ("input_changed", "upstream_will_run"):
        return False
    kind, value = seed
    source = r.detail.get("input")
    if kind == "stage":
        return source == value
    return r.code == "input_changed" and isinstance(source, str) and \
        _seed_file(source, value, facts)


def _seed_of(facts: StageFacts) -> tuple[str, Any] | None:
    ref = facts.spec.get("seed")
    if not isinstance(ref, str):
        return None
    kind, _, value = ref.partition(":")
    return kind, value


def _seed_file(path: str, pattern: str, facts: StageFacts) -> bool:
    """Whether file input `path` is the seed's and no other input's."""
    from .globreach import Glob, Reach

    def reaches(glob: str) -> bool:
        return Glob(glob).reach(path, maybe_folder=False) in (Reach.MATCHES, Reach.HOLDS)

    others = [str(i).partition(":")[2] for i in facts.spec.get("inputs") or []
              if str(i).startswith("file:")]
    return reaches(pattern) and not any(reaches(o) for o in others)


def _num_records(facts: StageFacts, upstreams: Mapping[str, Upstream],
                 seed: tuple[str, Any] | None) -> int | None:
    n = facts.spec.get("num_records")
    if n is not None:
        return int(n)
    if seed is not None and seed[0] == "stage":
        up = upstreams.get(seed[1])
        return None if up is None else up.rows
    return None


def verify(keys_now: Mapping[int, str], kept: Sequence[Any]) -> list[int]:
    """The kept batches (BatchEntry) whose key is not the one they would have now."""
    return [b.index for b in kept if keys_now.get(b.index) != b.key]
