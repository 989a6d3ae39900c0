"""The benchmarks' workloads are valid projects, at a tiny size (no timing is asserted).

benchmarks/null_build.py and benchmarks/peers/run.py are run by hand, not in CI; these tests
only check that what they generate builds (dd-build, make) or declares the layered DAG it is
meant to (doit, Snakemake, DVC: read, never run; nothing is installed).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NULL_BUILD = REPO / "benchmarks" / "null_build.py"
PEERS = REPO / "benchmarks" / "peers" / "run.py"
N = 5


@functools.cache
def load_null_build() -> ModuleType:
    """benchmarks/ is no package: load the script as a module (registered, for dataclasses)."""
    spec = importlib.util.spec_from_file_location("nbbench_null_build", NULL_BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def script(path: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def expected_deps() -> list[list[str]]:
    deps = load_null_build().layered_inputs(N)
    return [[f"s{p:04d}" for p in parents] for parents in deps]


@pytest.mark.parametrize("n", [1, 2, 5, 37, 1000])
def test_layered_dag_has_layers_of_one_or_two_parents(n: int) -> None:
    deps = load_null_build().layered_inputs(n)
    assert len(deps) == n
    width = max(1, round(n ** 0.5))
    for i, parents in enumerate(deps):
        layer = i // width
        if layer == 0:
            assert parents == []
            continue
        assert 1 <= len(parents) <= 2 and len(set(parents)) == len(parents)
        assert all(p // width == layer - 1 for p in parents), (i, parents)


def test_null_build_script_builds_and_times_a_tiny_project(tmp_path: Path) -> None:
    got = script(NULL_BUILD, "--stages", str(N), "--batches", "2", "--shape", "layered",
                 "--repeat", "1", "--workdir", str(tmp_path), cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    rows = [line.split() for line in got.stdout.splitlines() if line.startswith("layered")]
    assert [row[:3] for row in rows] == [["layered", str(N), "2"]]
    project = tmp_path / f"layered-{N}x2"
    assert re.findall(r"^  (s\d{4}):$", (project / "Workflowfile").read_text(), re.M) == [
        f"s{i:04d}" for i in range(N)]
    assert int(rows[0][3]) >= N * 2  # files under artifacts/: at least one per batch


def test_measure_reports_the_childs_own_peak_memory(tmp_path: Path) -> None:
    nb = load_null_build()
    ballast = b"x" * (200 * 2**20)  # this process is big; a small child must not look big
    small = nb.measure(["sh", "-c", "echo out; echo err >&2; exit 3"], tmp_path)
    assert (small.returncode, small.stdout, small.stderr) == (3, "out\n", "err\n")
    assert small.maxrss_mib < 100
    big = nb.measure([sys.executable, "-c", "b = b'y' * (150 * 2**20)"], tmp_path)
    assert big.returncode == 0 and big.maxrss_mib >= 150
    del ballast


def write_peers(root: Path) -> subprocess.CompletedProcess[str]:
    return script(PEERS, "--write-only", "--stages", str(N), "--workdir", str(root), cwd=root)


def test_peer_makefile_builds_the_dag_and_then_has_nothing_to_do(tmp_path: Path) -> None:
    assert write_peers(tmp_path).returncode == 0
    project = tmp_path / f"layered-{N}" / "make"
    rules = dict(re.findall(r"^out/(s\d{4})\.txt: code/stage\.sh(.*)$",
                            (project / "Makefile").read_text(), re.M))
    assert [re.findall(r"out/(s\d{4})\.txt", rules[f"s{i:04d}"]) for i in range(N)] == \
        expected_deps()
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    assert subprocess.run(["make", "-s"], cwd=project, env=env).returncode == 0
    assert (project / "out" / "s0003.txt").read_text() == "out/s0003.txt\n"
    assert sorted(p.name for p in (project / "out").iterdir()) == [
        f"s{i:04d}.txt" for i in range(N)]
    assert subprocess.run(["make", "-q"], cwd=project, env=env).returncode == 0
    code = project / "code" / "stage.sh"
    later = (project / "out" / "s0004.txt").stat().st_mtime + 10
    os.utime(code, (later, later))  # the code changed: every stage is out of date
    assert subprocess.run(["make", "-q"], cwd=project, env=env).returncode == 1


def test_peer_dodo_snakefile_and_dvc_yaml_declare_the_dag(tmp_path: Path) -> None:
    assert write_peers(tmp_path).returncode == 0
    root = tmp_path / f"layered-{N}"
    want = expected_deps()

    namespace: dict[str, object] = {}
    exec(compile((root / "doit" / "dodo.py").read_text(), "dodo.py", "exec"), namespace)
    tasks = list(namespace["task_stages"]())  # type: ignore[operator]
    assert [t["basename"] for t in tasks] == [f"s{i:04d}" for i in range(N)]
    for task, parents in zip(tasks, want, strict=True):
        assert task["file_dep"] == ["code/stage.sh", *(f"out/{p}.txt" for p in parents)]
        assert task["targets"] == [f"out/{task['basename']}.txt"]
        assert task["actions"] == [f"sh code/stage.sh out/{task['basename']}.txt"]

    snakefile = (root / "snakemake" / "Snakefile").read_text()
    listed = re.search(r"^DEPS = (.*)$", snakefile, re.M)
    assert listed is not None
    assert [[f"s{p:04d}" for p in ps] for ps in ast.literal_eval(listed.group(1))] == want
    assert re.search(r"^rule all:$", snakefile, re.M) and re.search(r"^rule stage:$", snakefile,
                                                                     re.M)
    assert '"out/{name}.txt"' in snakefile

    stages = yaml.safe_load((root / "dvc" / "dvc.yaml").read_text())["stages"]
    assert list(stages) == [f"s{i:04d}" for i in range(N)]
    for (stage, spec), parents in zip(stages.items(), want, strict=True):
        assert spec == {"cmd": f"sh code/stage.sh out/{stage}.txt",
                        "deps": ["code/stage.sh", *(f"out/{p}.txt" for p in parents)],
                        "outs": [f"out/{stage}.txt"]}


def test_peer_ddbuild_project_plans_every_stage(tmp_path: Path) -> None:
    assert write_peers(tmp_path).returncode == 0
    project = tmp_path / f"layered-{N}" / "dd-build"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    got = subprocess.run([sys.executable, "-m", "buildtool", "-n", "--json"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    stages = yaml.safe_load(got.stdout)["stages"]  # JSON is YAML
    assert sorted(s["stage"] for s in stages) == [f"s{i:04d}" for i in range(N)]


def test_write_only_keeps_an_unchanged_project_and_renews_a_changed_one(tmp_path: Path) -> None:
    assert write_peers(tmp_path).returncode == 0
    project = tmp_path / f"layered-{N}" / "make"
    built = project / "out" / "s0000.txt"
    built.write_text("built before\n")
    assert write_peers(tmp_path).returncode == 0
    assert built.read_text() == "built before\n"  # reused: what was built stays
    (project / "Makefile").write_text("# edited\n")
    assert write_peers(tmp_path).returncode == 0
    assert not built.exists() and (project / "Makefile").read_text().startswith("# 5-stage")
