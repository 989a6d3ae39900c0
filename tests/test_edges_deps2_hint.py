"""A stage file that imports a module beside it by its bare name: the message says the module
was not found and that imports are relative to the project folder, with the import to write;
not that the file "raised while being imported"."""

from __future__ import annotations

import pytest
from conftest import Project

FLOW = """
workflow: demo
stages:
  g:
    generate: {ref}
    num_records: 2
"""

GEN = "from helpers import WORD\n\ndef rows(ctx):\n    return [{'w': WORD}] * ctx.size\n"


@pytest.mark.parametrize("ref", ["stages/gen.py:rows", "stages.gen:rows"])
def test_a_module_beside_the_stage_file_is_not_found(project: Project, ref: str) -> None:
    project.write("Workflowfile", FLOW.format(ref=ref))
    project.write("stages/__init__.py", "")
    project.write("stages/gen.py", GEN)
    project.write("stages/helpers.py", "WORD = 'w'\n")
    failed = project.run()
    assert failed.code == 1
    out = failed.stdout + failed.stderr
    assert "ModuleNotFoundError" in out and "Traceback" not in failed.stderr
    assert "module `helpers` was not found" in out, out
    assert f"relative to the project folder {project.root}" in out
    assert "for stages/helpers.py write `from stages.helpers import …`" in out
    assert "raised while being imported" not in out

    project.write("stages/gen.py", GEN.replace("from helpers", "from stages.helpers"))
    assert project.run().code == 0


def test_a_module_that_is_nowhere(project: Project) -> None:
    project.write("Workflowfile", FLOW.format(ref="stages/gen.py:rows"))
    project.write("stages/gen.py", GEN)
    failed = project.run()
    out = failed.stdout + failed.stderr
    assert failed.code == 1
    assert "module `helpers` was not found" in out
    assert "e.g. `from stages.helpers import …` for stages/helpers.py; or install it" in out
