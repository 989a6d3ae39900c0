"""Stages and the build cache (cache.py): what an entry holds, the probe's cache facts, a
restore, and a store.

The planner stays pure: `cache_hits` (the probe's part) looks entries up for the stages the
plan says must run because their trace changed, and hands them to the planner in
`Options.cached`; the planner turns a hit whose key is the stage's key now into a `restore`.
A null build never comes here: no stage of it wants the cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import (
    _ABSOLUTE,
    _PROJECT,
    _STAGE,
    Cache,
    CacheDamaged,
    CacheHit,
    cache_of,
    entry_name_reads,
    record_key,
    stage_key,
)
from .fingerprint import FileState, digest_file
from .fsutil import make_dirs_durably, make_durable
from .plan import RUNNING
from .records import Output, StageRecord, remove_leftovers, write_record

if TYPE_CHECKING:
    from .facts import StageFacts, Upstream
    from .model import Workflow
    from .plan import Decision, Options

# Reasons that say the stage's trace is not the recorded one: an entry of the trace it has
# now may exist (`overridden`: an input stage outputs a review, perhaps one built on before).
# (A deleted batch file, a killed run, --force: the trace is the recorded one, or the user
# asked for a run. An unreadable record, or one of another format: something is wrong with
# the stage's folder, so it runs, as before the cache.)
_TRACE_CHANGED = frozenset({"spec_changed", "code_changed", "input_changed", "no_record",
                            "overridden"})


def wants_cache(decision: Decision) -> bool:
    """Whether a stage the plan runs may be restored instead (pure)."""
    if decision.action not in RUNNING:
        return False
    codes = {r.code for r in decision.reasons}
    return "forced" not in codes and bool(codes & _TRACE_CHANGED)


def key_now(facts: StageFacts, upstreams: Mapping[str, Upstream]) -> str | None:
    """The stage's key with its inputs as they are now; None while an upstream is pending."""
    digests = {}
    for name, up in upstreams.items():
        if up.digest is None:
            return None
        digests[name] = up.digest
    return stage_key(facts.kind, facts.fingerprint, facts.code, facts.file_inputs, digests)


# ------------------------------------------------------------------ the probe's part

def cache_hits(workflow: Workflow, order: Sequence[str], facts: Mapping[str, StageFacts],
               upstreams: Mapping[str, Sequence[str]], options: Options,
               decisions: list[Decision]) -> tuple[Options, list[Decision]]:
    """Plan again with the cache's entries for the stages that want one, until no new one is
    found (a stage restored makes its dependants' keys known). Unchanged when none wants.
    A never-built stage whose key is that of an orphaned stage folder's record says so."""
    if not any(wants_cache(d) for d in decisions):
        return options, decisions
    options, decisions = _hits(workflow, order, facts, upstreams, options, decisions)
    if any(r.code == "no_record" for d in decisions for r in d.reasons):
        decisions = _renamed(workflow, facts, upstreams, decisions)
    return options, decisions


def _hits(workflow: Workflow, order: Sequence[str], facts: Mapping[str, StageFacts],
          upstreams: Mapping[str, Sequence[str]], options: Options,
          decisions: list[Decision]) -> tuple[Options, list[Decision]]:
    from .plan import plan, upstream_view

    cache = cache_of(workflow)
    if cache is None:
        return options, decisions
    hits: dict[str, CacheHit] = dict(options.cached)
    looked: set[tuple[str, str]] = set()
    while True:
        known = {d.stage: upstream_view(facts[d.stage], d) for d in decisions}
        found = False
        for d in decisions:
            if d.stage in hits or not wants_cache(d):
                continue
            hit = lookup(cache, workflow, facts[d.stage],
                         {u: known[u] for u in upstreams[d.stage]}, looked)
            if hit is not None:
                hits[d.stage] = hit
                found = True
        if not found:
            return options, decisions
        options = replace(options, cached=dict(hits))
        decisions = plan(list(order), facts, upstreams, options)


def _renamed(workflow: Workflow, facts: Mapping[str, StageFacts],
             upstreams: Mapping[str, Sequence[str]], decisions: list[Decision]
             ) -> list[Decision]:
    """`no_record` of a stage whose spec, code and inputs are those an orphaned stage folder
    (a stage no longer in the Workflowfile) was built from gets a note naming it."""
    from .artifacts import orphan_stages
    from .plan import upstream_view
    from .records import read_record

    orphans = {}
    for name in orphan_stages(workflow):
        record = read_record(workflow.stage_dir(name)).record
        if record is not None and record.status in ("completed", "completed_empty"):
            orphans[record_key(record)] = name
    if not orphans:
        return decisions
    known = {d.stage: upstream_view(facts[d.stage], d) for d in decisions}
    changed = []
    for d in decisions:
        key = key_now(facts[d.stage], {u: known[u] for u in upstreams[d.stage]})
        source = orphans.get(key) if key is not None else None
        if source is None:
            changed.append(d)
            continue
        line = (f"'{source}' (no longer in the Workflowfile) was built from this stage's "
                f"spec, code and inputs: renamed from it?")
        detail: dict[str, Any] = {"renamed_from": source}
        if d.restore is not None:
            line += " It is restored from the build cache."
        else:
            read = _name_read_note(workflow.stage_dir(source), source)
            if read is not None:
                line += read[0]
                detail["not_restored"] = read[1]
        reasons = tuple(replace(r, more=(*r.more, line), detail={**r.detail, **detail})
                        if r.code == "no_record" else r for r in d.reasons)
        changed.append(replace(d, reasons=reasons))
    return changed


def _name_read_note(folder: Path, source: str) -> tuple[str, str] | None:
    """Why the build of `source` (an orphaned stage folder) is not restored under another
    name, when its code read what depends on its name or folder (or may have): the words
    `status` adds, and the JSON detail's."""
    from .records import read_record

    record = read_record(folder).record
    if record is None:
        return None
    reads = entry_name_reads({"record": record.to_json()})
    if reads is None:
        return (" It was built by a dd-build that did not note whether its code read its name "
                "(ctx.stage_name), so it is built again, not restored.", "name_reads_unknown")
    if not reads:
        return None
    shown = ", ".join(f"ctx.{r}" for r in reads)
    return (f" Its code read {shown} (the stage's name or folder), so it is built again, not "
            "restored.", "name_read")


def _fits_name(entry: dict[str, Any], name: str, stage_rel: str) -> bool:
    """An entry built under another stage name, or in another stage folder, is used only when
    its code read neither (records.NAME_READS): its rows would say the old one. An entry that
    did not note what it read may have read both."""
    same_name, same_folder = entry.get("stage") == name, entry.get("stage_rel") == stage_rel
    if same_name and same_folder:
        return True
    reads = entry_name_reads(entry)
    if reads is None:
        return False
    if "stage_name" in reads and not same_name:
        return False
    return same_folder or not {"stage_output", "out_dir"} & set(reads)


def lookup(cache: Cache, workflow: Workflow, facts: StageFacts,
           upstreams: Mapping[str, Upstream], looked: set[tuple[str, str]] | None = None
           ) -> CacheHit | None:
    """The entry the stage can be restored from now, if any (never the trace it was last
    built from: that one is its record)."""
    key = key_now(facts, upstreams)
    if key is None or (looked is not None and (facts.name, key) in looked):
        return None
    if looked is not None:
        looked.add((facts.name, key))
    record = facts.record
    if record is not None and record.status in ("completed", "completed_empty") \
            and record_key(record) == key and _imports_as_built(workflow, _imports(record)):
        return None  # (when only an imported module changed, an entry of the key may fit)
    stage_rel = _stage_rel(workflow, facts.name)
    return cache.lookup(key, lambda entry: _fits_name(entry, facts.name, stage_rel) and
                        _imports_as_built(workflow, entry["record"].get("discovered") or {}))


def _imports(record: StageRecord) -> dict[str, Any]:
    return {k: d.to_json() for k, d in (record.discovered or {}).items()}


def _imports_as_built(workflow: Workflow, found: dict[str, Any]) -> bool:
    """Each module the entry's code imported has the digest it had then."""
    from .external import ExternalCode, is_external_key

    external: ExternalCode | None = None
    for key, dep in found.items():
        try:
            digest = str(dep["digest"])
            if is_external_key(key):
                external = external or ExternalCode(workflow.project_dir)
                state = FileState.from_json(dep)
                now = external.imported(key, dep.get("module"), state)
                if now.path != key or now.digest != digest:
                    return False
            elif digest_file(workflow.project_dir / key) != digest:
                return False
        except (OSError, KeyError, TypeError, ValueError):
            return False
    return True


# ------------------------------------------------------------------ store

def store(workflow: Workflow, record: StageRecord) -> str | None:
    """Keep a completed stage in the cache (links, mostly: cheap). Returns the entry's path;
    None when the cache is off or the record is not a completed build of the stage."""
    cache = cache_of(workflow)
    if cache is None or record.status not in ("completed", "completed_empty") \
            or record.output is None or record.output.kind == "override":
        return None
    stage_rel = _stage_rel(workflow, record.stage)
    files: dict[tuple[str, str], dict[str, Any]] = {}
    sources: list[tuple[str, str, bool]] = []
    root = workflow.artifacts_root
    for b in record.batches:
        where_path = b.file[len(record.stage) + 1:] if b.file.startswith(record.stage + "/") \
            else None
        if where_path is None:
            return None  # a record edited by hand: not kept
        files[(_STAGE, where_path)] = {"where": _STAGE, "path": where_path,
                                       "digest": b.digest, "size": b.size}
        sources.append((str(root / b.file), b.digest, True))
    outputs = [record.output] if record.output.kind != "batches" else []
    for out in outputs + list(record.steps.values()):
        for f in out.files:
            where, rel = _where(f.path, stage_rel)
            if (where, rel) in files:
                continue
            files[(where, rel)] = {"where": where, "path": rel, "digest": f.digest,
                                   "size": f.size}
            full = f.path if where == _ABSOLUTE else str(workflow.project_dir / f.path)
            sources.append((full, f.digest, where == _STAGE))
    entry = {"format": 1, "key": record_key(record), "stage": record.stage,
             "workflow": workflow.name, "kind": record.kind,
             "built_at": record.finished_at or time.time(), "stored_at": time.time(),
             "stage_rel": stage_rel, "record": record.to_json(), "files": list(files.values()),
             "size": sum(int(f["size"]) for f in files.values())}
    return cache.store(entry, sources)


def _stage_rel(workflow: Workflow, stage: str) -> str:
    return Path(os.path.relpath(workflow.stage_dir(stage), workflow.project_dir)).as_posix()


def _where(path: str, stage_rel: str) -> tuple[str, str]:
    if path.startswith(stage_rel + "/"):
        return _STAGE, path[len(stage_rel) + 1:]
    if os.path.isabs(path):
        return _ABSOLUTE, path
    return _PROJECT, path


# ------------------------------------------------------------------ restore

def restore(workflow: Workflow, hit: CacheHit, facts: StageFacts,
            consumed: Mapping[str, str]) -> StageRecord:
    """Put the entry's files in place and write the stage's record as the build that made
    them wrote it (under the stage's name now). CacheDamaged when an object is missing or
    not what its digest says: the entry is dropped, and nothing of the stage has changed
    (every object is checked first; the caller runs the stage).

    No record stands while the files are placed: the old one is removed first, and the
    restored one written last. A kill in between leaves a stage that was never built, as
    far as the next build can tell (never one that looks complete, nor a `running` record of
    the trace now, which a resume would run in full): the next build restores it again."""
    from .stagerun import StageRun

    cache = cache_of(workflow)
    assert cache is not None
    name = facts.name
    started = time.time()
    with cache.locked(exclusive=False):
        entry = cache.read_entry(Path(hit.entry))
        if entry is None or entry.get("key") != hit.key:
            cache.drop(hit.entry)
            raise CacheDamaged("its entry file is damaged or gone")
        try:
            cache.check_objects(entry)
        except CacheDamaged:
            cache.drop(hit.entry)
            cache.drop_damaged_objects(entry)
            raise
        built = StageRecord.from_json(entry["record"])
        stage = workflow.stages[name]
        run = StageRun(workflow, stage, facts, consumed, ())
        _clear_stage(run.dir)
        if stage.kind == "run":  # as before its command runs: no file of another build stays
            from .kinds.command import clear_outputs

            clear_outputs(workflow.project_dir, stage.outputs)
        if stage.kind == "datadesigner":  # its working files are another run's
            from .kinds.datadesigner import clear_working_folder

            clear_working_folder(run.dir)
        placed = _place_files(cache, workflow, name, entry)
        cache.touch(hit.entry)
    old_rel, new_rel = str(entry.get("stage_rel", "")), _stage_rel(workflow, name)
    record = _restored_record(run.record, built, placed, old_rel, new_rel, hit, started)
    write_record(run.dir, record)
    remove_leftovers(str(run.dir))
    return record


def _clear_stage(folder: Path) -> None:
    """The stage's record first (durably: a power loss must not bring it back beside the
    files placed after it), then every file of its earlier builds: batches, later steps'
    files, an override, old journals and temp files."""
    import contextlib
    import shutil

    from .records import record_path
    from .stagerun import BATCHES

    make_dirs_durably(folder)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(folder))
        make_durable([], [str(folder)])
    for sub in (BATCHES, "processed", "callback", "override"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    remove_leftovers(str(folder))


def _place_files(cache: Cache, workflow: Workflow, name: str, entry: dict[str, Any]
                 ) -> dict[tuple[str, str], FileState]:
    """Each file of the entry, in place; returns (where, path) -> its state now."""
    stage_dir = workflow.stage_dir(name)
    placed: dict[tuple[str, str], FileState] = {}
    made: list[str] = []
    for f in entry["files"]:
        where, rel, digest = str(f["where"]), str(f["path"]), str(f["digest"])
        if where == _STAGE:
            target = str(stage_dir / rel)
        elif where == _ABSOLUTE:
            target = rel
        else:
            target = str(workflow.project_dir / rel)
        cache.materialize(digest, target, linkable=where == _STAGE, checked=True)
        st = os.stat(target)
        placed[(where, rel)] = FileState(rel, st.st_size, st.st_mtime_ns, digest)
        made.append(target)
    if made:
        make_durable(made, sorted({os.path.dirname(p) for p in made}))
    return placed


def _restored_record(running: StageRecord, built: StageRecord,
                     placed: Mapping[tuple[str, str], FileState], old_rel: str, new_rel: str,
                     hit: CacheHit, started: float) -> StageRecord:
    name = running.stage
    batches = []
    for b in built.batches:
        rel = b.file[len(built.stage) + 1:]
        state = placed[(_STAGE, rel)]
        # every field as built (its key and reads: a growth after the restore keeps batches)
        batches.append(b._replace(file=f"{name}/{rel}", size=state.size,
                                  mtime_ns=state.mtime_ns))

    def moved(out: Output) -> Output:
        files = []
        for f in out.files:
            where, rel = _where(f.path, old_rel)
            state = placed[(where, rel)]
            path = f"{new_rel}/{rel}" if where == _STAGE else rel
            files.append(FileState(path, state.size, state.mtime_ns, f.digest))
        return replace(out, files=tuple(files))

    assert built.output is not None
    extra = {k: v for k, v in built.extra.items() if k not in ("override", "restored")}
    extra["restored"] = {"built_at": hit.built_at, "built_as": hit.built_as,
                         "entry": os.path.basename(hit.entry)}
    now = time.time()
    return replace(running, status=built.status, batches=tuple(batches),
                   batches_total=built.batches_total, num_records=built.num_records,
                   output=moved(built.output),
                   steps={k: moved(v) for k, v in built.steps.items()},
                   discovered=built.discovered, journal=None, started_at=started,
                   finished_at=now,
                   batches_run=0, error=None, extra=extra)


def cache_hit_now(workflow: Workflow, facts: StageFacts, decision: Decision,
                  upstreams: Mapping[str, Upstream], options: Options) -> Decision:
    """The decision again with the cache's entry for the stage's key now, when there is one
    (the executor's look, once an upstream the plan waited for has run)."""
    from .plan import decide

    cache = cache_of(workflow)
    hit = None if cache is None else lookup(cache, workflow, facts, upstreams)
    if hit is None:
        return decision
    return decide(facts, upstreams, replace(options, cached={**options.cached, facts.name: hit}))


# ------------------------------------------------------------------ reviews (overrides)

def keep_override(workflow: Workflow, record: StageRecord, source: str) -> None:
    """Keep the review just set on a stage (`dd-build override`) in the cache, so that
    `override --restore` can bring it back once it is released or lost."""
    cache = cache_of(workflow)
    if cache is None or record.output is None or record.output.kind != "override":
        return
    files = []
    sources = []
    for f in record.output.files:
        files.append({"where": "override", "path": os.path.basename(f.path),
                      "digest": f.digest, "size": f.size})
        sources.append((str(workflow.project_dir / f.path), f.digest, False))
    entry = {"format": 1, "key": f"override:{workflow.name}:{record.stage}",
             "stage": record.stage, "workflow": workflow.name, "source": source,
             "rows": record.output.rows, "built_at": time.time(), "stored_at": time.time(),
             "record": {}, "files": files}
    folder = cache.root / "overrides" / workflow.name / record.stage
    cache.store_in(folder, entry, sources)


def last_override(workflow: Workflow, stage: str) -> tuple[Cache, dict[str, Any]] | None:
    cache = cache_of(workflow)
    if cache is None:
        return None
    folder = cache.root / "overrides" / workflow.name / stage
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".json")]
    except OSError:
        return None
    kept = []  # by when each review was set (names made in one second sort at random)
    for name in names:
        entry = cache.read_entry(folder / name)
        if entry is not None and len(entry["files"]) == 1:
            kept.append((float(entry.get("built_at") or 0.0), name, entry))
    return (cache, max(kept, key=lambda k: (k[0], k[1]))[2]) if kept else None


def restore_override(workflow: Workflow, stage: str) -> tuple[StageRecord, dict[str, Any]]:
    """Set the last review kept for `stage` again, as `dd-build override` set it."""
    import tempfile

    from .artifacts import override_output
    from .errors import UsageError

    found = last_override(workflow, stage)
    if found is None:
        raise UsageError("has no review kept in the build cache to restore", stage=stage,
                         hint=f"`dd-build override {stage} FILE` sets one (and keeps it)")
    cache, entry = found
    f = entry["files"][0]
    with tempfile.TemporaryDirectory(prefix="dd-build-review-") as tmp:
        path = os.path.join(tmp, os.path.basename(str(f["path"])) or "data.parquet")
        with cache.locked(exclusive=False):
            try:
                cache.materialize(str(f["digest"]), path, linkable=False)
            except CacheDamaged as exc:
                raise UsageError(f"its kept review cannot be restored: {exc}", stage=stage,
                                 hint="set the review again with `dd-build override`") from None
        record = override_output(workflow, stage, Path(path), str(entry.get("source")))
    return record, entry
