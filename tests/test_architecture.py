"""The house rules that import-linter's contracts (pyproject.toml) do not state: no import cycle anywhere."""

from __future__ import annotations

import grimp

PACKAGES = ("api", "jobs", "worker", "db")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph` (module -> modules it imports): each group of modules that reach each
    other, Tarjan's algorithm, iterative so a deep chain cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def test_the_finder_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}

    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_no_module_of_ours_imports_itself_back_lazy_imports_included() -> None:
    # grimp reads every import statement, including those inside functions that run only later.
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    imports = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}

    assert strongly_connected(imports) == []
