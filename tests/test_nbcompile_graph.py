"""The stage graph answered without networkx (graph.StageGraph) equals networkx's answers.

On random DAGs declared in a random order, with random targets: the closure of targets (each
target and all it needs, in lexicographic topological order, ties broken by declaration order),
the stages below a stage (--rerun-from), the whole order, each stage's upstreams and the edges
(`dd-build dag`) are compared with what networkx computes on the graph directly, as graph.py
computed them before the compiled workflow (the subgraph's own lexicographic topological sort).
A compiled workflow's graph, read back from its file, gives the same answers.
"""

from __future__ import annotations

import random
from pathlib import Path

import networkx as nx
import pytest

from buildtool import compiled
from buildtool.errors import UsageError, WorkflowError
from buildtool.graph import (
    StageGraph,
    check_stage_names,
    closure,
    compile_graph,
    descendants_in,
    topological_order,
)
from buildtool.model import InputRef, Stage, Workflow


def _random_workflow(rng: random.Random) -> Workflow:
    """A DAG of 1-30 stages: edges only from earlier to later stages of a hidden order, then
    declared in a random order (a declaration order that is not topological is the hard case
    for ties), with seeds and inputs (a stage given as both counts once)."""
    n = rng.randint(1, 30)
    hidden = [f"st{i:02d}" for i in range(n)]
    density = rng.choice((0.05, 0.15, 0.4))
    stages: dict[str, Stage] = {}
    declared = hidden[:]
    rng.shuffle(declared)
    for name in declared:
        index = hidden.index(name)
        ups = [u for u in hidden[:index] if rng.random() < density]
        rng.shuffle(ups)
        seed = InputRef("stage", ups[0], ups[0]) if ups and rng.random() < 0.4 else None
        inputs = tuple(InputRef("stage", u, u) for u in ups)
        if rng.random() < 0.3:
            inputs += (InputRef("file", "data/x.csv", "data/x.csv"),)
        stages[name] = Stage(name=name, kind="generate", target="code/g.py:f", seed=seed,
                             inputs=inputs, num_records=1)
    return Workflow("wf", Path("/p/Workflowfile"), Path("/p"), "artifacts", stages)


def _networkx(workflow: Workflow) -> nx.DiGraph:
    """The graph as graph.py built it before: nodes in declaration order, an `order` each."""
    graph: nx.DiGraph = nx.DiGraph()
    for index, stage in enumerate(workflow.stages.values()):
        graph.add_node(stage.name, order=index)
    for stage in workflow.stages.values():
        for upstream in stage.upstream_stages:
            graph.add_edge(upstream, stage.name)
    return graph


def _nx_order(graph: nx.DiGraph, nodes: set[str] | None = None) -> list[str]:
    sub = graph if nodes is None else graph.subgraph(nodes)
    return list(nx.lexicographical_topological_sort(sub, key=lambda n: graph.nodes[n]["order"]))


def _nx_closure(graph: nx.DiGraph, targets: list[str]) -> list[str]:
    if not targets:
        return _nx_order(graph)
    needed = set(targets)
    for target in targets:
        needed |= nx.ancestors(graph, target)
    return _nx_order(graph, needed)


def _read_back(workflow: Workflow, graph: StageGraph) -> StageGraph:
    """The graph as a compiled workflow's file gives it back."""
    payload = compiled.marshal.dumps(compiled._encoded(workflow, graph))
    copy = compiled._decoded(payload)
    assert copy is not None
    return copy.graph


@pytest.mark.parametrize("seed", range(300))
def test_graph_answers_equal_networkx(seed: int) -> None:
    rng = random.Random(seed)
    workflow = _random_workflow(rng)
    reference = _networkx(workflow)
    built = compile_graph(workflow)
    for graph in (built, _read_back(workflow, built)):
        assert topological_order(graph) == _nx_order(reference)
        assert list(graph.nodes) == list(reference.nodes)
        assert list(graph.edges) == list(reference.edges)
        for name in workflow.stages:
            assert list(graph.predecessors(name)) == list(reference.predecessors(name))
            assert graph.successors(name) == list(reference.successors(name))
        names = list(workflow.stages)
        for _ in range(10):
            targets = rng.sample(names, rng.randint(0, min(4, len(names))))
            order = closure(graph, targets)
            assert order == _nx_closure(reference, targets), targets
            for stage in rng.sample(order, min(3, len(order))):
                within = set(order)
                assert descendants_in(graph, stage, order) == \
                    ({stage} | nx.descendants(reference, stage)) & within


def test_unknown_names_are_refused_with_the_same_hint() -> None:
    workflow = _random_workflow(random.Random(7))
    graph = compile_graph(workflow)
    name = next(iter(workflow.stages))
    with pytest.raises(UsageError) as raised:
        check_stage_names(graph, [name + "x"], "target")
    assert f"did you mean `{name}`" in (raised.value.hint or "")
    with pytest.raises(UsageError) as raised:
        closure(graph, ["statu"])
    assert "dd-build status" in (raised.value.hint or "")


def test_a_cycle_is_reported_at_the_first_declared_stage_of_it() -> None:
    stages = {
        "a": Stage(name="a", kind="generate", target="g.py:f", num_records=1,
                   inputs=(InputRef("stage", "c", "c"),)),
        "b": Stage(name="b", kind="generate", target="g.py:f", num_records=1,
                   inputs=(InputRef("stage", "a", "a"),)),
        "c": Stage(name="c", kind="generate", target="g.py:f", num_records=1,
                   inputs=(InputRef("stage", "b", "b"),)),
    }
    workflow = Workflow("wf", Path("/p/Workflowfile"), Path("/p"), "artifacts", stages)
    with pytest.raises(WorkflowError) as raised:
        workflow.graph  # noqa: B018 - computed on first use
    assert raised.value.stage == "a"
    assert "a → b → c → a" in raised.value.message
