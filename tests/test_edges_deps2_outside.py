"""Modules outside the project that project stage code imports are discovered too, and
fingerprinted as a `package.module:fn` callable is: an installed distribution by name and
version, anything else by a digest of its top-level package's files. Planning finds them
again without importing them; the standard library is not recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import REPO, Project, find_reason, reason_codes

from buildtool.external import ExternalCode
from buildtool.fingerprint import FileState

FLOW = """
workflow: demo
stages:
  p:
    generate: stages/p.py:rows
    num_records: 2
"""

STAGE = '''
import json

from mylib.consts import V


def rows(ctx):
    return [{"v": json.dumps(V)} for _ in range(ctx.size)]
'''


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    folder = tmp_path / "lib"  # beside the project folder, not in it
    (folder / "mylib").mkdir(parents=True)
    marker = folder / "mylib-was-imported"
    (folder / "mylib" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (folder / "mylib" / "consts.py").write_text("V = 1\n")
    return folder


def _env(lib: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{lib}"}


def _values(project: Project) -> set[str]:
    return set(project.table("p").column("v").to_pylist())


def test_a_module_on_pythonpath_imported_by_stage_code(project: Project, lib: Path) -> None:
    project.write("Workflowfile", FLOW)
    project.write("stages/p.py", STAGE)
    env = _env(lib)
    assert project.run(**env).code == 0
    found = project.record("p")["discovered"]
    assert list(found) == ["module:mylib"]  # json: the standard library is not recorded
    assert found["module:mylib"]["by"] == "stages/p.py"
    assert found["module:mylib"]["module"] == "mylib"
    assert str(lib) not in (project.artifacts / "p" / "stage.json").read_text()

    marker = lib / "mylib-was-imported"
    marker.unlink()
    assert project.run("--json", **env).stage("p")["action"] == "up_to_date"
    assert project.run("-n", **env).code == 0
    assert not marker.exists(), "planning imported the module"

    (lib / "mylib" / "consts.py").write_text("V = 2\n")
    explain = project.run("--explain", "-n", **env)
    assert "code: module mylib changed (imported by stages/p.py; outside the project, not " \
           "installed)" in explain.stdout, explain.stdout
    built = project.run("--json", **env)
    st = built.stage("p")
    assert reason_codes(st) == ["code_changed"] and st["result"] == "completed"
    assert find_reason(st, "code_changed")["imported_by"] == "stages/p.py"
    assert _values(project) == {"2"}
    assert project.run("--json", **env).stage("p")["action"] == "up_to_date"

    for f in sorted((lib / "mylib").iterdir()):
        f.unlink()
    (lib / "mylib").rmdir()
    explain = project.run("--explain", "-n", **env)
    assert "code: module mylib cannot be found (imported by stages/p.py" in explain.stdout
    failed = project.run(**env)
    assert failed.code == 1 and "Traceback" not in failed.stderr


def _dist_info(root: Path, name: str, version: str) -> Path:
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "top_level.txt").write_text("mylib\n")
    (info / "RECORD").write_text("mylib/__init__.py,,\nmylib/consts.py,,\n")
    return info


def test_an_installed_distribution_imported_lazily(project: Project, lib: Path) -> None:
    _dist_info(lib, "my_lib", "1.0")
    project.write("Workflowfile", FLOW)
    project.write("stages/p.py", "def rows(ctx):\n    from mylib.consts import V\n"
                                 "    return [{'v': str(V)} for _ in range(ctx.size)]\n")
    env = _env(lib)
    assert project.run(**env).code == 0
    found = project.record("p")["discovered"]
    assert list(found) == ["dist:my-lib"] and found["dist:my-lib"]["digest"] == "1.0"
    (lib / "mylib" / "consts.py").write_text("V = 2\n")  # installed: keyed by its version
    assert project.run("--json", **env).stage("p")["action"] == "up_to_date"

    info = lib / "my_lib-1.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my_lib\nVersion: 1.1\n")
    info.rename(lib / "my_lib-1.1.dist-info")
    explain = project.run("--explain", "-n", **env)
    assert "code: installed my-lib changed: 1.0 → 1.1 (imported by stages/p.py)" in \
        explain.stdout, explain.stdout
    st = project.run("--json", **env).stage("p")
    reason = find_reason(st, "code_changed")
    assert (reason["dist"], reason["old"], reason["new"]) == ("my-lib", "1.0", "1.1")
    assert _values(project) == {"2"}


def test_pyarrow_imported_by_stage_code_is_its_version(project: Project) -> None:
    project.write("Workflowfile", FLOW)
    project.write("stages/p.py", "import pyarrow as pa\nimport os.path\n\n"
                                 "def rows(ctx):\n    return pa.table({'v': ['x'] * ctx.size})\n")
    assert project.run().code == 0
    found = project.record("p")["discovered"]
    assert list(found) == ["dist:pyarrow"]
    assert found["dist:pyarrow"]["digest"] == pa.__version__
    assert project.run("--json").stage("p")["action"] == "up_to_date"


def test_an_installed_distribution_is_checked_stats_first(lib: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Planning reads no distribution metadata while its METADATA file's stats are as
    recorded (a reinstall rewrites it): the recorded state is reused as it is."""
    info = _dist_info(lib, "my_lib", "1.0")
    monkeypatch.syspath_prepend(str(lib))
    st = (info / "METADATA").stat()
    recorded = FileState("dist:my-lib", st.st_size, st.st_mtime_ns, "recorded")
    assert ExternalCode(tmp_path).imported("dist:my-lib", "mylib", recorded) is recorded

    os.utime(info / "METADATA", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    now = ExternalCode(tmp_path).imported("dist:my-lib", "mylib", recorded)
    assert (now.path, now.digest) == ("dist:my-lib", "1.0")
    assert (now.size, now.mtime_ns) == (st.st_size, st.st_mtime_ns + 10**9)
