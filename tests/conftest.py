"""Fixtures shared across test modules: root, the compiled C targets, a ``sysgate agent`` process."""
import os
import subprocess
import sys

import pytest

from support import TESTS

# `sysgate run` keeps compiled filters in $XDG_CACHE_HOME/sysgate (sysgate.process.filtercache): the
# tests' runs (and the sysgate processes they start) use a cache of their own, not the user's.
def _private_cache_home() -> None:
    import atexit
    import shutil
    import tempfile

    os.environ["XDG_CACHE_HOME"] = home = tempfile.mkdtemp(prefix="sysgate-test-cache-")
    atexit.register(shutil.rmtree, home, True)


_private_cache_home()

if os.geteuid() != 0:
    # Most tests install real filters in forked children, which only needs no_new_privs;
    # a few (namespaces, containers) need root and mark themselves.
    pass


def pytest_report_header(config):
    return f"kernel {os.uname().release}, uid {os.geteuid()}, python {sys.version.split()[0]}"


@pytest.fixture
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture(params=["off", "on"], ids=["landlock-off", "landlock-on"])
def landlock(request):
    """Run the test twice: support.handlers.run() launches without, then with, the Landlock wall that
    ``sysgate run --landlock=on`` derives from the handlers' rules. The mode is the fixture's value."""
    from support import handlers

    handlers.LANDLOCK["mode"] = request.param
    try:
        yield request.param
    finally:
        handlers.LANDLOCK["mode"] = "off"


def _gcc(source: str, out) -> str:
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(out), os.path.join(TESTS, source)], check=True)
    return str(out)


@pytest.fixture(scope="session")
def target_c(tmp_path_factory) -> str:
    """The handler tests' C target (``handlers_target.c``: one syscall per command-line verb)."""
    return _gcc("handlers_target.c", tmp_path_factory.mktemp("handlers") / "handlers_target")


@pytest.fixture(scope="session")
def target_bin(tmp_path_factory) -> str:
    """The supervisor tests' C target (``supervisor_target.c``)."""
    return _gcc("supervisor_target.c", tmp_path_factory.mktemp("supervisor") / "target")


@pytest.fixture(scope="module")
def agent(request, tmp_path_factory):
    """``sysgate agent`` for the whole module, configured by the module's ``AGENT_CONFIG`` (if any).
    Root only: the listener hand-over and the containers it serves need it."""
    from support.agent import AgentProcess

    if os.geteuid() != 0:
        pytest.skip("the agent's listener hand-over and the containers it serves need root")
    proc = AgentProcess(tmp_path_factory.mktemp("agent"), getattr(request.module, "AGENT_CONFIG", None))
    yield proc
    assert proc.stop() == 0, proc.text()
