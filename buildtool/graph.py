"""The stage graph: edges run from a stage to the stages that consume it.

networkx checks for cycles and sorts the stages once, when a workflow is compiled
(`compile_graph`); the answers a build needs after that — a target's closure, what is below
a stage, the order — are read from the `StageGraph` it leaves, with no networkx: an
unchanged Workflowfile (compiled.py) imports neither YAML nor networkx.

The order is the lexicographic topological order, ties broken by declaration order. The
closure of targets is closed upwards (it holds every stage a member needs), and such a set's
own lexicographic topological order is its members' order in the whole graph's: Kahn's
algorithm on the whole graph, at the step that takes a member, has among the members the
same stages ready as it has on the set alone, and takes the first of them. So a closure is
the whole order, filtered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import UsageError, closest, suggest
from .model import TOOL_WORDS

if TYPE_CHECKING:
    import networkx as nx

    from .model import Workflow


class StageGraph:
    """Each stage's upstream stages, and the topological order of all stages."""

    __slots__ = ("_downstream", "_position", "names", "order", "upstreams")

    def __init__(self, names: tuple[str, ...], order: tuple[str, ...],
                 upstreams: dict[str, tuple[str, ...]]) -> None:
        self.names = names  # declaration order
        self.order = order
        self.upstreams = upstreams  # each stage's, as `Stage.upstream_stages` lists them
        self._downstream: dict[str, list[str]] | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.upstreams

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.names

    def predecessors(self, name: str) -> tuple[str, ...]:
        return self.upstreams[name]

    def successors(self, name: str) -> list[str]:
        """The stages that consume `name`, in declaration order."""
        if self._downstream is None:
            self._downstream = {n: [] for n in self.names}
            for consumer in self.names:
                for upstream in self.upstreams[consumer]:
                    self._downstream[upstream].append(consumer)
        return self._downstream[name]

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(upstream, consumer) pairs: by upstream, then consumer, in declaration order."""
        return [(name, consumer) for name in self.names for consumer in self.successors(name)]


def build_graph(workflow: Workflow) -> StageGraph:
    """The workflow's graph (computed once per Workflow; a compiled one carries it)."""
    return workflow.graph


def compile_graph(workflow: Workflow) -> StageGraph:
    """Check for cycles and sort the stages, with networkx."""
    import networkx as nx  # only here: an unchanged workflow's graph comes compiled

    graph: nx.DiGraph[str] = nx.DiGraph()
    position = {name: index for index, name in enumerate(workflow.stages)}
    graph.add_nodes_from(workflow.stages)
    upstreams = {name: stage.upstream_stages for name, stage in workflow.stages.items()}
    for name, ups in upstreams.items():
        for upstream in ups:
            graph.add_edge(upstream, name)
    _reject_cycles(workflow, graph, position)
    order = tuple(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    return StageGraph(tuple(workflow.stages), order, upstreams)


def _reject_cycles(workflow: Workflow, graph: nx.DiGraph[str], position: dict[str, int]
                   ) -> None:
    import networkx as nx

    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    names = [edge[0] for edge in cycle]
    first = min(names, key=position.__getitem__)
    start = names.index(first)
    names = names[start:] + names[:start]
    raise workflow.stages[first].error(
        "the stages form a cycle: " + " → ".join([*names, first]),
        hint="remove one of these dependencies (seed or inputs)",
    )


def topological_order(graph: StageGraph) -> list[str]:
    """Every stage in topological order, ties broken by declaration order (stable across runs)."""
    return list(graph.order)


_COMMAND_CUTOFF = 0.75  # "stauts" and "biuld" match a command; "nosuch" does not match "touch"


def check_stage_names(graph: StageGraph, names: Iterable[str], what: str) -> None:
    for name in names:
        if name not in graph:
            # Only a build target can be a misspelt command (`dd-build stauts`); a stage
            # named after `show` or `touch` is a stage, and a loose match misleads there.
            command = closest(name, TOOL_WORDS, _COMMAND_CUTOFF) if what == "target" else None
            hint = suggest(name, graph.nodes) or \
                (f"did you mean the command `dd-build {command}`?" if command else
                 "run `dd-build dag` to list stages")
            raise UsageError(f"{what} names no stage '{name}'", hint=hint)


def closure(graph: StageGraph, targets: Iterable[str]) -> list[str]:
    """The targets and everything they need, in topological order; all stages without targets."""
    targets = list(targets)
    if not targets:
        return topological_order(graph)
    check_stage_names(graph, targets, "target")
    needed: set[str] = set()
    stack = list(targets)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(graph.upstreams[name])
    return [name for name in graph.order if name in needed]


def descendants_in(graph: StageGraph, stage: str, within: Iterable[str]) -> set[str]:
    """`stage` and every stage below it that is also in `within`."""
    below: set[str] = set()
    stack = [stage]
    while stack:
        name = stack.pop()
        if name not in below:
            below.add(name)
            stack.extend(graph.successors(name))
    return below & set(within)
