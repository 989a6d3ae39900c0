"""The Dask executor beside the null-build stamp and the build cache.

The stamp never answers a command whose executor options differ from the stamped one's
(--executor, --scheduler, $DD_BUILD_SCHEDULER): an address that is not one fails the full path
before it plans. A stage restored from the build cache needs no cluster (nothing runs); on the
CI cluster, a build that restores some stages and runs others gives the bytes of a local build
from scratch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from c11cache_support import calls, clear_calls, env, make_project, outputs, set_param
from c12dask_support import ADDRESS, needs_cluster, needs_dask
from conftest import Project
from test_nbfast_stamp import built, run, stamped  # noqa: F401 - `built` is a fixture

NOWHERE = "tcp://127.0.0.1:9"  # nothing listens there: a build that needed it would fail


@needs_dask
def test_each_executor_command_line_has_an_answer_of_its_own(built: Project) -> None:  # noqa: F811
    stamped(built)
    lines = [("--executor", "dask"), ("--executor", "dask", "--scheduler", NOWHERE),
             ("--scheduler", NOWHERE), ("--scheduler", "tcp://127.0.0.1:10"),
             ("--executor", "local")]
    for args in lines:
        result, fast = run(built, *args)
        assert not fast, args
        assert result.code == 0, result.stderr  # a null build never connects
    for args in [(), *lines]:  # one stamp keeps each line's answer
        assert run(built, *args)[1], args


@needs_dask
def test_a_changed_scheduler_variable_is_not_answered_by_the_stamp(
        built: Project) -> None:  # noqa: F811
    def dask(address: str | None) -> tuple[int, str, bool]:
        extra = {} if address is None else {"DD_BUILD_SCHEDULER": address}
        environment = built.env(**extra)
        if address is None:
            environment.pop("DD_BUILD_SCHEDULER", None)
        result, fast = run(built, "--executor", "dask", env=environment)
        return result.code, result.stderr, fast

    assert dask(NOWHERE)[0] == 0
    assert dask(NOWHERE)[2]  # stamped
    code, stderr, fast = dask("not an address")
    assert not fast and code == 2
    assert "$DD_BUILD_SCHEDULER is not a scheduler address" in stderr
    code, _, fast = dask("tcp://127.0.0.1:10")
    assert not fast and code == 0
    code, _, fast = dask(None)
    assert not fast and code == 0
    assert dask(NOWHERE)[2]  # its answer kept


def _dd(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=root,
                          env=env(**extra), capture_output=True, text=True, timeout=300)


def _results(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stderr
    return {s["stage"]: s["result"] for s in json.loads(done.stdout)["stages"]}


def _scratch(tmp_path: Path, edits: list[tuple[str, str]]) -> dict:
    """What a local build from scratch writes (no cache), the Workflowfile edited so."""
    root = make_project(tmp_path / "scratch")
    for old, new in edits:
        set_param(root, old, new)
    assert _dd(root, DD_BUILD_CACHE="off").returncode == 0
    return outputs(root)


@needs_dask
def test_a_revert_under_the_dask_executor_is_restored_without_the_cluster(
        tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    assert _dd(root).returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    assert _dd(root).returncode == 0
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    clear_calls(root)
    done = _dd(root, "--json", "--scheduler", NOWHERE, DD_BUILD_DASK_CONNECT_TIMEOUT_S="2")
    assert set(_results(done).values()) == {"restored"}
    assert calls(root) == [] and "dask" not in done.stderr  # never connected
    assert outputs(root) == _scratch(tmp_path, [])


@needs_cluster
def test_on_the_cluster_restored_and_run_stages_give_a_local_builds_bytes(
        tmp_path: Path) -> None:
    assert ADDRESS is not None
    root = make_project(tmp_path / "p")
    assert _dd(root, "--scheduler", ADDRESS).returncode == 0
    set_param(root, "params: {k: 5}", "params: {k: 6}")
    assert _dd(root, "--scheduler", ADDRESS).returncode == 0
    # a goes back (restored); b's own param is new (run on the cluster, on the restored a)
    set_param(root, "params: {k: 6}", "params: {k: 5}")
    set_param(root, "params: {k: 1}", "params: {k: 2}")
    clear_calls(root)
    done = _dd(root, "--json", "--scheduler", ADDRESS)
    assert _results(done) == {"a": "restored", "b": "completed", "report": "restored"}
    assert calls(root) == ["b all"]
    assert f"dask: connected to {ADDRESS}" in done.stderr
    assert outputs(root) == _scratch(tmp_path, [("params: {k: 1}", "params: {k: 2}")])


# A sitecustomize (imported at start-up, before the command runs) that hides the packages
# $DD_TEST_HIDDEN names from the import system, as if they were not installed: each finder of
# sys.meta_path is wrapped so that it finds nothing for them, so importlib.util.find_spec
# returns None and an import raises ModuleNotFoundError. (A folder shadowing the package, or a
# finder raising ImportError, would not do: find_spec would find the shadow, or raise.)
HIDE = '''\
import os
import sys

_HIDDEN = set(os.environ.get("DD_TEST_HIDDEN", "").split(","))


class _Hiding:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _HIDDEN:
            return None
        find = getattr(self._finder, "find_spec", None)
        return None if find is None else find(name, path, target)

    def __getattr__(self, name):
        return getattr(self._finder, name)


sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
'''


@needs_dask
def test_a_dask_builds_stamp_does_not_hold_once_dask_is_not_installed(
        built: Project, tmp_path: Path) -> None:  # noqa: F811
    hider = tmp_path / "hider"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(HIDE)

    def hidden(name: str) -> dict[str, str]:
        environment = built.env(DD_TEST_HIDDEN=name)
        environment["PYTHONPATH"] = f"{hider}{os.pathsep}{environment['PYTHONPATH']}"
        return environment

    check = [sys.executable, "-c", "import importlib.util as u; "
             "print(u.find_spec('distributed'), u.find_spec('cloudpickle') is None)"]
    seen = subprocess.run(check, env=hidden("distributed"), capture_output=True, text=True)
    assert seen.stdout.split() == ["None", "False"], seen.stderr  # the trick works

    # every command under the sitecustomize (PYTHONPATH is a fact of the compiled workflow)
    for args in [(), ("--executor", "dask")]:
        assert run(built, *args, env=hidden(""))[0].code == 0
        assert run(built, *args, env=hidden(""))[1], args  # a null build: from the stamp
    for name in ("distributed", "cloudpickle"):
        result, fast = run(built, "--executor", "dask", env=hidden(name))
        assert not fast and result.code == 2, (name, result.stderr)
        assert f"--executor dask needs {name}" in result.stderr
    # a command that does not use Dask keeps its answer; with dask back, so does this one
    assert run(built, env=hidden("distributed"))[1]
    assert run(built, "--executor", "dask", env=hidden(""))[1]
