"""Helpers of the datadesigner tests: the example project in a temp folder, its fake LLM
server on a free port of 127.0.0.1, and the CLI run against both."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "datadesigner"
SECRET = "sk-c13dd-never-in-records-0451"


def have_data_designer() -> bool:
    try:
        return importlib.util.find_spec("data_designer.interface") is not None
    except (ImportError, ValueError):
        return False


needs_data_designer = pytest.mark.skipif(
    not have_data_designer(),
    reason="the datadesigner extra is not installed (pip install -e '.[datadesigner]')")


class FakeLLM:
    """examples/datadesigner/fake_llm.py, started on a free port; ended at teardown."""

    def __init__(self, folder: Path) -> None:
        port_file = folder / ".fake_llm.port"
        self.proc = subprocess.Popen([sys.executable, str(EXAMPLE / "fake_llm.py"),
                                      "--port-file", str(port_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_file.exists():  # a synchronisation point, not a timing assertion
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("fake_llm.py did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def control(self, **state: Any) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/control",
                                         data=json.dumps(state).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class DDProject:
    def __init__(self, root: Path, server: FakeLLM) -> None:
        self.root = root
        self.server = server

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(FAKE_LLM_PORT=str(self.server.port), FAKE_LLM_API_KEY=SECRET, **extra)
        return env

    def run(self, *args: str, check: bool | None = True, **env: str
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "buildtool", *args], cwd=self.root,
                              env=self.env(**env), capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "buildtool", *args], cwd=self.root,
                                env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def plan(self, *args: str) -> dict[str, dict[str, Any]]:
        doc = json.loads(self.run("-n", "--json", *args).stdout)
        return {s["stage"]: s for s in doc["stages"]}

    def build(self, *args: str) -> dict[str, dict[str, Any]]:
        doc = json.loads(self.run("--json", *args).stdout)
        return {s["stage"]: s for s in doc["stages"]}

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts" / "dd-example"

    def record(self, stage: str) -> dict[str, Any]:
        return json.loads((self.artifacts / stage / "stage.json").read_text())

    def table(self, stage: str) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rec = self.record(stage)
        return pa.concat_tables([pq.read_table(self.artifacts / b["file"])
                                 for b in sorted(rec["batches"], key=lambda b: b["index"])])

    def edit(self, rel: str, old: str, new: str) -> None:
        path = self.root / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new))


@pytest.fixture
def dd_project(tmp_path: Path) -> Iterator[DDProject]:
    root = tmp_path / "example"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("artifacts", "reports",
                                                                 ".fake_llm.port*"))
    server = FakeLLM(tmp_path)
    try:
        yield DDProject(root, server)
    finally:
        server.stop()


def kill_build(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a build (its Data Designer child dies with it: PR_SET_PDEATHSIG)."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def journal_lists_batch(folder: Path, index: int) -> bool:
    """A stage's journal lists its batch `index` (kept by the next build)."""
    name = f"batch-{index:06d}.parquet"
    return any(name in j.read_text() for j in folder.glob("journal-*.jsonl"))


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    """Block until `condition()` holds (a synchronisation point, not a timing assertion)."""
    deadline = time.monotonic() + 300
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the build ended before {what}: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened")
        time.sleep(0.05)
