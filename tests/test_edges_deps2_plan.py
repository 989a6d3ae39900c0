"""The planner's reasons for a module outside the project that stage code imported (pure)."""

from __future__ import annotations

import dataclasses

import pytest
from test_plan import facts, record

from buildtool.external import MISSING
from buildtool.fingerprint import FileState
from buildtool.plan import Options, decide
from buildtool.records import Discovered

BY = "stages/p.py"


def _decide(key: str, old: str, now: FileState | None, module: str = "mylib") -> list[str]:
    rec = dataclasses.replace(record(), discovered={
        key: Discovered(FileState(key, 0, 0, old), BY, module)})
    f = dataclasses.replace(facts(rec), discovered={} if now is None else {key: now})
    d = decide(f, {}, Options())
    assert all(r.detail.get("imported_by") == BY for r in d.reasons)
    return [r.message for r in d.reasons]


@pytest.mark.parametrize(("key", "old", "now", "message"), [
    pytest.param("module:mylib", "sha256:a", FileState("module:mylib", 0, 0, "sha256:a"), None,
                 id="same"),
    pytest.param("module:mylib", "sha256:a", FileState("module:mylib", 0, 0, "sha256:b"),
                 "code: module mylib changed (imported by stages/p.py; outside the project, "
                 "not installed)", id="module-changed"),
    pytest.param("module:mylib", "sha256:a", FileState("module:mylib", 0, 0, MISSING),
                 "code: module mylib cannot be found (imported by stages/p.py; outside the "
                 "project, on no sys.path entry)", id="module-gone"),
    pytest.param("module:mylib", MISSING, FileState("module:mylib", 0, 0, "sha256:a"),
                 "code: module mylib is found now (imported by stages/p.py; outside the "
                 "project, not installed)", id="module-found"),
    pytest.param("dist:my-lib", "1.0", FileState("dist:my-lib", 0, 0, "1.1"),
                 "code: installed my-lib changed: 1.0 → 1.1 (imported by stages/p.py)",
                 id="dist-changed"),
    pytest.param("dist:my-lib", "1.0", FileState("module:mylib", 0, 0, "sha256:a"),
                 "code: module mylib is now outside the project, not installed, was installed "
                 "my-lib 1.0 (imported by stages/p.py)", id="dist-uninstalled"),
    pytest.param("dist:my-lib", "1.0", FileState("module:mylib", 0, 0, MISSING),
                 "code: module mylib cannot be found (imported by stages/p.py; outside the "
                 "project, on no sys.path entry)", id="dist-gone"),
])
def test_outside_module_reasons(key: str, old: str, now: FileState, message: str | None
                                ) -> None:
    assert _decide(key, old, now) == ([] if message is None else [message])


def test_a_moved_stat_alone_is_no_reason() -> None:
    assert _decide("dist:my-lib", "1.0", FileState("dist:my-lib", 5, 6, "1.0")) == []
