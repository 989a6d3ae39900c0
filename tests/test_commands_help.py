"""`dd-build --help`, `dd-build help [COMMAND]` and `dd-build COMMAND --help`, run as a user
runs them (the CLI as a subprocess, in a folder with no Workflowfile: help needs none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Project

from buildtool import cli
from buildtool.model import TOOL_WORDS


@pytest.fixture
def bare(tmp_path: Path) -> Project:
    return Project(tmp_path)


def _listed(help_text: str) -> dict[str, str]:
    """The command list of the main help: name -> its one line."""
    block = help_text.split("commands (", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"^  (\S+) +(\S.*)$", block, re.MULTILINE))


def test_every_command_of_the_dispatch_table_has_a_line_in_the_help(bare: Project) -> None:
    res = bare.run("--help")
    assert res.code == 0, res.stderr
    listed = _listed(res.stdout)
    assert list(listed) == list(cli._COMMANDS)  # all of them, in the table's order
    assert set(cli._COMMANDS) == set(TOOL_WORDS)  # and a stage may be called none of them
    for name, line in listed.items():
        assert line == cli._COMMANDS[name].summary


def test_the_help_explains_target_and_lists_the_options(bare: Project) -> None:
    out = bare.run("--help").stdout
    assert "TARGET is a stage name" in out
    assert "every stage it needs" in out and "With no TARGET, every stage" in out
    for option in ("-f FILE", "-C DIR", "--json", "-q", "-v", "--version", "-n", "--explain",
                   "--resume", "--rerun-from STAGE", "--force STAGE", "-k"):
        assert option in out, option
    assert "nearest one in a folder above" in out  # where the Workflowfile is looked for


@pytest.mark.parametrize("args", [("help",), ("build", "--help"), ("-h",), ("help", "build")])
def test_every_spelling_of_the_main_help_prints_it(bare: Project, args: tuple[str, ...]) -> None:
    main = bare.run("--help")
    res = bare.run(*args)
    assert res.code == 0, res.stderr
    assert res.stdout.rstrip() == main.stdout.rstrip()
    assert res.stderr == ""


@pytest.mark.parametrize("command", [c for c in TOOL_WORDS if c != "build"])
def test_help_command_and_command_help_agree(bare: Project, command: str) -> None:
    via_help = bare.run("help", command)
    via_option = bare.run(command, "--help")
    assert via_help.code == via_option.code == 0, (via_help.stderr, via_option.stderr)
    assert via_help.stdout.rstrip() == via_option.stdout.rstrip()
    assert f"dd-build {command}" in via_help.stdout
    assert cli._parsers()[command].description in via_help.stdout


def test_the_clean_help_lists_its_options(bare: Project) -> None:
    out = bare.run("clean", "--help").stdout
    for option in ("--all", "--orphans", "--dry-run", "STAGE"):
        assert option in out


def test_help_for_a_misspelt_command_suggests_the_command(bare: Project) -> None:
    res = bare.run("help", "claen")
    assert res.code == 2
    assert "no command 'claen'" in res.stderr and "`clean`" in res.stderr
    assert res.stdout == ""
    doc = bare.run("help", "zzzz", "--json")
    assert doc.code == 2 and doc.json()["ok"] is False


def test_help_with_json_prints_one_document(bare: Project) -> None:
    res = bare.run("help", "clean", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["ok"] is True and doc["command"] == "clean"
    assert doc["help"] == bare.run("clean", "--help").stdout.rstrip()
