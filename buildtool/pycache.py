"""Bytecode a run stage's command may load: never stale for the project's own Python files.

Python trusts a timestamp-based `__pycache__` entry while the source's mtime (in whole seconds)
and size match what the entry recorded, so a source edited within the same second, or whose
mtime was put back, keeping its size, would run as its old code. Before each command dd-build
makes every bytecode entry of the project's files one that cannot be stale that way:

- an entry that Python checks against the source's hash (a checked-hash pyc) is left as it
  is: Python compares the hash on every import, and recompiles (writing a checked-hash entry
  again) when the source changed;
- any other entry (timestamp-based, unchecked-hash, unreadable) of this interpreter is
  rewritten as a checked-hash entry of the source as it is now; of another interpreter (a
  command running another Python), or when bytecode writing is off (PYTHONDONTWRITEBYTECODE),
  it is removed, and that Python compiles the source itself.

So at the command's start no entry of a project file can be stale, and one that Python writes
while the command runs is made safe before the next command. Libraries (site-packages, and
anything outside the project folder) keep their own bytecode as always: nothing there is
touched, nor recompiled. Where the command's environment sets PYTHONPYCACHEPREFIX, the
entries are those of the project's mirror tree under that prefix.

"The project's Python files": the files under the project folder, skipping hidden folders, the
artifacts folder, virtual environments (a folder holding `pyvenv.cfg`), `site-packages`,
`dist-packages` and `node_modules`, and not following symlinked folders.

Python writes bytecode atomically itself (a temp file renamed into place), and so does
`py_compile` here: a killed build or command leaves at worst a stray temp file, never a torn
entry. An entry that cannot be made safe (a read-only folder) makes `prepare` return False,
and the caller then runs the command with a fresh, empty PYTHONPYCACHEPREFIX, which compiles
every module from source: slow, but never stale.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

_CHECKED_HASH = 0b11  # the flags word of a pyc: hash-based, check the source
_SKIP = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules"})


def prepare(project_dir: Path, skip: Path, env: Mapping[str, str]) -> bool:
    """Make the bytecode entries of the project's Python files safe for a command run with
    `env`: True when every one is, False when one could not be made safe."""
    import importlib.machinery
    import sys

    tag = sys.implementation.cache_tag
    write = not env.get("PYTHONDONTWRITEBYTECODE") and tag is not None
    suffixes = tuple(importlib.machinery.SOURCE_SUFFIXES)
    prefix = env.get("PYTHONPYCACHEPREFIX")
    project = str(project_dir)
    ok = True
    if prefix:
        root = os.path.join(project, prefix)  # a relative prefix is the command's cwd's
        mirror = os.path.join(root, os.path.abspath(project).lstrip(os.sep))
        for folder, entries in _folders(mirror, str(skip), mirror_of=project):
            source_dir = os.path.join(project, os.path.relpath(folder, mirror))
            ok &= _fix_folder(folder, entries, source_dir, suffixes, tag, write)
    else:
        for cache, folder in _project_caches(project, str(skip)):
            ok &= _fix_folder(cache, _listing(cache), folder, suffixes, tag, write)
    return ok


def _project_caches(top: str, skip: str) -> Iterator[tuple[str, str]]:
    """(`__pycache__` folder, the folder it is in) under `top`, pruned as the module says.
    One pass over each folder's entries: a null build's run stage pays this walk each time,
    and a project may hold many data files."""
    stack = [top]
    while stack:
        folder = stack.pop()
        subdirs: list[str] = []
        cache = None
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    name = entry.name
                    if entry.is_dir(follow_symlinks=False):
                        if name == "__pycache__":
                            cache = entry.path
                        elif name[0] != "." and name not in _SKIP and entry.path != skip:
                            subdirs.append(entry.path)
                    elif name == "pyvenv.cfg" and folder != top:
                        # A virtual environment: its packages are libraries. A project folder
                        # that is one itself keeps its files (its packages are in
                        # lib/…/site-packages, skipped).
                        break
                else:
                    if cache is not None:
                        yield cache, folder
                    stack.extend(subdirs)
        except OSError:  # gone, or not a folder, or unreadable: nothing of it can be imported
            continue


def _folders(top: str, skip: str, mirror_of: str
             ) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Each folder of the mirror tree `top` (of the project folder `mirror_of`, which decides
    where to descend), with its entries."""
    stack = [top]
    while stack:
        folder = stack.pop()
        entries = _listing(folder)
        yield folder, entries
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in _SKIP or not entry.is_dir(follow_symlinks=False):
                continue
            mirrored = os.path.join(mirror_of, os.path.relpath(entry.path, top))
            if mirrored == skip or os.path.isfile(os.path.join(mirrored, "pyvenv.cfg")):
                continue
            stack.append(entry.path)


def _listing(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:  # gone, or not a folder, or unreadable: nothing of it can be imported
        return []


def _fix_folder(cache: str, entries: list[os.DirEntry[str]], source_dir: str,
                suffixes: tuple[str, ...], tag: str | None, write: bool) -> bool:
    ok = True
    for entry in entries:
        if not entry.name.endswith(".pyc"):
            continue
        parsed = _parse(entry.name)
        if parsed is None:
            continue
        stem, entry_tag, optimize = parsed
        source = next((s for s in (os.path.join(source_dir, stem + x) for x in suffixes)
                       if os.path.isfile(s)), None)
        if source is None or _checked_hash(entry.path):
            continue  # no source: Python never loads it from here; checked: Python checks it
        ok &= _make_safe(entry.path, source, optimize if write and entry_tag == tag else None)
    return ok


def _parse(name: str) -> tuple[str, str, int] | None:
    """`mod.cpython-311.opt-1.pyc` → ("mod", "cpython-311", 1); None for another name."""
    base = name[:-len(".pyc")]
    rest, _, last = base.rpartition(".")
    optimize = 0
    if last.startswith("opt-"):
        if not last[4:].isdigit():
            return None
        optimize = int(last[4:])
        rest, _, last = rest.rpartition(".")
    if not rest or not last:
        return None
    return rest, last, optimize


def _checked_hash(pyc: str) -> bool:
    try:
        with open(pyc, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return len(head) == 8 and int.from_bytes(head[4:8], "little") == _CHECKED_HASH


def _make_safe(pyc: str, source: str, optimize: int | None) -> bool:
    """Rewrite `pyc` as a checked-hash entry of `source` (optimize not None), else remove it;
    a source that does not compile loses its entry (the command's import reports the error).
    False when the entry stays as it was."""
    if optimize is not None:
        import py_compile

        try:
            py_compile.compile(source, cfile=pyc, doraise=True, optimize=optimize,
                               invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
            return True
        except (py_compile.PyCompileError, OSError):  # a syntax error, a symlink, no access
            pass
    try:
        os.unlink(pyc)
    except FileNotFoundError:
        pass  # removed meanwhile (another build, the user): nothing stale is left
    except OSError:
        return False
    return True
