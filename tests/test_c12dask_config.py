"""`executor: {dask: …}` in the Workflowfile, --executor/--scheduler and $DD_BUILD_SCHEDULER:
validation at file:line, which address wins, and that nothing but a stage run on the cluster
imports dask (a null build, status, -n, --version do not)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from c12dask_support import needs_dask
from conftest import REPO, Project

from buildtool import daskexec
from buildtool.errors import UsageError, WorkflowError
from buildtool.execute import BuildConfig
from buildtool.model import DaskSettings, scheduler_problem
from buildtool.workflowfile import load_workflow

STAGES = """stages:
  a:
    generate: code/g.py:make
    num_records: 4
"""
CODE = "def make(ctx):\n    return [{'i': ctx.offset + k} for k in range(ctx.size)]\n"


def _load(tmp_path: Path, executor: str) -> object:
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "g.py").write_text(CODE)
    path = tmp_path / "Workflowfile"
    path.write_text(f"workflow: demo\nexecutor: {executor}\n{STAGES}")
    return load_workflow(path, "Workflowfile")


@pytest.mark.parametrize(("executor", "settings"), [
    ("{dask: {scheduler: 'tcp://10.0.0.5:8786'}}", DaskSettings("tcp://10.0.0.5:8786")),
    ("{dask: {scheduler: '10.0.0.5:8786'}}", DaskSettings("10.0.0.5:8786")),
    ("{dask: {scheduler: 'tls://sched.example:8786'}}", DaskSettings("tls://sched.example:8786")),
    ("{dask: {}}", DaskSettings()),
    ("{dask: }", DaskSettings()),
    ("{dask: {scheduler: }}", DaskSettings()),
])
def test_a_valid_executor_is_read(tmp_path: Path, executor: str, settings: DaskSettings) -> None:
    assert _load(tmp_path, executor).dask == settings  # type: ignore[attr-defined]


@pytest.mark.parametrize(("executor", "column", "words"), [
    ("5", 11, "must be a mapping"),
    ("{}", 11, "names no executor"),
    ("{daks: {}}", 12, "unknown executor `daks`"),
    ("{thread: {}}", 12, "unknown executor `thread`"),
    ("{dask: 3}", 18, "must be a mapping"),
    ("{dask: {schedular: 'tcp://h:1'}}", 19, "unknown key `schedular`"),
    ("{dask: {scheduler: 5}}", 30, "must be an address"),
    ("{dask: {scheduler: 'a b:1'}}", 30, "space"),
    ("{dask: {scheduler: 'host'}}", 30, "HOST:PORT"),
    ("{dask: {scheduler: 'tcp://'}}", 30, "PROTOCOL://HOST:PORT"),
])
def test_a_wrong_executor_is_refused_at_its_place(tmp_path: Path, executor: str, column: int,
                                                   words: str) -> None:
    with pytest.raises(WorkflowError) as caught:
        _load(tmp_path, executor)
    error = caught.value
    assert (error.file, error.line, error.column, error.key) == ("Workflowfile", 2, column,
                                                                 "executor")
    assert words in error.message and error.hint


def test_the_cli_refuses_a_wrong_scheduler_address(tmp_path: Path) -> None:
    proj = Project(tmp_path)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", f"workflow: demo\n{STAGES}")
    result = proj.run("--scheduler", "not an address", "--json")
    assert result.code == 2
    assert "--scheduler" in result.json()["error"]["message"]
    assert not (tmp_path / "artifacts").exists()


def test_the_address_comes_from_the_flag_then_the_environment_then_the_workflowfile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # installed or not
    workflow = _load(tmp_path, "{dask: {scheduler: 'tcp://file:1'}}")
    monkeypatch.setenv("DD_BUILD_SCHEDULER", "tcp://env:2")
    dask = BuildConfig(executor="dask")
    assert daskexec.cluster_for(BuildConfig(scheduler="tcp://flag:3"), workflow).address == \
        "tcp://flag:3"  # type: ignore[arg-type]
    assert daskexec.cluster_for(dask, workflow).address == "tcp://env:2"  # type: ignore[arg-type]
    monkeypatch.delenv("DD_BUILD_SCHEDULER")
    assert daskexec.cluster_for(dask, workflow).address == "tcp://file:1"  # type: ignore[arg-type]
    local = _load(tmp_path, "{dask: }")
    assert daskexec.cluster_for(dask, local).address is None  # type: ignore[arg-type]
    monkeypatch.setenv("DD_BUILD_SCHEDULER", "nonsense")
    with pytest.raises(UsageError, match="DD_BUILD_SCHEDULER"):
        daskexec.cluster_for(dask, local)  # type: ignore[arg-type]


def test_without_the_extra_dask_is_a_usage_error_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    workflow = _load(tmp_path, "{dask: }")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError) as caught:
        daskexec.cluster_for(BuildConfig(executor="dask"), workflow)  # type: ignore[arg-type]
    assert "dd-build[dask]" in (caught.value.hint or "")


def test_which_builds_use_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Workflowfile's `executor:` or --scheduler choose Dask, --executor local wins;
    $DD_BUILD_SCHEDULER alone only gives the address."""
    import importlib.util

    from buildtool.api import _cluster

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setenv("DD_BUILD_SCHEDULER", "tcp://env:2")
    with_file = _load(tmp_path, "{dask: }")
    plain = load_workflow(_plain(tmp_path), "Workflowfile")
    assert _cluster(BuildConfig(), plain) is None  # type: ignore[arg-type]
    assert _cluster(BuildConfig(executor="local"), with_file) is None  # type: ignore[arg-type]
    assert _cluster(BuildConfig(executor="local", scheduler="h:1"), plain) is None  # type: ignore[arg-type]
    for config, workflow in ((BuildConfig(), with_file), (BuildConfig(executor="dask"), plain),
                             (BuildConfig(scheduler="h:1"), plain)):
        assert isinstance(_cluster(config, workflow), daskexec.Cluster)  # type: ignore[arg-type]


def test_a_scheduler_given_with_executor_local_is_said_to_be_ignored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--executor local wins over a --scheduler on the same command line (nothing listens at
    :9: nothing connects), and the build says, once, that the address is ignored, as it says
    its other notes: not with -q; a null build from the stamp says it too. An address from
    $DD_BUILD_SCHEDULER or the Workflowfile gives way to --executor local without a word."""
    import logging

    import buildtool

    address = "tcp://127.0.0.1:9"
    proj = Project(tmp_path / "p")
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", f"workflow: demo\n{STAGES}")
    both = ("--executor", "local", "--scheduler", address)
    for what in ("a build", "a null build", "a null build from the stamp"):
        result = proj.run(*both)
        assert result.code == 0, (what, result.stderr)
        said = [line for line in result.stderr.splitlines() if "ignored" in line]
        assert len(said) == 1 and address in said[0] and "--executor local" in said[0], \
            (what, result.stderr)
    quiet = proj.run("-q", *both)
    assert (quiet.code, quiet.stdout, quiet.stderr) == (0, "", ""), quiet
    assert "ignored" not in proj.run("--executor", "local", DD_BUILD_SCHEDULER=address).stderr
    proj.write("Workflowfile", f"workflow: demo\nexecutor: {{dask: {{scheduler: '{address}'}}}}\n"
                              f"{STAGES}")
    result = proj.run("--executor", "local")
    assert result.code == 0 and "ignored" not in result.stderr, result.stderr
    with caplog.at_level(logging.INFO, logger="buildtool"):
        assert buildtool.build(proj.root, executor="local", scheduler=address).ok
    assert [r for r in caplog.records if "ignored" in r.getMessage() and
            address in r.getMessage()], caplog.text


def _plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain" / "Workflowfile"
    (path.parent / "code").mkdir(parents=True)
    (path.parent / "code" / "g.py").write_text(CODE)
    path.write_text(f"workflow: demo\n{STAGES}")
    return path


def test_scheduler_addresses() -> None:
    for good in ("tcp://127.0.0.1:8786", "127.0.0.1:8786", "inproc://x", "ucx://h:1"):
        assert scheduler_problem(good) is None, good
    for bad in ("", " ", "tcp:// h:1", "h", "h:port", "1:2:3", "://h:1"):
        assert scheduler_problem(bad) is not None, bad


# Imports a null build, and every command but a build that runs a stage on the cluster, must
# not make: checked in a fresh interpreter after main() returns.
_PROBE = """
import sys
from buildtool.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("dask", "distributed", "buildtool.daskwork")
               if m in sys.modules)
print("\\n" + __import__("json").dumps({"code": code, "heavy": heavy}))
"""


def _probe(root: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=root, capture_output=True,
                          text=True, env=Project(root).env(), timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_dask
def test_a_null_build_and_other_commands_never_import_dask(tmp_path: Path) -> None:
    proj = Project(tmp_path)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", f"workflow: demo\nexecutor: {{dask: {{scheduler: 'tcp://127.0.0.1:9'}}}}\n{STAGES}")
    assert proj.run("--executor", "local").code == 0  # built here (nothing listens at :9)
    for args in (["--executor", "dask"], [], ["--scheduler", "tcp://127.0.0.1:9"], ["status"],
                 ["-n", "--executor", "dask"], ["--version"], ["show", "a"], ["dag"]):
        got = _probe(tmp_path, *args)
        assert got == {"code": 0, "heavy": []}, (args, got)


def test_the_repository_ci_installs_the_extra_and_starts_a_cluster() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert ".[test,dask]" in ci and ".ci/with-dask-cluster python3 -m pytest" in ci
    cluster = (REPO / ".ci" / "with-dask-cluster").read_text()  # test_c12dask_ci_cluster.py
    assert "trap cleanup EXIT" in cluster and "export DD_BUILD_TEST_SCHEDULER" in cluster
    assert cluster.count("dask_worker") + cluster.count("dask_scheduler") >= 2


def test_the_api_takes_executor_and_scheduler_and_refuses_wrong_ones(tmp_path: Path) -> None:
    import buildtool

    proj = Project(tmp_path)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", f"workflow: demo\n{STAGES}")
    with pytest.raises(UsageError, match="executor="):
        buildtool.build(tmp_path, executor="threads")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="scheduler="):
        buildtool.build(tmp_path, scheduler="no address")
    assert not (tmp_path / "artifacts").exists()
    assert buildtool.build(tmp_path, executor="local").ok


@needs_dask
@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
@pytest.mark.parametrize("name", ["DD_BUILD_DASK_CONNECT_TIMEOUT_S", "DD_BUILD_DASK_LOST_AFTER_S"])
def test_a_knob_that_is_no_number_of_seconds_is_a_usage_error_naming_it(
        tmp_path: Path, name: str, value: str) -> None:
    """Said before anything runs (it was an internal error, or a stage's failure)."""
    proj = Project(tmp_path)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", f"workflow: demo\n{STAGES}")
    result = proj.run("--scheduler", "tcp://127.0.0.1:9", **{name: value})
    assert result.code == 2, result.stderr
    assert f"${name} is not a number of seconds above 0" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not (proj.artifacts / "a" / "stage.json").exists()  # nothing ran


def test_a_stage_asking_for_the_dask_executor_is_pointed_at_the_builds(tmp_path: Path) -> None:
    proj = Project(tmp_path)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", f"workflow: demo\n{STAGES}    executor: dask\n")
    result = proj.run("-n")
    assert result.code == 2
    assert "unknown executor `dask`" in result.stderr
    assert "--executor dask" in result.stderr and "executor: {dask:" in result.stderr
