"""Which dd-build this process runs: its version and a digest of its package's sources.

A Dask worker runs dd-build's own code from its own install (the batch's context, its rng
seeding, its retries, the table's encoding), and the stage's code from the client's bytes
(codebundle.py). Where the two dd-builds differ (another version, an edited file), a batch
computed there could differ from one computed here while every fingerprint says up to date;
so the client sends its identity with each stage's payload and a worker whose identity differs
fails the stage (daskwork.py).

The digest covers every `*.py` file under the package's folder (its path relative to the
folder, and its bytes), as the files are when first asked for: once per process (~5 ms for
dd-build's ~1 MB of sources). The folder is only said, not compared: the same dd-build may be
installed at different paths on different machines.
"""

from __future__ import annotations

import functools
import hashlib
import os

# (version, digest of the package's sources, the package's folder): plain strings, so that a
# worker of any dd-build can read a client's (no class of this version is needed to unpickle).
Identity = tuple[str, str, str]


@functools.cache
def identity() -> Identity:
    """This process's dd-build (computed once)."""
    from . import __version__

    folder = os.path.dirname(os.path.abspath(__file__))
    return __version__, sources_digest(folder), folder


def sources_digest(folder: str) -> str:
    """sha256 of every `*.py` file under `folder` (relative posix path and bytes), in path
    order; a file that cannot be read counts as one whose bytes differ."""
    found: list[tuple[str, str]] = []
    for here, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(here, name)
                found.append((os.path.relpath(path, folder).replace(os.sep, "/"), path))
    digest = hashlib.sha256()
    for rel, path in sorted(found):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:  # unreadable: said in the digest, so it matches no other
            data = f"\0unreadable: {type(exc).__name__}".encode()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
