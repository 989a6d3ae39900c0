"""Stage kinds: one module each behind one Protocol, registered in one table."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..globreach import is_glob
from ..model import InputRef, Stage, Workflow
from ..outputs import input_paths
from ..records import Output, StageRecord
from ..stagerun import StageRun


@dataclass
class Job:
    """Everything a kind needs to run one stage; `run` is where it writes."""

    workflow: Workflow
    stage: Stage
    run: StageRun
    upstream: Mapping[str, StageRecord]
    fingerprint: str
    # progress(done, total, *, in_flight=0, rows=0, retries=0): batches done of total;
    # batches in flight now, rows and retries so far in this run (cumulative)
    progress: Callable[..., None]
    progress_note: Callable[[str], None]
    # A run stage's command is about to run (as the shell gets it): where its output should
    # also go as it comes (`-v`), or None.
    command_started: Callable[[str], Callable[[bytes], None] | None] = lambda command: None
    # Set by the builder on SIGINT/SIGTERM: a kind stops starting work, records what finished
    # and raises errors.Interrupted.
    cancel: threading.Event = field(default_factory=threading.Event)
    # The stage's `rate_limit:` (ratelimit.Limiter), or None.
    limiter: Any = None
    # The Dask cluster generate and transform stages run on (daskexec.Cluster), or None.
    cluster: Any = None


def check_cancel(job: Job) -> None:
    """errors.Interrupted once the build is cancelled: the stage stops here, its finished
    work recorded (the builder writes the `interrupted` record)."""
    if job.cancel.is_set():
        import signal

        from ..errors import Interrupted

        raise Interrupted(signal.SIGINT)  # the main thread re-raises its own signal


class Kind(Protocol):
    def execute(self, job: Job) -> Output: ...


_MODULES = {"generate": "generate", "transform": "transform", "run": "command",
            "datadesigner": "datadesigner"}


def kind_for(name: str) -> Kind:
    """The kind's module, imported only when a stage of that kind runs."""
    return importlib.import_module(f".{_MODULES[name]}", __name__)


def input_map(job: Job) -> dict[str, Any]:
    """Each input → its path: stage inputs by name, file inputs by their normalised
    project-relative path (`prompts/judge.txt` for `./prompts/judge.txt`), and also by the
    path as written when that differs, so either spelling finds the file whichever the
    Workflowfile uses (switching spellings leaves the stage up to date).

    A glob maps to the list of paths it matches; a run stage input with several outputs too.
    """
    from ..fingerprint import expand_glob

    inputs: dict[str, Any] = {}
    wf = job.workflow
    stages = job.stage.upstream_stages
    for ref in job.stage.dependencies:
        if ref.kind == "stage":
            paths = input_paths(wf, wf.stages[ref.value], job.upstream[ref.value])
            inputs[ref.value] = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
        elif is_glob(ref.value):
            matched = expand_glob(wf.project_dir, ref.value)
            _add_file(inputs, ref, [str(wf.project_dir / p) for p in matched], stages)
        else:
            _add_file(inputs, ref, str(wf.project_dir / ref.value), stages)
    return inputs


def _add_file(inputs: dict[str, Any], ref: InputRef, value: Any, stages: tuple[str, ...]
              ) -> None:
    inputs[ref.written] = value
    if ref.value not in stages:  # `file:a` beside a stage `a`: the name stays the stage's
        inputs[ref.value] = value
