"""A reader that goes away (`dd-build show X | head -1`, `less` quit) ends dd-build's output
quietly: no "Broken pipe", no traceback, and the command's own exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import Project, Result

WIDE = """
def rows(ctx):
    return [{"id": ctx.offset + i, "text": f"row {ctx.offset + i} " + "x" * 200}
            for i in range(ctx.size)]
"""
# `status` and `dag` print far more than a pipe holds (64 KiB on Linux) with many stages of
# long names.
STAGES = 1200
NAME = "stage-" + "n" * 180 + "-{:04d}"


def _workflow() -> str:
    lines = ["workflow: demo", "stages:", "  big:", "    generate: code/wide.py:rows",
             "    num_records: 6000", "    batch_size: 3000"]
    for i in range(STAGES):
        lines += [f"  {NAME.format(i)}:", "    generate: code/wide.py:rows",
                  "    num_records: 1"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = Project(tmp_path_factory.mktemp("pipes") / "proj")
    project.write("code/wide.py", WIDE)
    project.write("Workflowfile", _workflow())
    built = project.run("big", "-q")
    assert built.code == 0, built.stderr
    return project


def _into_head(project: Project, *args: str) -> tuple[int, str, int]:
    """`dd-build ARGS | head -1`, as a shell runs it: dd-build's exit code, its stderr, and
    how many bytes of its output head read."""
    cli = subprocess.Popen([sys.executable, "-m", "buildtool", *args], cwd=project.root,
                           env=project.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cli.stdout is not None and cli.stderr is not None
    head = subprocess.Popen(["head", "-1"], stdin=cli.stdout, stdout=subprocess.PIPE)
    cli.stdout.close()  # head holds the only reading end: when it exits, writes fail
    first, _ = head.communicate(timeout=300)
    err = cli.stderr.read().decode()
    return cli.wait(timeout=300), err, len(first)


def _reader_gone(project: Project, *args: str) -> Result:
    """dd-build ARGS with its stdout a pipe whose reader has already gone: the very first
    write fails, however little is printed."""
    cli = subprocess.Popen([sys.executable, "-m", "buildtool", *args], cwd=project.root,
                           env=project.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cli.stdout is not None and cli.stderr is not None
    cli.stdout.close()
    err = cli.stderr.read().decode()
    return Result(cli.wait(timeout=300), "", err)


def _quiet(stderr: str) -> None:
    assert "Broken pipe" not in stderr and "BrokenPipe" not in stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert "internal error" not in stderr


def _output_size(project: Project, *args: str) -> int:
    res = project.run(*args)
    assert res.code == 0, res.stderr
    return len(res.stdout.encode())


@pytest.mark.parametrize("args", [("show", "big", "-n", "5000"),
                                  ("show", "big", "-n", "5000", "--json"),
                                  ("status",), ("status", "--json"),
                                  ("dag",), ("dag", "--json"), ("dag", "--format", "mermaid")])
def test_a_reader_that_goes_after_one_line_is_quiet(wide: Project, args: tuple[str, ...]) -> None:
    assert _output_size(wide, *args) > 200 * 1024  # far more than a pipe holds
    code, err, read = _into_head(wide, *args)
    assert read > 0
    _quiet(err)
    assert code == 0, err
    if "--json" not in args:  # (with --json, stderr holds the text)
        assert err == ""


@pytest.mark.parametrize("args", [("show", "big", "-n", "1"), ("status",), ("dag",),
                                  ("--help",), ("help", "clean"), ("--version",),
                                  ("-n",), ("big",), ("-n", "--json"),
                                  ("clean", "-n", "big"), ("schema",)])
def test_a_reader_gone_before_anything_is_printed_is_quiet(wide: Project,
                                                           args: tuple[str, ...]) -> None:
    res = _reader_gone(wide, *args)
    _quiet(res.stderr)
    assert res.code == 0, res.stderr


def test_export_and_build_with_their_reader_gone_still_do_their_work(wide: Project) -> None:
    out = wide.root / "big.jsonl"
    res = _reader_gone(wide, "export", "big", str(out))
    _quiet(res.stderr)
    assert res.code == 0 and len(out.read_text().splitlines()) == 6000

    stage = NAME.format(7)
    res = _reader_gone(wide, stage, "-v")
    _quiet(res.stderr)
    assert res.code == 0
    assert wide.run("status", "--json").stage(stage)["up_to_date"] is True
