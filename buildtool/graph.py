"""The stage graph (networkx): edges run from a stage to the stages that consume it."""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from .errors import UsageError, closest, suggest
from .model import TOOL_WORDS, Workflow


def build_graph(workflow: Workflow) -> nx.DiGraph:
    graph: nx.DiGraph[str] = nx.DiGraph()
    for index, stage in enumerate(workflow.stages.values()):
        graph.add_node(stage.name, order=index)
    for stage in workflow.stages.values():
        for upstream in stage.upstream_stages:
            graph.add_edge(upstream, stage.name)
    _reject_cycles(workflow, graph)
    return graph


def _reject_cycles(workflow: Workflow, graph: nx.DiGraph) -> None:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    names = [edge[0] for edge in cycle]
    first = min(names, key=lambda n: graph.nodes[n]["order"])
    start = names.index(first)
    names = names[start:] + names[:start]
    raise workflow.stages[first].error(
        "the stages form a cycle: " + " → ".join([*names, first]),
        hint="remove one of these dependencies (seed or inputs)",
    )


def topological_order(graph: nx.DiGraph, nodes: Iterable[str] | None = None) -> list[str]:
    """Topological order, ties broken by declaration order (stable across runs)."""
    sub = graph if nodes is None else graph.subgraph(nodes)
    return list(nx.lexicographical_topological_sort(sub, key=lambda n: graph.nodes[n]["order"]))


def check_stage_names(graph: nx.DiGraph, names: Iterable[str], what: str) -> None:
    for name in names:
        if name not in graph:
            command = closest(name, TOOL_WORDS)
            hint = suggest(name, graph.nodes) or \
                (f"did you mean the command `dd-build {command}`?" if command else
                 "run `dd-build dag` to list stages")
            raise UsageError(f"{what} names no stage '{name}'", hint=hint)


def closure(graph: nx.DiGraph, targets: Iterable[str]) -> list[str]:
    """The targets and everything they need, in topological order; all stages without targets."""
    targets = list(targets)
    if not targets:
        return topological_order(graph)
    check_stage_names(graph, targets, "target")
    needed: set[str] = set(targets)
    for target in targets:
        needed |= nx.ancestors(graph, target)
    return topological_order(graph, needed)


def descendants_in(graph: nx.DiGraph, stage: str, within: Iterable[str]) -> set[str]:
    """`stage` and every stage below it that is also in `within`."""
    return ({stage} | nx.descendants(graph, stage)) & set(within)
