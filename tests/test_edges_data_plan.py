"""Issue 7 §2, the planner's side: a failed transform is called again, never resumed.

Pure unit tests on in-memory records (the factories of test_plan), next to the end-to-end tests
in test_edges_data_calls.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_plan import batch, facts, record, spec

from buildtool.plan import Options, StageFacts, decide
from buildtool.records import Output


def _transform(status: str, **spec_changes: object) -> StageFacts:
    """A transform record with its one batch listed (rows 5), in `status`."""
    rec = record(kind="transform", status=status, error="x" if status == "failed" else None)
    listed = (batch("s", 0),)
    output = Output("batches", 5, "sha256:s-out") if status == "completed" else None
    rec = replace(rec, batches=listed, output=output)
    return facts(rec, spec_=spec("transform", **spec_changes) if spec_changes else None)


@pytest.mark.parametrize(("status", "changes", "action", "keep"), [
    pytest.param("failed", {}, "run", (), id="failed-is-called-again"),
    pytest.param("failed", {"processors": [{"limit": 1}]}, "run", (),
                 id="failed-with-a-boundary-change-is-called-again"),
    pytest.param("completed", {"processors": [{"limit": 1}]}, "resume", (0,),
                 id="completed-with-a-boundary-change-keeps-its-batch"),
    pytest.param("completed", {"allow_empty": True}, "resume", (0,),
                 id="completed-allow-empty-change-keeps-its-batch"),
    pytest.param("interrupted", {}, "resume", (0,),
                 id="interrupted-after-its-call-keeps-its-batch"),
])
def test_transform_batch_reuse(status: str, changes: dict[str, object], action: str,
                               keep: tuple[int, ...]) -> None:
    d = decide(_transform(status, **changes), {}, Options())
    assert (d.action, d.keep) == (action, keep)


def test_failed_transform_reason_says_it_is_called_again() -> None:
    d = decide(_transform("failed"), {}, Options())
    assert d.codes == ["failed_before"]
    assert "called again" in d.reasons[0].message and "kept" not in d.reasons[0].message
