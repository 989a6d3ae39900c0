"""The one table of stage keys: kinds, value types, meanings, and the step each belongs to.

Validation (workflowfile.py), `dd-build schema` (schema.py), the fingerprint (fingerprint.py)
and the step model (steps.py) all read it. Pure data: no I/O, no imports beyond the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .model import DEFAULT_BATCH_SIZE, EXECUTORS, KINDS, SAMPLINGS

if TYPE_CHECKING:
    from .steps import StepName

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"
_ALL = KINDS
_GEN = ("generate",)
_BATCHED = ("generate", "datadesigner")
_GEN_TRANSFORM = ("generate", "transform", "datadesigner")


@dataclass(frozen=True)
class KeySpec:
    """One stage key: the kinds it applies to, its value type (a key of `_PARSERS`), its meaning."""

    kinds: tuple[str, ...]
    type: str
    description: str
    choices: tuple[str, ...] = ()
    requires: str | None = None  # another key the stage must also have
    required_for: tuple[str, ...] = ()  # kinds for which the key is required
    default: Any = None
    # The step of the stage the key belongs to (see steps.py): `main` is the stage's own
    # work (its batches, its call or its command); a change to a key reruns its step and the
    # steps after it. `None`: the key is not part of the fingerprint (it changes nothing built).
    step: StepName | Literal["main"] | None = "main"
    # A run stage's `outputs` are its command's own files, not export copies: `main` there.
    run_step: StepName | Literal["main"] | None = None


# The one table of stage keys. Each key is also the name of the `model.Stage` field it
# fills, except the kind keys, which fill `Stage.kind` and `Stage.target`.
STAGE_KEYS: dict[str, KeySpec] = {
    "generate": KeySpec(
        ("generate",), "callable",
        "Generate stage: `path/to/file.py:function` or `package.module:function`, "
        "called once per batch.",
    ),
    "transform": KeySpec(
        ("transform",), "callable",
        "Transform stage: `path/to/file.py:function` or `package.module:function`, "
        "called once over all inputs (fan-in).",
    ),
    "run": KeySpec(
        ("run",), "command",
        "Run stage: a shell command; {inputs}, {inputs[0]}, {inputs[NAME]} (an input by "
        "stage name or path), {inputs.stages}, {inputs.files}, {outputs}, {outputs[0]}, "
        "{params.key} expand.",
    ),
    "datadesigner": KeySpec(
        ("datadesigner",), "config_file",
        "Data Designer stage: a config file (YAML or JSON) that "
        "`DataDesignerConfigBuilder.from_config` reads; needs `pip install -e "
        "'.[datadesigner]'` in dd-build's folder.",
    ),
    "seed": KeySpec(
        _BATCHED, "ref",
        "A stage name or a data file/glob (.parquet .csv .jsonl) whose rows seed the batches. "
        "`stage:NAME` / `file:PATH` force either reading.",
    ),
    "inputs": KeySpec(
        _ALL, "refs",
        "Extra dependencies: stage names or project-relative file paths/globs. "
        "`stage:NAME` / `file:PATH` force either reading.",
    ),
    "outputs": KeySpec(
        _ALL, "outputs",
        "Project-relative files or folders: what a run stage writes (required), or export "
        "copies of a generate/transform stage's output (format by extension).",
        required_for=("run",),
        step="outputs", run_step="main",
    ),
    "params": KeySpec(
        _ALL, "mapping",
        "A mapping of plain JSON values (string keys; no dates, sets, binary or NaN), "
        "handed to the code; part of the fingerprint.",
        default={},
    ),
    "num_records": KeySpec(
        _BATCHED, "positive_int", "Rows requested (default: the seed's row count).",
    ),
    "batch_size": KeySpec(
        _BATCHED, "positive_int", "Rows per batch (a datadesigner stage's `buffer_size`).", default=DEFAULT_BATCH_SIZE,
    ),
    "sampling": KeySpec(
        _GEN, "choice", "How seed rows are taken.", choices=SAMPLINGS, default=SAMPLINGS[0],
    ),
    "processors": KeySpec(
        _GEN_TRANSFORM, "processors",
        "Built-in output transforms applied in order: drop, keep, rename, filter, dedupe, limit.",
        default=(),
        step="processors",
    ),
    "on_success": KeySpec(
        _GEN_TRANSFORM, "callable",
        "`callable(ctx) -> path`: may replace the stage's selected output with a parquet "
        "file or folder it wrote.",
        step="on_success",
    ),
    "on_success_version": KeySpec(
        _GEN_TRANSFORM, "string",
        "Explicit identity of the on_success callback, added to the fingerprint.",
        requires="on_success",
        step="on_success",
    ),
    "allow_empty": KeySpec(
        _GEN_TRANSFORM, "bool",
        "An empty selected output is `completed_empty` instead of an error.", default=False,
        step="allow_empty",
    ),
    "rate_limit": KeySpec(
        ("generate", "transform"), "limit_name",
        "The name of a limit in the top-level `rate_limits:` that the stage's `ctx.request()` "
        "calls share with every other stage naming it (not part of the fingerprint).",
        step=None,
    ),
    "models": KeySpec(
        ("datadesigner",), "models_file",
        "Model providers of a datadesigner stage, in Data Designer's model_providers.yaml "
        "format (`providers: [{name, endpoint, provider_type, api_key}]`; `api_key` names an "
        "environment variable). Where the models are served, not what they are: not part of "
        "the fingerprint.",
        step=None,
    ),
    "code": KeySpec(
        _ALL, "paths", "Extra files/globs whose content is part of the code fingerprint.",
        default=(),
        step="main",
    ),
    "retries": KeySpec(
        _GEN, "non_negative_int",
        "Retries per batch on exception (N retries: N + 1 attempts), with backoff "
        "(not part of the fingerprint).",
        default=0,
        step=None,
    ),
    "concurrency": KeySpec(
        _BATCHED, "positive_int",
        "Batches in flight at once (default 1: one at a time; a datadesigner stage's "
        "`max_concurrent_row_groups`); batch files and the output are the same whatever the "
        "value (not part of the fingerprint).",
        default=1,
        step=None,
    ),
    "executor": KeySpec(
        _GEN, "choice",
        "Where batches run when `concurrency` > 1: `thread` (I/O-bound code, e.g. model "
        "calls) or `process` (worker processes, for CPU-bound code; not part of the "
        "fingerprint).",
        choices=EXECUTORS, default=EXECUTORS[0],
        step=None,
    ),
    "description": KeySpec(_ALL, "string", "Free text, not part of the fingerprint.", default="",
                           step=None),
}

# Built-in processors: name → (value type, meaning). Value types: columns, rename, expression, count.
PROCESSORS: dict[str, tuple[str, str]] = {
    "drop": ("columns", "Drop these columns."),
    "keep": ("columns", "Keep only these columns."),
    "rename": ("rename", "Rename columns: {old: new}."),
    "filter": ("expression", "Keep the rows for which the expression is true."),
    "dedupe": ("columns", "Drop rows that repeat these columns."),
    "limit": ("count", "Keep the first N rows."),
}

TOP_KEYS: dict[str, str] = {
    "workflow": f"Required: the workflow's durable identity ({NAME_RULE}).",
    "artifacts": "Folder for build records and data, relative to this file's folder.",
    "defaults": "Stage keys applied to every stage that omits them, where valid for its kind.",
    "jobs": "How many stages may run at once (default 1; -j/--jobs overrides it; above 32: "
            "32).",
    "cache": "Folder of the build cache (default: `.cache` in the artifacts folder), relative "
             "to this file's folder or absolute, e.g. one shared with teammates; "
             "DD_BUILD_CACHE overrides it (not part of the fingerprint).",
    "stages": "Required: the stages, by name, in declaration order.",
    "rate_limits": "Named limits shared by the stages that name one with `rate_limit:`: "
                   "NAME: {requests_per_second: N, max_in_flight: N} (not part of the "
                   "fingerprint).",
    "executor": "Where generate and transform stages run by default: {dask: {scheduler: "
                "ADDRESS}} runs them on that Dask cluster (no address: a LocalCluster; "
                "--executor local overrides it; not part of the fingerprint).",
}

# The keys of `executor: {dask: …}`: key → meaning.
DASK_KEYS: dict[str, str] = {
    "scheduler": "The Dask scheduler's address, e.g. tcp://10.0.0.5:8786 (--scheduler and "
                 "DD_BUILD_SCHEDULER override it; none: a LocalCluster on this machine).",
}

# The keys of one entry of `rate_limits:` (at least one of them): key → (value type, meaning).
RATE_LIMIT_KEYS: dict[str, tuple[str, str]] = {
    "requests_per_second": ("positive_number",
                            "Requests started per second, evenly spaced (a burst of one)."),
    "max_in_flight": ("positive_int", "Requests running at once."),
}
