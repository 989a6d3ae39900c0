"""Leftovers of a killed compiled-workflow (or stamp) store are swept: the temp files of
processes that are gone, when an entry is next written; a live process's are kept."""

from __future__ import annotations

import subprocess
import sys

from conftest import CHAIN, Project


def test_temp_files_of_dead_processes_are_swept_when_an_entry_is_written(project: Project
                                                                         ) -> None:
    assert project.run().code == 0
    assert project.run("status").code == 0  # stores the compiled workflow
    folder = project.root / "artifacts" / ".compiled"
    assert list(folder.glob("*.bin"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        gone = folder / f".abc.bin.tmp.{dead}.0a1b2c"
        stamp_gone = folder / f".abc.stamp.tmp.{dead}.0a1b2d"
        kept = folder / f".abc.bin.tmp.{alive.pid}.0a1b2c"
        for path in (gone, stamp_gone, kept):
            path.write_bytes(b"torn")
        project.write("Workflowfile", CHAIN + "\n# edited\n")
        assert project.run("status").code == 0  # a miss stores the entry: swept
        assert not gone.exists() and not stamp_gone.exists()
        assert kept.exists()
    finally:
        alive.kill()
        alive.wait()
