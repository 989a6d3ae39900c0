"""Modules a stage's code imports, discovered while it runs (a Ninja depfile).

A dd-build process executes each project module once (see kinds/sourceload.py), so what a
stage imports cannot be seen by watching modules execute. Instead every import statement that
runs in project code is recorded as an edge — importer file → imported module — in one
process-wide ImportGraph, whether the module executes then or comes from the module cache.
The edges a module's top-level imports make are recorded when it first executes, and stay.

A stage's discovered set is what the graph reaches from its roots (the files of its callables,
and the packages a `package.module:fn` loads with them). That is an over-approximation: the
graph also holds edges made by another stage's call of the same code (a lazy import in a
function this stage never called). It is never stale; at worst a stage reruns for a module it
did not use this time.

Which nodes a stage keeps (roots and declared code files are listed in the record already):
- every node reached from the stage's own roots or its on_success callback's, except declared
  code files (the callables' files, `code:` globs, declared `dist:`/`module:` keys);
- but a declared file only the callback names (a "callback-only" file, whose change reruns
  only the boundary steps) is kept when the stage's own code reaches it: then its change
  touches the batches too, and the discovered entry makes the stage run fresh;
- what only the callback reaches is kept like the rest: a change to it reruns the whole stage
  (always safe; see README).
Nodes are project-relative paths, or `ext:<module>` for a module outside the project, whose
entry carries its fingerprint key (`dist:<name>` or `module:<name>`, as external.py makes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping

from .fingerprint import FileState
from .records import Discovered

EXT = "ext:"  # graph nodes of modules outside the project


class ImportGraph:
    """Import edges and the state each node had when it was first used. Grows only."""

    def __init__(self) -> None:
        self.edges: dict[str, dict[str, None]] = {}  # importer -> imported, in first-seen order
        self.states: dict[str, tuple[str, FileState, str | None]] = {}  # node -> key, state, module
        self.version = 0

    def clear(self) -> None:
        """Forget every edge and state: the modules they describe will execute again."""
        self.edges.clear()
        self.states.clear()
        self.version += 1

    def add_edge(self, importer: str, imported: str) -> None:
        targets = self.edges.setdefault(importer, {})
        if imported not in targets and imported != importer:
            targets[imported] = None
            self.version += 1

    def set_state(self, node: str, key: str, state: FileState, module: str | None = None
                  ) -> None:
        """The first state counts: it is what executed (a later one would hide that)."""
        if node not in self.states:
            self.states[node] = (key, state, module)
            self.version += 1

    def closure(self, roots: Iterable[str]) -> dict[str, str | None]:
        """Every node reachable from `roots` -> the node it was first reached from (None for a
        root), breadth first: the importer named is one on a shortest import path."""
        found: dict[str, str | None] = {r: None for r in roots}
        queue = deque(found)
        while queue:
            node = queue.popleft()
            for target in tuple(self.edges.get(node, ())):  # batch threads, stages at once
                if target not in found:
                    found[target] = node
                    queue.append(target)
        return found


GRAPH = ImportGraph()  # the process's graph: every stage of one build adds to it


class CodeTracker:
    """One stage's attempt: its roots, read against the graph. Fed by the loader."""

    def __init__(self, declared: Iterable[str], callback_only: frozenset[str],
                 kept: Mapping[str, Discovered] | None = None, graph: ImportGraph = GRAPH,
                 on_close: Callable[[], None] | None = None) -> None:
        self._declared = frozenset(declared)
        self._callback_only = callback_only
        self._graph = graph
        self._on_close = on_close
        self._roots: dict[str, None] = {}
        self._callback_roots: dict[str, None] = {}
        self._in_callback = False
        self._final: dict[str, Discovered] | None = None
        self._cached: tuple[tuple[int, int, int], dict[str, Discovered]] | None = None
        # A resume keeps what the last run saw: a kept batch may have been the one that ran a
        # lazy import, and this run may not call the code at all.
        self._kept = {key: dep for key, dep in (kept or {}).items()
                      if key not in self._declared or key in self._callback_only}

    def enter_callback(self) -> None:
        """From now on the on_success callback loads and runs."""
        self._in_callback = True

    def add_roots(self, nodes: Iterable[str]) -> None:
        """Files the stage's code (or, after enter_callback, its callback) loads itself."""
        (self._callback_roots if self._in_callback else self._roots).update(
            dict.fromkeys(nodes))

    def discovered(self) -> dict[str, Discovered]:
        if self._final is not None:
            return dict(self._final)
        stamp = (self._graph.version, len(self._roots), len(self._callback_roots))
        if self._cached is None or self._cached[0] != stamp:
            self._cached = (stamp, self._compute())
        return dict(self._cached[1])

    def _compute(self) -> dict[str, Discovered]:
        seen = dict(self._kept)
        own = self._graph.closure(self._roots)
        for closure, is_own in ((own, True), (self._graph.closure(self._callback_roots), False)):
            for node, by in closure.items():
                entry = self._graph.states.get(node)
                if entry is None:  # no file: a namespace package, or not fingerprinted
                    continue
                key, state, module = entry
                if key in self._declared and not (is_own and key in self._callback_only):
                    continue
                if not is_own and node in own:
                    continue  # the stage's own code reached it: decided above
                seen[key] = Discovered(state, by, module)
        return dict(sorted(seen.items()))

    def close(self) -> dict[str, Discovered]:
        """The final list: the stage's attempt is over, later imports are not its own."""
        if self._final is None:
            self._final = self.discovered()
            if self._on_close is not None:
                self._on_close()
        return dict(self._final)
