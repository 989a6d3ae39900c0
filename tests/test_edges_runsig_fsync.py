"""New folders and new journals are durable: the parent of every folder created is fsynced,
and a journal and its folder are synced with the batches it lists (issue 7: "Hard edges";
issue 14).

os.fsync is replaced by a recorder that notes which file or folder each call synced (through
/proc/self/fd), then calls the real fsync.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from buildtool import fsutil
from buildtool.lock import build_lock
from buildtool.records import BatchEntry, journal_append

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real: Callable[[int], None] = os.fsync

    def fsync(fd: int) -> None:
        calls.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_an_atomic_write_into_new_folders_syncs_each_new_folders_parent(tmp_path, synced):
    target = tmp_path / "a" / "b" / "c" / "file.json"
    fsutil.atomic_write_bytes(target, b"{}")

    folders = [p for p in synced if p.is_dir()]
    # Each new folder's entry (a in tmp_path, b in a, c in b), then the file's own folder.
    assert folders == [tmp_path, tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert len(synced) == 5  # and the temp file itself, before its rename
    assert target.read_bytes() == b"{}"


def test_an_atomic_write_into_an_existing_folder_syncs_only_the_file_and_its_folder(
        tmp_path, synced):
    fsutil.atomic_write_bytes(tmp_path / "file.json", b"{}")
    assert len(synced) == 2 and synced[1] == tmp_path


def test_a_folder_made_meanwhile_by_another_process_is_still_synced(tmp_path, synced,
                                                                   monkeypatch):
    made = tmp_path / "made"
    real_mkdir = Path.mkdir

    def racing_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self)  # another process wins the race
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    fsutil.make_dirs_durably(made)
    assert made.is_dir() and synced == [tmp_path]


def test_a_file_where_a_folder_is_needed_is_an_error(tmp_path, synced):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(FileExistsError):
        fsutil.make_dirs_durably(tmp_path / "taken" / "sub")


def test_journal_lines_are_synced_with_the_batches_they_list_and_the_journals_folder(
        tmp_path, synced, monkeypatch):
    # Journal lines are not fsynced one by one (issue 14, stagerun.py): the sync that makes a
    # stage's batches durable makes its journal, and the journal's entry in its folder, durable.
    monkeypatch.setattr(fsutil, "_syncfs", lambda: None)  # an fsync of each file and folder
    entry = BatchEntry(0, "s/batches/batch-000000.parquet", 5, 100, 1, "digest")
    journal = "journal-1.jsonl"
    journal_append(tmp_path, journal, entry)
    journal_append(tmp_path, journal, entry._replace(index=1))
    assert synced == []
    assert len((tmp_path / journal).read_text().splitlines()) == 2

    fsutil.make_durable([str(tmp_path / journal)], [str(tmp_path)])
    assert synced == [tmp_path / journal, tmp_path]


def test_the_build_lock_creates_the_artifacts_folders_durably(tmp_path, synced):
    root = tmp_path / "artifacts" / "demo"
    with build_lock(root):
        pass
    assert synced == [tmp_path, tmp_path / "artifacts"]
