"""`package.module:fn` outside the project has a code fingerprint, found without importing it.

On PYTHONPATH (or an editable install): a digest of its top-level package's files, keyed
`module:<package>`. In an installed distribution: its name and version, keyed `dist:<name>`.
Not found: `module:<name>` is `missing`, and the stage fails with a clear message.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest
from conftest import REPO, Project, find_reason, reason_codes
from test_plan import CODE, facts, record

from buildtool.external import ExternalCode, find_spec_without_import, owning_distribution
from buildtool.fingerprint import FileState
from buildtool.plan import Options, decide

FLOW = """
workflow: demo
stages:
  g:
    generate: {ref}
    num_records: 2
"""

GEN = '''
from {pkg}.text import word

def rows(ctx):
    return [{{"w": word()}} for _ in range(ctx.size)]
'''


def _lib(root: Path, pkg: str = "mylib", word: str = "one") -> Path:
    """A package `pkg` with gen.py importing text.py; importing it leaves a marker file."""
    folder = root / pkg
    folder.mkdir(parents=True, exist_ok=True)
    marker = root / f"{pkg}-was-imported"
    (folder / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (folder / "gen.py").write_text(GEN.format(pkg=pkg))
    (folder / "text.py").write_text(f"def word():\n    return {word!r}\n")
    return marker


def _dist_info(root: Path, name: str, version: str, top: str, editable: bool = False) -> Path:
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "top_level.txt").write_text(f"{top}\n")
    (info / "RECORD").write_text(f"{top}/__init__.py,,\n{top}/gen.py,,\n{top}/text.py,,\n")
    if editable:
        (info / "direct_url.json").write_text(
            '{"url": "file:///src/x", "dir_info": {"editable": true}}')
    return info


def _env(lib: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{lib}"}


def _words(project: Project) -> set[str]:
    return set(project.table("g").column("w").to_pylist())


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    folder = tmp_path / "lib"  # beside the project folder, not in it
    folder.mkdir()
    return folder


def test_module_on_pythonpath_is_fingerprinted_by_its_package_files(project: Project,
                                                                    lib: Path) -> None:
    marker = _lib(lib)
    project.write("Workflowfile", FLOW.format(ref="mylib.gen:rows"))
    env = _env(lib)
    assert project.run("-n", **env).code == 0
    assert project.run("status", **env).code == 0
    assert not marker.exists(), "planning imported the module"

    assert project.run(**env).code == 0
    record_text = (project.artifacts / "g" / "stage.json").read_text()
    assert str(lib) not in record_text  # no absolute path in a record
    code = project.record("g")["code"]
    assert list(code) == ["module:mylib"] and code["module:mylib"]["digest"].startswith("sha256:")
    assert project.run("--json", **env).stage("g")["action"] == "up_to_date"
    assert (project.artifacts / "g" / "stage.json").read_text() == record_text  # not rewritten

    (lib / "mylib" / "text.py").write_text("def word():\n    return 'two'\n")  # a sibling
    explain = project.run("--explain", "-n", **env)
    assert "code: module mylib changed (outside the project, not installed)" in explain.stdout
    built = project.run("--json", **env)
    st = built.stage("g")
    assert reason_codes(st) == ["code_changed"] and find_reason(st, "code_changed")["module"] \
        == "mylib"
    assert _words(project) == {"two"}


def test_single_file_module_on_pythonpath(project: Project, lib: Path) -> None:
    (lib / "onefile.py").write_text("def rows(ctx):\n    return [{'w': 'a'}] * ctx.size\n")
    project.write("Workflowfile", FLOW.format(ref="onefile:rows"))
    assert project.run(**_env(lib)).code == 0
    assert list(project.record("g")["code"]) == ["module:onefile"]
    (lib / "onefile.py").write_text("def rows(ctx):\n    return [{'w': 'b'}] * ctx.size\n")
    st = project.run("--json", **_env(lib)).stage("g")
    assert find_reason(st, "code_changed")["module"] == "onefile"
    assert _words(project) == {"b"}


def test_installed_distribution_is_keyed_by_name_and_version(project: Project,
                                                             lib: Path) -> None:
    _lib(lib, "fakedist")
    info = _dist_info(lib, "fakedist", "1.2.3", "fakedist")
    project.write("Workflowfile", FLOW.format(ref="fakedist.gen:rows"))
    env = _env(lib)
    assert project.run(**env).code == 0
    assert project.record("g")["code"] == {"dist:fakedist": {
        "path": "dist:fakedist", "size": 0, "mtime_ns": 0, "digest": "1.2.3"}}
    # installed code is keyed by its version: an edit in place is not seen (documented)
    (lib / "fakedist" / "text.py").write_text("def word():\n    return 'two'\n")
    assert project.run("--json", **env).stage("g")["action"] == "up_to_date"

    info.rename(lib / "fakedist-1.3.0.dist-info")
    (lib / "fakedist-1.3.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakedist\nVersion: 1.3.0\n")
    explain = project.run("--explain", "-n", **env)
    assert "code: installed fakedist changed: 1.2.3 → 1.3.0" in explain.stdout
    st = project.run("--json", **env).stage("g")
    reason = find_reason(st, "code_changed")
    assert (reason["dist"], reason["old"], reason["new"]) == ("fakedist", "1.2.3", "1.3.0")
    assert _words(project) == {"two"}


def test_distribution_named_otherwise_than_its_package(project: Project, lib: Path) -> None:
    _lib(lib, "fancylib")
    _dist_info(lib, "Fancy_Lib", "2.0", "fancylib")
    project.write("Workflowfile", FLOW.format(ref="fancylib.gen:rows"))
    assert project.run(**_env(lib)).code == 0
    assert list(project.record("g")["code"]) == ["dist:fancy-lib"]
    assert project.run("--json", **_env(lib)).stage("g")["action"] == "up_to_date"


def test_editable_install_is_fingerprinted_by_its_files(project: Project, lib: Path) -> None:
    _lib(lib, "fakedist")
    _dist_info(lib, "fakedist", "1.0", "fakedist", editable=True)
    project.write("Workflowfile", FLOW.format(ref="fakedist.gen:rows"))
    assert project.run(**_env(lib)).code == 0
    assert list(project.record("g")["code"]) == ["module:fakedist"]
    (lib / "fakedist" / "text.py").write_text("def word():\n    return 'edited'\n")
    st = project.run("--json", **_env(lib)).stage("g")
    assert find_reason(st, "code_changed")["module"] == "fakedist"
    assert _words(project) == {"edited"}


def test_module_not_found_fails_clearly_then_runs_once_found(project: Project,
                                                            lib: Path) -> None:
    project.write("Workflowfile", FLOW.format(ref="latelib.gen:rows"))
    env = _env(lib)
    failed = project.run(**env)
    assert failed.code == 1
    assert "latelib" in failed.stdout + failed.stderr and "Traceback" not in failed.stderr
    assert project.record("g")["code"]["module:latelib"]["digest"] == "missing"
    _lib(lib, "latelib")
    explain = project.run("--explain", "-n", **env)
    assert "code: module latelib (outside the project, not installed) is found now" in \
        explain.stdout
    assert project.run(**env).code == 0
    assert _words(project) == {"one"}
    # and gone again: a reason, then the stage fails with a clear message
    for f in (lib / "latelib").iterdir():
        f.unlink()
    (lib / "latelib").rmdir()
    explain = project.run("--explain", "-n", **env)
    assert "code: module latelib cannot be found" in explain.stdout
    assert project.run(**env).code == 1


# --------------------------------------------------------------------------------- units


def test_find_spec_without_import_runs_no_code(lib: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    marker = _lib(lib, "specpkg")
    monkeypatch.syspath_prepend(str(lib))
    spec = find_spec_without_import("specpkg.gen")
    assert spec is not None and spec.origin == str(lib / "specpkg" / "gen.py")
    assert not marker.exists() and "specpkg" not in sys.modules
    assert find_spec_without_import("specpkg.nosuch") is None
    assert find_spec_without_import("specpkg.gen.deeper") is None  # gen is not a package


def test_owning_distribution(lib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _lib(lib, "owned")
    _lib(lib, "loose")
    _dist_info(lib, "Owned_Dist", "3.1", "owned")
    monkeypatch.syspath_prepend(str(lib))
    dist = owning_distribution(str(lib / "owned" / "gen.py"), "owned")
    assert dist is not None and dist.version == "3.1"
    assert owning_distribution(str(lib / "loose" / "gen.py"), "loose") is None


def test_external_code_skips_project_modules_and_files(tmp_path: Path, lib: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _lib(lib, "inproj")  # also on sys.path, but the project's own package wins when code loads
    (tmp_path / "inproj").mkdir()
    (tmp_path / "inproj" / "__init__.py").write_text("")
    (tmp_path / "nsdir").mkdir()  # a module in a project folder without __init__.py
    (tmp_path / "nsdir" / "mod.py").write_text("")
    monkeypatch.syspath_prepend(str(lib))
    ext = ExternalCode(tmp_path)
    assert ext.states(("inproj.gen:rows", "nsdir.mod:rows", "code/x.py:rows", "not a ref"),
                      {}) == {}


def test_a_project_folder_without_init_does_not_hide_a_package(
        tmp_path: Path, lib: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain folder of the project named like a package is no package: Python imports the
    one on sys.path, and so its files are fingerprinted."""
    _lib(lib, "shadowed")
    (tmp_path / "shadowed").mkdir()
    monkeypatch.syspath_prepend(str(lib))
    assert list(ExternalCode(tmp_path).states(("shadowed.gen:rows",), {})) == ["module:shadowed"]


def test_external_module_stats_first(lib: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Same total size and newest mtime: the recorded digest is reused without reading."""
    _lib(lib, "statpkg")
    monkeypatch.syspath_prepend(str(lib))
    first = ExternalCode(tmp_path).states(("statpkg.gen:rows",), {})["module:statpkg"]
    fake = dataclasses.replace(first, digest="sha256:recorded")
    again = ExternalCode(tmp_path).states(("statpkg.gen:rows",), {"module:statpkg": fake})
    assert again["module:statpkg"] is fake


@pytest.mark.parametrize(("old", "new", "message", "detail"), [
    pytest.param("1.0", "1.1", "code: installed d changed: 1.0 → 1.1",
                 {"dist": "d", "old": "1.0", "new": "1.1"}, id="dist-version"),
    pytest.param(None, "1.0", "code: installed d 1.0 is new",
                 {"dist": "d", "old": None, "new": "1.0"}, id="dist-new"),
    pytest.param("1.0", None, "code: installed d 1.0 is no longer used",
                 {"dist": "d", "old": "1.0", "new": None}, id="dist-gone"),
])
def test_planner_dist_reasons(old: str | None, new: str | None, message: str,
                              detail: dict[str, object]) -> None:
    def code(version: str | None) -> dict[str, FileState]:
        return {**CODE, **({"dist:d": FileState("dist:d", 0, 0, version)} if version else {})}

    d = decide(facts(record(code=code(old)), code=code(new)), {}, Options())
    assert d.codes == ["code_changed"]
    assert d.reasons[0].message == message
    assert d.reasons[0].detail == detail
