"""A Dask worker runs dd-build's own code from its own install: one whose dd-build is not the
client's (another version, an edited file) fails the stage with a clear error instead of
computing batches a local build might not give (buildtool/owncode.py, daskwork.other_dd_build).
And Dask's table of mismatched package versions is one line of ours (daskexec._other_versions).

The worker's side is driven directly in a fresh Python (as tests/test_c12dask_bundle.py does);
the rest against the CI cluster, with the client run from an edited copy of the package while
the workers run the original."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from c12dask_support import ADDRESS, needs_cluster, needs_dask
from conftest import REPO, Project
from own_edits import copy_package

from buildtool.owncode import sources_digest

ROOT = "/nonexistent/dd-build-project"  # the client's path: nothing is there on the "worker"

WORKER = '''
import json
import cloudpickle
from buildtool.batchexec import BatchError, BatchTask, StageCall
from buildtool.codebundle import CodeBundle
from buildtool.daskwork import Payload, run_batch, run_transform
from buildtool.fingerprint import FileState, digest_bytes
from buildtool.owncode import identity

ROOT = %(root)r
src = (b"def rows(ctx):\\n    return [{'i': ctx.offset + k} for k in range(ctx.size)]\\n"
       b"def shape(ctx):\\n    return [{'n': 1}]\\n")
bundle = CodeBundle(ROOT, {"gen.py": src},
                    {"gen.py": FileState("gen.py", len(src), 1, digest_bytes(src))}, "d")
batch = cloudpickle.dumps(Payload(bundle, "b1", StageCall("gen", "gen.py:rows", ROOT, {}, {},
                                                          4, 0, 0.0)))
shape = cloudpickle.dumps(Payload(bundle, "b1", StageCall("shaped", "gen.py:shape", ROOT, {},
                                                          {}, 0, 0, 0.0)))
version, digest, folder = identity()
sent = {
    "same": (version, digest, folder),
    "elsewhere": (version, digest, "/elsewhere/site-packages/buildtool"),
    "other-version": ("0.0.1", digest, "/client/buildtool"),
    "files": (version, "0" * 64, "/client/buildtool"),
    "older": None,  # a client that sends the bare blob
}

def said(result):
    if isinstance(result, BatchError):
        return {"error": [result.message, result.hint, result.user]}
    return {"rows": result.num_rows}

out = {"version": version, "folder": folder}
for name, who in sent.items():
    finished, _ = run_batch(batch if who is None else (who, batch), BatchTask(0, 0, 2, None, 7))
    out[name] = said(finished.error if finished.error is not None else finished.table)
    out[name + "/transform"] = said(
        run_transform(shape if who is None else (who, shape), {})[0])
out["computed"] = identity.cache_info().misses  # once per process
print(json.dumps(out))
'''


@needs_dask
def test_a_worker_of_another_dd_build_than_the_clients_fails_the_stage_clearly() -> None:
    done = subprocess.run([sys.executable, "-c", WORKER % {"root": ROOT}], capture_output=True,
                          text=True, cwd="/", env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # the same dd-build runs the stage, wherever it is installed
    for name in ("same", "elsewhere"):
        assert out[name] == {"rows": 2} and out[name + "/transform"] == {"rows": 1}, out
    assert out["computed"] == 1
    for name in ("other-version", "files", "older"):
        for task in (name, name + "/transform"):
            message, hint, user = out[task]["error"]
            assert "Dask worker" in message and out["version"] in message, message
            assert "pip install 'dd-build[dask]'" in hint and "--executor local" in hint, hint
            assert user is False  # no traceback of the user's code: not theirs
    assert "0.0.1" in out["other-version"]["error"][0]
    files = out["files"]["error"][0]
    assert "files" in files and "/client/buildtool" in files and out["folder"] in files
    assert "older" in out["older"]["error"][0]


def test_the_digest_is_of_the_packages_python_sources_and_not_of_its_place(
        tmp_path: Path) -> None:
    one = copy_package(REPO, tmp_path / "one")  # with __pycache__ folders (bytecode)
    two = tmp_path / "two" / "buildtool"
    shutil.copytree(one, two, ignore=shutil.ignore_patterns("__pycache__"))
    assert sources_digest(str(one)) == sources_digest(str(two)) == \
        sources_digest(str(REPO / "buildtool"))
    (two / "starter" / "notes.txt").write_text("not a python file")
    assert sources_digest(str(two)) == sources_digest(str(one))
    with open(two / "kinds" / "generate.py", "a") as f:
        f.write("# an edit\n")
    assert sources_digest(str(two)) != sources_digest(str(one))
    (two / "kinds" / "generate.py").write_bytes((one / "kinds" / "generate.py").read_bytes())
    (two / "added.py").write_text("")
    assert sources_digest(str(two)) != sources_digest(str(one))


WORKFLOW = """
workflow: demo
stages:
  gen:
    generate: code/gen.py:rows
    num_records: 8
    batch_size: 2
    concurrency: 4
  shaped:
    transform: code/gen.py:shape
    inputs: [data/notes.txt]
"""
GEN = """
def rows(ctx):
    return [{"i": ctx.offset + k} for k in range(ctx.size)]


def shape(ctx):
    with open(ctx.inputs["data/notes.txt"]) as f:
        return [{"line": line.strip()} for line in f]
"""


@needs_cluster
def test_a_client_of_another_dd_build_than_the_workers_fails_then_the_same_one_builds(
        tmp_path: Path) -> None:
    """The CI workers run this checkout; the client runs a copy with one file edited, then with
    another version: each stage fails once, cleanly. The client of this checkout builds."""
    assert ADDRESS is not None
    copy = copy_package(REPO, tmp_path / "client")
    with open(copy / "wording.py", "a") as f:
        f.write("# the client's dd-build only\n")
    proj = Project(tmp_path / "project")
    proj.write("code/gen.py", GEN)
    proj.write("data/notes.txt", "one\ntwo\n")
    proj.write("Workflowfile", WORKFLOW)
    from buildtool import __version__

    for edit in ("files", "version"):
        if edit == "version":
            init = copy / "__init__.py"
            init.write_text(init.read_text().replace(f'__version__ = "{__version__}"',
                                                     '__version__ = "0.0.1+edited"'))
        result = proj.run("--scheduler", ADDRESS, "-k", PYTHONPATH=str(copy.parent))
        assert result.code == 1, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        said = [line for line in result.stderr.splitlines()
                if line.strip().startswith("the Dask worker")]  # not the reasons to run again
        assert len(said) == 2, result.stderr  # once per stage, not once per batch
        for stage, line in zip(("gen", "shaped"), said, strict=True):
            # after its stage's failure (both stages may fail on one worker: the same line)
            assert line in result.stderr[result.stderr.index(f"✗ {stage}: failed"):]
            assert proj.record(stage)["status"] == "failed"
            assert __version__ in line
            if edit == "files":
                assert "files" in line and str(copy) in line, line
            else:
                assert "0.0.1+edited" in line, line
        assert result.stderr.count("pip install 'dd-build[dask]'") == 2, result.stderr
        assert proj.record("gen")["batches"] == []
    built = proj.run("--scheduler", ADDRESS)
    assert built.code == 0, built.stderr
    assert "✗" not in built.stderr
    assert sorted(proj.table("gen").column("i").to_pylist()) == list(range(8))
    assert proj.table("shaped").column("line").to_pylist() == ["one", "two"]


@needs_cluster
def test_packages_of_other_versions_on_the_cluster_are_one_line_not_a_table(
        tmp_path: Path) -> None:
    """The client sees a package in a version no worker has (its metadata only, found first on
    its path): one note names it, and the build goes on."""
    from distributed.versions import get_versions

    name = "lz4"  # a package Dask compares that dd-build never imports
    if name not in get_versions()["packages"]:
        pytest.skip(f"this Dask does not compare the versions of {name}")
    meta = tmp_path / "meta"
    (meta / f"{name}-99.0.dist-info").mkdir(parents=True)
    (meta / f"{name}-99.0.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 99.0\n")
    proj = Project(tmp_path / "project")
    proj.write("code/gen.py", GEN)
    proj.write("data/notes.txt", "one\n")
    proj.write("Workflowfile", WORKFLOW)
    result = proj.run("--scheduler", ADDRESS or "",
                      PYTHONPATH=f"{REPO}:{meta}")
    assert result.code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "dask:" in line]
    said = [line for line in notes if f"{name} 99.0" in line]
    assert len(said) == 1, result.stderr
    assert result.stderr.count("99.0") == 1, result.stderr  # not Dask's table too
