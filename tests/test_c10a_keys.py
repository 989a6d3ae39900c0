"""The stage keys `concurrency` and `executor` (issue 10): validation with file:line errors,
defaults, the caps (clamped with a note, not an error), and `dd-build schema`."""

from __future__ import annotations

import json
import os

import pytest
from c10a_support import Proj, one_stage

BAD = [
    ("concurrency: 0", 7, "`concurrency` must be a positive integer, got 0"),
    ("concurrency: -3", 7, "`concurrency` must be a positive integer, got -3"),
    ("concurrency: many", 7, "concurrency"),
    ("concurrency: 2.5", 7, "concurrency"),
    ("concurrency: true", 7, "concurrency"),
    ("executor: fork", 7, "unknown executor `fork`"),
]


@pytest.mark.parametrize(("line", "at", "message"), BAD)
def test_a_wrong_value_is_an_error_at_its_line(tmp_path, line, at, message):
    proj = Proj(tmp_path / "p", one_stage(2, line))
    done = proj.run("--dry-run")
    assert done.returncode == 2
    assert f"Workflowfile:{at}:" in done.stderr and message in done.stderr
    assert "stage 'a'" in done.stderr


def test_a_misspelt_executor_gets_a_suggestion(tmp_path):
    proj = Proj(tmp_path / "p", one_stage(2, "executor: proces"))
    done = proj.run("--dry-run")
    assert done.returncode == 2 and "did you mean `process`?" in done.stderr


def test_a_misspelt_key_gets_a_suggestion(tmp_path):
    proj = Proj(tmp_path / "p", one_stage(2, "concurency: 4"))
    done = proj.run("--dry-run")
    assert done.returncode == 2 and "did you mean `concurrency`?" in done.stderr


@pytest.mark.parametrize("key", ["concurrency: 4", "executor: process"])
def test_both_keys_apply_to_generate_stages_only(tmp_path, key):
    workflow = (one_stage(2) + "  t:\n    transform: stages/gen.py:join\n    inputs: [a]\n"
                f"    {key}\n  r:\n    run: echo hi > out.txt\n    outputs: [out.txt]\n"
                f"    {key}\n")
    proj = Proj(tmp_path / "p", workflow)
    done = proj.run("--dry-run")
    assert done.returncode == 2
    name = key.split(":")[0]
    kinds = "generate and datadesigner" if name == "concurrency" else "generate"
    assert f"Workflowfile:10:5, stage 't', key '{name}': `{name}` applies to {kinds} " \
           "stages only" in done.stderr
    assert "hint: this is a transform stage; remove" in done.stderr
    assert "Workflowfile:14:5, stage 'r'" in done.stderr


def test_defaults_apply_to_generate_stages_only(tmp_path):
    workflow = ("workflow: demo\ndefaults:\n  concurrency: 4\n  executor: thread\n"
                + one_stage(4).partition("\n")[2]
                + "  t:\n    transform: stages/gen.py:join\n    inputs: [a]\n")
    proj = Proj(tmp_path / "p", workflow)
    done = proj.run("-q")
    assert done.returncode == 0, done.stderr


def test_a_thread_concurrency_above_the_cap_is_clamped_with_a_note(tmp_path):
    proj = Proj(tmp_path / "p", one_stage(3, "concurrency: 1000"))
    done = proj.run()
    assert done.returncode == 0, done.stderr
    assert "a: concurrency 1000 is above the cap of 256 threads: 256 batches in flight" \
        in done.stderr


def test_process_workers_are_at_most_one_per_cpu(tmp_path):
    many = (os.cpu_count() or 1) + 3
    proj = Proj(tmp_path / "p", one_stage(3, f"concurrency: {many}\nexecutor: process"))
    done = proj.run()
    assert done.returncode == 0, done.stderr
    assert f"a: concurrency {many} with executor: process: {os.cpu_count()} worker " \
           "processes (one per CPU)" in done.stderr
    assert len(proj.pids("?")) <= (os.cpu_count() or 1)


def test_the_schema_lists_both_keys(tmp_path):
    proj = Proj(tmp_path / "p", one_stage(2))
    done = proj.run("schema")
    assert done.returncode == 0
    text = json.dumps(json.loads(done.stdout))
    assert '"concurrency"' in text and '"executor"' in text and '"process"' in text
