"""Renames keep their work: a stage renamed in the Workflowfile (same spec, code and inputs)
is restored from the build cache under its new name, and `status` says where the orphaned
artifacts came from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from c11cache_support import calls, clear_calls, env, make_project, outputs  # noqa: E402

SIMPLE = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 30
    batch_size: 10
    params: {k: 5}
    on_success: code/stages.py:keep_even
  b:
    transform: code/stages.py:join
    inputs: [a]
"""

RENAMED = SIMPLE.replace("  a:\n", "  alpha:\n").replace("[a]", "[alpha]")


def dd(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=root,
                          env=env(**extra), capture_output=True, text=True, timeout=300)


def test_a_renamed_stage_is_restored_under_its_new_name(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", SIMPLE)
    assert dd(root).returncode == 0
    built = outputs(root)
    (root / "Workflowfile").write_text(RENAMED)
    clear_calls(root)
    status = dd(root, "status")
    assert "'a' (no longer in the Workflowfile) was built from this stage's spec, code and " \
           "inputs: renamed from it? It is restored from the build cache." in status.stdout, \
        status.stdout
    status_json = json.loads(dd(root, "status", "--json").stdout)
    alpha = next(s for s in status_json["stages"] if s["stage"] == "alpha")
    assert any(r.get("renamed_from") == "a" for r in alpha["reasons"]), alpha
    explain = dd(root, "alpha", "--explain", "-n")
    assert "restore (from cache: built " in explain.stdout and "as 'a')" in explain.stdout
    done = dd(root, "alpha", "--json")
    assert done.returncode == 0, done.stderr
    stage = json.loads(done.stdout)["stages"][0]
    assert stage["action"] == "restore" and stage["result"] == "restored"
    assert calls(root) == []
    now = outputs(root)
    # the same bytes, under the new stage's folder (the file names carry the stage's name)
    assert [data for _, data in now["alpha"]["batches"]] == \
        [data for _, data in built["a"]["batches"]]
    assert [f for f, _ in now["alpha"]["batches"]][0].startswith("alpha/batches/")
    assert now["alpha"]["digest"] == built["a"]["digest"]
    assert [d for _, d in now["alpha"]["steps"]["callback"]] == \
        [d for _, d in built["a"]["steps"]["callback"]]
    assert all(p.startswith("artifacts/demo/alpha/callback/")
               for p, _ in now["alpha"]["steps"]["callback"])
    # the restored stage's files are where its record says: a null build is up to date
    again = json.loads(dd(root, "alpha", "--json").stdout)["stages"][0]
    assert again["result"] == "up_to_date"


def test_a_renamed_stage_equals_a_scratch_build_under_the_new_name(tmp_path: Path) -> None:
    renamed = RENAMED
    root = make_project(tmp_path / "p", SIMPLE)
    assert dd(root).returncode == 0
    (root / "Workflowfile").write_text(renamed)
    assert dd(root, "alpha").returncode == 0
    other = make_project(tmp_path / "scratch", renamed)
    assert dd(other, "alpha", DD_BUILD_CACHE="off").returncode == 0
    mine, theirs = outputs(root), outputs(other)
    assert mine["alpha"] == theirs["alpha"]


def test_without_the_cache_the_status_still_names_the_orphan(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", SIMPLE)
    assert dd(root).returncode == 0
    (root / "Workflowfile").write_text(RENAMED)
    status = dd(root, "status", DD_BUILD_CACHE="off")
    assert "'a' (no longer in the Workflowfile) was built from this stage's spec, code and " \
           "inputs: renamed from it?" in status.stdout, status.stdout
    assert "It is restored" not in status.stdout
