"""A run stage's command never runs stale bytecode of a project file, and libraries keep their
own bytecode (issue 14: run-stage start-up; buildtool/pycache.py).

Python trusts a timestamp-based `__pycache__` entry while the source's mtime in whole seconds
and its size match; each test here edits a module the command imports keeping its size and
putting its mtime back (os.utime), as an edit within the same second does, after Python wrote
that entry itself.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
import sys
import threading
from pathlib import Path

import pytest
from conftest import Project

from buildtool import pycache
from buildtool.kinds import command

TAG = sys.implementation.cache_tag
PY = sys.executable
BYTECODE_ON = {"PYTHONDONTWRITEBYTECODE": ""}


def flags(pyc: Path) -> int:
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


def edit_keeping_stats(path: Path, old: str, new: str) -> None:
    """Replace `old` by `new` (same length), then put the mtime back: what Python's timestamp
    check cannot tell from no edit."""
    assert len(old) == len(new)
    before = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def value_project(project: Project, run: str, code: str = "[code/run.py]") -> Path:
    """A run stage whose command writes `mod.VALUE` (mod: not listed under `code:`)."""
    project.write("code/mod.py", "VALUE = 1\n")
    project.write("code/run.py", "import sys\nsys.path.insert(0, 'code')\nimport mod\n"
                  "open(sys.argv[1], 'w').write(str(mod.VALUE))\n")
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          r:
            run: {run}
            code: {code}
            outputs: [value.txt]
        """)
    return project.root / "code" / "mod.py"


@pytest.mark.parametrize("bytecode", ["on", "off"])
def test_a_module_the_command_imports_runs_its_new_code(project: Project, bytecode: str) -> None:
    env = BYTECODE_ON if bytecode == "on" else {"PYTHONDONTWRITEBYTECODE": "1"}
    mod = value_project(project, f"{PY} code/run.py {{outputs}}")
    if bytecode == "off":  # an entry another run of the user's left
        py_compile.compile(str(mod), doraise=True)
    assert project.run(**env).code == 0
    pyc = project.root / "code" / "__pycache__" / f"mod.{TAG}.pyc"
    assert pyc.exists() == (bytecode == "on")
    assert (project.root / "value.txt").read_text() == "1"

    for n in (2, 3):  # twice: the entry the first rerun's Python wrote is safe too
        edit_keeping_stats(mod, f"VALUE = {n - 1}", f"VALUE = {n}")
        result = project.run("--force", "r", **env)
        assert result.code == 0, result.stderr
        assert (project.root / "value.txt").read_text() == str(n)


def test_a_stale_timestamp_entry_is_never_loaded_whoever_wrote_it(project: Project) -> None:
    """The entry is Python's own, written by the command of the last build (not listed
    anywhere dd-build reads), and then the user's py_compile rewrites it by timestamp."""
    mod = value_project(project, f"{PY} code/run.py {{outputs}}")
    assert project.run(**BYTECODE_ON).code == 0
    py_compile.compile(str(mod), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    edit_keeping_stats(mod, "VALUE = 1", "VALUE = 7")
    assert project.run("--force", "r", **BYTECODE_ON).code == 0
    assert (project.root / "value.txt").read_text() == "7"


def test_a_module_of_a_package_run_with_python_m(project: Project) -> None:
    project.write("pkg/__init__.py", "")
    project.write("pkg/main.py", "import sys\nfrom pkg import sub\n"
                  "open(sys.argv[1], 'w').write(sub.WORD * 1)\n")
    project.write("pkg/sub.py", "WORD = 'old'\n")
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          r:
            run: {PY} -m pkg.main {{outputs}}
            code: [pkg/main.py]
            outputs: [word.txt]
        """)
    assert project.run(**BYTECODE_ON).code == 0
    edit_keeping_stats(project.root / "pkg/sub.py", "'old'", "'new'")
    # The module run with -m is loaded through its bytecode entry too.
    edit_keeping_stats(project.root / "pkg/main.py", "* 1", "* 2")
    result = project.run("--force", "r", **BYTECODE_ON)
    assert result.code == 0, result.stderr
    assert (project.root / "word.txt").read_text() == "newnew"


def test_an_optimised_entry_of_python_O(project: Project) -> None:
    mod = value_project(project, f"{PY} -O code/run.py {{outputs}}")
    assert project.run(**BYTECODE_ON).code == 0
    assert (project.root / "code" / "__pycache__" / f"mod.{TAG}.opt-1.pyc").exists()
    edit_keeping_stats(mod, "VALUE = 1", "VALUE = 5")
    assert project.run("--force", "r", **BYTECODE_ON).code == 0
    assert (project.root / "value.txt").read_text() == "5"


def test_the_users_pycache_prefix_is_kept_and_its_entries_made_safe(project: Project,
                                                                     tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    env = {**BYTECODE_ON, "PYTHONPYCACHEPREFIX": str(prefix)}
    mod = value_project(project, f"{PY} code/run.py {{outputs}}")
    assert project.run(**env).code == 0
    mirrored = prefix / str(project.root.resolve() / "code").lstrip(os.sep) / f"mod.{TAG}.pyc"
    assert mirrored.exists()  # the command used the user's prefix
    assert not (project.root / "code" / "__pycache__").exists()
    edit_keeping_stats(mod, "VALUE = 1", "VALUE = 4")
    assert project.run("--force", "r", **env).code == 0
    assert (project.root / "value.txt").read_text() == "4"


def test_a_stale_entry_of_a_source_that_no_longer_compiles_is_not_run(project: Project) -> None:
    mod = value_project(project, f"{PY} code/run.py {{outputs}}")
    assert project.run(**BYTECODE_ON).code == 0
    edit_keeping_stats(mod, "VALUE = 1", "VALUE = (")
    result = project.run("--force", "r", **BYTECODE_ON)
    assert result.code == 1
    assert "SyntaxError" in (project.artifacts / "r" / "log.txt").read_text()


# ---------------------------------------------------------------- libraries are left alone


def test_libraries_keep_their_own_bytecode(project: Project, tmp_path: Path) -> None:
    """No pycache prefix of dd-build's own: a library outside the project (here on PYTHONPATH)
    and one in a virtual environment inside it load from their timestamp-based entries,
    which stay exactly as they were."""
    outside = tmp_path / "lib" / "outlib.py"
    venv_lib = project.root / "venv" / "lib" / "inlib.py"
    for path in (outside, venv_lib):
        path.parent.mkdir(parents=True)
        path.write_text("X = 1\n")
        py_compile.compile(str(path), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    (project.root / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    project.write("code/run.py", "import sys, outlib, inlib\n"
                  "open(sys.argv[1], 'w').write(repr(sys.pycache_prefix) + ' '\n"
                  "    + str(outlib.__cached__ is not None and inlib.__cached__ is not None))\n")
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          r:
            run: {PY} code/run.py {{outputs}}
            code: [code/run.py]
            outputs: [out.txt]
        """)
    pycs = [Path(importlib.util.cache_from_source(str(p))) for p in (outside, venv_lib)]
    before = [p.read_bytes() for p in pycs]
    path = os.pathsep.join([project.env()["PYTHONPATH"], str(outside.parent),
                            str(venv_lib.parent)])
    result = project.run(**BYTECODE_ON, PYTHONPATH=path)
    assert result.code == 0, result.stderr
    assert (project.root / "out.txt").read_text() == "None True"
    assert [p.read_bytes() for p in pycs] == before
    assert all(flags(p) == 0 for p in pycs)  # still timestamp-based


# ---------------------------------------------------------------- pycache.prepare itself


def make_module(folder: Path, name: str = "m", text: str = "A = 1\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(text)
    return path


def test_prepare_rewrites_or_removes_every_unchecked_entry(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    src = make_module(root / "code")
    cache = root / "code" / "__pycache__"
    mode = py_compile.PycInvalidationMode
    py_compile.compile(str(src), doraise=True, invalidation_mode=mode.TIMESTAMP)
    ours = cache / f"m.{TAG}.pyc"
    other = cache / "m.otherpython-99.pyc"  # another interpreter's, by timestamp
    shutil.copy(ours, other)
    unchecked = make_module(root / "code", "u")
    py_compile.compile(str(unchecked), doraise=True, invalidation_mode=mode.UNCHECKED_HASH)
    torn = cache / f"t.{TAG}.pyc"
    make_module(root / "code", "t")
    torn.write_bytes(b"\x00\x01")
    checked = make_module(root / "code", "c")
    py_compile.compile(str(checked), doraise=True, invalidation_mode=mode.CHECKED_HASH)
    checked_bytes = (cache / f"c.{TAG}.pyc").read_bytes()
    orphan = cache / f"gone.{TAG}.pyc"  # no source: Python never loads it from here
    orphan.write_bytes(b"junk")

    assert pycache.prepare(root, root / "artifacts", {}) is True

    assert flags(ours) == 0b11 and flags(cache / f"u.{TAG}.pyc") == 0b11
    assert flags(torn) == 0b11
    assert not other.exists()
    assert (cache / f"c.{TAG}.pyc").read_bytes() == checked_bytes
    assert orphan.read_bytes() == b"junk"
    # With bytecode writing off, an unchecked entry goes instead.
    py_compile.compile(str(src), doraise=True, invalidation_mode=mode.TIMESTAMP)
    assert pycache.prepare(root, root / "artifacts", {"PYTHONDONTWRITEBYTECODE": "1"})
    assert not ours.exists() and (cache / f"c.{TAG}.pyc").exists()


def test_prepare_skips_hidden_folders_environments_and_the_artifacts(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    skipped = [root / ".hidden", root / "env" / "lib" / "site-packages" / "p",
               root / "artifacts" / "w", root / "node_modules" / "x"]
    (root / "env").mkdir(parents=True)
    (root / "env" / "pyvenv.cfg").write_text("")
    kept = []
    for folder in [*skipped, root / "src" / "pkg"]:
        src = make_module(folder)
        py_compile.compile(str(src), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
        kept.append(Path(importlib.util.cache_from_source(str(src))))
    linked = root / "linked"
    linked.symlink_to(root / "src")  # the same folder again: not walked twice

    assert pycache.prepare(root, root / "artifacts", {})
    assert [flags(p) for p in kept] == [0, 0, 0, 0, 0b11]


def test_an_entry_that_cannot_be_made_safe_gives_the_command_a_fresh_prefix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    src = make_module(root)
    py_compile.compile(str(src), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(py_compile, "compile", refuse)
    monkeypatch.setattr(pycache.os, "unlink", refuse)
    assert pycache.prepare(root, root / "artifacts", {}) is False

    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    workflow = type("W", (), {"project_dir": root, "artifacts": "artifacts"})()
    with command._command_env(workflow) as env:  # type: ignore[arg-type]
        fresh = Path(env["PYTHONPYCACHEPREFIX"])
        assert fresh.is_dir() and not any(fresh.iterdir())
    assert not fresh.exists()


def test_builds_preparing_the_same_project_at_once_leave_only_safe_entries(
        tmp_path: Path) -> None:
    """Two builds (of two workflows of one project) prepare the same folders at once."""
    root = tmp_path / "proj"
    sources = [make_module(root / "code", f"m{i}") for i in range(20)]
    results: list[bool] = []

    def stale_then_prepare() -> None:
        for _ in range(5):
            for src in sources:
                try:
                    py_compile.compile(str(src), invalidation_mode=py_compile.
                                       PycInvalidationMode.TIMESTAMP)
                except OSError:  # the other thread's rename won
                    pass
            results.append(pycache.prepare(root, root / "artifacts", {}))

    threads = [threading.Thread(target=stale_then_prepare) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 10
    assert pycache.prepare(root, root / "artifacts", {})
    cache = root / "code" / "__pycache__"
    assert all(flags(p) == 0b11 for p in cache.glob("*.pyc"))


def test_bytecode_a_command_writes_is_no_input_of_any_stage(project: Project) -> None:
    """The command's Python writes `__pycache__` entries into the project, as by hand: a glob
    under `code:` or `inputs:` does not match them (as a folder input never held them), so the
    next build finds every stage up to date, with no warning that the command changed a file."""
    project.write("scripts/helper.py", "X = 1\n")
    project.write("scripts/run.py", "import sys\nsys.path.insert(0, 'scripts')\nimport helper\n"
                  "open(sys.argv[1], 'w').write(str(helper.X))\n")
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          r:
            run: {PY} scripts/run.py {{outputs}}
            code: ["scripts/**"]
            outputs: [out.txt]
          s:
            run: {PY} scripts/run.py {{outputs}}
            inputs: ["scripts/**"]
            outputs: [out2.txt]
        """)
    first = project.run(**BYTECODE_ON)
    assert first.code == 0, first.stderr
    assert (project.root / "scripts" / "__pycache__").is_dir()
    assert "warning" not in first.stderr
    for _ in range(2):  # and once more after the entries were made checked-hash
        again = project.run("--json", **BYTECODE_ON)
        assert again.code == 0, again.stderr
        assert [s["action"] for s in again.json()["stages"]] == ["up_to_date", "up_to_date"]


def test_a_glob_that_names_pycache_still_matches_it(tmp_path: Path) -> None:
    from buildtool.fingerprint import expand_glob

    make_module(tmp_path / "lib")
    py_compile.compile(str(tmp_path / "lib" / "m.py"), doraise=True)
    assert expand_glob(tmp_path, "lib/**") == ["lib/m.py"]
    assert expand_glob(tmp_path, "lib/__pycache__/*") == [f"lib/__pycache__/m.{TAG}.pyc"]
