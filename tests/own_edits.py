"""Edits of dd-build's own package, for the null-build stamp's generators (test_nbfast_fuzz):
always of a COPY of the package (`copy_package`), never of the real one.

`edit(package, kind, rng)` makes one edit of `kind` (KINDS) in the copy `package` and says
what it did (None: nothing to act on). `hooked_cli(...)`: the argv of the CLI of the copy with
one such edit made while it runs (right before the stamp is stored), for a mid-command edit.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

# Each way dd-build's own files change: content, stats only (same size and mtime, in place
# or by a new inode), a module added (unused), one shadowing a module (a package `explain/`
# is found before `explain.py`, whose stats stay), an added module removed.
KINDS = ("edited", "touched_back", "replaced_same_stats", "added", "shadowed", "removed")
_MARK = "DD_OWN_COPY"  # the environment variable naming the copy's folder (a guard)

HOOK = '''\
import os, random, runpy, sys
sys.path.insert(0, sys.argv[1])
import own_edits
from buildtool import nullstamp

kind, seed = sys.argv[2], sys.argv[3]

seen = nullstamp.Recorder.seen


def edited_seen(self, prep, report):
    import buildtool

    package = os.path.dirname(os.path.abspath(buildtool.__file__))
    own_edits.edit(package, kind, random.Random(seed))
    seen(self, prep, report)


nullstamp.Recorder.seen = edited_seen
sys.argv = ["buildtool", *sys.argv[4:]]
runpy.run_module("buildtool", run_name="__main__", alter_sys=True)
'''


def copy_package(repo: Path, folder: Path) -> Path:
    """A copy of dd-build's package in `folder` (`folder/buildtool`), with its bytecode (so
    that each CLI of it starts as fast as an installed dd-build's)."""
    import compileall

    package = folder / "buildtool"
    shutil.copytree(repo / "buildtool", package, ignore=shutil.ignore_patterns("__pycache__"))
    assert compileall.compile_dir(package, quiet=1)
    return package


def environment(package: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with the copy first on PYTHONPATH (and named, for edit's guard)."""
    folder = str(package.parent)
    return {**env, "PYTHONPATH": folder + os.pathsep + env.get("PYTHONPATH", ""), _MARK: folder}


def hooked_cli(python: str, package: Path, kind: str, seed: str, *args: str) -> list[str]:
    hook = package.parent / "own_edit_hook.py"
    if not hook.exists():
        hook.write_text(HOOK)
    return [python, str(hook), str(Path(__file__).parent), kind, seed, *args]


def _modules(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def edit(package: str | Path, kind: str, rng: random.Random) -> str | None:
    package = Path(package).resolve()
    assert package.name == "buildtool" and \
        str(package.parent) == os.path.realpath(os.environ[_MARK]), f"not a copy: {package}"
    modules = _modules(package)
    path = rng.choice(modules)
    rel = path.relative_to(package.parent)
    if kind == "edited":  # a comment: the output stays, the stats do not
        with open(path, "a") as fh:
            fh.write(f"# edited {rng.random()}\n")
        return f"append a comment to {rel}"
    if kind == "touched_back":
        st = path.stat()
        path.write_bytes(path.read_bytes())
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return f"rewrite {rel} in place (same bytes and mtime)"
    if kind == "replaced_same_stats":
        st = path.stat()
        copy = path.with_name(path.name + ".copy")
        shutil.copyfile(path, copy)
        os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(copy, path)
        return f"replace {rel} by a copy (same size and mtime)"
    if kind == "added":
        folder = rng.choice(sorted({p.parent for p in modules}))
        added = folder / f"added_{rng.randrange(10**6)}.py"
        added.write_text("ADDED = 1\n")
        return f"add {added.relative_to(package.parent)}"
    if kind == "removed":
        found = sorted(package.rglob("added_*.py"))
        if not found:
            return None
        gone = rng.choice(found)
        gone.unlink()
        return f"remove {gone.relative_to(package.parent)}"
    assert kind == "shadowed", kind
    shadow = package / "explain"
    if shadow.exists():
        return None
    text = (package / "explain.py").read_text().replace("from .", "from ..")
    shadow.mkdir()
    (shadow / "__init__.py").write_text(text + "# a package shadowing explain.py\n")
    return "add buildtool/explain/__init__.py (a package found before explain.py)"
