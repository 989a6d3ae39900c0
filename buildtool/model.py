"""The validated Workflowfile as frozen data. No I/O here."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import WorkflowError

if TYPE_CHECKING:
    from .graph import StageGraph

KINDS = ("generate", "transform", "run", "datadesigner")
# Kinds whose main step writes numbered batches, counted in progress and resume messages.
BATCHED_KINDS = ("generate", "datadesigner")
SAMPLINGS = ("ordered", "shuffle")
EXECUTORS = ("thread", "process")  # where a generate stage's batches run (`executor:`)
DEFAULT_BATCH_SIZE = 100
# Words the CLI reserves: a stage may not be called one of these.
TOOL_WORDS = ("build", "status", "dag", "show", "export", "override", "clean", "cache", "schema",
              "init", "help", "touch")
# Files dd-build keeps in `<artifacts>/<workflow>/` beside the stage folders (the build
# summary written by execute.py, the lock of lock.py, the planning index of planindex.py): a
# stage may not be called one of these, in any letter case (a case-insensitive file system
# has one folder for `Judge` and `judge`).
ARTIFACT_FILES = ("workflow.json", ".lock", ".plan-index")
# The data files a stage reads as a table, or exports its output to, by extension (in any
# letter case). A folder's table is its .parquet files.
PARQUET = ".parquet"
DATA_SUFFIXES = (PARQUET, ".csv", ".jsonl")

InputKind = Literal["stage", "file"]


@dataclass(frozen=True)
class Location:
    """1-based line and column of a value in the Workflowfile."""

    file: str
    line: int
    column: int


class Locations(Mapping[str, Location]):
    """A stage's keys → where each is written in the Workflowfile (`""`: the stage's name).
    Kept as (line, column) pairs, made into Locations when asked for: a compiled workflow
    (compiled.py) of thousands of stages is read on every build, and these serve errors only."""

    __slots__ = ("file", "at")

    def __init__(self, file: str = "", at: dict[str, tuple[int, int]] | None = None) -> None:
        self.file = file
        self.at = at if at is not None else {}

    def __getitem__(self, key: str) -> Location:
        line, column = self.at[key]
        return Location(self.file, line, column)

    def __iter__(self) -> Iterator[str]:
        return iter(self.at)

    def __len__(self) -> int:
        return len(self.at)

    def __repr__(self) -> str:
        return f"Locations({self.file!r}, {self.at!r})"


@dataclass(frozen=True)
class InputRef:
    """One dependency: another stage, or a project-relative file path or glob."""

    kind: InputKind
    value: str
    written: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str
    target: str  # "file.py:fn", "package.module:fn", or a shell command for `run`
    seed: InputRef | None = None
    inputs: tuple[InputRef, ...] = ()
    outputs: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    num_records: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    sampling: str = "ordered"
    processors: tuple[Any, ...] = ()
    on_success: str | None = None
    on_success_version: str | None = None
    allow_empty: bool = False
    rate_limit: str | None = None  # a name in Workflow.rate_limits
    models: str | None = None  # datadesigner: a model_providers.yaml file
    code: tuple[str, ...] = ()
    retries: int = 0
    concurrency: int = 1
    executor: str = "thread"
    description: str = ""
    locations: Locations = field(default_factory=Locations, hash=False, compare=False)

    @property
    def dependencies(self) -> tuple[InputRef, ...]:
        """The seed (if any) followed by the inputs, without repeats."""
        refs = ((self.seed,) if self.seed else ()) + self.inputs
        seen: dict[str, InputRef] = {}
        for ref in refs:
            seen.setdefault(ref.key, ref)
        return tuple(seen.values())

    @property
    def upstream_stages(self) -> tuple[str, ...]:
        return tuple(r.value for r in self.dependencies if r.kind == "stage")

    @property
    def callables(self) -> tuple[str, ...]:
        """Every `file.py:fn` / `module:fn` reference the stage names."""
        refs = [] if self.kind == "run" else [self.target]
        if self.on_success:
            refs.append(self.on_success)
        return tuple(refs)

    def location(self, key: str | None = None) -> Location | None:
        return self.locations.get(key or "") or self.locations.get("")

    def error(self, message: str, key: str | None = None, hint: str | None = None
              ) -> WorkflowError:
        """A WorkflowError pointing at this stage's `key` (or its name) in the Workflowfile."""
        loc = self.location(key)
        return WorkflowError(message, file=loc.file if loc else None,
                             line=loc.line if loc else None, column=loc.column if loc else None,
                             stage=self.name, key=key, hint=hint)


@dataclass(frozen=True)
class RateLimit:
    """One entry of the top-level `rate_limits:` (ratelimit.py enforces it); None: that bound
    is not set (at least one is)."""

    name: str
    requests_per_second: float | None = None
    max_in_flight: int | None = None


@dataclass(frozen=True)
class DaskSettings:
    """The top-level `executor: {dask: {scheduler: ADDRESS}}`: builds run their generate and
    transform stages on that Dask cluster (daskexec.py); no address: a LocalCluster."""

    scheduler: str | None = None


def scheduler_problem(address: str) -> str | None:
    """What is wrong with a Dask scheduler address (`tcp://HOST:PORT`, `HOST:PORT`, another
    protocol's `PROTO://…`), or None."""
    import re

    if not address.strip():
        return "it is empty"
    if re.search(r"\s", address):
        return "it holds a space"
    if "://" in address:
        scheme, _, rest = address.partition("://")
        if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) or not rest:
            return "it is not PROTOCOL://HOST:PORT"
        return None
    if not re.fullmatch(r"[^:/]+:\d+", address):
        return "it is not HOST:PORT or PROTOCOL://HOST:PORT"
    return None


@dataclass(frozen=True)
class Workflow:
    name: str
    file: Path  # absolute path of the Workflowfile
    project_dir: Path  # absolute folder holding the Workflowfile
    artifacts: str  # as written, relative to project_dir
    stages: dict[str, Stage] = field(hash=False)
    jobs: int | None = None  # `jobs:`: stages run at once by default (None: not given)
    rate_limits: dict[str, RateLimit] = field(default_factory=dict, hash=False)
    dask: DaskSettings | None = None  # `executor: {dask: …}` (None: not given)
    cache: str | None = None  # `cache:` as written (cache.py resolves it); None: the default

    @cached_property
    def graph(self) -> StageGraph:
        """The stage graph: carried by a compiled workflow (compiled.py), else computed on first
        use (with networkx; a cycle is a WorkflowError)."""
        from .graph import compile_graph

        return compile_graph(self)

    @cached_property
    def artifacts_root(self) -> Path:
        """`<artifacts>/<workflow>/`: the folder that holds every record of this workflow."""
        return self.project_dir / self.artifacts / self.name

    def stage_dir(self, name: str) -> Path:
        folders = self._stage_dirs
        if name not in folders:  # made once: a null build asks for each several times
            folders[name] = self.artifacts_root / name
        return folders[name]

    @cached_property
    def _stage_dirs(self) -> dict[str, Path]:
        return {}


@dataclass(frozen=True)
class CallableRef:
    """`path/to/file.py:function` (a file in the project) or `package.module:function`."""

    module: str  # the file path as written, or the dotted module name
    function: str

    @property
    def is_file(self) -> bool:
        return self.module.endswith(".py")

    @classmethod
    def parse(cls, text: str) -> CallableRef | None:
        """The reference, or None when `text` is not of either form."""
        module, sep, function = text.rpartition(":")
        if not sep or not module or not function.isidentifier():
            return None
        if not module.endswith(".py") and not all(p.isidentifier() for p in module.split(".")):
            return None
        return cls(module, function)
