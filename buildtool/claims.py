"""Who claims which path, checked once every stage is read (DESIGN.md §1).

- no two stages claim one output (or a folder holding another's output);
- no output would replace the Workflowfile or a stage's code file (a run stage's outputs are
  removed before its command runs; export copies are written over);
- a plain `seed:`, `inputs:` or `code:` path exists, and is not, and does not hold, another
  stage's output: the dependency is the stage, not the file;
- a glob in `seed:`, `inputs:` or `code:` cannot match a declared output, or a file in it,
  or a folder holding it: a glob adds no edge, so the consumer could run first on old
  content. Globs are matched against the declared paths (see `globreach`), so a first build
  on a fresh clone is refused exactly as a later one;
- nothing a stage reads is in or holds the artifacts folder, and no glob can match a file
  dd-build writes there: it writes there during every build, so such an input would change
  under the stage itself and the stage would rerun on every build.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

from yaml.nodes import Node

from .errors import WorkflowError
from .globreach import Glob, Reach, is_glob
from .yamlsource import Source

_EXPORT_KINDS = ("generate", "transform", "datadesigner")  # their outputs are export copies: files


@dataclass(frozen=True)
class Claim:
    """A path some stage declared: an output, a plain path or glob it reads, a code file."""

    path: str
    stage: str
    node: Node
    key: str
    error: WorkflowError | None = None  # raised when a plain path is missing
    kind: str | None = None  # the stage's kind (for outputs)


_Found = Iterator[tuple[Claim, WorkflowError]]  # a claim that breaks a rule, and the error


@dataclass
class Claims:
    outputs: list[Claim] = field(default_factory=list)
    paths: list[Claim] = field(default_factory=list)  # plain seed/inputs/code paths
    globs: list[Claim] = field(default_factory=list)  # seed/inputs/code globs
    code_files: list[Claim] = field(default_factory=list)  # files of `file.py:fn` callables

    def check(self, source: Source, workflowfile: str, artifacts: str) -> list[WorkflowError]:
        """What breaks a rule above, at most one error per claim; `workflowfile` is the
        Workflowfile's project-relative path and `artifacts` the workflow's folder of records
        (`<artifacts>/<workflow>`)."""
        owners: dict[str, Claim] = {}
        top = posixpath.dirname(artifacts)  # the `artifacts:` folder itself
        found = [
            *self._check_outputs(source, owners),
            *self._check_protected(source, owners, workflowfile),
            *self._check_paths_in_artifacts(source, top),
            *self._check_paths(source, owners),
            *self._check_globs(source),
            *self._check_globs_in_artifacts(source, artifacts, top),
        ]
        errors: dict[int, WorkflowError] = {}  # id of the claim → its first error
        for claim, error in found:
            errors.setdefault(id(claim), error)
        return list(errors.values())

    def _check_paths_in_artifacts(self, source: Source, top: str) -> _Found:
        for claim in self.paths:
            if _within(claim.path, top) or _within(top, claim.path):
                yield claim, _artifacts_error(source, claim, top, "path")

    def _check_globs_in_artifacts(self, source: Source, artifacts: str, top: str) -> _Found:
        for claim in self.globs:
            glob = Glob(claim.path)
            if _within(_literal_prefix(claim.path), top) or any(
                    glob.reach(f"{artifacts}/{name}", maybe_folder=False) is not None
                    for name in _WRITTEN_IN_ARTIFACTS):
                yield claim, _artifacts_error(source, claim, top, "glob")

    def _check_outputs(self, source: Source, owners: dict[str, Claim]) -> _Found:
        """Fills `owners` (each output path → its first claim) as it goes."""
        for claim in self.outputs:
            other = owners.setdefault(claim.path, claim)
            if other is not claim:
                yield claim, _overlap_error(source, claim, other)
        for claim in self.outputs:
            enclosing = _owner(owners, posixpath.dirname(claim.path))
            if enclosing is not None:
                yield claim, _overlap_error(source, claim, enclosing)

    def _check_protected(self, source: Source, owners: dict[str, Claim], workflowfile: str
                         ) -> _Found:
        output = _owner(owners, workflowfile)
        if output is not None:
            yield output, _replace_error(source, output, f"the Workflowfile `{workflowfile}`")
        for code in self.code_files:
            output = _owner(owners, code.path)
            if output is not None:
                yield output, _replace_error(source, output,
                                             f"code file `{code.path}` of stage `{code.stage}`")

    def _check_paths(self, source: Source, owners: dict[str, Claim]) -> _Found:
        held = _held_outputs(self.outputs)
        for claim in self.paths:
            producer = _owner(owners, claim.path)
            inside = held.get(claim.path)
            if producer is not None:
                yield claim, _produced_error(source, claim, producer)
            elif inside is not None:
                yield claim, _reach_error(source, claim, inside, Reach.HOLDS, "path")
            elif claim.error is not None:
                yield claim, claim.error

    def _check_globs(self, source: Source) -> _Found:
        for claim in self.globs:
            glob = Glob(claim.path)
            for output in self.outputs:
                reach = glob.reach(output.path, maybe_folder=output.kind not in _EXPORT_KINDS)
                if reach is not None:
                    yield claim, _reach_error(source, claim, output, reach, "glob")
                    break


# The kinds of file a build writes under `<artifacts>/<workflow>/` (`s` a stage, `r` a run).
_WRITTEN_IN_ARTIFACTS = (
    "workflow.json", "s/stage.json", "s/log.txt", "s/journal-r.jsonl",
    "s/batches/batch-000000.parquet", "s/processed/data.parquet", "s/callback/data.parquet",
    "s/override/r/data.parquet",
)


def _literal_prefix(pattern: str) -> str:
    """The leading segments of a glob that hold no wildcard."""
    literal = []
    for segment in pattern.split("/"):
        if is_glob(segment):
            break
        literal.append(segment)
    return "/".join(literal)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _artifacts_error(source: Source, claim: Claim, artifacts: str, what: str) -> WorkflowError:
    return _error(source, claim,
                  f"`{claim.key}` {what} `{claim.path}` reaches into the artifacts folder "
                  f"`{artifacts}`, which dd-build writes during every build",
                  "to use a stage's output, name the stage; otherwise narrow the "
                  f"{what} so it cannot reach `{artifacts}/`")


def _owner(owners: dict[str, Claim], path: str) -> Claim | None:
    """The output claim on `path` or on a folder that holds it."""
    while path:
        if path in owners:
            return owners[path]
        path = posixpath.dirname(path)
    return None


def _held_outputs(outputs: list[Claim]) -> dict[str, Claim]:
    """Each folder that holds a declared output → the first output it holds."""
    held: dict[str, Claim] = {}
    for claim in outputs:
        folder = posixpath.dirname(claim.path)
        while folder:
            held.setdefault(folder, claim)
            folder = posixpath.dirname(folder)
    return held


def _error(source: Source, claim: Claim, message: str, hint: str | None = None
           ) -> WorkflowError:
    source.stage = claim.stage
    return source.error(message, claim.node, key=claim.key, hint=hint)


def _overlap_error(source: Source, claim: Claim, other: Claim) -> WorkflowError:
    return _error(source, claim,
                  f"output `{claim.path}` overlaps output `{other.path}` of stage `{other.stage}`",
                  "each file or folder has one producing stage")


def _replace_error(source: Source, output: Claim, what: str) -> WorkflowError:
    verb = "overwrite" if output.kind in _EXPORT_KINDS else "replace"
    return _error(source, output, f"output `{output.path}` would {verb} {what}",
                  f"{_why(output)}: write the output elsewhere")


def _why(output: Claim) -> str:
    if output.kind in _EXPORT_KINDS:
        return "export copies are written over their path"
    return "a run stage's outputs are removed before its command runs"


def _produced_error(source: Source, claim: Claim, producer: Claim) -> WorkflowError:
    if producer.stage == claim.stage:
        return _error(source, claim,
                      f"stage depends on itself: `{claim.path}` is one of its outputs",
                      f"{_why(producer)}: write the output elsewhere")
    return _error(source, claim, f"`{claim.path}` is an output of stage `{producer.stage}`",
                  _depend_hint(claim, producer))


def _reach_error(source: Source, claim: Claim, output: Claim, reach: Reach, what: str
                 ) -> WorkflowError:
    how = {
        Reach.MATCHES: f"matches `{output.path}`",
        Reach.INSIDE: f"can match files in `{output.path}`",
        Reach.HOLDS: f"names a folder that holds `{output.path}`",
    }[reach]
    if output.stage == claim.stage:
        return _error(source, claim,
                      f"stage depends on itself: `{claim.key}` {what} `{claim.path}` {how}, "
                      "one of its outputs",
                      f"narrow the {what} so it cannot reach `{output.path}`")
    return _error(source, claim,
                  f"`{claim.key}` {what} `{claim.path}` {how}, an output of stage "
                  f"`{output.stage}`",
                  f"{_depend_hint(claim, output)}, or narrow the {what} so it cannot reach "
                  f"`{output.path}`")


def _depend_hint(claim: Claim, producer: Claim) -> str:
    if claim.key == "code":
        return (f"`code` lists the stage's own source files: to read stage "
                f"`{producer.stage}`'s output, list `{producer.stage}` under `inputs`")
    return f"depend on the stage instead: `{producer.stage}`"
