"""What a compiled workflow depends on (loadfacts.py, compiled.py), checked one fact at a time
through the Python side: every recorded answer that changes is a miss; a racy file (changed
within the last seconds, so a rewrite in the same timestamp tick keeps its stat) is compared
by content; the artifacts line is read right or not at all.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import CHAIN, STAGE_CODE

from buildtool import compiled
from buildtool.fingerprint import module_file
from buildtool.loadfacts import RACY_NS, LoadFacts, digest, signature
from buildtool.workflowrefs import LoadContext, _module_file


def _project(root: Path, workflowfile: str = CHAIN) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "stages.py").write_text(STAGE_CODE)
    (root / "Workflowfile").write_text(workflowfile)
    (root / "artifacts").mkdir()
    return root / "Workflowfile"


class Spy:
    """Counts the full readings `compiled.load` makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = compiled._compile

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(compiled, "_compile", counted)

    def misses(self, path: Path) -> int:
        before = self.calls
        compiled.load(path, "Workflowfile")
        return self.calls - before


def _entry(path: Path) -> Path:
    (entry,) = (path.parent / "artifacts" / compiled.FOLDER).glob("*.bin")
    return entry


def _rewrite_header(path: Path, change: Any) -> None:
    """Store the entry again with `change(header)` as its header."""
    entry = _entry(path)
    header, payload = compiled._read(entry) or (None, b"")
    assert header is not None
    entry.write_bytes(compiled._encode_entry(change(header), payload))


def test_a_second_load_is_a_hit_and_equal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    spy = Spy(monkeypatch)
    path = _project(tmp_path)
    first = compiled.load(path, "Workflowfile")
    assert spy.calls == 1
    second = compiled.load(path, "Workflowfile")
    assert spy.calls == 1
    assert repr(second) == repr(first) and second.graph.order == first.graph.order
    assert second.stages["c"].location("inputs") == first.stages["c"].location("inputs")


@pytest.mark.parametrize("fact", ["kind", "read", "module", "code"])
def test_each_recorded_answer_that_differs_is_a_miss(tmp_path: Path, fact: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    path = _project(tmp_path, CHAIN.replace("transform: code/stages.py:join",
                                            "transform: mods.stages:join"))
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "stages.py").write_text(STAGE_CODE)
    assert spy.misses(path) == 1 and spy.misses(path) == 0
    header = compiled._read(_entry(path))
    assert header is not None
    kinds, reads, modules, code = (dict(header[0][5]), header[0][6], dict(header[0][7]),
                                   header[0][4])
    assert kinds["mods/stages/__init__.py"] == 0 and kinds["mods/stages.py"] == 1
    assert {r[0] for r in reads} == {"code/stages.py", "mods/stages.py"}
    assert modules == {"mods": False}
    assert any(origin.endswith("workflowfile.py") for origin, _ in code)
    if fact == "kind":
        _rewrite_header(path, lambda h: h[:5] + (((h[5][0][0], 2),) + h[5][1:],) + h[6:])
    elif fact == "read":
        def older(h: tuple[Any, ...]) -> tuple[Any, ...]:
            rel, sig, sha, racy = h[6][0]
            return h[:6] + (((rel, sig[:3] + (sig[3] - 1,) + sig[4:], sha, racy),)
                            + h[6][1:],) + h[7:]
        _rewrite_header(path, older)
    elif fact == "code":
        _rewrite_header(path, lambda h: h[:4] + (((h[4][0][0], (0, 0, 0, 0, 0)),)
                                                 + h[4][1:],) + h[5:])
    else:  # a module of that name imported meanwhile: importing it finds that one first
        monkeypatch.setitem(sys.modules, "mods", types.ModuleType("mods"))
    assert spy.misses(path) == 1
    if fact == "module":  # trusted now: nothing to check
        assert dict((compiled._read(_entry(path)) or ((),))[0][7]) == {"mods": True}


def test_a_settled_file_is_trusted_by_its_stat_and_a_racy_one_by_its_content(
        tmp_path: Path) -> None:
    text = b"def f(ctx): ...\n"
    file = tmp_path / "f.py"
    file.write_bytes(text)
    sig, sha = signature(os.stat(file)), digest(text)
    # settled: the stat alone decides (a different digest is not even looked at)
    assert compiled._check_reads(tmp_path, (("f.py", sig, sha, False),)) == \
        (("f.py", sig, sha, False),)
    assert compiled._check_reads(tmp_path, (("f.py", sig, b"other", False),)) is not None
    # racy: the content decides; a matching one stays racy while its stat is recent
    assert compiled._check_reads(tmp_path, (("f.py", sig, b"other", True),)) is None
    assert compiled._check_reads(tmp_path, (("f.py", sig, sha, True),)) == \
        (("f.py", sig, sha, True),)
    # any other stat, or no file: a miss
    moved = sig[:3] + (sig[3] + 1,) + sig[4:]
    assert compiled._check_reads(tmp_path, (("f.py", moved, sha, False),)) is None
    file.unlink()
    assert compiled._check_reads(tmp_path, (("f.py", sig, sha, False),)) is None


def test_a_file_read_within_the_racy_window_is_marked_and_settles(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _project(tmp_path)
    compiled.load(path, "Workflowfile")
    header = compiled._read(_entry(path))
    assert header is not None
    ((rel, sig, sha, racy),) = header[0][6]
    assert racy  # written a moment ago
    # seconds later (the clock moved on): the content is compared once, and the entry
    # rewritten with the file settled
    later = time.time_ns() + 2 * RACY_NS
    monkeypatch.setattr(compiled.time, "time_ns", lambda: later)
    compiled.load(path, "Workflowfile")
    header = compiled._read(_entry(path))
    assert header is not None and header[0][6] == ((rel, sig, sha, False),)


def test_an_unreadable_code_file_leaves_the_reading_unstored(tmp_path: Path) -> None:
    facts = LoadFacts(tmp_path)
    (tmp_path / "d.py").mkdir()
    assert facts.read_bytes("d.py") is None and not facts.complete


@pytest.mark.parametrize("layout", [("pkg/mod.py",), ("pkg/mod/__init__.py",),
                                    ("pkg/mod.py", "pkg/mod/__init__.py"), ("pkg/mod/x.py",),
                                    ()])
def test_module_files_are_found_as_fingerprint_finds_them(tmp_path: Path,
                                                          layout: tuple[str, ...]) -> None:
    for rel in layout:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    ctx = LoadContext("Workflowfile", project_dir=tmp_path, fs=LoadFacts(tmp_path))
    assert _module_file(ctx, "pkg.mod") == module_file(tmp_path, "pkg.mod")


@pytest.mark.parametrize("text, expected", [
    (b"workflow: w\nstages: {}\n", "artifacts"),
    (b"artifacts: out\n", "out"),
    (b"workflow: w\nartifacts: build/art  # where\n", "build/art"),
    (b"workflow: w\r\nartifacts: out\r\n", "out"),
    (b"\xef\xbb\xbfartifacts: out\n", "out"),
    (b"artifacts: 'out dir'\n", "out dir"),
    (b'artifacts: "out"\n', "out"),
    (b"artifacts2: x\nartifacts: y\n", "y"),
    (b"artifacts   : o#x\n", "o#x"),
    (b"stages:\n  artifacts:\n    run: x\n", "artifacts"),  # a stage called so: not the key
    (b"artifacts: &a out\n", None), (b"artifacts: *a\n", None), (b"artifacts:\n", None),
    (b"artifacts: [out]\n", None), (b"artifacts: {a: b}\n", None), (b"artifacts: |\n", None),
    (b'artifacts: "o\\tut"\n', None), (b"artifacts: a: b\n", None),
    (b"artifacts: !!str out\n", None), (b"artifacts: \xff\n", None),
])
def test_the_artifacts_line(text: bytes, expected: str | None) -> None:
    assert compiled.artifacts_as_written(text) == expected


QUOTED_KEY = '"artifacts": out\n' + CHAIN


def test_an_artifacts_folder_named_in_a_way_not_read_is_not_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The line is not read (a quoted key): the default folder is looked in, and nothing is
    stored there, nor in the folder the Workflowfile names."""
    spy = Spy(monkeypatch)
    path = _project(tmp_path, QUOTED_KEY)
    (tmp_path / "out").mkdir()
    workflow = compiled.load(path, "Workflowfile")
    assert workflow.artifacts == "out"
    assert spy.misses(path) == 1
    assert not (tmp_path / "artifacts" / compiled.FOLDER).exists()
    assert not (tmp_path / "out" / compiled.FOLDER).exists()


def test_a_dry_run_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    path = _project(tmp_path)
    compiled.load(path, "Workflowfile", store=False)
    assert not (tmp_path / "artifacts" / compiled.FOLDER).exists()
    assert spy.misses(path) == 1 and spy.misses(path) == 0
