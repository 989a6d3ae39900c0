"""The quick start's layout: the project folder is dd-build's own checkout, so the buildtool
package lies inside it. Only that package is dd-build's; the project's helper modules beside it
are still the project's, tracked as code the stage imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKFLOW = """\
workflow: inside
stages:
  make:
    generate: stages/make.py:make
    num_records: 2
"""
MAKE = """\
from stages.helper import VALUE

def make(ctx):
    return [{"i": ctx.batch_index, "v": VALUE}]
"""


def _build(project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([sys.executable, "-m", "buildtool", "--json"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


def test_helpers_of_a_project_holding_dd_build_itself_are_tracked(tmp_path: Path) -> None:
    shutil.copytree(REPO / "buildtool", tmp_path / "buildtool",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "Workflowfile").write_text(WORKFLOW)
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "make.py").write_text(MAKE)
    (tmp_path / "stages" / "helper.py").write_text("VALUE = 1\n")
    first = _build(tmp_path)
    assert first.returncode == 0, first.stderr
    record = json.loads(next(tmp_path.glob("artifacts/inside/make/stage.json")).read_text())
    assert any(path.endswith("helper.py") for path in record["discovered"]), record["discovered"]
    assert not any(path.startswith("buildtool/") for path in record["discovered"])
    (tmp_path / "stages" / "helper.py").write_text("VALUE = 2\n")
    second = json.loads(_build(tmp_path).stdout)
    assert second["stages"][0]["action"] != "up_to_date", second
