"""The import graph of src/sysgate: no cycles; arch/ (facts about architectures) is the bottom
layer, kernel/ (the kernel's interfaces) sits on it.

Every import counts, also those inside functions (a lazy import hides a cycle, it does not
break it). Read with ast: nothing is imported.
"""
from __future__ import annotations

import ast
import os

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
PACKAGE = "sysgate"


def modules() -> dict[str, str]:
    """Dotted module name -> file, for every .py file of the package."""
    found = {}
    root = os.path.join(SRC, PACKAGE)
    for directory, _, files in os.walk(root):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(directory, file)
                parts = os.path.relpath(path, SRC)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def imports(name: str, path: str, known: dict[str, str]) -> set[str]:
    """The package modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    result = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith(PACKAGE):
                result.add(target)
    return result


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def subpackage(module: str) -> str:
    """``sysgate.kernel.notify`` -> ``sysgate.kernel``; top-level modules stand for themselves."""
    parts = module.split(".")
    return ".".join(parts[:2])


#: Package-level cycles allowed (none): the one there was (policy.loader applied a policy's
#: ``sandbox:`` setting through sandbox.base, whose base routes what the handlers answer, while
#: sandbox and handlers read the policy model) is gone since the loader is ``sysgate.policy_loader``,
#: above both. Any cycle fails, and so does this list once it no longer matches.
KNOWN_PACKAGE_CYCLES: list[list[str]] = []


def test_no_module_cycles():
    assert cycles(graph()) == []


def test_no_cycles_between_subpackages_but_the_known_one():
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        source = subpackage(module)
        edges.setdefault(source, set()).update(subpackage(t) for t in targets if subpackage(t) != source)
    assert cycles(edges) == KNOWN_PACKAGE_CYCLES


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def imports_outside(package: str, allowed: set[str]) -> dict[str, list[str]]:
    wrong = {module: sorted(t for t in targets if subpackage(t) not in allowed)
             for module, targets in graph().items() if subpackage(module) == package}
    return {m: t for m, t in wrong.items() if t}


def test_arch_imports_nothing_above_it():
    assert imports_outside("sysgate.arch", {"sysgate.arch", "sysgate.errors", "sysgate.records"}) == {}


def test_kernel_imports_nothing_above_it():
    assert imports_outside("sysgate.kernel", {"sysgate.kernel", "sysgate.arch", "sysgate.errors",
                                              "sysgate.records"}) == {}


#: The layers the README's "Where things live" names, bottom first; a package imports only
#: packages of its own or earlier layers. The package root (``sysgate``: the lazy API and
#: ``__version__``) sits with the command line; ``policy_loader`` (a policy file in any format,
#: with its ``sandbox:`` base applied) sits above ``sandbox``.
LAYERS = [["errors", "files", "records"], ["arch"], ["kernel"], ["bpf"], ["policy"], ["compiler"],
          ["supervisor"], ["handlers"], ["testing"], ["process"], ["attach", "learn"], ["sandbox"],
          ["policy_loader"], ["agent", "runtime"], ["cli", "sysgate", "__main__"]]


def test_packages_import_only_lower_layers():
    rank = {f"sysgate.{name}" if name != "sysgate" else name: i
            for i, layer in enumerate(LAYERS) for name in layer}
    upward = set()
    for module, targets in graph().items():
        source = subpackage(module)
        for target in map(subpackage, targets):
            if rank[target] > rank[source]:
                upward.add((source, target))
    assert sorted(rank) == sorted({subpackage(m) for m in graph()})
    assert upward == set()
