"""`dd-build init` refuses, writing nothing, where a file stands where the project needs a
folder (`stages`) or a folder where it writes `.gitignore`; a `.gitignore` that is not UTF-8
gains the lines it lacks, its own bytes kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import Project, Result


def _init(cwd: Path, *args: str) -> Result:
    proc = subprocess.run([sys.executable, "-m", "buildtool", "init", *args], cwd=cwd,
                          env=Project(cwd).env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_a_file_named_stages_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "stages").write_text("notes\n")
    res = _init(tmp_path, ".")
    assert res.code == 2, res.stderr
    assert "stages" in res.stderr and "nothing written" in res.stderr
    assert _files(tmp_path) == ["stages"]
    # and once it is moved away, init works (no Workflowfile was left behind to refuse)
    (tmp_path / "stages").unlink()
    assert _init(tmp_path, ".").code == 0


def test_a_folder_named_gitignore_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "p" / ".gitignore").mkdir(parents=True)
    res = _init(tmp_path, "p")
    assert res.code == 2, res.stderr
    assert ".gitignore" in res.stderr and "nothing written" in res.stderr
    assert _files(tmp_path / "p") == [".gitignore"]


def test_a_gitignore_not_in_utf8_gains_the_lines_it_lacks(tmp_path: Path) -> None:
    old = "caf\xe9/\n".encode("latin-1")
    (tmp_path / ".gitignore").write_bytes(old)
    res = _init(tmp_path)
    assert res.code == 0, res.stderr
    data = (tmp_path / ".gitignore").read_bytes()
    assert data.startswith(old)
    assert b"/artifacts/\n" in data
