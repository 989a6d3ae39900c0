"""`dd-build cache gc --max-size` requires a unit: a bare number (`10`, which would mean 10
bytes and empty the cache) exits 2 and removes nothing; `0` alone is allowed. Real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project


def _entries(proj: Project) -> list[Path]:
    return sorted((proj.root / "artifacts" / ".cache" / "entries").glob("*/*.json"))


@pytest.fixture
def built(project: Project) -> Project:
    result = project.run("-q")
    assert result.code == 0, result.stderr
    assert _entries(project)
    return project


@pytest.mark.parametrize("size", ["10", "1000000", "2.5", "10X", "inf", "nanGB", "-1MB"])
def test_a_size_without_a_unit_or_not_a_size_exits_2_and_removes_nothing(
        built: Project, size: str) -> None:
    before = _entries(built)
    for extra in ((), ("--json",)):
        result = built.run("cache", "gc", f"--max-size={size}", *extra)
        assert result.code == 2, (size, result.stdout, result.stderr)
        assert f"--max-size {size}" in result.stderr
        if extra:
            assert result.json()["ok"] is False
    assert _entries(built) == before


def test_a_bare_number_is_told_to_say_its_unit(built: Project) -> None:
    result = built.run("cache", "gc", "--max-size", "10")
    assert result.code == 2
    assert "unit" in result.stderr and "10GB" in result.stderr


@pytest.mark.parametrize("size", ["10GB", "500MB", "2GiB", "1.5mib", "4096 KB", "1TB"])
def test_sizes_with_a_unit_are_taken(built: Project, size: str) -> None:
    before = _entries(built)
    result = built.run("cache", "gc", "--max-size", size, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["entries_removed"] == 0
    assert _entries(built) == before


def test_a_few_bytes_with_their_unit_and_zero_alone_empty_the_cache(built: Project) -> None:
    dry = built.run("cache", "gc", "--max-size", "10B", "-n", "--json")
    assert dry.code == 0 and dry.json()["entries_removed"] == len(_entries(built))
    result = built.run("cache", "gc", "--max-size", "0", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["entries"] == 0 and _entries(built) == []
