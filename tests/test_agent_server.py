"""The agent in-process, fed by a runtime-like client with real listeners of launched processes
(runs without runc/crun; tests/test_agent_oci.py covers the real runtimes)."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from sysgate.process import launch
from sysgate.agent.config import AgentConfig
from sysgate.agent.server import Agent
from support.agent import hand_over, spawn_mkdir
from support.filters import notify_mkdir


@pytest.fixture
def agent(tmp_path):
    config = AgentConfig.parse(json.dumps({"default": {"handlers": ["mkdir-deny:EROFS"]}}))
    ag = Agent(str(tmp_path / "agent.sock"), config, connection_timeout=1.0)
    ag.listen()
    thread = threading.Thread(target=ag.run, daemon=True)
    thread.start()
    yield ag
    ag.stop()
    thread.join(10)
    ag.close()


def wait_for(predicate, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def test_config_default_and_metadata_verdicts(agent, tmp_path):
    first, out1 = spawn_mkdir(tmp_path, "a")
    second, out2 = spawn_mkdir(tmp_path, "b")
    with first, second:
        hand_over(agent.socket_path, first, "c1", "creating")                 # config: EROFS
        hand_over(agent.socket_path, second, "c2", "creating", "handlers=mkdir-emulate")
        assert first.wait(10) == 0 and second.wait(10) == 0
    out1.seek(0)
    out2.seek(0)
    assert "Read-only file system" in out1.read() and not (tmp_path / "a").exists()
    assert out2.read().strip() == "rc=0" and (tmp_path / "b").is_dir()   # made by the agent
    wait_for(lambda: not agent.containers)                                # released on POLLHUP


def test_second_process_joins_the_group_and_release_waits_for_both(agent, tmp_path):
    hold_r, hold_w = os.pipe()
    out1 = open(tmp_path / "init.out", "w+")
    init = launch.spawn(["sh", "-c", f"sleep 0.1; mkdir {tmp_path / 'i'}; echo rc=$?; read x || true"], notify_mkdir(),
                        stdin=hold_r, stdout=out1, stderr=out1)
    os.close(hold_r)
    with init:
        hand_over(agent.socket_path, init, "grp", "creating", "handlers=mkdir-deny:ENOTDIR")
        wait_for(lambda: "grp" in agent.containers)
        execd, out2 = spawn_mkdir(tmp_path, "e", delay=0.1)
        with execd:
            hand_over(agent.socket_path, execd, "grp", "running", "handlers=mkdir-emulate")
            assert execd.wait(10) == 0
        # the group's handlers (from the first process) serve the second one too
        out2.seek(0)
        assert "Not a directory" in out2.read() and not (tmp_path / "e").exists()
        container = agent.containers["grp"]
        assert container.connections == 2
        wait_for(lambda: len(container.listeners) == 1)         # the exec'd process is gone
        assert [s.status for s in container.listeners.values()] == ["creating"]
        assert "grp" in agent.containers
        os.close(hold_w)
        assert init.wait(10) == 0
    wait_for(lambda: "grp" not in agent.containers)
    out1.seek(0)
    assert "Not a directory" in out1.read()


def test_mkdir_emulate_checks_the_callers_permission(agent, tmp_path):
    """The agent makes the directory, but only where the caller may write; it is the caller's."""
    import shutil
    import tempfile
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    base = tempfile.mkdtemp(prefix="sysgate-agent-")
    try:
        os.chmod(base, 0o755)
        open_dir = os.path.join(base, "open")
        os.mkdir(open_dir)
        os.chmod(open_dir, 0o777)
        out = open(tmp_path / "nobody.out", "w+")
        script = f"sleep 0.2; mkdir {base}/denied; echo rc=$?; mkdir {open_dir}/mine; echo rc=$?"
        target = launch.spawn(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                               "sh", "-c", script], notify_mkdir(), stdout=out, stderr=out)
        with target:
            hand_over(agent.socket_path, target, "nobody", "creating", "handlers=mkdir-emulate")
            assert target.wait(10) == 0
        out.seek(0)
        text = out.read()
        assert text.count("rc=") == 2 and "Permission denied" in text and text.endswith("rc=0\n"), text
        assert not os.path.exists(f"{base}/denied")
        st = os.stat(f"{open_dir}/mine")
        assert (st.st_uid, st.st_gid) == (65534, 65534)
    finally:
        shutil.rmtree(base)
