"""The planning index: every stage record the planner reads, in one file, read in one go.

`<artifacts>/<workflow>/.plan-index` holds, per stage, the record as `records.record_plain`
gives it and the identity (device, inode, size, mtime, ctime) of the `stage.json` it was read
from. A build stats each record file: an equal identity uses the entry, any other (or a
missing entry) reads the record as always and refreshes the entry. The records stay the
source of truth; this is a cache of reading them, so:

- it is keyed by its own format, dd-build's version, the record format, the Python that
  wrote it (marshal's format) and the source files that define the plain form: another key
  is another index, ignored and rebuilt;
- a missing, torn or garbled file (its checksum, its shape) is an empty index, never an
  error the user sees;
- it is written atomically, only by a build (under the lock), and only when an entry changed;
- a `running` record is never taken from it: its journal grows beside it.

Every file a record lists is still stat'ed on every build (probe.py): the index saves the
reading and parsing of the records, not a single check.
"""

from __future__ import annotations

import marshal
import os
import sys
import zlib
from pathlib import Path
from typing import Any

from . import __version__, records
from .fingerprint import spec_fingerprint
from .records import (
    RECORD_NAME,
    FileIdentity,
    RecordRead,
    StageRecord,
    file_identity,
    read_of,
    read_record_identified,
    record_from_plain,
    record_plain,
)

INDEX_NAME = ".plan-index"  # one of model.ARTIFACT_FILES: no stage folder is called this
INDEX_FORMAT = 4  # 3: the summary's text, not its digest; 4: batch keys
_MAGIC = "dd-build plan index"
# (the record file's identity, the record's plain form, whether its spec hashes to its
# spec_fingerprint)
_Entry = tuple[FileIdentity, tuple[Any, ...], bool]


def _key() -> tuple[Any, ...]:
    """What the index depends on besides the records: another key, another index. The
    stats of the modules that define the plain form cover a dd-build changed in place (an
    editable install) without a new version."""
    sources: list[tuple[int, int] | None] = []
    for module_file in (records.__file__, __file__):
        try:
            st = os.stat(module_file)
            sources.append((st.st_size, st.st_mtime_ns))
        except (OSError, TypeError):
            sources.append(None)
    return (INDEX_FORMAT, __version__, records.FORMAT_VERSION, marshal.version,
            sys.implementation.cache_tag, sys.byteorder, tuple(sources))


class PlanIndex:
    """The index of one workflow's records, as loaded, with the entries this process read
    or refreshed. Never raises for what it finds on disk."""

    def __init__(self, root: Path, content: dict[str, Any] | None = None) -> None:
        self.root = root
        self.path = root / INDEX_NAME
        content = content or {}
        self.entries: dict[str, _Entry] = content.get("stages", {})
        # workflow.json as the last build wrote it: (its identity, its text without
        # `finished_at`), so an unchanged summary is neither read nor written. The text, not a
        # digest of it: compared whole, and no hashing on a null build.
        self.summary: tuple[FileIdentity, str] | None = content.get("summary")
        # Records read from their files since: made entries when the index is saved (a dry
        # run never pays for making them).
        self.pending: dict[str, tuple[FileIdentity, StageRecord]] = {}
        self.changed = not content  # an index that was missing or unusable is written
        self.used = 0  # records taken from the index (for tests and benchmarks)

    @classmethod
    def load(cls, root: Path) -> PlanIndex:
        try:
            data = (root / INDEX_NAME).read_bytes()
        except OSError:
            return cls(root)
        return cls(root, _decode(data))

    def read(self, name: str, stage_dir: str | Path, root_fd: int | None = None
             ) -> RecordRead:
        """The stage's record: the entry when the record file is the one it was made from,
        else the file read (and the entry refreshed). `root_fd`: the folder holding
        `stage_dir` (named `name` there), open: the record is stat'ed from it."""
        entry = self.entries.get(name)
        if entry is not None:
            try:
                identity: FileIdentity | None = file_identity(
                    os.stat(os.path.join(stage_dir, RECORD_NAME)) if root_fd is None else
                    os.stat(f"{name}/{RECORD_NAME}", dir_fd=root_fd))
            except OSError:
                identity = None
            try:
                if identity == entry[0]:
                    record = record_from_plain(entry[1])
                    self.used += 1
                    return read_of(record, entry[2] is True)
            except (TypeError, ValueError, IndexError, KeyError, AttributeError):
                del self.entries[name]  # an entry of another shape: made again from the file
                self.changed = True
        return self.refresh(name, stage_dir)

    def refresh(self, name: str, stage_dir: str | Path) -> RecordRead:
        """Read the record file; its entry is made when the index is saved (none for a
        missing, unreadable or `running` record)."""
        read, identity = read_record_identified(Path(stage_dir))
        record = read.record
        if record is not None and record.status != "running" and identity is not None:
            if self._identity(name) != identity:  # an equal one is the same bytes
                self.pending[name] = (identity, record)
                self.changed = True
            return read
        dropped = self.entries.pop(name, None), self.pending.pop(name, None)
        if dropped != (None, None):
            self.changed = True
        return read

    def identity(self, name: str) -> FileIdentity | None:
        """The identity of the record file the stage's record was read (or taken) from."""
        return self._identity(name)

    def _identity(self, name: str) -> FileIdentity | None:
        """The identity of the record file the stage's entry (or pending entry) is of."""
        if name in self.pending:
            return self.pending[name][0]
        entry = self.entries.get(name)
        return entry[0] if isinstance(entry, tuple) and entry else None

    def summary_is(self, identity: FileIdentity | None, text: str) -> bool:
        """Whether workflow.json is the file the index last saw written with `text` (the
        summary without `finished_at`)."""
        return identity is not None and self.summary == (identity, text)

    def summary_written(self, identity: FileIdentity | None, text: str) -> None:
        new = None if identity is None else (identity, text)
        if new != self.summary:
            self.summary = new
            self.changed = True

    def save(self) -> None:
        """Write the index when an entry changed: atomically, and best effort (a read-only
        folder or a full disk costs the next build its speed, nothing else)."""
        if not self.changed or not self.root.is_dir():
            return
        from .fsutil import atomic_write_bytes

        for name, (identity, record) in self.pending.items():
            try:
                self.entries[name] = (identity, record_plain(record),
                                      spec_fingerprint(record.spec) == record.spec_fingerprint)
            except OverflowError:  # a stat beyond 64 bits: read from its file every time
                self.entries.pop(name, None)
        self.pending.clear()
        payload = marshal.dumps({"stages": self.entries, "summary": self.summary})
        data = marshal.dumps((_MAGIC, _key(), zlib.crc32(payload), payload))
        try:
            atomic_write_bytes(self.path, data)
        except OSError:
            return
        self.changed = False


def _decode(data: bytes) -> dict[str, Any] | None:
    """What an index file holds, or None when it is torn, garbled or of another key."""
    try:
        magic, key, crc, payload = marshal.loads(data)
        if magic != _MAGIC or key != _key() or not isinstance(payload, bytes) or \
                zlib.crc32(payload) != crc:
            return None
        content = marshal.loads(payload)
    except (ValueError, TypeError, EOFError):
        return None
    if not isinstance(content, dict) or not isinstance(content.get("stages"), dict):
        return None
    return content
