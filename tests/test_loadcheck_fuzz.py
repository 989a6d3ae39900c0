"""Property: every independent mistake in a Workflowfile is reported, once, at its place.

A generator writes valid Workflowfiles over every stage kind and every stage key of keys.py
(values in each YAML spelling: flow and block collections, quoted and plain scalars, tags),
and a catalogue of mistakes — for every key that can be wrong, each value type it can wrongly
have, and the checks that look at several stages (claims, seeds read as tables, `{inputs[N]}`).
A drawn Workflowfile gets mistakes in several stages (at most one per stage, never in a stage
another mistake's check relies on) and at the top level. The loader must report exactly one
error per mistake, with the mistake's line, stage and key, and nothing else; and a Workflowfile
with no mistake must load.

`datadesigner:` stages are drawn with their files: a config whose `model_configs` name
providers, and a `models:` file (YAML block or flow, or JSON) of providers with and without
`api_key` and `provider_type`, endpoints with `${VAR}`/`$VAR`, and variables that are never
set (a load check does not look at the environment: the stage checks them when it starts).
Its mistakes: a provider key dd-build refuses (the error names it and has a hint), a key
written in the file instead of a variable's name (refused with a hint, the key never shown,
not even by a YAML syntax error on its line), a wrong type or a missing value for each key of
a provider and of the file, another section, a file that is not UTF-8, a model config naming
a provider the file does not have. Each error names the models file (and the offending key);
its wording is never pinned. Data Designer is never imported (the extra is not needed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildtool.errors import WorkflowError
from buildtool.keys import STAGE_KEYS, TOP_KEYS
from buildtool.model import KINDS
from buildtool.workflowfile import load_workflow

CODE = {
    "code/gen.py": (
        "import os\n\n\ndef make(ctx):\n    return []\n\n\ndef _join(ctx):\n    return []\n\n\n"
        "join = _join\nrows = make\nif os.environ.get('NEVER_SET'):\n    def keep(ctx):\n"
        "        return []\nelse:\n    keep = make\n\n\nasync def amake(ctx):\n    return []\n\n\n"
        "VALUE = 'x'\n"),
    "code/cb.py": ("from os.path import basename as _b\n\n\ndef keep(ctx):\n    return None\n\n\n"
                   "async def akeep(ctx):\n    return None\n"),
    "code/helper.py": "X = 1\n",
    "pkg/__init__.py": "",
    "pkg/mod.py": "def make(ctx):\n    return []\n",
    "data/a.txt": "a\n", "data/b.txt": "b\n", "data/x.txt": "x\n", "data/seed.csv": "id\n1\n",
    "configs/dd.yaml": "columns: []\n", "configs/dd.json": "{}\n",
    "configs/models.yaml": "providers: []\n",
}


class Raw(str):
    """A value written into the YAML as it is (a tag, a date, a plain scalar)."""


def dump(value: Any) -> str:
    """`value` in YAML flow style (JSON, which YAML reads, except for `Raw` text)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dump(k)}: {dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Key:
    name: str
    value: Any
    block: bool = False  # a non-empty list or mapping written one item a line

    def lines(self) -> list[str]:
        value = self.value
        if self.block and isinstance(value, list) and value:
            return [f"    {self.name}:"] + [f"      - {dump(v)}" for v in value]
        if self.block and isinstance(value, dict) and value:
            return [f"    {self.name}:"] + [f"      {dump(k)}: {dump(v)}" for k, v in value.items()]
        return [f"    {self.name}: {dump(value)}"]


# Where a mistake's error points: the key's line (None), the value's node (-1: the line after
# the key for a block collection), or item i of a list or mapping.
Item = int | None


@dataclass
class Expect:
    key_line: str | None  # the key whose line it is on; None: the stage name's line
    item: Item
    error_key: str | None
    stage: str | None = "<own>"  # the stage the error names; "<own>": the mutated stage
    names: tuple[str, ...] = ()  # what its message must name (a file, a key)
    hidden: tuple[str, ...] = ()  # what no error may show (a key written in the file)
    hint: bool = False  # it must have a hint


@dataclass
class Stage:
    name: str
    kind: str
    keys: dict[str, Key] = field(default_factory=dict)
    protected: bool = False  # other mistakes' checks rely on it: never mutated
    files: dict[str, bytes] = field(default_factory=dict)  # project files it names, drawn

    def put(self, name: str, value: Any, block: bool = False) -> None:
        self.keys[name] = Key(name, value, block)


class Draw:
    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def choice(self, options: list[Any]) -> Any:
        return self.data.draw(st.sampled_from(options))

    def chance(self, p: float = 0.5) -> bool:
        return self.data.draw(st.floats(0, 1)) < p

    def int(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))


# ---------------------------------------------------------------- valid Workflowfiles

VALID_PROCESSORS = [{"drop": ["x"]}, {"keep": ["id", "x"]}, {"rename": {"a": "b"}},
                    {"filter": "id > 1"}, {"dedupe": ["id"]}, {"limit": 3}]
VALID_PARAMS = [{}, {"x": 1}, {"x": "s", "y": {"z": [1, 2.5, None, True]}},
                {"x": Raw("plain words"), "deep": {"a": {"b": "c"}}}]


def valid_stages(draw: Draw) -> list[Stage]:
    report = Stage("report", "run", protected=True)
    report.put("run", "echo hi > {outputs[0]}")
    report.put("outputs", ["out/report.md"])
    stages = [report]
    for i in range(draw.int(1, 4)):
        stages.append(generate_stage(draw, f"g{i}", [s.name for s in stages if s.kind == "generate"]))
    gens = [s.name for s in stages if s.kind == "generate"]
    for i in range(draw.int(0, 2)):
        stages.append(transform_stage(draw, f"t{i}", gens))
    for i in range(draw.int(0, 2)):
        stages.append(datadesigner_stage(draw, f"d{i}", gens))
    for i in range(draw.int(1, 2)):
        stages.append(run_stage(draw, f"r{i}", gens))
    for stage in stages[1:]:
        common_keys(draw, stage)
    return stages


def generate_stage(draw: Draw, name: str, earlier: list[str]) -> Stage:
    stage = Stage(name, "generate")
    stage.put("generate", draw.choice(["code/gen.py:make", "code/gen.py:rows", "pkg.mod:make",
                                       "code/gen.py:keep", "./code/gen.py:make"]))
    seeds = ["data/seed.csv", "file:data/seed.csv", Raw("data/seed.csv")] + \
        [n for n in earlier] + [f"stage:{n}" for n in earlier]
    if draw.chance():
        stage.put("seed", draw.choice(seeds))
    if "seed" not in stage.keys or draw.chance():
        stage.put("num_records", draw.choice([1, 20, Raw("0x10"), Raw("!!int 7")]))
    if draw.chance():
        stage.put("batch_size", draw.int(1, 100))
    if draw.chance():
        stage.put("sampling", draw.choice(["ordered", "shuffle", Raw("shuffle")]))
    if draw.chance():
        stage.put("retries", draw.int(0, 3))
    limit_key(draw, stage)
    boundary_keys(draw, stage, "parquet")
    return stage


def transform_stage(draw: Draw, name: str, gens: list[str]) -> Stage:
    stage = Stage(name, "transform")
    stage.put("transform", draw.choice(["code/gen.py:join", "code/gen.py:make"]))
    inputs = [draw.choice(gens)] + (["data/a.txt"] if draw.chance() else [])
    stage.put("inputs", inputs, draw.chance())
    limit_key(draw, stage)
    boundary_keys(draw, stage, "jsonl")
    return stage


def datadesigner_stage(draw: Draw, name: str, gens: list[str]) -> Stage:
    stage = Stage(name, "datadesigner")
    stage.put("datadesigner", draw.choice(["configs/dd.yaml", "./configs/dd.json",
                                            Raw("configs/dd.yaml")]))
    if draw.chance():
        stage.put("seed", draw.choice(["data/seed.csv", *gens]))
    if "seed" not in stage.keys or draw.chance():
        stage.put("num_records", draw.choice([1, 20, Raw("0x10")]))
    if draw.chance():
        stage.put("batch_size", draw.int(1, 100))
    if draw.chance(0.25):
        stage.put("models", draw.choice(["configs/models.yaml", Raw("configs/models.yaml")]))
    elif draw.chance(0.6):
        providers = [valid_provider(draw, n) for n in
                     draw.data.draw(st.lists(st.sampled_from(PROVIDER_NAMES), max_size=3,
                                             unique=True))]
        put_models(draw, stage, providers)
    if draw.chance():
        stage.put("concurrency", draw.int(1, 8))
    boundary_keys(draw, stage, "csv")
    return stage


# ---------------------------------------------------------------- models: files

# Variables named by the drawn files: never set (a load check does not need them).
UNSET = ("DD_LOADCHECK_UNSET_KEY", "DD_LOADCHECK_UNSET_HOST", "dd_loadcheck_unset_lower")
PROVIDER_NAMES = ["local", "nv-build", "open.ai", "my_server"]
ENDPOINTS = ["http://localhost:8000/v1", "https://integrate.api.nvidia.com/v1",
             "https://${DD_LOADCHECK_UNSET_HOST}/v1", "$DD_LOADCHECK_UNSET_HOST",
             "http://h:1/${DD_LOADCHECK_UNSET_HOST}/${HOME}", "", "${}"]
ABSENT = object()
API_KEYS = [ABSENT, None, "OPENAI_API_KEY", "DD_LOADCHECK_UNSET_KEY",
            "dd_loadcheck_unset_lower", "_X9"]
# Keys written in the file instead of a variable's name (each not a variable's name).
SECRETS = ["sk-proj-Abc123SecretXyz", "nvapi-Q7.secret_9", "Bearer tok3nSecret",
           "abc def s3cret", "key=s3cretvalue", "sk:s3cret/long+key=="]


def valid_provider(draw: Draw, name: str) -> dict[str, Any]:
    provider: dict[str, Any] = {"name": name, "endpoint": draw.choice(ENDPOINTS)}
    if draw.chance():
        provider["provider_type"] = draw.choice(["openai", "custom"])
    key = draw.choice(API_KEYS)
    if key is not ABSENT:
        provider["api_key"] = key
    return provider


def models_text(draw: Draw, data: Any, json_file: bool) -> bytes:
    """`data` as a models file: JSON, or YAML in block or flow style."""
    if json_file:
        return (json.dumps(data, indent=draw.choice([None, 2])) + "\n").encode()
    import yaml

    return yaml.safe_dump(data, default_flow_style=draw.choice([False, True, None]),
                          sort_keys=False, allow_unicode=True).encode()


def put_models(draw: Draw, stage: Stage, providers: list[dict[str, Any]],
               text: bytes | None = None, uses: list[str] | None = None) -> str:
    """The stage's own models file (of `providers`, or `text`) and a config whose
    model_configs use providers of it (`uses`: the names; else drawn from `providers`)."""
    suffix = draw.choice([".yaml", ".yml", ".json"])
    path = f"configs/models_{stage.name}{suffix}"
    if text is None:
        text = models_text(draw, {"providers": providers}, suffix == ".json")
    stage.files[path] = text
    stage.put("models", draw.choice([path, "./" + path, Raw(path)]))
    names = [p["name"] for p in providers if isinstance(p.get("name"), str)]
    if uses is None:
        uses = draw.data.draw(st.lists(st.sampled_from(names), max_size=2)) if names else []
    configs = [{"alias": f"m{i}", "model": "some/model", "provider": name}
               for i, name in enumerate(uses)]
    if draw.chance(0.3):
        configs.append({"alias": "default-provider", "model": "some/model"})
    config = f"configs/dd_{stage.name}.yaml"
    stage.files[config] = json.dumps({"columns": [], "model_configs": configs}).encode()
    stage.put("datadesigner", config)
    return path


def m_models(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    """One mistake in the stage's models file: refused at load, at the `models` key, naming
    the file (and the key that is wrong)."""
    providers = [valid_provider(draw, n) for n in
                 draw.data.draw(st.lists(st.sampled_from(PROVIDER_NAMES), min_size=1,
                                         max_size=3, unique=True))]
    bad = draw.choice(providers)
    wrong = draw.choice(["extra key", "literal key", "api_key type", "name", "endpoint",
                         "provider_type", "providers", "section", "yaml", "not utf-8",
                         "same name"])
    names: tuple[str, ...] = (bad["name"],)
    hidden: tuple[str, ...] = ()
    hint = False
    text = None
    if wrong == "extra key":
        key = draw.choice(["extra_body", "extra_headers", "temperature", "Endpoint", "api_keys",
                           "model"])
        bad[key] = draw.choice([{"x": 1}, 0.2, "v", ["a"]])
        names, hint = (bad["name"], key), True
    elif wrong == "literal key":
        secret = draw.choice(SECRETS)
        bad["api_key"] = secret
        hidden, hint = (secret,), True
    elif wrong == "api_key type":
        secret = draw.choice(SECRETS)
        bad["api_key"] = draw.choice([5, True, 1.5, [secret], {"key": secret}, ""])
        names, hidden = (bad["name"], "api_key"), (secret,)
    elif wrong in ("name", "endpoint", "provider_type"):
        value = draw.choice([ABSENT, None, 5, ["x"], {"a": "b"}, True] +
                            ([""] if wrong == "name" else []))
        if value is ABSENT and wrong != "provider_type":
            del bad[wrong]
        else:
            bad[wrong] = value if value is not ABSENT else 7
        names = (wrong,) if wrong == "name" else (bad["name"], wrong)
    elif wrong == "same name":  # two providers of one name: which one a model uses is a guess
        twin = {**valid_provider(draw, bad["name"]), "endpoint": "http://other:1/v1"}
        providers.insert(draw.int(0, len(providers)), twin)
    elif wrong == "providers":
        text = draw.choice([b"", b"providers:\n", b"providers: {}\n", b"providers: local\n",
                            b"providers: [local]\n", b"- name: local\n  endpoint: http://h\n",
                            b"providers: [[]]\n", b"{}\n", b"5\n"])
        names = ("providers",)
    elif wrong == "section":
        section = draw.choice(["model_configs", "defaults", "provider", "extra_body"])
        data = {"providers": providers, section: draw.choice([[], {"a": 1}, "x"])}
        text = models_text(draw, data, False)
        names, hint = (section,), True
    elif wrong == "yaml":  # a syntax error on the line of a key written in the file
        secret = draw.choice([s for s in SECRETS if ":" not in s and "=" not in s])
        text = draw.choice([
            f"providers:\n  - name: local\n    endpoint: http://h\n    api_key: {secret}: x\n",
            f"providers:\n  - {{name: local, endpoint: 'http://h', api_key: '{secret}'\n",
            f"providers:\n  - name: local\n\tapi_key: {secret}\n",
            f'providers: [{{"name": "local", "api_key": "{secret}\\q"}}]\n']).encode()
        names, hidden = (), (secret,)
    else:
        text = b"providers:\n  - name: caf\xe9\n    endpoint: http://h\n"
        names = ()
    path = put_models(draw, stage, providers, text, uses=[])
    return Expect("models", None, "models", names=(path, *names), hidden=hidden, hint=hint)


def m_model_provider(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    """A model config of the config names a provider the models file does not have (or the
    stage names no models file)."""
    providers = [valid_provider(draw, n) for n in
                 draw.data.draw(st.lists(st.sampled_from(PROVIDER_NAMES[:2]), max_size=2,
                                         unique=True))]
    path = put_models(draw, stage, providers, uses=["not-there"])
    if draw.chance(0.3):
        del stage.keys["models"]
        return Expect("datadesigner", None, "datadesigner",
                      names=(stage.keys["datadesigner"].value, "not-there"), hint=True)
    return Expect("datadesigner", None, "datadesigner",
                  names=(stage.keys["datadesigner"].value, "not-there", path))


def m_dd_file(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    key = draw.choice(["datadesigner", "models"])
    stage.put(key, draw.choice([5, None, ["configs/dd.yaml"], "configs/nope.yaml",
                                "data/a.txt", "/abs/dd.yaml", "../dd.yaml", "configs"]))
    return Expect(key, None, key)


def run_stage(draw: Draw, name: str, gens: list[str]) -> Stage:
    stage = Stage(name, "run")
    params = draw.choice([{"x": 1}, {"x": "a b", "y": {"z": 2}}])
    stage.put("params", params, draw.chance())
    first = draw.choice([f"out/{name}.csv", f"out/{name}/", f"out/{name}.jsonl"])
    stage.put("outputs", [first, f"out/{name}.txt"], draw.chance())
    stage.put("run", draw.choice(["cat {inputs} > {outputs[0]}; echo {params.x} > {outputs[1]}",
                                  "cp {inputs[0]} {outputs[0]} && touch {outputs[1]}",
                                  "awk '{print $1}' {inputs} > {outputs}",
                                  "cat {inputs[report]} {inputs[data/a.txt]} > {outputs[0]}"
                                  "; touch {outputs[1]}",
                                  "cat {inputs.stages} {inputs[file:data/a.txt]} > {outputs[0]}"
                                  "; cp {inputs.files} {outputs[1]}",
                                  "cat {inputs[stage:report]} {inputs[1]} > {outputs}"]))
    inputs = ["report", "data/a.txt"] + ([draw.choice(gens)] if draw.chance() else [])
    stage.put("inputs", inputs, draw.chance())
    return stage


def boundary_keys(draw: Draw, stage: Stage, suffix: str) -> None:
    if draw.chance():
        stage.put("processors", [draw.choice(VALID_PROCESSORS) for _ in range(draw.int(1, 3))],
                  draw.chance())
    if draw.chance():
        stage.put("on_success", "code/cb.py:keep")
        if draw.chance():
            stage.put("on_success_version", draw.choice(["v1", Raw("'2'")]))
    if draw.chance():
        stage.put("allow_empty", draw.choice([True, False, Raw("yes")]))
    if draw.chance():
        stage.put("outputs", [f"exports/{stage.name}.{suffix}"], draw.chance())
    if draw.chance() and "inputs" not in stage.keys:
        stage.put("inputs", ["data/a.txt", Raw("'data/*.txt'")], draw.chance())


# The valid `rate_limits:` of every drawn Workflowfile (a top-level mistake may replace it).
RATE_LIMITS = ["rate_limits:", "  openai: {requests_per_second: 5, max_in_flight: 16}",
               "  local.v2:", "    max_in_flight: 2", "  slow: {requests_per_second: 0.5}"]


# Valid `executor:` headers (a top-level mistake may replace it).
VALID_EXECUTORS = [["executor: {dask: }"], ["executor: {dask: {}}"],
                   ["executor:", "  dask:", "    scheduler: tcp://h:8786"],
                   ["executor: {dask: {scheduler: '10.0.0.5:8786'}}"]]


def limit_key(draw: Draw, stage: Stage) -> None:
    if draw.chance(0.3):
        stage.put("rate_limit", draw.choice(["openai", "local.v2", Raw("slow")]))


def common_keys(draw: Draw, stage: Stage) -> None:
    if draw.chance() and "params" not in stage.keys:
        stage.put("params", draw.choice(VALID_PARAMS), draw.chance())
    if draw.chance():
        stage.put("code", draw.choice([["code/helper.py"], ["code/*.py"], ["code"]]), draw.chance())
    if draw.chance():
        stage.put("description", draw.choice(["text", Raw("plain text"), Raw("!!str 5"), ""]))


# ---------------------------------------------------------------- the catalogue of mistakes

Mistake = Callable[[Draw, Stage, list[Stage]], Expect]


def m_params(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    if draw.chance():
        stage.put("params", draw.choice([[1], "x", 3, True, None, 1.5]))
        return Expect("params", None, "params")
    stage.put("params", {"ok": 1, "bad": draw.choice([Raw("2024-01-01"), Raw("!!binary aGk="),
                                                       Raw(".nan"), Raw("!!set {a}")])},
              draw.chance())
    return Expect("params", 1, "params")


def m_description(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    stage.put("description", draw.choice([[1], 5, {"a": 1}, True, None]))
    return Expect("description", None, "description")


def m_code(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    wrong = draw.choice(["type", "missing", "absolute", "escapes", "item"])
    if wrong == "type":
        stage.put("code", draw.choice(["code/helper.py", 5, {"a": 1}]))
        return Expect("code", None, "code")
    bad = {"missing": "code/nope.py", "absolute": "/etc/x.py", "escapes": "../x.py",
           "item": 5}[wrong]
    stage.put("code", ["code/helper.py", bad], draw.chance())
    return Expect("code", 1, "code")


def m_inputs(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    wrong = draw.choice(["type", "missing", "duplicate", "self", "item", "stage-missing"])
    if wrong == "type":
        stage.put("inputs", draw.choice(["data/a.txt", 3, {"a": 1}]))
        return Expect("inputs", None, "inputs")
    bad = {"missing": "data/nope.txt", "duplicate": "data/b.txt", "self": stage.name,
           "item": [1], "stage-missing": "stage:nope"}[wrong]
    kept = ["report", "data/a.txt"] if stage.kind == "run" else ["data/a.txt"]  # what commands name
    stage.put("inputs", [*kept, "data/b.txt", bad], draw.chance())
    return Expect("inputs", len(kept) + 1, "inputs")


def m_unknown_key(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    name = draw.choice(["num_recods", "inptus", "descripton", "paramz", "zzz", "Outputs"])
    stage.put(name, draw.choice([1, "x", [1]]))
    return Expect(name, None, name)


def m_stage_name(draw: Draw, stage: Stage, stages: list[Stage]) -> Expect:
    names = {stage.name, f"stage:{stage.name}"}
    for other in stages:
        for key in ("seed", "inputs"):
            value = other.keys[key].value if key in other.keys else []
            if any(v in names for v in (value if isinstance(value, list) else [value])
                   if isinstance(v, str)):
                return m_description(draw, stage, stages)  # renaming it would break more
    new = draw.choice([f"-{stage.name}", f"{stage.name} x", f"{stage.name}/x", "build",
                       "workflow.json", ".lock", "status"])
    if any(s.name.casefold() == new.casefold() for s in stages):
        new = f"-{stage.name}"
    stage.name = new
    return Expect(None, None, None, stage=None)


def m_callable(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    fn = "join" if stage.kind == "transform" else "make"
    stage.put(stage.kind, draw.choice([
        5, [f"code/gen.py:{fn}"], None, "nocolon", f"code/nope.py:{fn}", "code/gen.py:mkae",
        "code/gen.py:amake", "code/gen.py:VALUE", "pkg.mod:mkae", "code/gen.py:1bad",
        "/abs/gen.py:make", "code/helper.py:make", "pkg/mod.py:make "]))
    return Expect(stage.kind, None, stage.kind)


def m_positive(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    key = draw.choice(["num_records", "batch_size"])
    stage.put(key, draw.choice([0, -3, "20", 1.5, True, None, [1], Raw("2024-02-30"),
                                Raw("!!int x")]))
    return Expect(key, None, key)


def m_sampling(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    stage.put("sampling", draw.choice(["random", 3, True, ["ordered"]]))
    return Expect("sampling", None, "sampling")


def m_retries(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    stage.put("retries", draw.choice([-1, "2", True, 1.5]))
    return Expect("retries", None, "retries")


def m_concurrency(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    if draw.chance():
        stage.put("concurrency", draw.choice([0, -3, "4", True, 1.5, None, [2]]))
        return Expect("concurrency", None, "concurrency")
    stage.put("executor", draw.choice(["fork", "threads", 5, None, ["thread"]]))
    return Expect("executor", None, "executor")


def m_rate_limit(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    stage.put("rate_limit", draw.choice(["opnai", "nope", 5, ["openai"], None, True]))
    return Expect("rate_limit", None, "rate_limit")


def m_allow_empty(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    stage.put("allow_empty", draw.choice(["sometimes", 1, None, [True]]))
    return Expect("allow_empty", None, "allow_empty")


def m_processors(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    wrong = draw.choice(["type", "unknown", "argument", "two-keys", "filter"])
    if wrong == "type":
        stage.put("processors", draw.choice([{"drop": ["x"]}, "limit", 3]))
        return Expect("processors", None, "processors")
    bad = {"unknown": {"nope": 1}, "argument": draw.choice(
        [{"limit": -1}, {"drop": "x"}, {"rename": ["a"]}, {"filter": ""}, {"keep": [1]}]),
        "two-keys": {"drop": ["a"], "keep": ["b"]}, "filter": {"filter": "id >"}}[wrong]
    stage.put("processors", [{"limit": 5}, bad], draw.chance())
    return Expect("processors", -1 if wrong == "filter" else 1, "processors")


def m_on_success(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    wrong = draw.choice(["callable", "version-alone", "version-type"])
    if wrong == "callable":
        stage.put("on_success", draw.choice(["code/cb.py:nope", "code/cb.py:akeep", 5,
                                             "code/nope.py:keep"]))
        return Expect("on_success", None, "on_success")
    if wrong == "version-alone":
        stage.keys.pop("on_success", None)
        stage.put("on_success_version", "v2")
        return Expect("on_success_version", None, "on_success_version")
    stage.put("on_success", "code/cb.py:keep")
    stage.put("on_success_version", draw.choice([[1], 2, None]))
    return Expect("on_success_version", None, "on_success_version")


def m_export_outputs(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    bad = draw.choice([f"exports/{stage.name}.txt", "exports/*.parquet", "/tmp/x.parquet",
                       "artifacts/x.parquet", "../x.csv", 5, "Workflowfile"])
    if draw.chance(0.2):
        stage.put("outputs", f"exports/{stage.name}.parquet")
        return Expect("outputs", None, "outputs")
    stage.put("outputs", [bad], draw.chance())
    return Expect("outputs", 0, "outputs")


def m_seed(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    stage.put("seed", draw.choice(["data/nope.csv", "data/x.txt", stage.name, "stage:nope",
                                   ["data/seed.csv"], "report", "stage:report", "/abs.csv", 3]))
    return Expect("seed", None, "seed")


def m_kinds(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    other = draw.choice([k for k in KINDS if k != stage.kind])
    stage.put(other, {"run": "echo", "datadesigner": "configs/dd.yaml"}.get(other,
                                                                            "code/gen.py:make"))
    return Expect(other, None, other)


def m_not_for_kind(draw: Draw, stage: Stage, stages: list[Stage]) -> Expect:
    keys = [k for k, spec in STAGE_KEYS.items() if stage.kind not in spec.kinds and k not in KINDS]
    if not keys:  # a generate stage takes every key but the other kinds
        return m_kinds(draw, stage, stages)
    key = draw.choice(keys)
    stage.put(key, {"sampling": "ordered", "num_records": 5, "batch_size": 3, "retries": 1,
                    "seed": "data/seed.csv", "processors": [], "allow_empty": True,
                    "on_success": "code/cb.py:keep", "on_success_version": "v",
                    "rate_limit": "openai", "concurrency": 4, "executor": "process",
                    "models": "configs/models.yaml"}[key])
    return Expect(key, None, key)


def m_run(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    command = draw.choice([5, ["x"], None, "", "   ", "cat {input} > {outputs[0]}",
                           "echo {params.zz} > {outputs[0]}", "echo > {outputs[9]}",
                           "cat {inputs[9]} > {outputs[0]}", "echo {params} > x",
                           "echo {output} {inputs[1]}", "cat {inputs[nosuch]} > x",
                           "cat {inputs.stagez} > x", "cat {inputs[]} > x"])
    if "inputs[9]" in str(command):
        stage.put("inputs", ["report"])  # one path: the index is past it whatever else
    stage.put("run", command)
    return Expect("run", None, "run")


def m_run_outputs(draw: Draw, stage: Stage, _: list[Stage]) -> Expect:
    wrong = draw.choice(["none", "empty", "workflowfile", "glob", "duplicate", "type"])
    if wrong == "none":
        del stage.keys["outputs"]
        return Expect(None, None, "outputs")
    if wrong in ("empty", "type"):
        stage.put("outputs", [] if wrong == "empty" else "out/x.csv")
        return Expect("outputs", None, "outputs")
    bad = {"workflowfile": "Workflowfile", "glob": "out/*.txt",
           "duplicate": f"out/{stage.name}.csv"}[wrong]
    stage.put("outputs", [f"out/{stage.name}.csv", bad], draw.chance())
    return Expect("outputs", 1, "outputs")


COMMON: list[Mistake] = [m_params, m_description, m_code, m_inputs, m_unknown_key,
                         m_stage_name, m_kinds, m_not_for_kind]
BOUNDARY: list[Mistake] = [m_callable, m_processors, m_on_success, m_allow_empty,
                           m_export_outputs, m_rate_limit]
CATALOGUE: dict[str, list[Mistake]] = {
    "generate": COMMON + BOUNDARY + [m_positive, m_sampling, m_retries, m_seed, m_concurrency],
    "transform": COMMON + BOUNDARY,
    "run": [*COMMON, m_run, m_run_outputs],
    "datadesigner": [*COMMON, m_processors, m_on_success, m_allow_empty, m_export_outputs,
                     m_positive, m_seed, m_dd_file, m_models, m_models, m_model_provider],
}


# Top-level mistakes: (lines of the header they replace, key of the error, stage of the error).
def top_mistake(draw: Draw) -> tuple[str, list[str], str | None]:
    """(the header part it replaces, its lines, the key of its error)."""
    part = draw.choice(["workflow", "artifacts", "jobs", "cache", "defaults", "unknown",
                        "rate_limits", "executor"])
    if part == "cache":  # a folder path: a string, not empty
        return part, [f"cache: {draw.choice(['5', '[a]', chr(39) * 2, 'null', '{a: 1}', 'true'])}"], \
            "cache"
    if part == "executor":
        value = draw.choice(["5", "{}", "[dask]", "{daks: {}}", "{dask: 3}", "{dask: [a]}",
                             "{dask: {schedular: 'tcp://h:1'}}", "{dask: {scheduler: 5}}",
                             "{dask: {scheduler: 'a b:1'}}", "{dask: {scheduler: host}}",
                             "{dask: {scheduler: 'tcp://'}}", "{dask: {scheduler: true}}"])
        return part, [f"executor: {value}"], "executor"
    if part == "jobs":
        value = draw.choice(["0", "-1", "'4'", "true", "2.5", "[2]", "null"])
        return part, [f"jobs: {value}"], "jobs"
    if part == "rate_limits":  # one wrong entry; the names stages use stay defined
        bad = draw.choice(["    max_in_flght: 2", "    max_in_flight: 0", "    {}",
                           "    requests_per_second: -1", "    max_in_flight: 1.5",
                           "    requests_per_second: '5'"])
        return part, RATE_LIMITS[:3] + [bad] + RATE_LIMITS[4:], "rate_limits"
    if part == "workflow":
        return part, [f"workflow: {draw.choice(['-bad', '[a]', 'a b', '5', 'null'])}"], "workflow"
    if part == "artifacts":
        return part, [f"artifacts: {draw.choice(['/abs', '../up', '5', '[a]', 'Workflowfile'])}"], \
            "artifacts"
    if part == "unknown":
        key = draw.choice(["artefacts", "stage_defaults", "version"])
        return part, [f"{key}: x"], key
    key, value = draw.choice([("batch_size", "0"), ("generate", "code/gen.py:make"),
                              ("nope", "1"), ("retries", "-2"), ("description", "[1]")])
    return part, ["defaults:", f"  {key}: {value}"], key


# ---------------------------------------------------------------- the property


@dataclass
class Drawn:
    text: str
    expected: list[tuple[int, str | None, str | None]]  # (line, stage, key) of each mistake
    files: dict[str, bytes] = field(default_factory=dict)  # the drawn project files
    checks: dict[tuple[int, str | None, str | None], Expect] = field(default_factory=dict)


def draw_workflowfile(draw: Draw, mistakes: int) -> Drawn:
    stages = valid_stages(draw)
    header = {"workflow": ["workflow: demo"], "artifacts": [],
              "jobs": ["jobs: 3"] if draw.chance() else [],
              "executor": list(draw.choice(VALID_EXECUTORS)) if draw.chance() else [],
              "cache": [draw.choice(["cache: ../shared-cache", "cache: /tmp/dd-cache",
                                     "cache: .cache-here"])] if draw.chance() else [],
              "defaults": ["defaults:", "  retries: 1"] if draw.chance() else [], "unknown": [],
              "rate_limits": list(RATE_LIMITS)}
    expected: list[tuple[Any, ...]] = []  # (stage, Expect) or (header part, key)
    candidates = [s for s in stages if not s.protected]
    for _ in range(mistakes):
        if draw.chance(0.15):
            part, lines, key = top_mistake(draw)
            if any(e[0] == ("top", part) for e in expected):
                continue
            header[part] = lines
            expected.append((("top", part), key))
            continue
        free = [s for s in candidates if all(e[0] is not s for e in expected)]
        if not free:
            break
        kind = draw.choice(sorted({s.kind for s in free}))  # each kind as often
        stage = draw.choice([s for s in free if s.kind == kind])
        expect = draw.choice(CATALOGUE[stage.kind])(draw, stage, stages)
        expected.append((stage, expect))
    if any(e[0] == ("top", "artifacts") for e in expected) and \
            any(_under_default_artifacts(e) for e in expected):
        # which folder an output under artifacts/ overlaps once the artifacts key is wrong too
        # is moot (the default, or the value as written): the two are not drawn together
        header["artifacts"] = []
        expected = [e for e in expected if e[0] != ("top", "artifacts")]
    return render(stages, header, expected)


def _under_default_artifacts(expected: tuple[Any, ...]) -> bool:
    stage, expect = expected
    if not isinstance(stage, Stage) or expect.error_key != "outputs":
        return False
    value = stage.keys["outputs"].value
    return any(isinstance(v, str) and v.startswith("artifacts/")
               for v in (value if isinstance(value, list) else [value]))


def render(stages: list[Stage], header: dict[str, list[str]],
           expected: list[tuple[Any, ...]]) -> Drawn:
    lines: list[str] = []
    places: dict[Any, int] = {}  # ("top", part) / (stage id, key or None) → line number
    for part in ("workflow", "artifacts", "jobs", "cache", "executor", "defaults", "unknown",
                 "rate_limits"):
        # its last line (a wrong rate limit: the line of the wrong entry's body)
        end = len(lines) + (4 if part == "rate_limits" else len(header[part]))
        places[("top", part)] = end
        lines += header[part]
    lines.append("stages:")
    for stage in stages:
        lines.append(f"  {dump(stage.name)}:")
        places[(id(stage), None)] = len(lines)
        for key in stage.keys.values():
            places[(id(stage), key.name)] = len(lines) + 1
            lines += key.lines()
    found = []
    checks = {}
    for where, expect in expected:
        if isinstance(where, tuple):
            found.append((places[where], None, expect))
            continue
        line = places[(id(where), expect.key_line)]
        key = where.keys.get(expect.key_line) if expect.key_line else None
        if key is not None and key.block and isinstance(key.value, (list, dict)) and key.value \
                and expect.item is not None:
            line += 1 + max(expect.item, 0)
        stage = where.name if expect.stage == "<own>" else expect.stage
        found.append((line, stage, expect.error_key))
        checks[(line, stage, expect.error_key)] = expect
    files = {rel: data for s in stages for rel, data in s.files.items()}
    return Drawn("\n".join(lines) + "\n", found, files, checks)


class _NoDataDesigner:
    """A finder that refuses Data Designer: load checks must not need the extra."""

    def find_spec(self, name: str, *args: Any) -> None:
        if name.split(".")[0] == "data_designer":
            raise ImportError(f"the load checks imported {name}")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import os
    import sys

    assert not [v for v in UNSET if v in os.environ]
    blocker = _NoDataDesigner()
    sys.meta_path.insert(0, blocker)
    try:
        yield _root(tmp_path_factory)
    finally:
        sys.meta_path.remove(blocker)
    assert "data_designer" not in sys.modules


def _root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loadcheck")
    for rel, text in CODE.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def errors_of(root: Path, text: str, files: dict[str, bytes] | None = None
              ) -> list[WorkflowError]:
    for rel, data in (files or {}).items():
        (root / rel).write_bytes(data)
    path = root / "Workflowfile"
    path.write_text(text)
    try:
        load_workflow(path, "Workflowfile")
    except WorkflowError as error:
        return list(getattr(error, "errors", [error]))
    return []


_SETTINGS = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(data=st.data())
def test_a_valid_workflowfile_is_never_refused(root: Path, data: st.DataObject) -> None:
    drawn = draw_workflowfile(Draw(data), 0)
    errors = errors_of(root, drawn.text, drawn.files)
    assert errors == [], (drawn.text, drawn.files, [e.render() for e in errors])


@_SETTINGS
@given(data=st.data(), mistakes=st.integers(1, 7))
def test_each_mistake_is_reported_once_at_its_place(root: Path, data: st.DataObject,
                                                     mistakes: int) -> None:
    drawn = draw_workflowfile(Draw(data), mistakes)
    errors = errors_of(root, drawn.text, drawn.files)
    got = sorted(((e.line, e.stage, e.key) for e in errors), key=repr)
    numbered = "\n".join(f"{i:3} {line}" for i, line in enumerate(drawn.text.splitlines(), 1))
    shown = "\n".join(e.render() for e in errors)
    assert got == sorted(drawn.expected, key=repr), f"{numbered}\n---\n{shown}\n{drawn.files}"
    assert all(e.file == "Workflowfile" and e.message for e in errors)
    for error in errors:
        expect = drawn.checks.get((error.line, error.stage, error.key))
        if expect is None:  # a top-level mistake
            continue
        for name in expect.names:
            assert name.removeprefix("./") in error.message, (name, error.render())
        assert not expect.hint or error.hint, error.render()
    hidden = [h for e in drawn.checks.values() for h in e.hidden]
    assert not [h for h in hidden if h in shown or any(h in (e.hint or "") for e in errors)], \
        shown


def test_the_catalogue_covers_every_key_and_top_level_key() -> None:
    """Every stage key of keys.py is the key of some mistake (its own, or one applied to a
    kind it does not apply to), and so is every top-level key."""
    import inspect

    source = inspect.getsource(inspect.getmodule(test_the_catalogue_covers_every_key_and_top_level_key))
    for key in STAGE_KEYS:
        assert f'"{key}"' in source, key
    for key in TOP_KEYS:  # a wrong `stages` leaves nothing else to check: test_workflowfile.py
        assert f'"{key}"' in source or f"'{key}'" in source or key == "stages", key


# ---------------------------------------------------------------- models files: found cases

DD_STAGE = """workflow: demo
stages:
  d:
    datadesigner: configs/dd.yaml
    num_records: 2
    models: configs/m.yaml
"""


@pytest.mark.parametrize("text", [
    # each was accepted, or reported so, before it was fixed (the generator above found them)
    b"providers:\n  - name: local\n    endpoint: http://h\n    provider_type: 7\n",
    b"providers:\n  - name: local\n    endpoint: http://h\n    api_key: sk-SECRETxyz: x\n",
    b"providers:\n  - {name: local, endpoint: 'http://h', api_key: 'sk-SECRETxyz'\n",
    b"providers:\n  - name: caf\xe9\n    endpoint: http://h\n",
    b"providers:\n  - {name: local, endpoint: 'http://a'}\n  - {name: local, endpoint: 'http://b'}\n"])
def test_a_models_file_found_wrong_is_refused_at_models(root: Path, text: bytes) -> None:
    errors = errors_of(root, DD_STAGE, {"configs/m.yaml": text})
    assert [(e.line, e.stage, e.key) for e in errors] == [(6, "d", "models")], \
        [e.render() for e in errors]
    assert "configs/m.yaml" in errors[0].message
    assert "SECRETxyz" not in errors[0].render()


def test_dry_run_refuses_a_key_in_the_models_file_and_needs_no_variable(tmp_path: Path
                                                                        ) -> None:
    """`dd-build -n`: a models file naming unset variables loads (they are checked when the
    stage starts); one holding a key is refused, exit 2, the key not shown."""
    import os
    import subprocess
    import sys

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "dd.yaml").write_text("columns: []\n")
    (tmp_path / "Workflowfile").write_text(DD_STAGE)
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    models = tmp_path / "configs" / "m.yaml"
    for api_key, code in (("DD_LOADCHECK_UNSET_KEY", 0), ("sk-proj-SECRETxyz", 2)):
        models.write_text("providers:\n  - name: local\n    endpoint: "
                          f"https://${{DD_LOADCHECK_UNSET_HOST}}/v1\n    api_key: {api_key}\n")
        proc = subprocess.run([sys.executable, "-m", "buildtool", "-n"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, proc.stderr
        assert "SECRETxyz" not in proc.stdout + proc.stderr
        if code:
            assert "Workflowfile" in proc.stderr and "configs/m.yaml" in proc.stderr
