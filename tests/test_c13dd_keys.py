"""`datadesigner:` stages without the extra: validation, the schema, the config diff that
`--explain` shows, and the message of a build where Data Designer is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from c13dd_support import have_data_designer

from buildtool.ddconfig import diff_configs, load_config
from buildtool.errors import StageFailed

REPO = Path(__file__).resolve().parents[1]
CONFIG = """columns:
  - name: topic
    column_type: sampler
    sampler_type: category
    params: {values: [a, b], weights: [1, 1]}
  - name: question
    column_type: expression
    expr: "About {{ topic }} in {{ params.lang }}"
"""


def _project(root: Path, stage: str) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "dd.yaml").write_text(CONFIG)
    (root / "configs" / "models.yaml").write_text("providers: []\n")
    (root / "Workflowfile").write_text("workflow: demo\nstages:\n" + stage)
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stage, where, words", [
    ("  d:\n    datadesigner: configs/nope.yaml\n    num_records: 3\n",
     "Workflowfile:4:19, stage 'd', key 'datadesigner'", "no file `configs/nope.yaml`"),
    ("  d:\n    datadesigner: configs/dd.txt\n    num_records: 3\n",
     "Workflowfile:4:19, stage 'd', key 'datadesigner'", "(.yaml, .yml or .json)"),
    ("  d:\n    datadesigner: ../dd.yaml\n    num_records: 3\n",
     "Workflowfile:4:19, stage 'd', key 'datadesigner'", "leaves the project folder"),
    ("  d:\n    datadesigner: configs/dd.yaml\n",
     "Workflowfile:3:3, stage 'd'", "a datadesigner stage needs `num_records` or a `seed`"),
    ("  d:\n    datadesigner: configs/dd.yaml\n    num_records: 3\n    models: 5\n",
     "Workflowfile:6:13, stage 'd', key 'models'", "model_providers.yaml file"),
    ("  d:\n    datadesigner: configs/dd.yaml\n    num_records: 3\n    sampling: shuffle\n",
     "Workflowfile:6:5, stage 'd', key 'sampling'", "applies to generate stages only"),
    ("  g:\n    generate: x.py:f\n    num_records: 3\n    models: configs/models.yaml\n",
     "stage 'g', key 'models'", "applies to datadesigner stages only"),
    ("  d:\n    datadesigner: configs/dd.yaml\n    num_records: 3\n  r:\n    run: cp a b\n"
     "    outputs: [configs/dd.yaml]\n", "stage 'r', key 'outputs'", "configs/dd.yaml"),
])
def test_mistakes_are_reported_before_anything_runs(tmp_path: Path, stage: str, where: str,
                                                    words: str) -> None:
    root = _project(tmp_path / "p", stage)
    (root / "x.py").write_text("def f(ctx):\n    return []\n")
    done = _run(root, "-n")
    assert done.returncode == 2, done.stderr
    line = next(x for x in done.stderr.splitlines() if where in x)
    assert words in line, done.stderr


def test_a_valid_stage_plans_and_the_schema_knows_the_kind(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", "  d:\n    datadesigner: configs/dd.yaml\n"
                    "    num_records: 10\n    batch_size: 4\n    models: configs/models.yaml\n"
                    "    concurrency: 2\n    params: {lang: en}\n    allow_empty: true\n"
                    "    processors: [{limit: 5}]\n    outputs: [out/d.csv]\n")
    done = _run(root, "-n", "--json")
    assert done.returncode == 0, done.stderr
    [stage] = json.loads(done.stdout)["stages"]
    assert (stage["action"], stage["batches_total"]) == ("run", 3)
    schema = json.loads(_run(root, "schema").stdout)
    import jsonschema
    import yaml

    jsonschema.validate(yaml.safe_load((root / "Workflowfile").read_text()), schema)
    bad = {"workflow": "demo", "stages": {"d": {"datadesigner": "configs/dd.txt"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.skipif(have_data_designer(), reason="checks the message when it is missing")
def test_without_the_extra_the_stage_fails_saying_how_to_install_it(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", "  d:\n    datadesigner: configs/dd.yaml\n"
                    "    num_records: 3\n    params: {lang: en}\n")
    done = _run(root)
    assert done.returncode == 1
    assert "Data Designer is not installed" in done.stderr
    assert "pip install -e '.[datadesigner]'" in done.stderr
    assert not (root / "artifacts" / "demo" / "d" / "datadesigner").exists()


def test_params_fill_the_config_and_a_missing_one_is_named(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", "")
    config = load_config(root, "configs/dd.yaml", {"lang": "en"}, "d")
    assert config["columns"][1]["expr"] == "About {{ topic }} in en"
    (root / "configs" / "dd.yaml").write_text("columns: {{ params.cols }}\n")
    assert load_config(root, "configs/dd.yaml", {"cols": [1, "x"]}, "d") == \
        {"columns": [1, "x"]}
    with pytest.raises(StageFailed, match=r"\{\{ params.cols \}\} names no parameter"):
        load_config(root, "configs/dd.yaml", {"lang": "en"}, "d")


def test_the_config_diff_names_columns_and_fields() -> None:
    old = {"model_configs": [{"alias": "m", "model": "a"}],
           "columns": [{"name": "x", "column_type": "sampler", "params": {"weights": [1, 1]}},
                       {"name": "answer", "column_type": "llm-text",
                        "prompt": "Say hi\nto {{ x }}\n"},
                       {"name": "gone", "column_type": "expression", "expr": "1"}]}
    new = {"model_configs": [{"alias": "m", "model": "b"}],
           "columns": [{"name": "x", "column_type": "sampler", "params": {"weights": [2, 1]}},
                       {"name": "answer", "column_type": "llm-text",
                        "prompt": "Say hello\nto {{ x }}\n"},
                       {"name": "new", "column_type": "expression", "expr": "2"}]}
    reasons = list(diff_configs("c.yaml", old, new))
    messages = [r.message for r in reasons]
    assert messages[0] == "c.yaml: column 'x': params.weights changed: [1, 1] → [2, 1]"
    assert messages[1] == "c.yaml: column 'answer': prompt changed: 1 line changed"
    assert "-Say hi" in reasons[1].more and "+Say hello" in reasons[1].more
    assert messages[2:4] == ["c.yaml: column 'gone' removed", "c.yaml: column 'new' added"]
    assert messages[4].startswith("c.yaml: model_configs changed:")
    assert {r.code for r in reasons} == {"code_changed"}
    assert reasons[0].detail == {"file": "c.yaml", "column": "x", "key": "params.weights",
                                 "old": [1, 1], "new": [2, 1]}
    order = list(diff_configs("c.yaml", {"columns": [{"name": "a"}, {"name": "b"}]},
                              {"columns": [{"name": "b"}, {"name": "a"}]}))
    assert [r.message for r in order] == ["c.yaml: column order changed: a, b → b, a"]
