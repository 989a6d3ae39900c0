"""The probe's cheaper looks see what the plain ones see.

- Batch files stat'ed by name in their open folder (probe._stat_by_name), or by their path
  from the open artifacts folder, report exactly the files the stat of each full path reports, over generated damage: files deleted, rewritten,
  touched, replaced by a folder or a symlink, folders removed, replaced by a file or a symlink,
  names with odd characters, records listing files in several folders.
- One probe of many stages stats a file they share once and reads it once when its stats
  moved; the facts are those of probing each stage on its own, whatever happened to the file.
- Through the CLI: a batches folder that is gone or replaced is noticed, with and without the
  planning index.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import Project, reason_codes
from test_nbindex_cli import plan_both, stage_of

from buildtool import probe as probe_module
from buildtool.compiled import load
from buildtool.external import ExternalCode
from buildtool.records import BatchEntry, PlainBatches

NAMES = ["batch-000000.parquet", "b 1.parquet", "é.parquet", "x:y.parquet", "-dash", ".hidden"]
# Where a record may say a batch lies, relative to the artifacts folder (an absolute path or
# one through `..` only in a record edited by hand: looked at as before all the same).
FOLDERS = ["s1/batches", "s1/batches", "s2/batches", "s1", "s1/deep/er", "s1/../s2", ""]


def _batches(root: Path, rng: random.Random) -> list[BatchEntry]:
    entries = []
    for index in range(rng.randint(1, 12)):
        folder = rng.choice(FOLDERS + ["/abs"])
        name = f"{index}-{rng.choice(NAMES)}"
        path = root / folder.lstrip("/") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(rng.randint(0, 40)))
        st = path.stat()
        file = f"{folder}/{name}" if folder else name  # "/abs/..." is no file from "/"
        entries.append(BatchEntry(index, file, 1, st.st_size, st.st_mtime_ns, "sha256:x"))
    return entries


def _damage(root: Path, entries: list[BatchEntry], rng: random.Random) -> None:
    for _ in range(rng.randint(0, 4)):
        entry = rng.choice(entries)
        path = root / entry.file
        how = rng.choice(["delete", "rewrite", "grow", "touch", "folder", "link", "rmdir",
                          "dir-file", "dir-link", "nothing"])
        if how in ("rmdir", "dir-file", "dir-link"):
            folder = path.parent
            if folder.is_dir() and not folder.is_symlink() and folder != root:
                shutil.rmtree(folder)
                if how == "dir-file":
                    folder.write_text("a file now\n")
                elif how == "dir-link":
                    other = root / "elsewhere"
                    other.mkdir(exist_ok=True)
                    (other / path.name).write_bytes(b"other")
                    folder.symlink_to(other)
            continue
        if not path.is_file() or path.is_symlink():
            continue
        if how == "delete":
            path.unlink()
        elif how in ("rewrite", "grow"):
            st = path.stat()
            path.write_bytes(os.urandom(st.st_size + (how == "grow")))
        elif how == "touch":
            os.utime(path, ns=(1, 10**18 + rng.randint(0, 10**9)))
        elif how == "folder":
            path.unlink()
            path.mkdir()
        elif how == "link":
            target = root / f"target-{rng.randint(0, 10**6)}"
            target.write_bytes(os.urandom(5))
            path.unlink()
            path.symlink_to(target)


def _seen(found: list[tuple[str, os.stat_result | None]]) -> list[Any]:
    return [(f, None if st is None else (st.st_size, st.st_mtime_ns)) for f, st in found]


def _by_full_path(root: str, record: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    with monkeypatch.context() as m:
        m.setattr(probe_module, "_DIR_FD", False)
        return _seen(probe_module._stat_record(root, record))


@pytest.mark.skipif(not probe_module._DIR_FD, reason="no stat relative to an open folder here")
@pytest.mark.parametrize("seed", range(60))
def test_stats_by_name_are_the_stats_of_the_full_paths(tmp_path: Path, seed: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    root = tmp_path / "wf"
    entries = _batches(root, rng)
    _damage(root, entries, rng)
    plain = PlainBatches.of(entries) if rng.random() < 0.5 else tuple(entries)
    record = SimpleNamespace(batches=plain)
    top = str(root) + os.sep
    by_name = _seen(probe_module._stat_by_name(top, record))  # type: ignore[arg-type]
    assert by_name == _by_full_path(top, record, monkeypatch)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with monkeypatch.context() as m:
            m.setattr(probe_module, "_BY_NAME_FROM", 10**9)  # every record by its path from fd
            from_root = _seen(probe_module._stat_record(top, record, fd))  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert from_root == by_name
    where = {e.file: Path(top + e.file) for e in entries}  # joined as text, as a record is
    intact = [e.file for e in entries
              if where[e.file].is_file() and where[e.file].stat().st_size == e.size
              and where[e.file].stat().st_mtime_ns == e.mtime_ns]
    assert sorted(set(e.file for e in entries) - {f for f, _ in by_name}) == sorted(intact)


CODE = "def make(ctx):\n    return [{'a': 1}]\n"


def _shared_project(root: Path, stages: int) -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "gen.py").write_text(CODE)
    (root / "code" / "helper.py").write_text("X = 1\n")
    (root / "pkg").mkdir(exist_ok=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "mod.py").write_text(CODE)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "in.txt").write_text("in\n")
    body = "".join(f"  s{i}:\n    generate: {('code/gen.py:make', 'pkg.mod:make')[i % 2]}\n"
                   f"    num_records: 1\n"
                   f"    inputs: [data/in.txt, data/*.txt]\n    code: [code/*.py]\n"
                   for i in range(stages))
    (root / "Workflowfile").write_text(f"workflow: w\nstages:\n{body}")
    return root / "Workflowfile"


def _alone(workflow: Any) -> dict[str, Any]:
    """Each stage probed on its own: nothing shared between stages."""
    return {name: probe_module.probe_stage(workflow, stage, ExternalCode(workflow.project_dir))
            for name, stage in workflow.stages.items()}


@pytest.mark.parametrize("change", ["none", "touch", "edit", "grow", "delete-input"])
def test_one_probe_looks_at_a_shared_file_once_and_sees_what_each_stage_would(
        project: Project, change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _shared_project(project.root, 12)
    assert project.run("-q").code == 0
    workflow = load(path, "Workflowfile", store=False)  # read before the change: validation
    names = list(workflow.stages)  # at load would refuse a missing input before any probe
    target = {"touch": "code/gen.py", "edit": "code/gen.py", "grow": "data/in.txt",
              "delete-input": "data/in.txt"}.get(change)
    if target is not None:
        file = project.root / target
        if change == "touch":
            os.utime(file, ns=(1, file.stat().st_mtime_ns + 10**9))
        elif change == "edit":
            st = file.stat()
            file.write_text(CODE.replace("'a'", "'b'"))
            os.utime(file, ns=(1, st.st_mtime_ns + 1))
        elif change == "grow":
            file.write_text("in, and more\n")
        else:
            file.unlink()
    if change == "delete-input":
        with pytest.raises(Exception) as shared:
            probe_module.probe(workflow, names)
        with pytest.raises(Exception) as alone:
            _alone(workflow)
        assert str(shared.value) == str(alone.value) and "data/in.txt" in str(shared.value)
        return
    reads: list[str] = []
    real = probe_module.digest_file

    def counted(p: Path) -> str:
        reads.append(str(p))
        return real(p)

    monkeypatch.setattr(probe_module, "digest_file", counted)
    stats: list[str] = []
    real_stat = os.stat

    def counted_stat(p: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(str(p))
        return real_stat(p, *args, **kwargs)

    monkeypatch.setattr(probe_module.os, "stat", counted_stat)
    shared = probe_module.probe(workflow, names)
    # once for its state, and as its path or glob is expanded: not once per stage
    assert stats.count(str(project.root / "code" / "gen.py")) <= 4 < len(names)
    assert stats.count(str(project.root / "data" / "in.txt")) <= 4 < len(names)
    assert len(reads) == len(set(reads)) == (0 if change == "none" else 1)
    monkeypatch.setattr(probe_module.os, "stat", real_stat)
    assert shared == _alone(workflow)
    moved = {f.stats_moved for f in shared.values()}
    assert moved == {change != "none"}


@pytest.fixture
def built(project: Project) -> Project:
    assert project.run().code == 0
    return project


@pytest.mark.parametrize("how", ["gone", "file", "empty"])
def test_a_batches_folder_gone_or_replaced_is_noticed(built: Project, how: str) -> None:
    first = built.artifacts / built.record("b")["batches"][0]["file"]
    folder = first.parent
    assert len(built.record("b")["batches"]) >= probe_module._BY_NAME_FROM
    shutil.rmtree(folder)
    if how == "file":
        folder.write_text("not a folder\n")
    elif how == "empty":
        folder.mkdir()
    doc, _ = plan_both(built)
    b = stage_of(doc, "b")
    assert b["action"] == "resume" and reason_codes(b) == ["output_missing"] * 6
    if how == "file":  # the build cannot make the folder there: not the probe's question
        return
    result = built.run("-q")
    assert result.code == 0, result.stderr
    assert {s["action"] for s in plan_both(built)[0]["stages"]} == {"up_to_date"}


def test_callables_outside_the_project_are_found_for_every_stage(tmp_path: Path) -> None:
    """The probe remembers only that callables name no code outside the project: a module
    outside it is looked up for each stage, with what that stage's record knows."""
    path = _shared_project(tmp_path, 2)
    workflow = load(path, "Workflowfile", store=False)
    where = probe_module._Where(workflow, None)
    refs = ("textwrap:dedent", "code/gen.py:make")
    first = where.outside(refs, {})
    assert first and first == ExternalCode(workflow.project_dir).states(refs, {})
    assert where.outside(refs, {}) == first
    assert where.outside(("pkg.mod:make", "code/gen.py:make"), {}) == {}
    assert where.outside(("pkg.mod:make", "code/gen.py:make"), first) == {}


@pytest.mark.parametrize("seed", range(10))
def test_threads_and_one_thread_see_the_same_batch_files(tmp_path: Path, seed: int,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    rng = random.Random(500 + seed)
    root = tmp_path / "wf"
    made = [_batches(root, rng) for _ in range(rng.randint(2, 8))]
    for entries in made:
        _damage(root, entries, rng)
    records: list[Any] = [SimpleNamespace(batches=PlainBatches.of(e)) for e in made]
    records.insert(rng.randint(0, len(records)), None)  # a stage never built
    top = str(root) + os.sep
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        one = [_seen(f) for f in probe_module._stat_batches(top, records, fd)]
    finally:
        os.close(fd)
    monkeypatch.setattr(probe_module, "_THREADED_FROM", 1)
    monkeypatch.setattr(probe_module, "_THREADS", 3)
    monkeypatch.setattr(probe_module.os, "cpu_count", lambda: 4)
    assert [_seen(f) for f in probe_module._stat_batches(top, records)] == one
