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

import textwrap
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


def only(error: WorkflowError, message: str) -> WorkflowError:
    """The one error whose message has `message`, of all the load reported."""
    found = [e for e in getattr(error, "errors", [error]) if message in e.message]
    assert len(found) == 1, [e.message for e in getattr(error, "errors", [error])]
    return found[0]


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


# ---------------------------------------------------------------- 2. params are plain JSON

# (the params mapping as written on line 6 after `    params: `, what the message says, the
# column it points at, what the hint says)
BAD_PARAMS: dict[str, tuple[str, str, int, str]] = {
    "key-on": ("{on: 1}", "`params` key `on` reads as boolean true, not a string", 14,
               'quote it (`"on":`)'),
    "key-off": ("{x: 1, off: 2}", "`params` key `off` reads as boolean false", 20, '`"off":`'),
    "key-yes": ("{yes: 1}", "key `yes` reads as boolean true", 14, '`"yes":`'),
    "key-int": ("{1: a, b: c}", "`params` key `1` reads as integer 1", 14, '`"1":`'),
    "key-octal": ("{017: a}", "key `017` reads as integer 15", 14, '`"017":`'),
    "key-sexagesimal": ("{1:20: a}", "key `1:20` reads as integer 80", 14, '`"1:20":`'),
    "key-float": ("{1.5: a}", "key `1.5` reads as number 1.5", 14, '`"1.5":`'),
    "key-inf": ("{.inf: a}", "key `.inf` reads as number inf", 14, '`".inf":`'),
    "key-null": ("{null: a}", "key `null` reads as null", 14, '`"null":`'),
    "key-tilde": ("{~: a}", "key `~` reads as null", 14, '`"~":`'),
    "key-empty": ("{? : a}", "`params` has an empty key, which reads as null", 16, '`"":`'),
    "key-date": ("{2024-01-01: a}", "key `2024-01-01` reads as a date", 14, '`"2024-01-01":`'),
    "key-tagged-int": ("{!!int '7': a}", "key `7` reads as integer 7", 14, '`"7":`'),
    "key-list": ("{[a]: 1}", "found unhashable key", 14, "quote it"),
    "key-mapping": ("{{a: 1}: 1}", "found unhashable key", 14, "quote it"),
    "date": ("{day: 2024-01-01}", "`params.day` is a date, not plain JSON", 19,
             'quote it to make it a string: "2024-01-01"'),
    "datetime": ("{at: 2024-01-01 10:00:00}", "`params.at` is a date", 18, '"2024-01-01 10:00:00"'),
    "timestamp-tag": ("{at: !!timestamp 2024-01-01}", "`params.at` is a date", 18, "quote it"),
    "impossible-date": ("{day: 2024-02-30}", "`2024-02-30` is not a valid timestamp", 19,
                        "quote it to make it a string"),
    "set": ("{s: !!set {a, b}}", "`params.s` is a set (`!!set`), not plain JSON", 17,
            "write it as a list"),
    "binary": ("{b: !!binary aGVsbG8=}", "`params.b` is binary data (`!!binary`)", 17,
               "remove the tag"),
    "omap": ("{o: !!omap [{x: 1}, {y: 2}]}", "`params.o` is an ordered map (`!!omap`)", 17,
             "write it as a mapping"),
    "pairs": ("{p: !!pairs [{x: 1}]}", "`params.p` is a list of pairs (`!!pairs`)", 17,
              "[key, value] pairs"),
    "nan": ("{t: .nan}", "`params.t` is .nan, a number JSON cannot hold", 17,
            "write a finite number"),
    "inf": ("{t: .inf}", "`params.t` is .inf, a number JSON cannot hold", 17, "finite"),
    "minus-inf": ("{t: -.Inf}", "`params.t` is -.Inf", 17, "finite"),
    "python-tuple": ("{t: !!python/tuple [1, 2]}", "could not determine a constructor", 17,
                     "remove the tag"),
    "python-object": ("{t: !!python/object/apply:os.getcwd []}", "could not determine a "
                      "constructor", 17, "remove the tag"),
    "python-name": ("{t: !!python/name:os.system ''}", "could not determine a constructor", 17,
                    "remove the tag"),
    "local-tag": ("{t: !thing x}", "could not determine a constructor for the tag '!thing'",
                  17, "remove the tag"),
    "yaml-value-key": ("{t: =}", "could not determine a constructor", 17, "remove the tag"),
    "bad-int": ("{n: !!int abc}", "`abc` is not a valid int", 17, "quote it"),
    "bad-float": ("{n: !!float abc}", "`abc` is not a valid float", 17, "quote it"),
    "bad-bool": ("{n: !!bool maybe}", "`maybe` is not a valid bool", 17, "quote it"),
    "bad-timestamp": ("{n: !!timestamp soon}", "`soon` is not a valid timestamp", 17,
                      "quote it"),
    "in-list": ("{xs: [1, 2024-01-01]}", "`params.xs[1]` is a date", 22, "quote it"),
    "key-in-list": ("{xs: [a, {on: 1}]}", "`params.xs[1]` key `on` reads as boolean true", 23,
                    '`"on":`'),
    "deep": ("{a: {b: [x, {c: [!!set {q}]}]}}", "`params.a.b[1].c[0]` is a set", 30,
             "write it as a list"),
    "deep-key": ("{a: {b: {yes: 1}}}", "`params.a.b` key `yes` reads as boolean true", 22,
                 '`"yes":`'),
    "through-alias": ("{a: &s !!set {q}, b: *s}", "`params.a` is a set", 17, "a list"),
    "through-merge": ("{a: &m {1: x}, b: {<<: *m}}", "`params.a` key `1` reads as integer 1", 21,
                      '`"1":`'),
}


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_params_not_plain_json_are_refused(tmp_path: Path, case: str) -> None:
    params, message, column, hint = BAD_PARAMS[case]
    error = error_of(tmp_path, HEAD + f"    params: {params}\n")
    assert message in error.message
    assert at(error) == (6, column, "a", "params")
    assert error.hint is not None and hint in error.hint
    assert "Workflowfile:6:" in error.render()


@pytest.mark.parametrize("case", ["key-on", "date", "set", "nan", "deep-key"])
def test_params_not_plain_json_in_defaults(tmp_path: Path, case: str) -> None:
    params, message, column, hint = BAD_PARAMS[case]
    text = f"workflow: demo\ndefaults:\n  params: {params}\n" + HEAD.removeprefix("workflow: demo\n")
    error = error_of(tmp_path, text)
    assert message in error.message
    assert at(error) == (3, column - 2, None, "params")
    assert error.hint is not None and hint in error.hint


def test_params_in_block_style_point_at_the_line(tmp_path: Path) -> None:
    error = error_of(tmp_path, HEAD + (
        "    params:\n"
        "      model: small\n"
        "      options:\n"
        "        retries: 3\n"
        "        on: true\n"))
    assert "`params.options` key `on` reads as boolean true" in error.message
    assert at(error) == (10, 9, "a", "params")


def test_params_in_run_and_transform_stages(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        workflow: demo
        stages:
          t:
            transform: code/t.py:make
            params: {x: ok}
          r:
            run: echo {params.x}
            outputs: [out.txt]
            params: {x: !!binary aGk=}
    """)
    error = error_of(tmp_path, text)
    assert at(error) == (9, 17, "r", "params") and "binary" in error.message


def test_plain_json_params_are_accepted(tmp_path: Path) -> None:
    params = ('{s: text, i: -3, big: 123456789012345678901234567890, f: 1.5e+3, t: true, '
              'f2: false, n: null, e: ~, l: [1, [2, {x: y}]], m: {k: v}, "on": 1, "1": 2, '
              'q: "2024-01-01", tagged: !!str 2024-01-01, y: "yes", '
              'a: &x {b: 1}, c: *x, d: {<<: *x, z: 2}}')
    wf = load_workflow(project(tmp_path, HEAD + f"    params: {params}\n"))
    assert wf.stages["a"].params == {
        "s": "text", "i": -3, "big": 123456789012345678901234567890, "f": 1500.0, "t": True,
        "f2": False, "n": None, "e": None, "l": [1, [2, {"x": "y"}]], "m": {"k": "v"}, "on": 1,
        "1": 2, "q": "2024-01-01", "tagged": "2024-01-01", "y": "yes", "a": {"b": 1},
        "c": {"b": 1}, "d": {"b": 1, "z": 2},
    }


@pytest.mark.parametrize("text", ["num_records: 2024-02-30", "description: !!int abc",
                                  "batch_size: !!bool maybe"])
def test_a_scalar_its_tag_cannot_read_is_an_error_anywhere(tmp_path: Path, text: str) -> None:
    error = only(error_of(tmp_path, HEAD.replace("    num_records: 1\n", "") + f"    {text}\n"),
                 "is not a valid")
    assert error.line == 5
    assert error.hint == "quote it to make it a string, or fix the value"


# ---------------------------------------------------------------- 3. globs over declared outputs

# Stage `gen` exports `exports/gen.parquet` (an export copy: a file); stage `r` (run) writes
# `reports` (a file or a folder) and `tables/t.csv`; stage `c` reads what each case gives it.
PRODUCERS = """\
workflow: demo
stages:
  gen:
    generate: code/gen.py:make
    num_records: 1
    outputs: [exports/gen.parquet]
  r:
    run: make-reports
    outputs: [reports, tables/t.csv]
  c:
    transform: code/t.py:make
"""
CONSUMER_LINE = 12  # the line of the key each case adds to `c`


def consumer(key: str, value: str) -> str:
    return PRODUCERS + f"    {key}: {value}\n"


# (key, value, what the message says, the output and its stage)
GLOB_OVERLAPS: dict[str, tuple[str, str, str, str]] = {
    "star-in-run-folder": ("inputs", "['reports/*.txt']",
                           "glob `reports/*.txt` can match files in `reports`", "r"),
    "star-matches-run-file": ("inputs", "['tables/*.csv']",
                              "glob `tables/*.csv` matches `tables/t.csv`", "r"),
    "star-matches-export": ("inputs", "['exports/*.parquet']",
                            "glob `exports/*.parquet` matches `exports/gen.parquet`", "gen"),
    "double-star-export": ("inputs", "['**/*.parquet']",
                           "glob `**/*.parquet` matches `exports/gen.parquet`", "gen"),
    "double-star-in-run-folder": ("inputs", "['**/*.txt']",
                                  "glob `**/*.txt` can match files in `reports`", "r"),
    "double-star-middle": ("inputs", "['tables/**/t.csv']",
                           "glob `tables/**/t.csv` matches `tables/t.csv`", "r"),
    "trailing-double-star": ("inputs", "['tables/**']", "glob `tables/**` matches", "r"),
    "glob-names-holding-folder": ("inputs", "['tab*']",
                                  "glob `tab*` names a folder that holds `tables/t.csv`", "r"),
    "glob-matches-run-output": ("inputs", "['rep*']", "glob `rep*` matches `reports`", "r"),
    "question-mark": ("inputs", "['tables/?.csv']", "glob `tables/?.csv` matches", "r"),
    "character-class": ("inputs", "['tables/[st].csv']", "glob `tables/[st].csv` matches", "r"),
    "negated-class": ("inputs", "['tables/[!x].csv']", "glob `tables/[!x].csv` matches", "r"),
    "forced-file-glob": ("inputs", "['file:tables/*.csv']", "glob `tables/*.csv` matches", "r"),
    "seed-glob": ("seed", "'exports/*.parquet'", "`seed` glob `exports/*.parquet` matches", "gen"),
    "code-glob": ("code", "['reports/*.py']", "`code` glob `reports/*.py` can match files in",
                  "r"),
    "code-glob-export": ("code", "['exports/*']", "`code` glob `exports/*` matches", "gen"),
    "code-plain-path": ("code", "[tables/t.csv]", "`tables/t.csv` is an output of stage `r`",
                        "r"),
    "code-plain-inside-output": ("code", "[reports/x.py]", "`reports/x.py` is an output of "
                                 "stage `r`", "r"),
    "code-plain-folder-holds": ("code", "[tables]",
                                "`code` path `tables` names a folder that holds `tables/t.csv`",
                                "r"),
    "input-plain-folder-holds": ("inputs", "[tables]",
                                 "`inputs` path `tables` names a folder that holds", "r"),
}


@pytest.mark.parametrize("case", GLOB_OVERLAPS)
def test_globs_over_another_stages_outputs_are_refused(tmp_path: Path, case: str) -> None:
    key, value, message, producer = GLOB_OVERLAPS[case]
    if key == "seed":  # a generate stage has the seed
        text = consumer(key, value).replace("transform: code/t.py:make",
                                            "generate: code/gen.py:make")
    else:
        text = consumer(key, value)
    files = FILES + ("tables/x.txt",)
    error = error_of(tmp_path, text, files)
    assert message in error.message
    assert f"stage `{producer}`" in error.message
    assert at(error)[0::2] == (CONSUMER_LINE, "c") and error.key == key
    assert error.hint is not None
    if key == "code":
        assert f"list `{producer}` under `inputs`" in error.hint
    else:
        assert f"depend on the stage instead: `{producer}`" in error.hint


@pytest.mark.parametrize("value", [
    "['notes/*.txt']",  # elsewhere
    "['reports-old/*.txt']",  # a sibling whose name starts like an output
    "['report/*.txt']",
    "['tables/??.csv']",  # two characters: not t.csv
    "['tables/[!t].csv']",
    "['tables/*.txt']",
    "['tables/.*', 'data/*.txt']",  # `.*` matches hidden names only
    "['*.py']",  # top-level files only: `reports` could be a file, but not a .py one
])
def test_globs_that_cannot_reach_an_output_are_accepted(tmp_path: Path, value: str) -> None:
    load_workflow(project(tmp_path, PRODUCERS + f"    inputs: {value}\n"))


def test_double_star_reaches_into_every_run_output(tmp_path: Path) -> None:
    """A run stage's output may be a folder, so `**/*.py` can match files in it; an export
    copy is a file, which `**/*.py` cannot match."""
    only_exports = PRODUCERS.replace("  r:\n    run: make-reports\n    outputs: [reports, "
                                     "tables/t.csv]\n", "")
    load_workflow(project(tmp_path / "a", only_exports + "    code: ['**/*.py']\n"))
    error = error_of(tmp_path / "b", PRODUCERS + "    code: ['**/*.py']\n")
    assert "`code` glob `**/*.py` can match files in `reports`, an output of stage `r`" \
        in error.message
    assert error.hint is not None and "narrow the glob" in error.hint


def test_hidden_outputs_are_out_of_reach_of_star(tmp_path: Path) -> None:
    text = PRODUCERS.replace("[reports, tables/t.csv]", "[tables/.cache]")
    load_workflow(project(tmp_path, text + "    inputs: ['tables/*', '**/*.csv']\n"))
    error = error_of(tmp_path, text + "    inputs: ['tables/.c*']\n")
    assert "glob `tables/.c*` matches `tables/.cache`" in error.message


@pytest.mark.parametrize("key, value, message", [
    ("inputs", "['reports/*.txt']", "stage depends on itself: `inputs` glob `reports/*.txt` "
                                    "can match files in `reports`, one of its outputs"),
    ("code", "['tables/*']", "stage depends on itself: `code` glob `tables/*` matches "
                             "`tables/t.csv`"),
    ("inputs", "[tables/t.csv]", "stage depends on itself: `tables/t.csv` is one of its outputs"),
])
def test_a_stage_reading_its_own_outputs_depends_on_itself(
        tmp_path: Path, key: str, value: str, message: str) -> None:
    text = PRODUCERS + f"  s:\n    run: make\n    outputs: [reports, tables/t.csv]\n" \
                       f"    {key}: {value}\n"
    text = text.replace("    outputs: [reports, tables/t.csv]\n  c:", "    outputs: [x.txt]\n  c:")
    error = error_of(tmp_path, text)
    assert message in error.message
    assert (error.line, error.stage, error.key) == (15, "s", key)


def test_glob_overlap_with_a_default_is_refused_for_each_stage(tmp_path: Path) -> None:
    text = PRODUCERS.replace("stages:\n", "defaults:\n  code: ['reports/*.py']\nstages:\n")
    error = error_of(tmp_path, text)
    assert "`code` glob `reports/*.py` can match files in `reports`" in error.message
    # the first stage the default applies to that is not `r` itself is `gen`
    assert (error.line, error.stage) == (3, "gen")


# ---------------------------------------------------------------- 4. outputs that would replace sources

SOURCES = """\
workflow: demo
stages:
  gen:
    generate: code/gen.py:make
    num_records: 1
    on_success: hooks/cb.py:make
  mod:
    transform: lib.steps:make
  c:
    transform: code/t.py:make
    inputs: [data/a.txt, 'notes/*.txt']
    code: [code/helper.py]
  r:
    run: make
"""
SOURCE_FILES = FILES + ("hooks/cb.py", "lib/__init__.py", "lib/steps.py")


# (outputs of `r`, what the message says)
REPLACING_OUTPUTS: dict[str, tuple[str, str]] = {
    "workflowfile": ("[Workflowfile]", "output `Workflowfile` would replace the Workflowfile "
                                       "`Workflowfile`"),
    "callable-file": ("[code/gen.py]", "output `code/gen.py` would replace code file "
                                       "`code/gen.py` of stage `gen`"),
    "folder-of-callable": ("[out.txt, code]", "output `code` would replace code file "
                                              "`code/gen.py` of stage `gen`"),
    "on-success-file": ("[hooks]", "output `hooks` would replace code file `hooks/cb.py` of "
                                   "stage `gen`"),
    "module-file": ("[lib/steps.py]", "output `lib/steps.py` would replace code file "
                                      "`lib/steps.py` of stage `mod`"),
    "module-package": ("[lib]", "output `lib` would replace code file `lib/steps.py`"),
}


@pytest.mark.parametrize("case", REPLACING_OUTPUTS)
def test_outputs_that_would_replace_the_workflowfile_or_code_are_refused(
        tmp_path: Path, case: str) -> None:
    outputs, message = REPLACING_OUTPUTS[case]
    error = only(error_of(tmp_path, SOURCES + f"    outputs: {outputs}\n", SOURCE_FILES), message)
    assert at(error)[0::2] == (15, "r") and error.key == "outputs"
    assert error.hint == ("a run stage's outputs are removed before its command runs: "
                          "write the output elsewhere")


# (outputs of `r`, what the message says, the line and stage it points at: the reader's key)
REPLACED_INPUTS: dict[str, tuple[str, str, int, str]] = {
    "plain-input": ("[data/a.txt]", "`data/a.txt` is an output of stage `r`", 11, "c"),
    "folder-of-input": ("[data]", "`data/a.txt` is an output of stage `r`", 11, "c"),
    "glob-input": ("[notes/n.txt]", "glob `notes/*.txt` matches `notes/n.txt`", 11, "c"),
    "folder-of-glob-input": ("[notes]", "glob `notes/*.txt` can match files in `notes`", 11,
                             "c"),
    "code-entry": ("[code/helper.py]", "`code/helper.py` is an output of stage `r`", 12, "c"),
}


@pytest.mark.parametrize("case", REPLACED_INPUTS)
def test_outputs_that_would_replace_an_input_are_refused(tmp_path: Path, case: str) -> None:
    outputs, message, line, stage = REPLACED_INPUTS[case]
    error = error_of(tmp_path, SOURCES + f"    outputs: {outputs}\n", SOURCE_FILES)
    assert message in error.message and "stage `r`" in error.message
    assert (error.line, error.stage) == (line, stage)


@pytest.mark.parametrize("key", ["inputs", "code"])
def test_a_run_stage_replacing_its_own_input_is_refused(tmp_path: Path, key: str) -> None:
    text = SOURCES + f"    {key}: [data/b.txt]\n    outputs: [data/b.txt]\n"
    error = error_of(tmp_path, text, SOURCE_FILES)
    assert "stage depends on itself: `data/b.txt` is one of its outputs" in error.message
    assert (error.line, error.stage, error.key) == (15, "r", key)
    assert error.hint is not None and "removed before its command runs" in error.hint


def test_an_export_output_that_would_overwrite_the_workflowfile(tmp_path: Path) -> None:
    path = project(tmp_path, SOURCES + "    outputs: [x.txt]\n", SOURCE_FILES)
    named = path.rename(tmp_path / "flow.csv")
    text = named.read_text().replace("    on_success: hooks/cb.py:make\n",
                                     "    outputs: [flow.csv]\n")
    named.write_text(text)
    with pytest.raises(WorkflowError) as info:
        load_workflow(named, "flow.csv")
    error = info.value
    assert "output `flow.csv` would overwrite the Workflowfile `flow.csv`" in error.message
    assert (error.file, error.line, error.stage, error.key) == ("flow.csv", 6, "gen", "outputs")
    assert error.hint == "export copies are written over their path: write the output elsewhere"


def test_an_export_output_that_is_another_stages_input(tmp_path: Path) -> None:
    text = SOURCES.replace("    on_success: hooks/cb.py:make\n", "    outputs: [data/seed.parquet]\n"
                           ) + "    inputs: [data/seed.parquet]\n    outputs: [x.txt]\n"
    error = error_of(tmp_path, text, SOURCE_FILES)
    assert "`data/seed.parquet` is an output of stage `gen`" in error.message
    assert (error.line, error.stage) == (15, "r")


# ---------------------------------------------------------------- 5. stage names

@pytest.mark.parametrize("name", ["workflow.json", "Workflow.JSON", "WORKFLOW.json"])
def test_a_stage_named_like_a_file_of_the_tool_is_refused(tmp_path: Path, name: str) -> None:
    error = error_of(tmp_path, HEAD.replace("  a:\n", f"  {name}:\n"))
    assert f"`{name}` cannot name a stage: dd-build keeps a file of that name" in error.message
    assert (error.line, error.column) == (3, 3)
    assert error.hint is not None and "rename the stage" in error.hint


def test_every_file_the_tool_keeps_beside_the_stage_folders_is_reserved(tmp_path: Path) -> None:
    """After a build, each file at the top of `<artifacts>/<workflow>/` is in ARTIFACT_FILES
    (so a stage folder can never collide with it)."""
    from conftest import CHAIN, STAGE_CODE, Project

    from buildtool.lock import LOCK_NAME
    from buildtool.model import ARTIFACT_FILES

    assert LOCK_NAME in ARTIFACT_FILES
    proj = Project(tmp_path / "proj")
    proj.write("code/stages.py", STAGE_CODE)
    proj.write("Workflowfile", CHAIN)
    assert proj.run("build").code == 0
    files = sorted(p.name for p in proj.artifacts.iterdir() if not p.is_dir())
    assert files and set(files) <= set(ARTIFACT_FILES), files


@pytest.mark.parametrize("first, second", [("Judge", "judge"), ("judge", "JUDGE"),
                                           ("a.B", "A.b")])
def test_stage_names_equal_after_case_folding_are_refused(
        tmp_path: Path, first: str, second: str) -> None:
    text = HEAD.replace("  a:\n", f"  {first}:\n") + f"  {second}:\n    generate: code/gen.py:make\n" \
        "    num_records: 1\n"
    error = error_of(tmp_path, text)
    assert f"stage names `{first}` (line 3) and `{second}` (line 6) differ only in letter case" \
        in error.message
    assert (error.line, error.column) == (6, 3)
    assert error.hint is not None and "case-insensitive file system" in error.hint


def test_schema_refuses_the_reserved_names_in_any_case() -> None:
    import jsonschema

    from buildtool.schema import workflow_json_schema

    validator = jsonschema.Draft202012Validator(workflow_json_schema())
    stage = {"generate": "code/gen.py:make", "num_records": 1}
    for name in ["workflow.json", "Workflow.Json", "build"]:
        assert not validator.is_valid({"workflow": "demo", "stages": {name: stage}}), name
    for name in ["workflow-json", "workflow.jsonl", "my.lock", "builds"]:
        assert validator.is_valid({"workflow": "demo", "stages": {name: stage}}), name


# ---------------------------------------------------------------- through the CLI

RUN_STAGE = "  r:\n    run: echo hi > {outputs[0]}\n"
# (edit of the built CHAIN project's Workflowfile: old → new, what stderr must hold)
CLI_CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "params-key-on": ("params: {tag: x}", "params: {tag: x, on: 1}",
                      ("Workflowfile:8:22, stage 'a', key 'params'", "key `on` reads as boolean",
                       'hint: quote it (`"on":`)')),
    "params-set": ("params: {tag: x}", "params: {tag: !!set {x}}",
                   ("Workflowfile:8:19, stage 'a', key 'params'", "`params.tag` is a set",
                    "hint: write it as a list")),
    "params-date": ("params: {tag: x}", "params: {tag: 2024-01-01}",
                    ("Workflowfile:8:19, stage 'a', key 'params'", "is a date",
                     'hint: quote it to make it a string: "2024-01-01"')),
    "glob-over-output": ("    inputs: [a, b]\n", "    inputs: [a, b, 'reports/*.txt']\n"
                         + RUN_STAGE + "    outputs: [reports]\n",
                         ("Workflowfile:16:20, stage 'c', key 'inputs'",
                          "glob `reports/*.txt` can match files in `reports`, an output of "
                          "stage `r`", "hint: depend on the stage instead: `r`")),
    "output-replaces-code": ("    inputs: [a, b]\n", "    inputs: [a, b]\n" + RUN_STAGE
                             + "    outputs: [code/stages.py]\n",
                             ("Workflowfile:19:15, stage 'r', key 'outputs'",
                              "output `code/stages.py` would replace code file "
                              "`code/stages.py` of stage `a`", "hint: a run stage's outputs")),
    "output-replaces-workflowfile": ("    inputs: [a, b]\n", "    inputs: [a, b]\n" + RUN_STAGE
                                     + "    outputs: [Workflowfile]\n",
                                     ("Workflowfile:19:15, stage 'r', key 'outputs'",
                                      "would replace the Workflowfile `Workflowfile`",)),
    "stage-named-like-the-summary": ("  c:\n", "  Workflow.json:\n",
                                     ("Workflowfile:14:3", "`Workflow.json` cannot name a stage",
                                      "hint: rename the stage")),
    "stage-names-differ-in-case": ("  c:\n", "  A:\n",
                                   ("Workflowfile:14:3", "stage names `a` (line 4) and `A` "
                                    "(line 14) differ only in letter case", "hint: rename one")),
}


@pytest.fixture(scope="module")
def built_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import CHAIN, STAGE_CODE, Project

    proj = Project(tmp_path_factory.mktemp("built") / "proj")
    proj.write("code/stages.py", STAGE_CODE)
    proj.write("Workflowfile", CHAIN)
    result = proj.run("build")
    assert result.code == 0, result.stderr
    return proj.root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_with_exit_2_and_changes_nothing(
        built_chain: Path, tmp_path: Path, case: str) -> None:
    import shutil

    from conftest import Project

    old, new, expected = CLI_CASES[case]
    proj = Project(tmp_path / "proj")
    shutil.copytree(built_chain, proj.root)
    workflowfile = proj.root / "Workflowfile"
    text = workflowfile.read_text()
    assert text.count(old) == 1
    workflowfile.write_text(text.replace(old, new))
    before = _snapshot(proj.root)
    for args in (("build",), ("status",)):
        result = proj.run(*args)
        shown = f"{args}: exit {result.code}\n{result.stderr}"
        assert result.code == 2, shown
        assert "Traceback" not in result.stderr + result.stdout, shown
        for text in expected:
            assert text in result.stderr, shown
    assert _snapshot(proj.root) == before


# ---------------------------------------------------------------- the artifacts folder

@pytest.mark.parametrize("value", [
    "['**/*.parquet']", "['**/*.json']", "['**/log.txt']", "['*/*/*/stage.json']",
    "['artifacts/demo/a/batches/*']", "[artifacts/demo/a/stage.json]", "[artifacts]",
])
def test_inputs_that_reach_into_the_artifacts_folder_are_refused(
        tmp_path: Path, value: str) -> None:
    """dd-build writes there during every build: such an input would rerun the stage every
    time, or read a half-written record."""
    error = error_of(tmp_path, HEAD + f"    inputs: {value}\n")
    assert "reaches into the artifacts folder `artifacts`" in error.message
    assert error.stage == "a" and error.key == "inputs"


def test_a_folder_input_that_holds_the_artifacts_folder_is_refused(tmp_path: Path) -> None:
    text = HEAD.replace("workflow: demo\n", "workflow: demo\nartifacts: data/art\n")
    error = error_of(tmp_path, text + "    inputs: [data]\n")
    assert "reaches into the artifacts folder `data/art`" in error.message


@pytest.mark.parametrize("value", ["['**/*.csv']", "['**/*.py']", "['data/*']", "['.art*/**']"])
def test_globs_that_cannot_match_what_dd_build_writes_are_accepted(
        tmp_path: Path, value: str) -> None:
    (tmp_path / "x.csv").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "x.csv").write_text("a\n1\n")
    load_workflow(project(tmp_path, HEAD + f"    inputs: {value}\n"))
