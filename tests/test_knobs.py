"""Every timing knob (`DD_BUILD_*_S`, buildtool/knobs.py) with a value that is no number of
seconds: a usage error naming it before anything runs, never an internal error (a trial found
two Dask knobs crashing; the same held for the checkpoint and retry knobs). The knobs are read
off the sources, so a new one is drawn too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, Project

from buildtool.knobs import KNOBS

CODE = "def make(ctx):\n    return [{'i': ctx.offset + k} for k in range(ctx.size)]\n"
WORKFLOW = "workflow: demo\nstages:\n  a:\n    generate: code/g.py:make\n    num_records: 4\n"


def test_every_timing_knob_in_the_sources_is_read_through_knobs() -> None:
    named = {m for f in (REPO / "buildtool").rglob("*.py")
             for m in re.findall(r"DD_BUILD_[A-Z_]+_S\b", f.read_text())}
    assert named == set(KNOBS)


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e999"])
@pytest.mark.parametrize("name", sorted(KNOBS))
def test_a_knob_that_is_no_number_of_seconds_stops_the_build_naming_it(
        tmp_path: Path, name: str, value: str) -> None:
    proj = Project(tmp_path)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", WORKFLOW)
    result = proj.run(**{name: value})
    assert result.code == 2, result.stderr
    assert f"${name} is not a number of seconds" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not (proj.artifacts / "a" / "stage.json").exists()  # nothing ran


@pytest.mark.parametrize("name", sorted(KNOBS))
def test_a_knob_of_a_valid_number_of_seconds_is_taken(tmp_path: Path, name: str) -> None:
    proj = Project(tmp_path)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", WORKFLOW)
    result = proj.run(**{name: "0.5"})
    assert result.code == 0, result.stderr
