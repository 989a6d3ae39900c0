"""A new user's trial of `datadesigner:` stages: the mistakes it made are told before anything
runs (or when the stage starts, for what the environment decides), no API key reaches a file
or the output, a restored stage keeps no other run's Data Designer files, and a param's value
can never break the config's YAML.

Each test drives the CLI on a copy of examples/datadesigner/ against its fake LLM server.
Skipped when the datadesigner extra is not installed (CI installs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from c13dd_support import SECRET, DDProject, dd_project, needs_data_designer

pytestmark = needs_data_designer
__all__ = ["dd_project"]  # the fixture, used by name

NOT_SET = "C13DD_TRIAL_NEVER_SET"


def _run_without(project: DDProject, drop: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the environment variable `drop` unset."""
    env = project.env()
    env.pop(drop, None)
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=600)


def _files_holding(root: Path, needle: str, skip: Path | None = None) -> list[Path]:
    """Every file under `root` (hidden ones too: the build cache) whose bytes hold `needle`."""
    return [p for p in root.rglob("*") if p.is_file() and p != skip
            and needle.encode() in p.read_bytes()]


def test_an_api_key_variable_that_is_not_set_fails_the_stage_before_it_calls_a_model(
        dd_project: DDProject) -> None:
    dd_project.build("personas")
    done = _run_without(dd_project, "FAKE_LLM_API_KEY", "answers")
    assert done.returncode == 1, done.stderr
    assert ("models.yaml: provider 'local': api_key names the environment variable "
            "FAKE_LLM_API_KEY, which is not set") in done.stderr
    assert "export FAKE_LLM_API_KEY=" in done.stderr
    assert dd_project.server.control()["requests"] == 0  # no call went out with a wrong key
    assert not (dd_project.artifacts / "answers" / "datadesigner").exists()


def test_a_key_written_in_the_models_file_is_refused_and_never_copied_or_shown(
        dd_project: DDProject) -> None:
    models = dd_project.root / "models.yaml"
    dd_project.edit("models.yaml", "api_key: FAKE_LLM_API_KEY", f"api_key: {SECRET}")
    for args in (("-n",), ("answers",)):
        done = dd_project.run(*args, check=False)
        assert done.returncode == 2, done.stderr
        assert "models.yaml: provider 'local': api_key must name an environment variable" \
            in done.stderr
        assert SECRET not in done.stdout + done.stderr
    # a literal key that looks like a variable's name is not shown either
    dd_project.edit("models.yaml", f"api_key: {SECRET}", "api_key: abcSecret123")
    done = dd_project.run("answers", check=False)
    assert done.returncode == 1, done.stderr
    assert "abcSecret123" not in done.stdout + done.stderr
    assert "api_key names no environment variable that is set" in done.stderr

    # fixed: the key reaches Data Designer through the environment only (the fake server
    # answers every key alike); no file of the build, its cache or its output holds it
    dd_project.edit("models.yaml", "api_key: abcSecret123", "api_key: FAKE_LLM_API_KEY")
    done = dd_project.run("answers")
    assert SECRET not in done.stdout + done.stderr
    request = json.loads((dd_project.artifacts / "answers" / "datadesigner" / "request.json")
                         .read_text())
    assert request["providers"][0]["api_key"] == "FAKE_LLM_API_KEY"
    assert (dd_project.root / "artifacts" / ".cache").is_dir()
    assert _files_holding(dd_project.root, SECRET, skip=models) == []


def test_a_variable_of_an_endpoint_that_is_not_set_is_named(dd_project: DDProject) -> None:
    dd_project.build("personas")
    done = _run_without(dd_project, "FAKE_LLM_PORT", "answers")
    assert done.returncode == 1, done.stderr
    assert ("models.yaml: provider 'local': its endpoint uses ${FAKE_LLM_PORT}, which is not "
            "set") in done.stderr
    assert "Try again" not in done.stderr
    assert not (dd_project.artifacts / "answers" / "datadesigner").exists()


def test_a_restored_stage_keeps_no_other_runs_data_designer_files(
        dd_project: DDProject) -> None:
    dd_project.build("answers")
    dd_project.edit("configs/answers.yaml", "answer:", "answer briefly:")
    dd_project.build("answers")
    folder = dd_project.artifacts / "answers" / "datadesigner"
    assert "answer briefly:" in (folder / "request.json").read_text()
    dd_project.edit("configs/answers.yaml", "answer briefly:", "answer:")
    built = dd_project.build("answers")
    assert built["answers"]["result"] == "restored", built["answers"]
    # the folder held the edited run's request and batches: none of it may stay
    assert not folder.exists() or "answer briefly:" not in "".join(
        p.read_text(errors="replace") for p in folder.rglob("*.json"))
    assert not list(folder.rglob("*.parquet"))
    # a later edit runs the stage afresh, as any run without a folder to resume
    dd_project.edit("configs/answers.yaml", "answer:", "answer now:")
    assert dd_project.build("answers")["answers"]["result"] == "completed"


def test_mistakes_in_the_config_and_models_are_named_before_anything_runs(
        dd_project: DDProject) -> None:
    dd_project.edit("configs/answers.yaml", "provider: local", "provider: lokal")
    done = dd_project.run("-n", check=False)
    assert done.returncode == 2, done.stderr
    assert ("configs/answers.yaml: model 'writer' uses provider 'lokal', which models.yaml "
            "does not have (its providers: local)") in done.stderr
    dd_project.edit("configs/answers.yaml", "provider: lokal", "provider: local")

    dd_project.edit("configs/answers.yaml", "params.tone", "params.tones")
    done = dd_project.run("-n", check=False)
    assert done.returncode == 2, done.stderr
    assert "configs/answers.yaml: {{ params.tones }} names no parameter of the stage (its " \
           "params: tone)" in done.stderr
    dd_project.edit("configs/answers.yaml", "params.tones", "params.tone")

    # a provider setting that would reach the model unfingerprinted (found by a hunt: the
    # rows changed with no rerun), and a section the models file does not use
    dd_project.edit("models.yaml", "    provider_type: openai",
                    "    provider_type: openai\n    extra_body: {max_tokens: 3}")
    done = dd_project.run("-n", check=False)
    assert done.returncode == 2, done.stderr
    assert "models.yaml: provider 'local' sets `extra_body`" in done.stderr
    dd_project.edit("models.yaml", "\n    extra_body: {max_tokens: 3}", "")
    (dd_project.root / "models.yaml").write_text(
        (dd_project.root / "models.yaml").read_text() + "model_configs: []\n")
    done = dd_project.run("-n", check=False)
    assert done.returncode == 2, done.stderr
    assert "models.yaml holds `model_configs`" in done.stderr
    dd_project.edit("models.yaml", "model_configs: []\n", "")

    # a column type Data Designer does not know: told once, with the file and the column
    dd_project.edit("configs/answers.yaml", "column_type: llm-text", "column_type: llm-txt")
    done = dd_project.run("answers", check=False)
    assert done.returncode == 1, done.stderr
    [line] = [x for x in done.stderr.splitlines() if "llm-txt" in x]
    assert "configs/answers.yaml: column 'answer': " in line
    assert "Traceback" not in done.stderr


def test_a_param_with_quotes_fills_the_config_without_breaking_its_yaml(
        dd_project: DDProject) -> None:
    value = 'very "flowery": yes'
    dd_project.edit("Workflowfile", "params: {tone: friendly}",
                    "params: {tone: 'very \"flowery\": yes'}")
    dd_project.edit("configs/answers.yaml", 'expr: "What should',
                    'expr: "In a {{ params.tone }} way: what should')
    assert dd_project.plan("answers")["answers"]["action"] == "run"
    built = dd_project.build("answers")
    assert built["answers"]["result"] == "completed"
    questions = dd_project.table("answers").column("question").to_pylist()
    assert all(q.startswith(f"In a {value} way: what should") for q in questions), questions


def test_a_touched_prompt_edit_is_what_the_next_change_is_explained_from(
        dd_project: DDProject) -> None:
    """Found by a hunt: after `touch`, the record kept the config from before the touch, so
    the next edit's diff ran from the old prompt."""
    dd_project.build("answers")
    dd_project.edit("configs/answers.yaml", "answer:", "answer gently:")
    dd_project.run("touch", "answers")
    dd_project.edit("configs/answers.yaml", "answer gently:", "answer kindly:")
    done = dd_project.run("--explain", "-n", "answers")
    text = done.stdout + done.stderr
    assert "column 'answer': prompt changed" in text, text
    assert "-You are {{ persona }}. In a friendly tone, answer gently:" in text, text
