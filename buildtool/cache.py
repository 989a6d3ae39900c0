"""The build cache: every stage built is kept by its trace key, so a revert restores it.

Layout of a cache folder (`<artifacts>/.cache` unless `DD_BUILD_CACHE` or `cache:` says):

    .lock                           an OS file lock: shared while a build stores or restores,
                                    exclusive while `cache gc` removes anything
    objects/<2 hex>/<62 hex>        a file's bytes, named by their sha256 (never changed)
    entries/<key hex>/<id>.json     one built stage: its record and the objects of its files
    entries/<key hex>/<id>.used     touched by each store or restore of it (gc's last use)
    overrides/<workflow>/<stage>/<id>.json   reviews set by `dd-build override`
    tmp/                            temp files of stores in flight (gc sweeps them)

An entry's key is the stage's whole trace without its name: kind, spec fingerprint (every
fingerprinted key, every later step's included), code digests and input digests as consumed.
Modules the code imported are checked at lookup (an entry lists them with their digests).
Objects come first and the entry file last, each through a temp file renamed into place, so
a kill leaves at worst objects no entry names (gc removes them), never an entry whose files
are missing. An entry carries a digest of its own text, and every object is checked against
its name before it is restored: a damaged one is dropped, never restored.

The key function and the entry's shape are pure; everything else here does I/O for the
probe (lookup), the executor (store, restore) and the `cache` commands.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .fingerprint import FileState, digest_file, digest_strings
from .fsutil import atomic_write_bytes, make_dirs_durably

CACHE_FORMAT = 1
CACHE_ENV = "DD_BUILD_CACHE"
DEFAULT_FOLDER = ".cache"  # in the artifacts folder
OFF = "off"  # DD_BUILD_CACHE=off: no cache (nothing stored or restored)
_LOCK = ".lock"
_CHUNK = 1 << 20

# Where a stored file goes back to: the stage's folder (batches, processed/, callback/),
# the project (export copies, a run stage's outputs), or an absolute path (a callback that
# wrote outside the project).
_STAGE, _PROJECT, _ABSOLUTE = "stage", "project", "absolute"


class CacheDamaged(Exception):
    """An entry or object whose bytes are not what its digest says (restore falls back)."""


# ------------------------------------------------------------------ pure: keys and entries

def stage_key(kind: str, fingerprint: str, code: Mapping[str, FileState],
              file_inputs: Mapping[str, FileState], stage_inputs: Mapping[str, str]) -> str:
    """What a stage is built from, without its name (a renamed stage finds its entries)."""
    parts = ["dd-build cache", str(CACHE_FORMAT), kind, fingerprint]
    parts += [f"code\0{k}\0{v.digest}" for k, v in sorted(code.items())]
    parts += [f"file\0{k}\0{v.digest}" for k, v in sorted(file_inputs.items())]
    parts += [f"stage\0{k}\0{v}" for k, v in sorted(stage_inputs.items())]
    return digest_strings(parts)


def record_key(record: Any) -> str:
    """The key a record was built under."""
    return stage_key(record.kind, record.spec_fingerprint, record.code, record.file_inputs,
                     record.stage_inputs)


def _hex(digest: str) -> str:
    return digest.partition(":")[2] or digest


def _checked(body: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(body, sort_keys=True, ensure_ascii=False)
    return {**body, "check": digest_strings([text])}


def _verified(data: dict[str, Any]) -> dict[str, Any] | None:
    """`data` without its check when the check holds (an entry's bytes are as written)."""
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return None
    body = {k: v for k, v in data.items() if k != "check"}
    return body if _checked(body).get("check") == data.get("check") else None


@dataclass(frozen=True)
class CacheHit:
    """An entry a stage can be restored from: what the planner needs to know of it."""

    key: str
    entry: str  # the entry file's path
    built_at: float
    built_as: str  # the stage name it was built under
    digest: str  # its selected output's digest
    rows: int | None
    status: str  # completed | completed_empty

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.built_at))


@dataclass
class Cache:
    """One cache folder."""

    root: Path
    # Entries found damaged during this process: not offered again.
    damaged: set[str] = field(default_factory=set)

    # ---- locations
    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def entries(self) -> Path:
        return self.root / "entries"

    def object_path(self, digest: str) -> Path:
        h = _hex(digest)
        return self.objects / h[:2] / h[2:]

    # ---- locking
    @contextlib.contextmanager
    def locked(self, exclusive: bool, waiting: Callable[[], None] | None = None
               ) -> Iterator[None]:
        """Shared (stores, restores) or exclusive (gc). `waiting` is called once when the
        lock is held by another process and this one waits for it."""
        import fcntl

        make_dirs_durably(self.root)
        fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, kind | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                fcntl.flock(fd, kind)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ---- lookup (the probe's part)
    def lookup(self, key: str, usable: Callable[[dict[str, Any]], bool]) -> CacheHit | None:
        """The newest sound entry for `key` that `usable` accepts (given the entry: its
        imported modules are as they are now, its code read nothing of another stage name),
        or None. Cheap: one listdir when the key has no entry; else the entries' files and
        their objects' stats."""
        folder = self.entries / _hex(key)
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return None
        found = []
        for name in names:
            if not name.endswith(".json") or str(folder / name) in self.damaged:
                continue
            entry = self.read_entry(folder / name)
            if entry is not None and entry.get("key") == key:
                found.append((float(entry.get("built_at", 0.0)), name, entry))
        for built_at, name, entry in sorted(found, key=lambda t: (t[0], t[1]), reverse=True):
            record = entry["record"]
            if not usable(entry):
                continue
            if not self._objects_present(entry):
                continue
            out = record.get("output") or {}
            return CacheHit(key, str(folder / name), built_at, str(entry.get("stage")),
                            str(out.get("digest")), out.get("rows"), str(record["status"]))
        return None

    def read_entry(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return None
        body = _verified(data)
        if body is None or not isinstance(body.get("record"), dict) \
                or not isinstance(body.get("files"), list):
            return None
        return body

    def _objects_present(self, entry: dict[str, Any]) -> bool:
        for f in entry["files"]:
            try:
                if os.stat(self.object_path(f["digest"])).st_size != int(f["size"]):
                    return False
            except (OSError, KeyError, TypeError, ValueError):
                return False
        return True

    # ---- store (after a stage completed)
    def store(self, entry: dict[str, Any], sources: list[tuple[str, str, bool]]) -> str:
        """Keep `entry` (from `entry_of`): each source (path, digest, linkable) becomes an
        object first, then the entry file is written. Returns the entry file's path. An
        entry equal to one kept already (same record output and imports) only touches it."""
        return self.store_in(self.entries / _hex(str(entry["key"])), entry, sources)

    def store_in(self, folder: Path, entry: dict[str, Any],
                 sources: list[tuple[str, str, bool]]) -> str:
        with self.locked(exclusive=False):
            same = self._same_entry(folder, entry)
            if same is not None:
                self.touch(same)
                return str(same)
            # Not synced here: a link shares the stage's file (made durable by the stage), a
            # copy is fsynced as it is made; an object whose name a power loss takes is
            # missing at lookup, and its entry is not offered.
            for source, digest, linkable in sources:
                self._keep_object(source, digest, linkable)
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(6).hex()}.json"
            text = json.dumps(_checked(entry), ensure_ascii=False, sort_keys=True)
            atomic_write_bytes(folder / name, text.encode("utf-8"))
            self.touch(folder / name)
            return str(folder / name)

    def _same_entry(self, folder: Path, entry: dict[str, Any]) -> Path | None:
        try:
            names = os.listdir(folder)
        except OSError:
            return None
        want = _identity(entry)
        for name in names:
            if name.endswith(".json"):
                other = self.read_entry(folder / name)
                if other is not None and _identity(other) == want \
                        and self._objects_present(other):
                    return folder / name
        return None

    def _keep_object(self, source: str, digest: str, linkable: bool) -> list[str]:
        """The object for `digest`, from `source`: a hard link when dd-build wrote the file
        (it never edits one in place), else a reflink or a copy whose bytes are checked
        against the digest. Returns the paths made (to be made durable)."""
        target = self.object_path(digest)
        if target.exists():
            return []
        make_dirs_durably(target.parent)
        tmp_dir = self.root / "tmp"
        make_dirs_durably(tmp_dir)
        tmp = tmp_dir / f"{_hex(digest)[:16]}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            if not (linkable and _link(source, tmp)):
                got = copy_file(source, str(tmp))
                if got != digest:
                    raise CacheDamaged(f"{source} changed while it was stored")
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return [str(target)]

    def touch(self, entry_path: Path | str) -> None:
        """Mark an entry used now (gc removes the least recently used first)."""
        used = Path(str(entry_path)[:-len(".json")] + ".used")
        try:
            used.touch()
            os.utime(used)
        except OSError:
            pass

    def drop(self, entry_path: str) -> None:
        """Forget a damaged entry (its objects go with the next gc)."""
        self.damaged.add(entry_path)
        for path in (entry_path, entry_path[:-len(".json")] + ".used"):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def drop_damaged_objects(self, entry: dict[str, Any]) -> None:
        """Remove the objects of `entry` whose bytes are not what their name says: the next
        store of those bytes then makes them anew (a damaged object left in place would be
        named by every later entry of them, and each would fail its restore)."""
        for f in entry.get("files", []):
            try:
                obj = str(self.object_path(str(f["digest"])))
                if digest_file(Path(obj)) != str(f["digest"]):
                    os.unlink(obj)
            except (OSError, KeyError, TypeError):
                continue

    # ---- restore (the executor's part)
    def check_objects(self, entry: dict[str, Any]) -> None:
        """CacheDamaged unless every object of `entry` is there with the bytes its digest
        names (read in full: a restore checks them all before it changes anything)."""
        for f in entry["files"]:
            digest = str(f["digest"])
            try:
                found = digest_file(self.object_path(digest))
            except FileNotFoundError as exc:
                raise CacheDamaged(f"object {_hex(digest)[:12]}… is missing") from exc
            if found != digest:
                raise CacheDamaged(f"object {_hex(digest)[:12]}… does not match its digest")

    def materialize(self, digest: str, target: str, linkable: bool,
                    checked: bool = False) -> None:
        """Put the object `digest` at `target` (a temp file beside it renamed into place),
        after checking its bytes (`checked`: check_objects did, just before): a hard link
        when `linkable`, else a reflink or a copy (whose bytes are checked as it is made)."""
        obj = str(self.object_path(digest))
        folder, name = os.path.split(target)
        make_dirs_durably(Path(folder))
        tmp = os.path.join(folder, f".{name}.tmp.{os.getpid()}.{os.urandom(4).hex()}")
        try:
            if linkable:
                if not checked and digest_file(Path(obj)) != digest:
                    raise CacheDamaged(f"object {_hex(digest)[:12]}… does not match its digest")
                if not _link(obj, tmp):
                    _copy_checked(obj, tmp, digest)
            else:
                _copy_checked(obj, tmp, digest)
            os.replace(tmp, target)
        except FileNotFoundError as exc:
            if exc.filename in (obj, None) or not os.path.exists(obj):
                raise CacheDamaged(f"object {_hex(digest)[:12]}… is missing") from exc
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _identity(entry: dict[str, Any]) -> Any:
    """What makes two entries of a key the same: their files, imports, and whether each may
    be restored under another stage name or folder (the name it was built under, and what of
    it its code read, records.NAME_READS)."""
    record = entry.get("record") or {}
    return (entry.get("key"), entry.get("stage"), entry.get("stage_rel"),
            json.dumps(entry_name_reads(entry)), json.dumps(record.get("output"), sort_keys=True),
            json.dumps(record.get("steps"), sort_keys=True),
            json.dumps([(b.get("index"), b.get("digest")) for b in record.get("batches", [])]),
            json.dumps(_discovered_digests(record), sort_keys=True),
            json.dumps(sorted((str(f.get("where")), str(f.get("path")), str(f.get("digest")))
                              for f in entry.get("files", []))))


def entry_name_reads(entry: dict[str, Any]) -> list[str] | None:
    """What the code of the build an entry keeps read that depends on the stage's name or
    folder (records.NAME_READS: of its batches and steps), sorted; None when not known (an
    entry of a record that did not note them: it may have read any)."""
    from .records import NAME_READS, READS_NOTED

    record = entry.get("record") or {}
    if not (record.get("extra") or {}).get(READS_NOTED):
        return None
    found: set[str] = set()
    for unit in [*(record.get("batches") or ()), record.get("output") or {},
                 *(record.get("steps") or {}).values()]:
        found.update(str(r) for r in (unit.get("reads") or ()) if r in NAME_READS)
    return sorted(found)


def _discovered_digests(record: dict[str, Any]) -> dict[str, str]:
    found = record.get("discovered") or {}
    return {k: str(v.get("digest")) for k, v in found.items() if isinstance(v, dict)}


def _copy_checked(source: str, target: str, digest: str) -> None:
    if copy_file(source, target) != digest:
        raise CacheDamaged(f"object {_hex(digest)[:12]}… does not match its digest")


def _link(source: str, target: Path | str) -> bool:
    """A hard link; False where the file system will not make one (another device, a file
    system without links, too many links)."""
    try:
        os.link(source, target)
        return True
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            return False
        raise


def copy_file(source: str, target: str) -> str:
    """Copy `source` to `target` (a new file; a reflink where the file system makes one),
    fsynced, and return the digest of the bytes copied (read back from the copy, so a reflink
    is checked too)."""
    import hashlib

    with open(source, "rb") as src, open(target, "xb") as dst:
        if not _reflink(src.fileno(), dst.fileno()):
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    h = hashlib.sha256()
    with open(target, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


_FICLONE = 0x40049409  # linux/fs.h


def _reflink(src: int, dst: int) -> bool:
    try:
        import fcntl

        fcntl.ioctl(dst, _FICLONE, src)
        return True
    except (OSError, ImportError, AttributeError):
        return False


# ------------------------------------------------------------------ where the cache is

def cache_folder(project_dir: Path, artifacts: str, configured: str | None) -> Path | None:
    """The cache folder: DD_BUILD_CACHE (relative to the project folder), else the
    Workflowfile's `cache:` (already project-relative), else `<artifacts>/.cache`; None when
    DD_BUILD_CACHE is `off`."""
    env = os.environ.get(CACHE_ENV)
    if env is not None and env.strip():
        if env.strip().lower() == OFF:
            return None
        return (project_dir / os.path.expanduser(env.strip())).resolve()
    if configured:
        return (project_dir / os.path.expanduser(configured)).resolve()
    return project_dir / artifacts / DEFAULT_FOLDER


def cache_of(workflow: Any) -> Cache | None:
    folder = cache_folder(workflow.project_dir, workflow.artifacts,
                          getattr(workflow, "cache", None))
    return None if folder is None else Cache(folder)


def parse_size(text: str) -> int:
    """`10GB`, `500M`, `1.5GiB`, `0` → bytes (decimal units; `i` units are powers of 1024).
    A unit is required but for `0`: a bare `10` (10 bytes) is almost always a mistake."""
    raw = text.strip().upper().replace(" ", "")
    units = {"B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9,
             "GB": 10**9, "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
             "GIB": 2**30, "TIB": 2**40}
    number = raw.rstrip("KMGTIB")
    unit = raw[len(number):]
    hint = "e.g. --max-size 10GB, 500MB, 2GiB, 4096B or 0"
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf") or (unit and unit not in units):
        raise UsageError(f"--max-size {text}: not a size", hint=hint)
    if not unit and value != 0:
        raise UsageError(f"--max-size {text}: say its unit (B, KB, MB, GB, TB, KiB, MiB, GiB "
                         "or TiB)", hint=hint)
    return int(value * units.get(unit, 1))


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


# ------------------------------------------------------------------ inspection and gc

@dataclass
class EntryInfo:
    """One entry as `cache status` and `cache gc` see it."""

    path: Path
    key: str
    workflow: str
    stage: str
    built_at: float
    last_used: float
    digests: tuple[str, ...]
    sound: bool = True  # its file reads and its check holds


def _last_used(entry_path: Path, stored: float) -> float:
    try:
        return max(stored, os.stat(str(entry_path)[:-len(".json")] + ".used").st_mtime)
    except OSError:
        return stored


def scan(cache: Cache) -> list[EntryInfo]:
    """Every entry file of the cache (a damaged one with sound=False)."""
    found: list[EntryInfo] = []
    try:
        keys = sorted(os.listdir(cache.entries))
    except OSError:
        return found
    for key in keys:
        try:
            names = sorted(os.listdir(cache.entries / key))
        except OSError:
            continue
        for name in names:
            if not name.endswith(".json"):
                continue
            path = cache.entries / key / name
            entry = cache.read_entry(path)
            if entry is None:
                found.append(EntryInfo(path, key, "?", "?", 0.0, 0.0, (), sound=False))
                continue
            digests = tuple(str(f["digest"]) for f in entry["files"])
            stored = float(entry.get("stored_at") or entry.get("built_at") or 0.0)
            found.append(EntryInfo(path, str(entry["key"]), str(entry.get("workflow")),
                                   str(entry.get("stage")), float(entry.get("built_at", 0.0)),
                                   _last_used(path, stored), digests))
    return found


def object_sizes(cache: Cache) -> dict[str, int]:
    """Every object: its digest → its size on disk (the file's size)."""
    sizes: dict[str, int] = {}
    try:
        heads = os.listdir(cache.objects)
    except OSError:
        return sizes
    for head in heads:
        try:
            with os.scandir(cache.objects / head) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False) and "." not in e.name:
                        sizes["sha256:" + head + e.name] = e.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return sizes


def pinned_digests(cache: Cache) -> set[str]:
    """Objects of kept reviews (`overrides/`): gc never removes them."""
    pinned: set[str] = set()
    for folder, _, files in os.walk(cache.root / "overrides"):
        for name in files:
            if name.endswith(".json"):
                entry = cache.read_entry(Path(folder) / name)
                if entry is not None:
                    pinned.update(str(f["digest"]) for f in entry["files"])
    return pinned


@dataclass
class GcResult:
    removed: list[EntryInfo]
    kept: list[EntryInfo]
    objects_removed: int
    bytes_freed: int
    size_after: int


def collect(cache: Cache, max_size: int | None, keep_last: int | None,
            dry_run: bool = False, waiting: Callable[[], None] | None = None) -> GcResult:
    """Remove damaged entries, then per stage all but the `keep_last` most recently used,
    then the least recently used until the objects left take at most `max_size` bytes; then
    every object no entry (or kept review) names, and temp files of stores that were killed.
    Entries go before objects: a kill leaves no entry whose objects are gone. Under the
    cache's exclusive lock: no build stores or restores meanwhile."""
    with cache.locked(exclusive=True, waiting=waiting):
        entries = scan(cache)
        sizes = object_sizes(cache)
        pinned = pinned_digests(cache)
        drop = [e for e in entries if not e.sound]
        live = sorted((e for e in entries if e.sound), key=lambda e: e.last_used, reverse=True)
        if keep_last is not None:
            seen: dict[tuple[str, str], int] = {}
            for e in live:
                n = seen[(e.workflow, e.stage)] = seen.get((e.workflow, e.stage), 0) + 1
                if n > keep_last:
                    drop.append(e)
        kept = [e for e in live if e not in drop]
        if max_size is not None:
            refs: dict[str, int] = {}
            for e in kept:
                for d in set(e.digests):
                    refs[d] = refs.get(d, 0) + 1
            total = sum(sizes.get(d, 0) for d in set(refs) | pinned)
            for e in reversed(list(kept)):  # least recently used first
                if total <= max_size:
                    break
                kept.remove(e)
                drop.append(e)
                for d in set(e.digests):
                    refs[d] -= 1
                    if refs[d] == 0 and d not in pinned:
                        total -= sizes.get(d, 0)
        wanted = pinned | {d for e in kept for d in e.digests}
        garbage = [d for d in sizes if d not in wanted]
        freed = sum(sizes[d] for d in garbage)
        if not dry_run:
            for e in drop:
                cache.drop(str(e.path))
                with contextlib.suppress(OSError):
                    os.rmdir(e.path.parent)  # the key's folder, once empty
            for d in garbage:
                with contextlib.suppress(OSError):
                    os.unlink(cache.object_path(d))
                with contextlib.suppress(OSError):
                    os.rmdir(cache.object_path(d).parent)  # once empty
            for folder in (cache.root / "tmp",):
                with contextlib.suppress(OSError):
                    for name in os.listdir(folder):
                        with contextlib.suppress(OSError):
                            os.unlink(folder / name)
        size_after = sum(sizes[d] for d in sizes if d in wanted)
        return GcResult(drop, kept, len(garbage), freed, size_after)
