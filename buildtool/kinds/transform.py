"""`transform`: one call over whole tables of the input stages (fan-in)."""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..capture import captured, stage_log
from ..errors import UserCodeFailed, exc_text
from ..records import Output
from . import Job, check_cancel, input_map
from .loader import load_callable


@dataclass
class TransformContext:
    _stage_name: str = field(repr=False)
    inputs: dict[str, Any]
    params: dict[str, Any]
    limiter: Any = None  # the stage's `rate_limit:` (ratelimit.py), or None
    _reads: set[str] = field(default_factory=set, repr=False)  # noted in its batch's entry

    @property
    def stage_name(self) -> str:
        """The stage's name. Code that reads it depends on it: a stage renamed in the
        Workflowfile is not restored from a cache entry built under its old name then."""
        self._reads.add("stage_name")
        return self._stage_name

    def request(self) -> AbstractContextManager[Any]:
        """`with ctx.request():` around each model call: waits for the stage's `rate_limit:`
        (a token and a slot shared with every stage naming it); a no-op without one."""
        return nullcontext() if self.limiter is None else self.limiter.request()


def execute(job: Job) -> Output:
    from ..datasets import read_stage_table
    from ..tables import to_table

    stage = job.stage
    log = stage_log(job.run.dir)
    with captured(log):  # what the module prints on import
        fn = load_callable(job.workflow, stage.target, stage.name)
    job.run.begin(1, None)
    if 0 in job.run.batch_indices:  # a resume kept its one batch (never after a failure, see
        # plan._resumable_batches): only the boundary steps rerun
        return job.run.batches_output()
    inputs = input_map(job)
    for name in stage.upstream_stages:
        table = read_stage_table(job.workflow, job.upstream[name])
        if table is not None:  # a run stage's non-tabular outputs stay paths
            inputs[name] = table
    job.progress(0, 1)
    check_cancel(job)  # -j: SIGINT/SIGTERM came while it loaded or read its inputs
    if job.cluster is not None:  # the call on a Dask worker; its output appended to the log
        table, reads = job.cluster.transform(job, inputs, copy.deepcopy(stage.params), log)
        job.run.write_batch(0, table, reads=reads)
        job.progress(1, 1)
        return job.run.batches_output()
    ctx = TransformContext(stage.name, inputs, copy.deepcopy(stage.params), job.limiter)
    with captured(log):
        try:
            value = fn(ctx)
        except (Exception, SystemExit) as exc:  # the user's code raised (or called sys.exit)
            raise UserCodeFailed(f"{stage.target} raised {type(exc).__name__}: {exc_text(exc)}",
                                 stage=stage.name) from exc
    job.run.write_batch(0, to_table(value, stage.target), reads=tuple(sorted(ctx._reads)))
    job.progress(1, 1)
    return job.run.batches_output()
