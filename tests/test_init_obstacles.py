"""`dd-build init` over every kind of thing that may already stand where it writes: it either
writes the whole project or refuses (exit 2) leaving the folder exactly as it was — never a
half-written project, never an internal error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Project

TARGETS = ["Workflowfile", "stages", "stages/topics.py", "stages/questions.py",
           "stages/summary.py", ".gitignore"]
KINDS = ["file", "folder", "dangling-symlink", "symlink-to-folder"]


def _place(root: Path, rel: str, kind: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        path.write_bytes(b"\xff\xfeold\n")  # not UTF-8 either
    elif kind == "folder":
        path.mkdir()
    elif kind == "dangling-symlink":
        os.symlink(root / "nowhere", path)
    else:
        (root / "elsewhere").mkdir(exist_ok=True)
        os.symlink(root / "elsewhere", path)


def _snapshot(root: Path) -> dict[str, bytes | str]:
    seen: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            seen[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else \
                "dir" if path.is_dir() else path.read_bytes()
    return seen


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", TARGETS)
def test_init_writes_all_or_nothing(tmp_path: Path, target: str, kind: str) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    _place(folder, target, kind)
    before = _snapshot(folder)
    result = Project(tmp_path).run("init", "proj")
    assert result.code in (0, 2), result.stderr
    if result.code == 2:
        assert _snapshot(folder) == before, result.stderr
    else:
        assert (folder / "Workflowfile").is_file()
        assert all((folder / "stages" / f).is_file() for f in
                   ("topics.py", "questions.py", "summary.py")), result.stderr
