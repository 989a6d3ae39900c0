"""Project modules a stage's code imports, discovered while the stage runs (a Ninja depfile).

The loader reports every project module file it executes while a stage loads and calls its
code (and its on_success callback); the tracker keeps the ones the record does not already
list as declared code, each with the project file that imported it. The next build checks them
as it checks the declared code files.

Which files are kept:
- every project module executed while the stage's own code loads and runs, except the declared
  code files (the callables' files and `code:` globs), which the record lists already;
- but a declared file that only the on_success callback names (a "callback-only" file, whose
  change reruns only the boundary steps) is kept when the stage's own code imported it: then
  its change touches the batches too, and the discovered entry makes the stage run fresh;
- modules first executed while the on_success callback loads or runs are kept like the others:
  a change to one reruns the whole stage, not just the callback (always safe; see README).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .fingerprint import FileState
from .records import Discovered


class CodeTracker:
    """What one stage's run has executed so far; fed by the loader, read by the StageRun."""

    def __init__(self, declared: Iterable[str], callback_only: frozenset[str],
                 kept: Mapping[str, Discovered] | None = None) -> None:
        self._declared = frozenset(declared)
        self._callback_only = callback_only
        self._in_callback = False
        self._closed = False
        # A resume keeps what the last run saw: a kept batch may have been the one that ran a
        # lazy import, and this run may not call the code at all.
        self._seen: dict[str, Discovered] = {
            rel: dep for rel, dep in (kept or {}).items() if self._wanted(rel)}

    def enter_callback(self) -> None:
        """From now on the on_success callback loads and runs."""
        self._in_callback = True

    def executed(self, rel: str, state: FileState, by: str | None) -> None:
        """The loader executed project file `rel` (content `state`), imported from `by`."""
        if not self._closed and rel not in self._seen and self._wanted(rel):
            self._seen[rel] = Discovered(state, by)

    def _wanted(self, rel: str) -> bool:
        if rel not in self._declared:
            return True
        return rel in self._callback_only and not self._in_callback

    def discovered(self) -> dict[str, Discovered]:
        return dict(sorted(self._seen.items()))

    def close(self) -> dict[str, Discovered]:
        """The final list: the stage's attempt is over, later imports are not its own."""
        self._closed = True
        return self.discovered()
