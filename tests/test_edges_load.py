"""Load-time validation at the hard edges (issue 7): every case is refused by `load_workflow`
with exit 2, a message that names file:line:col, stage and key, and a hint.

- nesting deeper than 64 levels: our message whatever the PyYAML version (libyaml's own
  guard, 1000 levels since PyYAML 6.0.4, must never fire first);
- `params` that are not plain JSON (YAML tags, dates, non-string keys, NaN);
- globs (and plain `code:` paths) that can match another stage's declared outputs;
- outputs that would replace the Workflowfile, a code file or an input;
- stage names that collide with dd-build's own files or with each other after case-folding.

Most cases are unit tests on `load_workflow`; a few go through the CLI to check what a user
sees (exit 2, no traceback, nothing deleted).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildtool import yamlsource
from buildtool.errors import WorkflowError
from buildtool.workflowfile import load_workflow

HEAD = "workflow: demo\nstages:\n  a:\n    generate: code/gen.py:make\n    num_records: 1\n"
FILES = ("code/gen.py", "code/t.py", "code/helper.py", "data/a.txt", "data/b.txt",
         "data/seed.parquet", "notes/n.txt")


def project(root: Path, text: str, files: tuple[str, ...] = FILES) -> Path:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("def make(ctx):\n    return []\n" if name.endswith(".py") else "x\n")
    workflowfile = root / "Workflowfile"
    workflowfile.write_text(text)
    return workflowfile


def error_of(root: Path, text: str, files: tuple[str, ...] = FILES) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        load_workflow(project(root, text, files), "Workflowfile")
    return info.value


def at(error: WorkflowError) -> tuple[int | None, int | None, str | None, str | None]:
    return error.line, error.column, error.stage, error.key


# ---------------------------------------------------------------- 1. nesting depth

# Each shape nests `n` collections under `params` (which is at depth 4: the file, `stages`,
# the stage, `params`), with the line:column of the collection at depth 65.
NEST_SHAPES: dict[str, tuple[Callable[[int], str], tuple[int, int]]] = {
    "flow-sequence": (lambda n: f"    params: {{x: {'[' * n}{']' * n}}}\n", (6, 77)),
    "flow-mapping": (lambda n: f"    params: {{x: {'{a: ' * n}1{'}' * n}}}\n", (6, 257)),
    "block-sequence-one-line": (lambda n: "    params:\n      x:\n        " + "- " * n + "v\n",
                                (8, 129)),
    "block-mappings": (lambda n: "    params:\n      x:\n" + "".join(
        " " * (8 + i) + "a:\n" for i in range(n - 1)) + " " * (7 + n) + "b: 1\n", (68, 69)),
    # a sequence at its mapping key's own indentation opens no indentation level of its own
    "indentless-sequences": (lambda n: "    params:\n      x:\n" + "".join(
        " " * (6 + 2 * i) + "- a:\n" for i in range((n - 1) // 2))
        + " " * (6 + 2 * ((n - 1) // 2)) + "- b\n", (38, 67)),
}


@pytest.mark.parametrize("n", [61, 1001, 3000])
@pytest.mark.parametrize("shape", NEST_SHAPES)
def test_too_deep_nesting_gets_our_message(tmp_path: Path, shape: str, n: int) -> None:
    make, where = NEST_SHAPES[shape]
    error = error_of(tmp_path, HEAD + make(n))
    assert "values nested more than 64 levels deep" in error.message
    assert (error.file, (error.line, error.column)) == ("Workflowfile", where)
    assert error.hint == "flatten the structure"


@pytest.mark.parametrize("shape", NEST_SHAPES)
def test_nesting_of_64_levels_is_fine(tmp_path: Path, shape: str) -> None:
    make, _ = NEST_SHAPES[shape]
    wf = load_workflow(project(tmp_path, HEAD + make(60)))
    assert "x" in wf.stages["a"].params


@pytest.mark.parametrize("shape", NEST_SHAPES)
def test_too_deep_nesting_with_the_pure_python_parser(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str) -> None:
    monkeypatch.setattr(yamlsource, "_LOADER", yaml.SafeLoader)
    make, where = NEST_SHAPES[shape]
    error = error_of(tmp_path, HEAD + make(5000))
    assert "nested more than 64 levels deep" in error.message
    assert (error.line, error.column) == where


def test_our_guard_fires_before_a_parser_guard_that_reads_ahead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A parser whose own nesting guard (at 100 levels here) fires while it reads ahead for
    a simple key, as libyaml's does at 1000: our message still comes first."""
    original = yaml.scanner.Scanner.fetch_flow_collection_start

    def guarded(self: Any, token_class: Any) -> None:
        if self.flow_level >= 100:
            raise yaml.scanner.ScannerError(None, None, "exceeded maximum nesting depth",
                                            self.get_mark())
        original(self, token_class)

    monkeypatch.setattr(yaml.scanner.Scanner, "fetch_flow_collection_start", guarded)
    monkeypatch.setattr(yamlsource, "_LOADER", yaml.SafeLoader)
    make, where = NEST_SHAPES["flow-sequence"]
    with pytest.raises(yaml.YAMLError, match="exceeded maximum"):  # the guard fires first
        list(yaml.parse(HEAD + make(5000), Loader=yaml.SafeLoader))
    error = error_of(tmp_path, HEAD + make(5000))
    assert "nested more than 64 levels deep" in error.message
    assert (error.line, error.column) == where


def test_other_yaml_errors_keep_the_parsers_message(tmp_path: Path) -> None:
    error = error_of(tmp_path, HEAD + "    params: {x: [1, 2}\n")
    assert error.message.startswith("invalid YAML: ") and "nested" not in error.message
    assert error.line == 6
