"""Helpers shared by the tests and benchmarks (no tests here): C programs compiled once (:mod:`.cprog`),
the handler, compiler, supervisor and runtime test scaffolding, OCI bundles, the kernel as a BPF
oracle (:mod:`.bpfkernel`), BPF program strategies, and libseccomp as a comparison baseline."""
import os

#: the tests directory (the C sources of the test targets are there)
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
