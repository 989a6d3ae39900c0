"""Generated: a compiled workflow carries each stage's canonical spec and fingerprint, and a
hit gives exactly what a full reading computes.

Random Workflowfiles use every stage key of the key table (keys.STAGE_KEYS: the test fails
when a key is added that the generator does not write) for every kind that takes it, with
every form of its value: callables in a file and in a package, stage, file, glob, folder and
`stage:`/`file:` references, every processor, export copies of each format, params of every
plain JSON type (ints beyond 64 bits, -0.0, 1.0 against 1, strings that look like numbers,
multi-line and non-ASCII text, empty and nested lists and mappings), and `defaults:`.

For each: the full reading (a miss, stored), then a hit; every stage of the hit carries the
spec and fingerprint that `canonical_spec` computes for the stage as the full reading made it,
byte for byte as canonical JSON (so 1, 1.0 and true stay apart), and a probe of the hit
reports them without computing any.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildtool import compiled, fingerprint
from buildtool.keys import PROCESSORS, STAGE_KEYS, TOP_KEYS
from buildtool.model import Workflow

CODE = '''\
def make(ctx):
    return [{"a": 1, "b": "x"}]


def join(ctx):
    return [{"a": 1, "b": "x"}]


def done(ctx):
    return None
'''


LIMIT_NAMES = ["openai", "local-llm"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A plain JSON value, of every type params may hold."""
    kinds = ["int", "big", "neg", "float", "negzero", "whole", "huge", "true", "false", "null",
             "str", "numstr", "multi", "unicode", "empty"]
    if depth < 3:
        kinds += ["list", "dict", "emptylist", "emptydict"]
    kind = rng.choice(kinds)
    return {
        "int": lambda: rng.randint(0, 1000), "big": lambda: 2 ** 70 + rng.randint(0, 9),
        "neg": lambda: -rng.randint(1, 10 ** 6), "float": lambda: rng.random(),
        "negzero": lambda: -0.0, "whole": lambda: 1.0, "huge": lambda: 1e300,
        "true": lambda: True, "false": lambda: False, "null": lambda: None,
        "str": lambda: rng.choice(["x", "yes", "no", "null", "a b", "#c", "k: v"]),
        "numstr": lambda: rng.choice(["5", "1.0", "0x10", "1e3", "-0"]),
        "multi": lambda: "line one\nline two\n" * rng.randint(1, 3),
        "unicode": lambda: rng.choice(["é", "日本", "emoji 🎉", "tab\there"]),
        "empty": lambda: "",
        "list": lambda: [_value(rng, depth + 1) for _ in range(rng.randint(1, 3))],
        "dict": lambda: {f"k{i}": _value(rng, depth + 1) for i in range(rng.randint(1, 3))},
        "emptylist": lambda: [], "emptydict": lambda: {},
    }[kind]()


def _processors(rng: random.Random) -> list[dict[str, Any]]:
    made = {"drop": {"drop": ["b"]}, "keep": {"keep": ["a", "b"]},
            "rename": {"rename": {"b": "c"}}, "filter": {"filter": "a > 0"},
            "dedupe": {"dedupe": ["a"]}, "limit": {"limit": rng.randint(1, 5)}}
    assert set(made) == set(PROCESSORS), "a new processor: add it here"
    return [made[name] for name in rng.sample(sorted(made), rng.randint(1, 3))]


def _stage(rng: random.Random, index: int, earlier: list[tuple[str, str]]) -> dict[str, Any]:
    """Stage `index`, given the (name, kind) of the stages before it."""
    tables = [n for n, k in earlier if k != "run"]
    kind = rng.choice(["generate", "generate", "transform", "run", "datadesigner"] if tables
                      else ["generate", "run", "datadesigner"])
    body: dict[str, Any] = {}
    if kind == "generate":
        body["generate"] = rng.choice(["code/stages.py:make", "pkg.mod:make"])
        if tables and rng.random() < 0.4:
            body["seed"] = rng.choice([rng.choice(tables), "stage:" + rng.choice(tables)])
        elif rng.random() < 0.4:
            body["seed"] = rng.choice(["data/seed.csv", "file:data/seed.csv", "data/*.csv",
                                       "data/rows"])
        else:
            body["num_records"] = rng.randint(1, 50)
        body["batch_size"] = rng.randint(1, 20)
        body["sampling"] = rng.choice(STAGE_KEYS["sampling"].choices)
        body["retries"] = rng.randint(0, 3)
        if rng.random() < 0.5:
            body["concurrency"] = rng.randint(1, 300)  # beyond the cap too
            body["executor"] = rng.choice(STAGE_KEYS["executor"].choices)
    elif kind == "datadesigner":
        body["datadesigner"] = rng.choice(["configs/dd.yaml", "./configs/dd.json"])
        if tables and rng.random() < 0.4:
            body["seed"] = rng.choice(tables)
        elif rng.random() < 0.3:
            body["seed"] = "data/seed.csv"
        else:
            body["num_records"] = rng.randint(1, 50)
        body["batch_size"] = rng.randint(1, 20)
        if rng.random() < 0.5:
            body["models"] = "configs/models.yaml"
        if rng.random() < 0.5:
            body["concurrency"] = rng.randint(1, 8)
    elif kind == "transform":
        body["transform"] = rng.choice(["code/stages.py:join", "pkg.mod:join"])
    else:
        body["run"] = ""  # the command is chosen below, from the inputs it may name
    inputs: list[str] = []
    if kind == "transform" or (earlier and rng.random() < 0.5):
        picks = rng.sample([n for n, _ in earlier], min(len(earlier), rng.randint(1, 2)))
        if kind == "transform":
            picks = [rng.choice(tables)]
        inputs += [rng.choice([p, "stage:" + p]) for p in picks]
    if rng.random() < 0.5:
        inputs.append(rng.choice(["data/notes.txt", "file:data/notes.txt", "data/*.txt",
                                  "data/rows", "data/**/*.csv"]))
    if inputs:
        body["inputs"] = inputs
    if kind == "run":
        commands = ["echo {params.k} > {outputs}"]
        if inputs:
            commands.append("cat {inputs} > {outputs[0]}")
        if any(not i.startswith("stage:") and i not in dict(earlier) for i in inputs):
            commands.append("true {inputs.files} > {outputs[0]}")
        body["run"] = rng.choice(commands)
        body["outputs"] = [f"out/r{index}.txt"]
        body["params"] = {"k": _value(rng) if rng.random() < 0.5 else rng.randint(0, 9)}
    else:
        if rng.random() < 0.5:
            body["outputs"] = [f"exports/s{index}.{ext}" for ext in
                               rng.sample(["parquet", "csv", "jsonl"], rng.randint(1, 2))]
        if rng.random() < 0.8:
            body["params"] = {f"p{i}": _value(rng) for i in range(rng.randint(1, 4))}
        if rng.random() < 0.5:
            body["processors"] = _processors(rng)
        if rng.random() < 0.5:
            body["on_success"] = rng.choice(["code/stages.py:done", "pkg.mod:done"])
            if rng.random() < 0.5:
                body["on_success_version"] = rng.choice(["v1", "2", "ä"])
        if rng.random() < 0.5:
            body["allow_empty"] = rng.choice([True, False])
    if rng.random() < 0.5:
        body["code"] = rng.sample(["code/helper.py", "code/*.py", "pkg"], rng.randint(1, 2))
    if kind in ("generate", "transform") and rng.random() < 0.5:
        body["rate_limit"] = rng.choice(LIMIT_NAMES)
    if rng.random() < 0.5:
        body["description"] = _text(rng)
    return body


def _text(rng: random.Random) -> str:
    return rng.choice(["plain", "two\nlines", "ünïcode", ""])


def _workflowfile(rng: random.Random) -> tuple[str, set[str]]:
    """A Workflowfile's text, and the stage keys it sets (defaults included)."""
    stages: dict[str, dict[str, Any]] = {}
    earlier: list[tuple[str, str]] = []
    for i in range(rng.randint(3, 9)):
        name = f"s{i}"
        stages[name] = _stage(rng, i, earlier)
        kind = next(k for k in ("generate", "transform", "run", "datadesigner")
                    if k in stages[name])
        earlier.append((name, kind))
    doc: dict[str, Any] = {"workflow": "spec", "stages": stages}
    if rng.random() < 0.5:
        doc["jobs"] = rng.randint(1, 40)
    if rng.random() < 0.5:
        doc["executor"] = {"dask": rng.choice([None, {}, {"scheduler": None},
                                               {"scheduler": "tcp://10.0.0.5:8786"},
                                               {"scheduler": "sched.local:8786"}])}
    if rng.random() < 0.5:  # not fingerprinted, but carried by a hit (Workflow.cache)
        doc["cache"] = rng.choice(["../shared-cache", "/tmp/dd-cache-spec", ".cache-here",
                                   "~/dd-cache", "caché folder"])
    if any("rate_limit" in body for body in stages.values()):
        doc["rate_limits"] = {LIMIT_NAMES[0]: {"requests_per_second": rng.choice([0.5, 5, 100])},
                              LIMIT_NAMES[1]: {"max_in_flight": rng.randint(1, 64),
                                               "requests_per_second": 2}}
    if rng.random() < 0.5:
        doc["defaults"] = {"description": _text(rng), "params": {"d": _value(rng)}}
    used = {key for body in stages.values() for key in body} | set(doc.get("defaults", {}))
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), used


def _project(root: Path, text: str) -> Path:
    for rel, content in {"code/stages.py": CODE, "code/helper.py": "X = 1\n",
                         "pkg/__init__.py": "", "pkg/mod.py": CODE,
                         "data/seed.csv": "a,b\n1,x\n", "data/notes.txt": "notes\n",
                         "data/rows/part.csv": "a,b\n2,y\n",
                         "data/rows/part.parquet": "",
                         "configs/dd.yaml": "columns: []\n", "configs/dd.json": "{}\n",
                         "configs/models.yaml": "providers: []\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    (root / "artifacts").mkdir()
    (root / "Workflowfile").write_text(text)
    return root / "Workflowfile"


def _canonical(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def _assert_carries_its_specs(hit: Workflow, read: Workflow) -> None:
    assert list(hit.stages) == list(read.stages)
    for name, stage in hit.stages.items():
        assert fingerprint.KNOWN_SPEC in stage.__dict__, name  # stored, not computed
        spec, print_ = stage.__dict__[fingerprint.KNOWN_SPEC]
        truth = fingerprint.canonical_spec(read.stages[name])
        assert _canonical(spec) == _canonical(truth), name
        assert print_ == fingerprint.spec_fingerprint(truth), name
        assert fingerprint.stage_spec(stage) == (spec, print_)


SEEDS = range(40)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_hit_carries_the_spec_and_fingerprint_a_full_reading_computes(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(1400 + seed)
    text, _ = _workflowfile(rng)
    path = _project(tmp_path, text)
    read = compiled.load(path, "Workflowfile")  # the full reading, stored
    assert list((tmp_path / "artifacts" / compiled.FOLDER).glob("*.bin")), text
    hit = compiled.load(path, "Workflowfile")
    assert hit is not read and hit == read
    _assert_carries_its_specs(hit, read)


def test_the_generator_writes_every_stage_key_of_the_key_table() -> None:
    """A key added to keys.py and not to the generator fails here."""
    written: set[str] = set()
    for seed in SEEDS:
        written |= _workflowfile(random.Random(1400 + seed))[1]
    assert written == set(STAGE_KEYS)


def test_the_generator_writes_every_top_level_key() -> None:
    """A top-level key added to keys.py and not to the generator fails here."""
    written: set[str] = set()
    for seed in SEEDS:
        written |= set(yaml.safe_load(_workflowfile(random.Random(1400 + seed))[0]))
    assert written == set(TOP_KEYS) - {"artifacts"}  # _project fixes the artifacts folder


def test_a_hit_carries_the_cache_folder(tmp_path: Path) -> None:
    path = _project(tmp_path, "workflow: w\ncache: ../elsewhere\nstages:\n  a:\n"
                              "    run: 'true'\n    outputs: [o.txt]\n")
    read = compiled.load(path, "Workflowfile")
    hit = compiled.load(path, "Workflowfile")
    assert hit is not read and hit.cache == read.cache == "../elsewhere"


def test_a_probe_of_a_hit_computes_no_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    from buildtool.probe import probe

    path = _project(tmp_path, _workflowfile(random.Random(7))[0])
    compiled.load(path, "Workflowfile")
    hit = compiled.load(path, "Workflowfile")
    expected = {n: s.__dict__[fingerprint.KNOWN_SPEC] for n, s in hit.stages.items()}

    def refused(stage: Any) -> Any:
        raise AssertionError(f"canonical_spec computed for {stage.name}")

    monkeypatch.setattr(fingerprint, "canonical_spec", refused)
    facts = probe(hit, list(hit.stages))
    assert {n: (f.spec, f.fingerprint) for n, f in facts.items()} == expected


def test_a_stage_without_a_stored_spec_computes_it_once(tmp_path: Path) -> None:
    path = _project(tmp_path, _workflowfile(random.Random(8))[0])
    read = compiled.load(path, "Workflowfile", store=False)
    stage = next(iter(read.stages.values()))
    stage.__dict__.pop(fingerprint.KNOWN_SPEC, None)
    first = fingerprint.stage_spec(stage)
    assert first[1] == fingerprint.spec_fingerprint(fingerprint.canonical_spec(stage))
    assert fingerprint.stage_spec(stage) is first  # kept on the stage
