"""``sysgate agent --learn``: learning a container's profile with real runc and crun containers.

A container runs with the agent's learning profile (every syscall notified); its profile
is written when it exits; that profile, applied by the runtime *without* the agent, runs the
same container and refuses what the container never did.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import oci
from sysgate.agent.learning import ALWAYS, UNNOTIFIABLE, learning_profile, profile_stem
from sysgate.errors import SysgateError
from sysgate.policy.parser import parse_policy
from support.agent import LEARN, SETUP, LearningAgent, allowed, printed_profile
from support.oci import RUNTIMES

RUN = os.getpid()


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("running OCI containers needs root")
    proc = LearningAgent(tmp_path_factory.mktemp("learning-agent"))
    yield proc
    assert proc.stop() == 0, proc.text()


def run_with(runtime: str, tmp_path, cid: str, script: str, seccomp: dict) -> subprocess.CompletedProcess:
    bundle = with_seccomp(oci.make_bundle(tmp_path / cid, ["sh", "-c", script], None), seccomp)
    return oci.Runtime(runtime, tmp_path / "state").run_once(bundle, cid)


def learn(runtime, agent, tmp_path, cid: str, script: str) -> tuple[dict, str]:
    """Run ``script`` in a learning container; returns its learned (OCI profile, policy text)."""
    out = run_with(runtime, tmp_path, cid, script, printed_profile(agent.socket))
    assert out.returncode == 0, out.stdout + out.stderr
    agent.wait_log(rf"container {cid}: learned \d+ syscalls \(\d+ distinct\), wrote ")
    return (json.loads((agent.learned / f"{cid}.json").read_text()),
            (agent.learned / f"{cid}.policy").read_text())


def test_learning_profile_notifies_everything_runtimes_accept():
    profile = learning_profile("/run/agent.sock")
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"     # runc refuses NOTIFY as the default
    assert profile["listenerPath"] == "/run/agent.sock"
    [rule] = profile["syscalls"]
    assert rule["action"] == "SCMP_ACT_NOTIFY"
    assert {"mkdir", "execve", "openat", "clone", "read", "close", "futex"} <= set(rule["names"])
    assert not set(UNNOTIFIABLE) & set(rule["names"])       # runc: "cannot be used for the write syscall"


def test_container_ids_that_are_not_file_names_are_refused():
    assert profile_stem("web-1.2_x+y") == "web-1.2_x+y"
    for bad in ("../etc/passwd", "a/b", ".hidden", "", "x" * 300):
        with pytest.raises(SysgateError):
            profile_stem(bad)


@pytest.mark.parametrize("args, message", [
    (["--learn", "/nonexistent-dir"], "--learn: no such directory /nonexistent-dir"),
    (["--learn", "/tmp", "--config", "/dev/null"], "--learn and --config"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "sysgate", "agent", "--socket", str(tmp_path / "s"), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_learned_profile_runs_the_container_without_the_agent(runtime, agent, tmp_path):
    cid = f"learn-{runtime}-{RUN}"
    profile, text = learn(runtime, agent, tmp_path, cid, LEARN)
    policy = parse_policy(text, "learned")
    names = allowed(profile)
    assert {"execve", "wait4", *ALWAYS} <= names and names & {"pipe", "pipe2"}, names
    assert not names & SETUP, names & SETUP          # the runtime's set-up came before the filter
    assert {r.syscall for r in policy.rules} >= names - {"clone3"}
    assert f"Container: {cid}" in text
    # applied by the runtime alone, the learned profile runs the same container (runc's init
    # needed futex/rt_sigreturn by chance: without ALWAYS, 7 runs in 60 died of SIGSEGV)...
    for attempt in range(5):
        out = run_with(runtime, tmp_path, f"{cid}-again", LEARN, profile)
        assert out.returncode == 0 and out.stdout.split() == ["hi", "1", "done"], out.stdout + out.stderr
    # ... and refuses what it never did: mkdir fails with EPERM (the kernel allows it without the profile)
    script = LEARN + "; mkdir /tmp/new; echo mkdir=$?; test -d /tmp/new || echo absent"
    out = run_with(runtime, tmp_path, f"{cid}-mkdir", script, profile)
    assert out.stdout.split() == ["hi", "1", "done", "mkdir=1", "absent"], out.stdout + out.stderr
    assert "Operation not permitted" in out.stderr
    unfiltered = run_with(runtime, tmp_path, f"{cid}-free", script, {"defaultAction": "SCMP_ACT_ALLOW"})
    assert unfiltered.stdout.split() == ["hi", "1", "done", "mkdir=0"], unfiltered.stdout + unfiltered.stderr


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_each_container_gets_exactly_its_own_profile(runtime, agent, tmp_path):
    """Two containers learning at once: the one that mkdirs, sockets and renames has those
    calls in its profile; the other's profile has none of them."""
    profile = printed_profile(agent.socket)
    rt = oci.Runtime(runtime, tmp_path / "state")
    busy, quiet = f"busy-{runtime}-{RUN}", f"quiet-{runtime}-{RUN}"
    slow = with_seccomp(oci.make_bundle(tmp_path / quiet, ["sh", "-c", "sleep 1; echo quiet"], None), profile)
    background = rt.start_detached(slow, quiet)
    try:
        busy_profile, _ = learn(runtime, agent, tmp_path, busy, "mkdir /tmp/d && busybox mv /tmp/d /tmp/e && echo ok")
        assert background.wait(30) == 0, background.stderr.read()
    finally:
        rt.delete(quiet)
    agent.wait_log(rf"container {quiet}: learned \d+ syscalls")
    quiet_profile = json.loads((agent.learned / f"{quiet}.json").read_text())
    renames = {"rename", "renameat", "renameat2"}
    assert "mkdir" in allowed(busy_profile) and renames & allowed(busy_profile), allowed(busy_profile)
    assert not ({"mkdir"} | renames) & allowed(quiet_profile), allowed(quiet_profile)
    assert "nanosleep" in allowed(quiet_profile) or "clock_nanosleep" in allowed(quiet_profile)


def with_seccomp(bundle, seccomp: dict):
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["seccomp"] = seccomp
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exec_into_a_learning_container_is_learned_too(runtime, agent, tmp_path):
    """``runc exec`` is a second listener of the same container: what it does is in the
    container's one profile, written when both are gone."""
    cid = f"exec-learn-{runtime}-{RUN}"
    script = "sleep 0.1; while ! test -d /tmp/go; do sleep 0.1; done"
    bundle = with_seccomp(oci.make_bundle(tmp_path / cid, ["sh", "-c", script], None), printed_profile(agent.socket))
    rt = oci.Runtime(runtime, tmp_path / "state")
    proc = rt.start_detached(bundle, cid)
    try:
        agent.wait_log(rf"container {cid}: creating process \d+ joined group {cid} \(connection 1")
        out = rt.exec(cid, "mkdir", "/tmp/go")
        assert out.returncode == 0, out.stderr
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        rt.delete(cid)
    agent.wait_log(rf"container {cid}: learned \d+ syscalls \(\d+ distinct\), wrote ")
    profile = json.loads((agent.learned / f"{cid}.json").read_text())
    assert "mkdir" in allowed(profile) and allowed(profile) & {"nanosleep", "clock_nanosleep"}, allowed(profile)
    assert "2 listener(s), all gone" in (agent.learned / f"{cid}.policy").read_text()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stopping_the_agent_writes_what_running_containers_did(runtime, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("running OCI containers needs root")
    agent = LearningAgent(tmp_path)
    cid = f"stopped-{runtime}-{RUN}"
    bundle = with_seccomp(oci.make_bundle(tmp_path / cid, ["sh", "-c", "mkdir /tmp/m; echo started; sleep 30"], None),
                          printed_profile(agent.socket))
    rt = oci.Runtime(runtime, tmp_path / "state")
    proc = rt.start_detached(bundle, cid)
    try:
        assert proc.stdout.readline() == "started\n"       # mkdir has been notified and allowed
        assert agent.stop() == 0, agent.text()
    finally:
        subprocess.run(rt.command("kill", cid, "KILL"), capture_output=True, timeout=30)
        proc.wait(30)
        rt.delete(cid)
    text = (agent.learned / f"{cid}.policy").read_text()
    assert "the agent stopped while the container ran" in text
    assert "mkdir" in text


def test_runc_refuses_to_notify_write(tmp_path):
    """Why the learning profile leaves ``write`` out (and learned profiles always allow it)."""
    if "runc" in oci.missing_runtimes():
        pytest.skip(oci.missing_runtimes()["runc"])
    notify_write = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(tmp_path / "agent.sock"),
                    "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}
    out = run_with("runc", tmp_path, f"notify-write-{RUN}", "echo hi", notify_write)
    assert out.returncode != 0 and "SCMP_ACT_NOTIFY cannot be used for the write syscall" in out.stderr, out.stderr


def test_a_profile_learned_on_the_host_is_too_small_for_runc_where_the_agents_is_not(agent, tmp_path):
    """The problem this solves: ``sysgate learn`` of the same command on the host misses the
    calls runc's init makes under the container's filter, so runc cannot start the container."""
    if "runc" in oci.missing_runtimes():
        pytest.skip(oci.missing_runtimes()["runc"])
    host = tmp_path / "host.json"
    learned = subprocess.run([sys.executable, "-m", "sysgate", "learn", "--no-progress", "-o", str(host), "--",
                              oci.BUSYBOX, "sh", "-c", "echo hi"], capture_output=True, text=True, timeout=60)
    assert learned.returncode == 0, learned.stderr
    out = run_with("runc", tmp_path, f"host-learned-{RUN}", "echo hi", json.loads(host.read_text()))
    assert out.returncode != 0 and "hi" not in out.stdout and "operation not permitted" in out.stderr, out.stderr
    cid = f"agent-learned-{RUN}"
    profile, _ = learn("runc", agent, tmp_path, cid, "echo hi")
    out = run_with("runc", tmp_path, f"{cid}-again", "echo hi", profile)
    assert out.returncode == 0 and out.stdout == "hi\n", out.stderr
