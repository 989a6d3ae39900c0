"""Canonical specs, spec fingerprints, stat-cached file digests, globs."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from buildtool.fingerprint import (
    FileState,
    canonical_spec,
    check_file,
    digest_bytes,
    digest_file,
    digest_strings,
    expand_glob,
    spec_fingerprint,
)
from buildtool.model import InputRef, Stage


def stage(**changes: Any) -> Stage:
    base = Stage(name="s", kind="generate", target="code/stages.py:rows",
                 seed=InputRef("stage", "a", "a"), inputs=(InputRef("file", "p.txt", "p.txt"),),
                 params={"tag": "x", "n": 1}, num_records=20, batch_size=5)
    return dataclasses.replace(base, **changes)


def fp(s: Stage) -> str:
    return spec_fingerprint(canonical_spec(s))


@pytest.mark.parametrize("changes", [
    pytest.param({"description": "now with a description"}, id="description"),
    pytest.param({"retries": 5}, id="retries"),
])
def test_canonical_spec_ignores(changes: dict[str, Any]) -> None:
    assert canonical_spec(stage(**changes)) == canonical_spec(stage())
    assert fp(stage(**changes)) == fp(stage())


@pytest.mark.parametrize("changes", [
    pytest.param({"params": {"tag": "y", "n": 1}}, id="params-value"),
    pytest.param({"params": {"tag": "x"}}, id="params-key-removed"),
    pytest.param({"batch_size": 10}, id="batch_size"),
    pytest.param({"num_records": 21}, id="num_records"),
    pytest.param({"sampling": "shuffle"}, id="sampling"),
    pytest.param({"seed": InputRef("stage", "b", "b")}, id="seed-other-stage"),
    pytest.param({"seed": InputRef("file", "a", "file:a")}, id="seed-file-not-stage"),
    pytest.param({"seed": None}, id="seed-removed"),
    pytest.param({"inputs": ()}, id="inputs-removed"),
    pytest.param({"inputs": (InputRef("file", "q.txt", "q.txt"),)}, id="inputs-other-file"),
    pytest.param({"target": "code/stages.py:other"}, id="callable"),
    pytest.param({"allow_empty": True}, id="allow_empty"),
    pytest.param({"outputs": ("out.csv",)}, id="outputs"),
])
def test_canonical_spec_changes_with(changes: dict[str, Any]) -> None:
    assert canonical_spec(stage(**changes)) != canonical_spec(stage())
    assert fp(stage(**changes)) != fp(stage())


def test_canonical_spec_is_json_plain() -> None:
    spec = canonical_spec(stage(params={"when": (1, 2)}))
    assert spec["params"] == {"when": [1, 2]}  # tuples come back as lists, as from a record
    assert spec["seed"] == "stage:a" and spec["inputs"] == ["file:p.txt"]
    assert "description" not in spec and "retries" not in spec


def test_spec_fingerprint_stable_across_key_order() -> None:
    a = {"kind": "generate", "params": {"x": 1, "y": {"p": 1, "q": 2}}, "batch_size": 5}
    b = {"batch_size": 5, "params": {"y": {"q": 2, "p": 1}, "x": 1}, "kind": "generate"}
    assert list(a) != list(b)
    assert spec_fingerprint(a) == spec_fingerprint(b)
    assert spec_fingerprint(a) != spec_fingerprint({**a, "batch_size": 6})
    assert spec_fingerprint(a).startswith("sha256:")


def test_check_file_reuses_known_digest_when_stats_match(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("content")
    st = os.stat(path)
    known = FileState("f.txt", st.st_size, st.st_mtime_ns, "sha256:fake-never-computed")
    got = check_file(path, "f.txt", known)
    assert got is known  # no read of the content: the fake digest survives


def test_check_file_rehashes_when_mtime_differs(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("content")
    st = os.stat(path)
    known = FileState("f.txt", st.st_size, st.st_mtime_ns, "sha256:fake")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    got = check_file(path, "f.txt", known)
    assert got is not None and got is not known
    assert got.digest == digest_bytes(b"content") == digest_file(path)
    assert (got.path, got.size, got.mtime_ns) == ("f.txt", st.st_size, st.st_mtime_ns + 10**9)


def test_check_file_rehashes_when_size_differs(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("content")
    st = os.stat(path)
    known = FileState("f.txt", st.st_size + 1, st.st_mtime_ns, "sha256:fake")
    got = check_file(path, "f.txt", known)
    assert got is not None and got.digest == digest_bytes(b"content")


def test_check_file_without_known_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"abc")
    got = check_file(path, "f.txt", None)
    assert got is not None and got.digest == digest_bytes(b"abc") and got.size == 3
    assert check_file(tmp_path / "nope.txt", "nope.txt", got) is None


def test_file_state_json_round_trip() -> None:
    state = FileState("a/b.txt", 3, 12345678901234567, "sha256:x")
    assert FileState.from_json(state.to_json()) == state


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ["prompts/b.txt", "prompts/a.txt", "prompts/sub/c.txt", "prompts/z.md",
                "data/one.parquet"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "prompts" / "dir.txt").mkdir()  # a folder matching the glob is not a file
    return tmp_path


@pytest.mark.parametrize(("pattern", "expected"), [
    pytest.param("prompts/*.txt", ["prompts/a.txt", "prompts/b.txt"], id="star-sorted"),
    pytest.param("prompts/**/*.txt", ["prompts/a.txt", "prompts/b.txt", "prompts/sub/c.txt"],
                 id="recursive"),
    pytest.param("prompts/?.*", ["prompts/a.txt", "prompts/b.txt", "prompts/z.md"],
                 id="question-mark"),
    pytest.param("data/one.parquet", ["data/one.parquet"], id="plain-path"),
    pytest.param("data/missing.parquet", [], id="plain-missing"),
    pytest.param("prompts", ["prompts/a.txt", "prompts/b.txt", "prompts/sub/c.txt",
                             "prompts/z.md"], id="plain-folder-is-its-files"),
    pytest.param("nothing/*.txt", [], id="glob-no-match"),
])
def test_expand_glob(tree: Path, pattern: str, expected: list[str]) -> None:
    got = expand_glob(tree, pattern)
    assert got == expected
    assert all("\\" not in p and not p.startswith("/") for p in got)


def test_digest_strings_order_sensitive() -> None:
    assert digest_strings(["a", "b"]) != digest_strings(["b", "a"])
    assert digest_strings(["a", "b"]) == digest_strings(["a", "b"])
    # Parts are delimited: joining differently gives a different digest.
    assert digest_strings(["ab", "c"]) != digest_strings(["a", "bc"])
    assert digest_strings([]) != digest_strings([""])
