"""Code outside the project: the fingerprint of a `package.module:fn` found on sys.path, and
of a module outside the project that project code imports (a discovered entry).

Planning must not run user code, so the module is located the way the import system finds it
(the finders of sys.meta_path, which look at files and run nothing of the module), never
imported. Its fingerprint is one entry of the record's `code` (or `discovered`), under a key
that is not a path:

- `dist:<name>` (normalized) → the version of the installed distribution whose files hold the
  module (a `.dist-info` that is not an editable install);
- `module:<package>` → a digest of the files of the module's top-level package (or of the
  module's own file, for a single-file module or a namespace package): a module on PYTHONPATH,
  in an editable install's source tree, or anywhere no installed distribution owns it. Its
  stats are the files' total size and newest mtime, so an unchanged package is not re-read;
- `module:<name>` → `missing` when it cannot be found now: the stage reruns and fails with a
  clear message when it loads its code.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fingerprint import FileState, digest_file, digest_strings, module_file
from .model import CallableRef

if TYPE_CHECKING:
    from importlib.metadata import Distribution

MISSING = "missing"
DIST, MODULE = "dist:", "module:"


def is_external_key(key: str) -> bool:
    return key.startswith((DIST, MODULE))


@dataclass
class ExternalCode:
    """Finds and fingerprints modules outside the project; one per planning (caches lookups)."""

    project_dir: Path
    _found: dict[tuple[str, tuple[str, ...]], tuple[str, FileState]] = field(
        default_factory=dict)
    _imported: dict[tuple[str, tuple[str, ...]], FileState] = field(default_factory=dict)

    def states(self, refs: tuple[str, ...], known: Mapping[str, FileState]
               ) -> dict[str, FileState]:
        """key -> state of every callable reference that names a module outside the project."""
        out: dict[str, FileState] = {}
        hints = tuple(k.removeprefix(DIST) for k in known if k.startswith(DIST))
        for text in refs:
            ref = CallableRef.parse(text)
            if ref is None or ref.is_file or self._in_project(ref.module):
                continue
            cache_key = (ref.module, hints)
            if cache_key not in self._found:
                self._found[cache_key] = self._locate(ref.module, known, hints)
            key, state = self._found[cache_key]
            out[key] = state
        return out

    def _in_project(self, module: str) -> bool:
        """The project folder comes first on sys.path when code loads: a module file there,
        or a top-level package or module of that name, is the project's (its file is a
        declared code file, or the import fails when the stage runs)."""
        if module_file(self.project_dir, module) is not None:
            return True
        top = self.project_dir / module.split(".")[0]
        return (top / "__init__.py").is_file() or top.with_suffix(".py").is_file()

    def imported(self, key: str, module: str | None, known: FileState) -> FileState:
        """The state now of a module outside the project that stage code imported, recorded
        under `key` as `known`: its path is the key it has now (another one when, e.g., the
        module is no longer installed, or is found no more)."""
        name = module or key.partition(":")[2]
        hints = (key.removeprefix(DIST),) if key.startswith(DIST) else ()
        cache_key = (name, hints)
        if cache_key not in self._imported:
            spec = find_spec_without_import(name)
            if hints and _same_metadata(spec, hints[0], known):
                state = known  # stats first: the distribution's METADATA is as recorded
            else:
                found_key, found = self._locate(name, {key: known}, hints)
                state = _metadata_stats(found_key, found, spec)
            self._imported[cache_key] = state
        return self._imported[cache_key]

    def _locate(self, module: str, known: Mapping[str, FileState], hints: tuple[str, ...]
                ) -> tuple[str, FileState]:
        top = module.split(".")[0]
        spec = find_spec_without_import(module)
        top_spec = spec if module == top or spec is None else find_spec_without_import(top)
        return fingerprint(module, spec, top_spec, known, hints)


def fingerprint(module: str, spec: Any, top_spec: Any, known: Mapping[str, FileState],
                hints: tuple[str, ...] = ()) -> tuple[str, FileState]:
    """Key and state of `module` found as `spec` (its top-level package as `top_spec`)."""
    top = module.split(".")[0]
    if spec is None or spec.origin is None:
        return _missing(top)
    if spec.origin in ("built-in", "frozen"):
        return _dist_state("python", ".".join(map(str, sys.version_info[:3])))
    origin = os.path.abspath(spec.origin)
    dist = owning_distribution(origin, top, hints)
    if dist is not None:
        return _dist_state(_normalized(dist.metadata["Name"] or top),
                           dist.version or "(no version)")
    return _module_state(module, top, origin, top_spec, known)


def fingerprint_loaded(module: str) -> tuple[str, FileState]:
    """The key and state of `module` as this process imported it (no search: the specs of
    the loaded modules), made the way the planner's search makes them. An installed
    distribution's state has the stats of its METADATA file, for the planner's cheap check."""
    top = module.split(".")[0]
    spec = getattr(sys.modules.get(module), "__spec__", None)
    top_spec = getattr(sys.modules.get(top), "__spec__", None)
    key, state = fingerprint(module, spec, top_spec, {})
    return key, _metadata_stats(key, state, spec)


def fingerprint_found(module: str) -> tuple[str, FileState]:
    """The key and state of `module` as this process would import it (found, not imported):
    for a module another process imported (a Dask worker), as the planner fingerprints it."""
    top = module.split(".")[0]
    spec = find_spec_without_import(module)
    top_spec = spec if module == top or spec is None else find_spec_without_import(top)
    key, state = fingerprint(module, spec, top_spec, {})
    return key, _metadata_stats(key, state, spec)


def _metadata_stats(key: str, state: FileState, spec: Any) -> FileState:
    """An installed distribution's state with the stats of its METADATA file, when found."""
    if not key.startswith(DIST) or spec is None or spec.origin in (None, "built-in", "frozen"):
        return state
    meta = _metadata_file(os.path.abspath(spec.origin), key.removeprefix(DIST))
    try:
        st = os.stat(meta) if meta is not None else None
    except OSError:
        st = None
    return state if st is None else FileState(key, st.st_size, st.st_mtime_ns, state.digest)


def _metadata_file(origin: str, dist: str) -> str | None:
    """The METADATA file of the one `.dist-info` named `dist` in the sys.path entry that holds
    `origin`, or None (no entry, none, or several of that name)."""
    entry = _path_entry(origin)
    if entry is None:
        return None
    try:
        with os.scandir(entry) as it:
            found = [e.path for e in it if e.name.endswith(".dist-info")
                     and _normalized(e.name.partition("-")[0]) == dist]
    except OSError:
        return None
    return os.path.join(found[0], "METADATA") if len(found) == 1 else None


def _same_metadata(spec: Any, dist: str, known: FileState) -> bool:
    """The module (found as `spec`) is in a folder whose `.dist-info` of `dist` has the
    METADATA file stats recorded (size and mtime; a reinstall rewrites it): its version is as
    recorded."""
    if not known.mtime_ns or spec is None or spec.origin in (None, "built-in", "frozen"):
        return False
    meta = _metadata_file(os.path.abspath(spec.origin), dist)
    if meta is None:
        return False
    try:
        st = os.stat(meta)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (known.size, known.mtime_ns)


def find_spec_without_import(module: str) -> importlib.machinery.ModuleSpec | None:
    """The spec the import system would find for `module`, found without executing any of it:
    each package's spec gives the folders its submodules are looked up in (a package whose
    `__init__` changes its own `__path__` is not followed)."""
    parts = module.split(".")
    spec = None
    path: list[str] | None = None
    for i in range(len(parts)):
        name = ".".join(parts[:i + 1])
        spec = _find_spec(name, path)
        if spec is None:
            return None
        if i < len(parts) - 1:
            if spec.submodule_search_locations is None:
                return None
            path = list(spec.submodule_search_locations)
    return spec


def _find_spec(name: str, path: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(name, path)
        except (ImportError, OSError, ValueError):  # a broken finder or folder: look on
            continue
        if spec is not None:
            return spec
    return None


def owning_distribution(origin: str, top: str, hints: tuple[str, ...] = ()
                        ) -> Distribution | None:
    """The installed (not editable) distribution whose files hold `origin`, or None.

    Looks in the sys.path entry that holds the file: first for distributions named as the
    record last named it (`hints`) or as the top-level package, then at every one there."""
    from importlib.metadata import distributions  # 15 ms: only when such a module is used

    entry = _path_entry(origin)
    if entry is None:
        return None
    for name in (*hints, top):
        for dist in distributions(name=name, path=[entry]):
            if _provides(dist, top) and _installed(dist):
                return dist
    for dist in distributions(path=[entry]):
        if _provides(dist, top) and _installed(dist):
            return dist
    return None


def _path_entry(origin: str) -> str | None:
    entries = [os.path.abspath(p or os.curdir) for p in sys.path if isinstance(p, str)]
    holding = [e for e in entries if origin.startswith(e.rstrip(os.sep) + os.sep)]
    return max(holding, key=len) if holding else None


def _installed(dist: Distribution) -> bool:
    """Installed files, not a source tree: an installer's metadata (not the `.egg-info` that
    `setup.py develop` leaves in a source tree), and not an editable install."""
    if dist.read_text("INSTALLER") is None and dist.read_text("RECORD") is None:
        return False
    text = dist.read_text("direct_url.json")
    if not text:
        return True
    try:
        info = json.loads(text)
    except ValueError:
        return False
    return not (isinstance(info, dict) and isinstance(info.get("dir_info"), dict)
                and info["dir_info"].get("editable"))


def _provides(dist: Distribution, top: str) -> bool:
    names = dist.read_text("top_level.txt")
    if names:
        return top in names.split()
    files = dist.files
    if files is None:
        return False
    return any(f.parts and f.parts[0].split(".")[0] == top for f in files)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_state(name: str, version: str) -> tuple[str, FileState]:
    key = DIST + name
    return key, FileState(key, 0, 0, version)


def _missing(top: str) -> tuple[str, FileState]:
    key = MODULE + top
    return key, FileState(key, 0, 0, MISSING)


def _module_state(module: str, top: str, origin: str, top_spec: Any,
                  known: Mapping[str, FileState]) -> tuple[str, FileState]:
    """The digest of the top-level package's files (stats first), or of the module's file."""
    folders = list(getattr(top_spec, "submodule_search_locations", None) or [])
    regular = top_spec is not None and top_spec.origin not in (None, "namespace") and folders
    if regular:
        key, files = MODULE + top, _package_files(folders[0])
        base = folders[0]
    else:
        key, files, base = MODULE + module, [origin], os.path.dirname(origin)
    stats = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:  # gone since the walk: left out, as the import would leave it
            continue
        stats.append((f, st.st_size, st.st_mtime_ns))
    size = sum(s for _, s, _ in stats)
    mtime = max((m for _, _, m in stats), default=0)
    old = known.get(key)
    if old is not None and old.digest != MISSING and (old.size, old.mtime_ns) == (size, mtime):
        return key, old
    parts = []
    for f, _, _ in stats:
        try:
            parts += [os.path.relpath(f, base).replace(os.sep, "/"), digest_file(Path(f))]
        except OSError:
            continue
    return key, FileState(key, size, mtime, digest_strings(parts))


def _package_files(folder: str) -> list[str]:
    suffixes = tuple(importlib.machinery.all_suffixes())
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        found += [os.path.join(here, f) for f in sorted(files) if f.endswith(suffixes)]
    return found
