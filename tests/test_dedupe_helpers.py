"""The helpers that replaced repeated spellings: glob detection, data suffixes, did-you-mean,
the command list."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

from buildtool.fingerprint import expand_glob
from buildtool.globreach import is_glob

TRICKY = ["a[", "x?", "**", "[*]", "data/*.csv", "a]", "{a,b}", "plain/path.csv", "", "a\\*",
          "!x", "~/x", "a[b]c"]


@pytest.mark.parametrize("text, expected", [
    ("a[", True), ("x?", True), ("**", True), ("[*]", True), ("data/*.csv", True),
    ("a[b]c", True), ("a\\*", True),
    ("a]", False), ("{a,b}", False), ("plain/path.csv", False), ("", False), ("!x", False),
])
def test_is_glob_on_tricky_strings(text: str, expected: bool) -> None:
    assert is_glob(text) is expected


@pytest.mark.parametrize("text", TRICKY)
def test_is_glob_decides_as_glob_glob_does(text: str) -> None:
    assert is_glob(text) == glob.has_magic(text)


def test_an_unclosed_bracket_is_a_glob_that_matches_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "a[").write_text("x")
    (tmp_path / "ab").write_text("x")
    assert expand_glob(tmp_path, "a[") == ["a["]


def test_an_escaped_star_matches_only_a_literal_star(tmp_path: Path) -> None:
    (tmp_path / "*.csv").write_text("x")
    (tmp_path / "b.csv").write_text("x")
    assert expand_glob(tmp_path, glob.escape("*.csv")) == ["*.csv"]


def test_one_list_of_data_suffixes_checks_seeds_exports_and_tables() -> None:
    from buildtool import datasets, exportformats, model, outputs, preview, tables, workflowrefs

    assert model.DATA_SUFFIXES == (".parquet", ".csv", ".jsonl")
    assert model.PARQUET in model.DATA_SUFFIXES
    for module in (datasets, exportformats, outputs, preview, tables, workflowrefs):  # no copy of its own left behind
        assert not {"EXPORT_FORMATS", "TABULAR"} & set(vars(module))
        assert "DATA_SUFFIXES" not in vars(module) or module.DATA_SUFFIXES is model.DATA_SUFFIXES


def test_suggest_names_the_closest_option_or_nothing() -> None:
    from buildtool.errors import closest, suggest

    assert closest("judeg", ["judge", "generate"]) == "judge"
    assert suggest("judeg", iter(["judge", "generate"])) == "did you mean `judge`?"
    assert closest("zzz", ["judge"]) is None
    assert suggest("zzz", ["judge"]) is None
    assert suggest("x", []) is None


def test_no_module_keeps_a_did_you_mean_of_its_own() -> None:
    source = Path(__file__).resolve().parents[1] / "buildtool"
    # filterexpr.py is being rewritten elsewhere: its copy goes there.
    others = {"errors.py", "filterexpr.py"}
    users = [p.name for p in source.rglob("*.py")
             if p.name not in others and "get_close_matches" in p.read_text(encoding="utf-8")]
    assert users == []


def test_the_cli_runs_exactly_the_words_a_stage_may_not_be_called() -> None:
    from buildtool import cli
    from buildtool.model import TOOL_WORDS

    assert cli.COMMANDS is TOOL_WORDS
    assert set(cli._COMMANDS) == set(TOOL_WORDS)
    assert set(cli._parsers()) == set(TOOL_WORDS)
    for word in TOOL_WORDS:
        assert cli.split_command(["-q", word, "x"]) == (word, ["-q", "x"])
