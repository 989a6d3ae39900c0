"""Shared pieces of the Dask executor tests (tests/test_c12dask_*.py): whether the extra is
installed, the CI cluster's address, and private schedulers and workers a test starts (and
kills, by pid) itself."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

# The address of the scheduler .ci/run starts (two workers, each in a folder of its own).
ADDRESS_ENV = "DD_BUILD_TEST_SCHEDULER"
ADDRESS = os.environ.get(ADDRESS_ENV)
HAVE_DASK = all(importlib.util.find_spec(m) is not None for m in ("distributed", "cloudpickle"))

needs_dask = pytest.mark.skipif(
    not HAVE_DASK, reason="the dask extra is not installed (pip install -e '.[dask]')")
needs_cluster = pytest.mark.skipif(
    not HAVE_DASK or not ADDRESS,
    reason=f"no Dask scheduler to test on: set {ADDRESS_ENV} (.ci/run starts one)")


def repo_env() -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH (what the workers import)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_scheduler(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A scheduler on a free port of 127.0.0.1 (its address from its scheduler file)."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "scheduler.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(file)],
        cwd=folder, env=repo_env(), stdout=subprocess.DEVNULL,
        stderr=open(folder / "scheduler.log", "wb"))
    deadline = time.monotonic() + 60
    while not file.exists() or not file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError((folder / "scheduler.log").read_text())
        time.sleep(0.05)
    time.sleep(0.05)  # the file is written whole before the scheduler accepts; re-read it
    return proc, json.loads(file.read_text())["address"]


def start_worker(address: str, folder: Path, threads: int = 2, port: int | None = None
                 ) -> subprocess.Popen[bytes]:
    """A worker (no nanny: its pid is the process computing) in a folder of its own; with
    `port`, listening at 127.0.0.1:port (started again there, it has the same address)."""
    folder.mkdir(parents=True, exist_ok=True)
    at = [] if port is None else ["--host", "127.0.0.1", "--worker-port", str(port)]
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
         str(threads), "--no-nanny", *at, "--local-directory", str(folder)],
        cwd=folder, env=repo_env(), stdout=subprocess.DEVNULL,
        stderr=open(folder / "worker.log", "wb"))


def wait_for_workers(address: str, count: int) -> None:
    """Until the scheduler has at least `count` workers (a synchronisation point)."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(count, timeout=60)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """Kill these processes (ours, by pid) and reap them."""
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=30)


def free_port() -> int:
    """A port of 127.0.0.1 free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most (start, end) spans open at one instant (an end before a start at the same
    instant)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most
