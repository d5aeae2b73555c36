"""Helpers shared by the tests and benchmarks (no tests here; a test file imports helpers from
here, never from another test file): C programs compiled once (:mod:`.cprog`), the CLI in a
subprocess (:mod:`.cli`), the handler, compiler, supervisor, agent and runtime test scaffolding,
hand-written filters (:mod:`.filters`), OCI bundles and profile documents (:mod:`.profiles`),
the replay tests' handlers (:mod:`.guards`), the kernel as a BPF oracle (:mod:`.bpfkernel`),
BPF program strategies, and libseccomp as a comparison baseline."""
import importlib
import os
import sys

#: the tests directory (the C sources of the test targets are there)
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_tool(name: str):
    """The module ``tools/NAME.py`` of the repository (the generators are scripts, not a package)."""
    sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
