"""Workflowfile loading: the valid example, and each error pointing at its line."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from buildtool.errors import WorkflowError
from buildtool.model import DEFAULT_BATCH_SIZE, InputRef, Location, Stage
from buildtool.schema import workflow_json_schema
from buildtool.workflowfile import STAGE_KEYS, load_workflow

# DESIGN.md §1, verbatim.
EXAMPLE = """\
workflow: persona-conversations   # required: durable identity, [A-Za-z0-9][A-Za-z0-9._-]*
artifacts: artifacts              # optional, default "artifacts"; relative to this file's folder
defaults:                         # optional: any stage key below, applied where a stage omits it
  batch_size: 100
stages:                           # required: a mapping; declaration order is kept for display
  personas:
    generate: stages/personas.py:make     # FILE.py:FUNCTION or package.module:FUNCTION
    num_records: 100
    batch_size: 25
    params: {locale: en}
  conversations:
    generate: stages/conversations.py:make
    seed: personas                        # a stage name, or a data file/glob (.parquet .csv .jsonl)
    num_records: 1000                     # default: the seed's row count
    sampling: ordered                     # ordered (default) | shuffle
  judged:
    generate: stages/judge.py:judge
    seed: conversations
    inputs: [prompts/judge.txt]           # extra dependencies: stage names or file paths/globs
    on_success: stages/filters.py:keep_good
    allow_empty: true
  joined:
    transform: stages/join.py:join        # whole-table function over its inputs (fan-in)
    inputs: [judged, personas]
  report:
    run: python scripts/report.py {inputs} {outputs}   # shell command
    inputs: [joined, scripts/report.py]
    outputs: [reports/summary.md]
"""

EXAMPLE_FILES = [
    "stages/personas.py",
    "stages/conversations.py",
    "stages/judge.py",
    "stages/filters.py",
    "stages/join.py",
    "prompts/judge.txt",
    "scripts/report.py",
]

# Files every invalid case can rely on.
CASE_FILES = ["stages/gen.py", "stages/t.py", "data/seed.parquet", "prompts/p.txt", "notes.txt"]


# Every function the cases name (the loader checks that a code file defines it).
STUB = "".join(f"def {name}(ctx):\n    return []\n" for name in ("make", "judge", "keep_good", "join"))


def make_project(root: Path, text: str, files: list[str]) -> Path:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STUB if name.endswith(".py") else "x\n")
    workflowfile = root / "Workflowfile"
    workflowfile.write_text(text)
    return workflowfile


def load_text(tmp_path: Path, text: str) -> object:
    return load_workflow(make_project(tmp_path, textwrap.dedent(text), CASE_FILES), "Workflowfile")


def load_error(tmp_path: Path, text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        load_text(tmp_path, text)
    return info.value


# ---------------------------------------------------------------- the valid example


def test_example_loads(tmp_path: Path) -> None:
    wf = load_workflow(make_project(tmp_path, EXAMPLE, EXAMPLE_FILES), "Workflowfile")
    assert wf.name == "persona-conversations"
    assert wf.file == (tmp_path / "Workflowfile").resolve()
    assert wf.project_dir == tmp_path.resolve()
    assert wf.artifacts == "artifacts"
    assert list(wf.stages) == ["personas", "conversations", "judged", "joined", "report"]
    kinds = {name: stage.kind for name, stage in wf.stages.items()}
    assert kinds == {
        "personas": "generate",
        "conversations": "generate",
        "judged": "generate",
        "joined": "transform",
        "report": "run",
    }


def test_example_stages(tmp_path: Path) -> None:
    stages = load_workflow(make_project(tmp_path, EXAMPLE, EXAMPLE_FILES)).stages
    personas, conv, judged = stages["personas"], stages["conversations"], stages["judged"]
    assert personas.target == "stages/personas.py:make"
    assert personas.batch_size == 25 and personas.num_records == 100
    assert personas.params == {"locale": "en"}
    assert conv.seed == InputRef("stage", "personas", "personas")
    assert conv.batch_size == 100 and conv.sampling == "ordered"
    assert judged.num_records is None
    assert judged.inputs == (InputRef("file", "prompts/judge.txt", "prompts/judge.txt"),)
    assert judged.on_success == "stages/filters.py:keep_good" and judged.allow_empty
    assert stages["joined"].upstream_stages == ("judged", "personas")
    report = stages["report"]
    assert report.target == "python scripts/report.py {inputs} {outputs}"
    assert report.inputs == (
        InputRef("stage", "joined", "joined"),
        InputRef("file", "scripts/report.py", "scripts/report.py"),
    )
    assert report.outputs == ("reports/summary.md",)


def test_example_locations(tmp_path: Path) -> None:
    stages = load_workflow(make_project(tmp_path, EXAMPLE, EXAMPLE_FILES), "WF").stages
    personas, conv = stages["personas"], stages["conversations"]
    assert personas.locations[""] == Location("WF", 6, 3)
    assert personas.locations["generate"] == Location("WF", 7, 15)
    assert personas.locations["batch_size"] == Location("WF", 9, 17)
    assert conv.locations["seed"] == Location("WF", 13, 11)
    # batch_size came from `defaults`: its location is the default's value
    assert conv.locations["batch_size"] == Location("WF", 4, 15)
    assert stages["report"].location("outputs") == Location("WF", 28, 14)
    assert stages["joined"].location("seed") == Location("WF", 22, 3)


def test_default_file_name_in_locations(tmp_path: Path) -> None:
    path = make_project(tmp_path, EXAMPLE, EXAMPLE_FILES)
    stage = load_workflow(path).stages["joined"]
    assert stage.locations[""].file == str(path)


def test_table_keys_are_stage_fields() -> None:
    fields = {f.name for f in dataclasses.fields(Stage)}
    kinds = {"generate", "transform", "run", "datadesigner"}
    assert kinds <= set(STAGE_KEYS)
    assert set(STAGE_KEYS) - kinds <= fields


# ---------------------------------------------------------------- defaults and references


DEFAULTS_TEXT = textwrap.dedent(
    """\
    workflow: demo
    defaults:
      batch_size: 7
      retries: 3
      allow_empty: true
      description: shared
      on_success_version: v2
    stages:
      g:
        generate: stages/gen.py:make
        num_records: 10
        retries: 1
      t:
        transform: stages/t.py:make
        inputs: [g]
        on_success: stages/gen.py:make
      r:
        run: cat {inputs} > {outputs}
        inputs: [t]
        outputs: [out.txt]
    """
)


def test_defaults_apply_only_where_valid(tmp_path: Path) -> None:
    wf = load_text(tmp_path, DEFAULTS_TEXT)
    g, t, r = wf.stages["g"], wf.stages["t"], wf.stages["r"]
    assert (g.batch_size, g.retries, g.allow_empty, g.description) == (7, 1, True, "shared")
    assert g.on_success_version is None  # needs on_success, which g lacks
    assert g.locations["batch_size"].line == 3
    assert (t.batch_size, t.retries, t.allow_empty) == (DEFAULT_BATCH_SIZE, 0, True)
    assert t.on_success_version == "v2" and t.locations["on_success_version"].line == 7
    assert "batch_size" not in t.locations and "retries" not in t.locations
    assert (r.allow_empty, r.description) == (False, "shared")


def test_reference_forms(tmp_path: Path) -> None:
    wf = load_text(
        tmp_path,
        """\
        workflow: demo
        stages:
          notes.txt:
            generate: stages/gen.py:make
            num_records: 5
          b:
            generate: pkg.module:make
            seed: file:data/seed.parquet
            inputs: [notes.txt, file:notes.txt, data/*.csv, ./prompts/../prompts/p.txt]
            processors: [{drop: [a]}, {rename: {a: b}}, {limit: 3}]
            params: {nested: {list: [1, 2]}}
          c:
            generate: stages/gen.py:make
            seed: "stage:notes.txt"
        """,
    )
    b = wf.stages["b"]
    assert b.target == "pkg.module:make"
    assert b.seed == InputRef("file", "data/seed.parquet", "file:data/seed.parquet")
    assert b.inputs == (
        InputRef("stage", "notes.txt", "notes.txt"),
        InputRef("file", "notes.txt", "file:notes.txt"),
        InputRef("file", "data/*.csv", "data/*.csv"),
        InputRef("file", "prompts/p.txt", "./prompts/../prompts/p.txt"),
    )
    assert b.processors == ({"drop": ["a"]}, {"rename": {"a": "b"}}, {"limit": 3})
    assert b.params == {"nested": {"list": [1, 2]}}
    assert wf.stages["c"].seed == InputRef("stage", "notes.txt", "stage:notes.txt")


def test_merge_keys_and_aliases(tmp_path: Path) -> None:
    wf = load_text(
        tmp_path,
        """\
        workflow: demo
        stages:
          a: &base
            generate: stages/gen.py:make
            num_records: 10
            params: {x: 1}
          b:
            <<: *base
            num_records: 20
        """,
    )
    assert wf.stages["b"].num_records == 20 and wf.stages["b"].params == {"x": 1}
    assert wf.stages["b"].locations["generate"].line == 4


def test_artifacts_folder(tmp_path: Path) -> None:
    wf = load_text(
        tmp_path,
        """\
        workflow: demo
        artifacts: build/out
        stages:
          a: {generate: stages/gen.py:make, num_records: 1, outputs: [build/a.parquet]}
        """,
    )
    assert wf.artifacts == "build/out"
    assert wf.artifacts_root == tmp_path.resolve() / "build/out/demo"


# ---------------------------------------------------------------- invalid files

HEAD = """\
workflow: demo
stages:
  a:
    generate: stages/gen.py:make
    num_records: 10
"""

# (id, text, line, stage, key, hint substring, message substring)
INVALID = [
    ("malformed-yaml", "workflow: demo\nstages:\n  a: [1, 2\n  b: 3\n", 4, None, None, None, "invalid YAML"),
    ("bad-indent", "workflow: demo\n stages: x\n", 2, None, None, None, "invalid YAML"),
    ("empty-file", "# nothing\n", 1, None, None, None, "empty"),
    ("top-level-list", "- workflow\n- stages\n", 1, None, None, None, "mapping"),
    ("missing-workflow", "stages:\n  a: {generate: stages/gen.py:make, num_records: 1}\n", 1, None, "workflow", None, "missing required key"),
    ("missing-stages", "workflow: demo\n", 1, None, "stages", None, "missing required key"),
    ("empty-stages", "workflow: demo\nstages: {}\n", 2, None, "stages", None, "non-empty"),
    ("duplicate-top-key", "workflow: demo\nworkflow: other\nstages: {}\n", 2, None, "workflow", None, "first given at line 1"),
    ("duplicate-stage-key", HEAD + "    num_records: 20\n", 6, "a", "num_records", None, "duplicate key"),
    ("duplicate-stage", HEAD + "  a:\n    run: x\n", 6, None, "a", None, "duplicate key"),
    ("duplicate-in-merge", HEAD + "  b:\n    <<: {run: x, run: y}\n    outputs: [o]\n", 7, "b", "run", None, "duplicate key"),
    ("duplicate-in-processor", HEAD + "    processors:\n      - {rename: {a: b, a: c}}\n", 7, "a", "a", None, "first given at line 7"),
    ("duplicate-in-params", HEAD + "    params:\n      x: 1\n      x: 2\n", 8, "a", "x", None, "duplicate key"),
    ("unknown-top-key", "workflow: demo\nstage:\n  a: {run: x, outputs: [o]}\n", 2, None, "stage", "did you mean `stages`?", "unknown top-level key"),
    ("misspelt-stage-key", HEAD + "    num_record: 5\n", 6, "a", "num_record", "did you mean `num_records`?", "unknown stage key"),
    ("bad-workflow-name", "workflow: -demo\nstages: {}\n", 1, None, "workflow", "letters, digits", "invalid workflow name"),
    ("workflow-name-not-str", "workflow: [a]\nstages: {}\n", 1, None, "workflow", None, "invalid workflow name"),
    ("stage-name-slash", "workflow: demo\nstages:\n  a/b:\n    run: x\n", 3, None, None, "letters, digits", "invalid stage name"),
    ("stage-name-tool-word", "workflow: demo\nstages:\n  build:\n    run: x\n", 3, None, None, "rename", "dd-build command"),
    ("stage-name-not-str", "workflow: demo\nstages:\n  123:\n    run: x\n", 3, None, None, "quote", "must be strings"),
    ("stage-not-mapping", "workflow: demo\nstages:\n  a: stages/gen.py:make\n", 3, "a", None, "kind", "must be a mapping"),
    ("no-kind", "workflow: demo\nstages:\n  a:\n    num_records: 3\n", 3, "a", None, "exactly one", "no kind"),
    ("two-kinds", HEAD + "    transform: stages/t.py:make\n", 6, "a", "transform", None, "two kinds"),
    ("seed-on-transform", "workflow: demo\nstages:\n  t:\n    transform: stages/t.py:make\n    seed: data/seed.parquet\n", 5, "t", "seed", None, "applies to generate and datadesigner stages only"),
    ("processors-on-run", "workflow: demo\nstages:\n  r:\n    run: x\n    outputs: [o]\n    processors: []\n", 6, "r", "processors", None, "generate, transform and datadesigner stages only"),
    ("num-records-string", HEAD.replace("10", '"10"'), 5, "a", "num_records", None, "must be a positive integer, got string '10'"),
    ("num-records-bool", HEAD.replace("10", "true"), 5, "a", "num_records", None, "got boolean true"),
    ("num-records-float", HEAD.replace("10", "2.5"), 5, "a", "num_records", None, "got number 2.5"),
    ("negative-batch-size", HEAD + "    batch_size: -5\n", 6, "a", "batch_size", None, "positive integer, got -5"),
    ("negative-retries", HEAD + "    retries: -1\n", 6, "a", "retries", None, "integer >= 0"),
    ("allow-empty-string", HEAD + "    allow_empty: maybe\n", 6, "a", "allow_empty", None, "true or false"),
    ("params-not-mapping", HEAD + "    params: [1]\n", 6, "a", "params", None, "must be a mapping"),
    ("description-not-str", HEAD + "    description: 12\n", 6, "a", "description", "quote", "must be a string"),
    ("inputs-a-string", HEAD + "    inputs: prompts/p.txt\n", 6, "a", "inputs", "[prompts/p.txt]", "must be a list"),
    ("inputs-item-not-str", HEAD + "    inputs:\n      - prompts/p.txt\n      - 3\n", 8, "a", "inputs", None, "got integer 3"),
    ("bad-sampling", HEAD + "    seed: data/seed.parquet\n    sampling: shufle\n", 7, "a", "sampling", "did you mean `shuffle`?", "unknown sampling"),
    ("unknown-stage-ref", HEAD + "  b:\n    run: x\n    outputs: [o]\n    inputs: [stage:aa]\n", 9, "b", "inputs", "did you mean `a`?", "no stage named `aa`"),
    ("misspelt-stage-input", HEAD.replace("  a:", "  personas:") + "  b:\n    run: x\n    outputs: [o]\n    inputs: [persona]\n", 9, "b", "inputs", "did you mean `personas`?", "no stage or file named `persona`"),
    ("missing-input-file", HEAD + "    inputs: [prompts/missing.txt]\n", 6, "a", "inputs", "relative to the Workflowfile", "no stage or file named"),
    ("missing-forced-file", HEAD + "    inputs: [file:a]\n", 6, "a", "inputs", "check the path", "no file `a`"),
    ("missing-seed-file", "workflow: demo\nstages:\n  a:\n    generate: stages/gen.py:make\n    seed: data/nope.parquet\n", 5, "a", "seed", "check the path", "no stage or file named"),
    ("seed-file-bad-type", "workflow: demo\nstages:\n  a:\n    generate: stages/gen.py:make\n    seed: notes.txt\n", 5, "a", "seed", None, ".parquet, .csv or .jsonl"),
    ("absolute-input", HEAD + "    inputs: [/etc/passwd]\n", 6, "a", "inputs", "relative", "absolute path"),
    ("dotdot-code", HEAD + "    code: [lib/../../x.py]\n", 6, "a", "code", "inside", "leaves the project folder"),
    ("missing-code-file", HEAD + "    code: [lib/x.py]\n", 6, "a", "code", "relative", "no file `lib/x.py`"),
    ("duplicate-input", HEAD + "    inputs:\n      - prompts/p.txt\n      - ./prompts/p.txt\n", 8, "a", "inputs", None, "`./prompts/p.txt` is listed twice in `inputs` (first at line 7)"),
    ("output-in-artifacts", "workflow: demo\nstages:\n  r:\n    run: x\n    outputs: [out.txt, artifacts/x.txt]\n", 5, "r", "outputs", "artifacts", "overlaps the artifacts folder"),
    ("output-contains-artifacts", "workflow: demo\nartifacts: build/art\nstages:\n  r:\n    run: x\n    outputs: [build]\n", 6, "r", "outputs", None, "overlaps the artifacts folder"),
    ("output-glob", "workflow: demo\nstages:\n  r:\n    run: x\n    outputs: [out/*.txt]\n", 5, "r", "outputs", None, "glob"),
    ("export-bad-extension", HEAD + "    outputs: [out.txt]\n", 6, "a", "outputs", None, ".parquet, .csv or .jsonl"),
    ("same-output-twice", "workflow: demo\nstages:\n  r:\n    run: x\n    outputs: [out]\n  s:\n    run: y\n    outputs: [out/s.txt]\n", 8, "s", "outputs", "one producing stage", "of stage `r`"),
    ("input-is-an-output", "workflow: demo\nstages:\n  r:\n    run: x\n    outputs: [out.txt]\n  s:\n    run: y\n    inputs: [out.txt]\n    outputs: [s.txt]\n", 8, "s", "inputs", "depend on the stage instead: `r`", "is an output of stage `r`"),
    ("run-without-outputs", "workflow: demo\nstages:\n  r:\n    run: x\n", 3, "r", "outputs", None, "needs a non-empty `outputs`"),
    ("run-empty-outputs", "workflow: demo\nstages:\n  r:\n    run: x\n    outputs: []\n", 5, "r", "outputs", None, "needs a non-empty `outputs`"),
    ("run-empty-command", "workflow: demo\nstages:\n  r:\n    run: '  '\n    outputs: [o]\n", 4, "r", "run", None, "empty command"),
    ("self-seed", HEAD.replace("num_records: 10", "seed: a"), 5, "a", "seed", None, "stage depends on itself"),
    ("self-input", HEAD + "    inputs: [stage:a]\n", 6, "a", "inputs", None, "stage depends on itself"),
    ("callable-no-function", HEAD.replace(":make", ""), 4, "a", "generate", "package.module:function", "must name a function"),
    ("callable-bad-module", HEAD.replace("stages/gen.py:make", "my-pkg.mod:make"), 4, "a", "generate", None, "must name a function"),
    ("callable-file-missing", HEAD.replace("gen.py", "nope.py"), 4, "a", "generate", "relative", "no file `stages/nope.py`"),
    ("callable-absolute", HEAD.replace("stages/gen.py", "/tmp/gen.py"), 4, "a", "generate", None, "absolute path"),
    ("on-success-version-alone", HEAD + "    on_success_version: v1\n", 6, "a", "on_success_version", "add `on_success`", "needs `on_success`"),
    ("on-success-version-int", HEAD + "    on_success: stages/gen.py:make\n    on_success_version: 2\n", 7, "a", "on_success_version", "quote", "must be a string"),
    ("unknown-processor", HEAD + "    processors:\n      - dorp: [a]\n", 7, "a", "processors", "did you mean `drop`?", "unknown processor `dorp`"),
    ("processor-two-keys", HEAD + "    processors:\n      - {drop: [a], limit: 2}\n", 7, "a", "processors", None, "one key"),
    ("processor-bad-value", HEAD + "    processors:\n      - limit: -2\n", 7, "a", "processors", None, "processor `limit` takes an integer >= 0"),
    ("generate-without-count", "workflow: demo\nstages:\n  a:\n    generate: stages/gen.py:make\n", 3, "a", None, "set num_records", "needs `num_records` or a `seed`"),
    ("defaults-kind-key", "workflow: demo\ndefaults:\n  run: x\nstages:\n  a: {run: y, outputs: [o]}\n", 3, None, "run", None, "cannot be a default"),
    ("defaults-unknown-key", "workflow: demo\ndefaults:\n  batchsize: 3\nstages:\n  a: {run: y, outputs: [o]}\n", 3, None, "batchsize", "did you mean `batch_size`?", "unknown stage key"),
    ("defaults-bad-value", "workflow: demo\ndefaults:\n  batch_size: 0\nstages:\n  a: {run: y, outputs: [o]}\n", 3, None, "batch_size", None, "positive integer"),
    ("defaults-not-mapping", "workflow: demo\ndefaults: [batch_size]\nstages:\n  a: {run: y, outputs: [o]}\n", 2, None, "defaults", None, "must be a mapping"),
    ("artifacts-absolute", "workflow: demo\nartifacts: /tmp/art\nstages:\n  a: {run: y, outputs: [o]}\n", 2, None, "artifacts", None, "absolute path"),
    ("artifacts-dotdot", "workflow: demo\nartifacts: ../art\nstages:\n  a: {run: y, outputs: [o]}\n", 2, None, "artifacts", None, "leaves the project folder"),
    ("unsafe-tag", HEAD + "    params: !!python/object:os.system {}\n", 6, "a", "params", None, "invalid YAML value"),
]


@pytest.mark.parametrize(
    ("text", "line", "stage", "key", "hint", "message"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid(
    tmp_path: Path,
    text: str,
    line: int,
    stage: str | None,
    key: str | None,
    hint: str | None,
    message: str,
) -> None:
    error = load_error(tmp_path, text)
    assert message in error.message
    assert error.line == line
    assert error.file == "Workflowfile"
    assert error.stage == stage
    assert error.key == key
    if hint is not None:
        assert error.hint is not None and hint in error.hint


def test_error_columns(tmp_path: Path) -> None:
    error = load_error(tmp_path, HEAD + "    inputs: [prompts/p.txt, missing.txt]\n")
    assert (error.line, error.column) == (6, 29)
    error = load_error(tmp_path, HEAD + "    num_record: 5\n")
    assert (error.line, error.column) == (6, 5)
    error = load_error(tmp_path, "workflow: demo\nstages:\n  a: [1, 2\n  b: 3\n")
    assert error.column == 4
    assert str(error).startswith("Workflowfile:4:4: invalid YAML")
    error = load_error(tmp_path, "workflow: demo\nx: \x07\n")
    assert (error.line, error.column) == (2, 4) and "#x0007" in error.message


def test_default_display_is_the_path(tmp_path: Path) -> None:
    path = make_project(tmp_path, "workflow: demo\n", [])
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert info.value.file == str(path)


def test_missing_workflowfile(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="no Workflowfile"):
        load_workflow(tmp_path / "Workflowfile")


def test_default_error_names_the_stage_it_applies_to(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        """\
        workflow: demo
        defaults:
          seed: a
        stages:
          a: {generate: stages/gen.py:make}
        """,
    )
    assert (error.line, error.stage, error.key) == (3, "a", "seed")
    assert "depends on itself" in error.message


# ---------------------------------------------------------------- JSON Schema


def test_schema_is_json() -> None:
    schema = workflow_json_schema()
    assert json.loads(json.dumps(schema)) == schema
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$defs"]["stage"]["properties"]["sampling"]["enum"] == ["ordered", "shuffle"]
    assert list(schema["$defs"]["stage"]["properties"]) == list(STAGE_KEYS)


@pytest.mark.parametrize("text", [EXAMPLE, DEFAULTS_TEXT], ids=["example", "defaults"])
def test_schema_accepts_valid_files(text: str) -> None:
    jsonschema.Draft202012Validator(workflow_json_schema()).validate(yaml.safe_load(text))


@pytest.mark.parametrize(
    "change",
    [
        {"num_record": 5},
        {"transform": "stages/join.py:join"},
        {"seed": "x", "generate": None},
        {"sampling": "random"},
        {"processors": [{"dorp": ["a"]}]},
    ],
    ids=["unknown-key", "two-kinds", "no-kind", "bad-sampling", "bad-processor"],
)
def test_schema_rejects(change: dict[str, object]) -> None:
    data = yaml.safe_load(EXAMPLE)
    stage = data["stages"]["personas"]
    stage.update(change)
    for key in [k for k, v in change.items() if v is None]:
        del stage[key]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(workflow_json_schema()).validate(data)


def test_schema_rejects_unknown_top_key() -> None:
    data = yaml.safe_load(EXAMPLE) | {"stage": {}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, workflow_json_schema())
