"""Reverts are free: a stage whose spec, code or input goes back to one built before is
restored from the build cache — no batch, no call, no command — byte for byte what a build
from scratch writes. Real CLI on temp projects."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from c11cache_support import (  # noqa: E402
    calls,
    clear_calls,
    env,
    make_project,
    outputs,
    set_param,
)


def dd(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=root,
                          env=env(**extra), capture_output=True, text=True, timeout=300)


def build_json(root: Path, *args: str, **extra: str) -> dict[str, dict]:
    done = dd(root, "--json", *args, **extra)
    assert done.returncode == 0, done.stderr
    return {s["stage"]: s for s in json.loads(done.stdout)["stages"]}


def scratch(tmp_path: Path, params: str) -> dict:
    """What a build from scratch of the project with `params` for a writes (no cache)."""
    root = make_project(tmp_path / "scratch")
    set_param(root, "params: {k: 5}", params)
    assert dd(root, DD_BUILD_CACHE="off").returncode == 0
    return outputs(root)


def test_param_revert_runs_nothing_and_equals_a_scratch_build(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    clear_calls(root)
    explain = dd(root, "--explain", "-n")
    assert explain.returncode == 0
    assert re.search(r"^a +restore \(from cache: built 20", explain.stdout, re.M), explain.stdout
    assert "params.k changed: 6 → 5" in explain.stdout
    plan = build_json(root, "-n")
    assert plan["a"]["action"] == "restore" and plan["a"]["step"] is None
    stages = build_json(root)
    assert calls(root) == []  # no batch, no call, no command, no callback
    for name in ("a", "b", "report"):
        assert stages[name]["action"] == "restore", stages[name]
        assert stages[name]["result"] == "restored"
        assert stages[name]["batches_run"] == 0
    assert stages["a"]["rows"] == 20  # the callback kept the even ids
    assert outputs(root) == scratch(tmp_path, "params: {k: 5}")
    again = build_json(root)  # and then it is simply up to date
    assert {s["result"] for s in again.values()} == {"up_to_date"}
    assert calls(root) == []


def test_the_human_build_line_says_restored(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 7}")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 7}", "params: {k: 5}")
    done = dd(root)
    assert done.returncode == 0
    assert "↺ a: restored from the cache (20 rows, built 20" in done.stdout, done.stdout


def test_revert_across_clean(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    before = outputs(root)
    assert dd(root, "clean", "--all").returncode == 0
    shutil.rmtree(root / "out")
    clear_calls(root)
    stages = build_json(root)
    assert calls(root) == []
    assert {s["result"] for s in stages.values()} == {"restored"}
    assert stages["a"]["reasons"][0]["code"] == "no_record"
    assert outputs(root) == before  # export copies and the command's output came back too


def test_code_revert_restores(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    code = root / "code" / "stages.py"
    original = code.read_text()
    code.write_text(original.replace("10**6", "10**5"))
    assert dd(root).returncode == 0
    code.write_text(original)
    clear_calls(root)
    stages = build_json(root)
    assert calls(root) == []
    assert stages["a"]["result"] == "restored"
    assert stages["a"]["reasons"][0]["code"] == "code_changed"
    assert outputs(root) == scratch(tmp_path, "params: {k: 5}")


def test_a_run_stage_revert_runs_no_command(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 1}\n  report", "params: {k: 2}\n  report")
    set_param(root, "params: {k: 1}\n    outputs", "params: {k: 2}\n    outputs")
    assert dd(root).returncode == 0
    assert (root / "out" / "report.txt").read_text() == "rows=20 k=2\n"
    set_param(root, "params: {k: 2}\n    outputs", "params: {k: 1}\n    outputs")
    clear_calls(root)
    stages = build_json(root, "report")
    assert calls(root) == []
    assert stages["report"]["result"] == "restored"
    assert (root / "out" / "report.txt").read_text() == "rows=20 k=1\n"


def test_forced_stages_run_and_the_cache_can_be_off(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    clear_calls(root)
    stages = build_json(root, "--force", "a")
    assert stages["a"]["result"] == "completed" and stages["a"]["batches_run"] == 4
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    clear_calls(root)
    stages = build_json(root, DD_BUILD_CACHE="off")
    assert stages["a"]["result"] == "completed" and stages["a"]["batches_run"] == 4


def test_a_dependant_of_a_restored_stage_with_its_own_revert(tmp_path: Path) -> None:
    """a and b both change and change back: both are restored; b's key is known only once
    a's restore is planned (its input digest comes from a's entry)."""
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    set_param(root, "params: {k: 1}\n  report", "params: {k: 9}\n  report")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    set_param(root, "params: {k: 9}\n  report", "params: {k: 1}\n  report")
    clear_calls(root)
    plan = build_json(root, "-n")
    assert plan["b"]["action"] == "restore", plan["b"]
    stages = build_json(root)
    assert calls(root) == []
    assert stages["b"]["result"] == "restored"


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_a_stage_decided_after_its_upstream_ran_is_restored(tmp_path: Path, jobs: str) -> None:
    """a changes to a new value (it runs), b's input is then one b was built from before:
    b's key is known only at build time, and b is restored then (also with -j)."""
    root = make_project(tmp_path / "p")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    assert dd(root).returncode == 0
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    _forget(root, "a")  # a runs again (the same rows: its rng is seeded by its spec)
    clear_calls(root)
    stages = build_json(root, "-j", jobs)
    assert stages["a"]["result"] == "completed"
    assert stages["b"]["action"] == "run" and stages["b"]["result"] == "restored"
    assert not [c for c in calls(root) if not c.startswith("a ")]


def _forget(root: Path, stage: str) -> None:
    """Remove every cache entry of `stage`."""
    entries = root / "artifacts" / ".cache" / "entries"
    for path in entries.glob("*/*.json"):
        if json.loads(path.read_text())["stage"] == stage:
            path.unlink()
