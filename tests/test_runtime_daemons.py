"""``sysgate-runc`` under real Docker (dockerd 20.10) and containerd (``ctr run --runc-binary``).

One private dockerd and one private containerd per module (see :mod:`support.runtime`);
one ``sysgate agent`` serves all containers. Docker's runtimes come from daemon.json
(``runtimeArgs``) and from ``--add-runtime``; the image is a ``docker import`` of busybox.
"""
from __future__ import annotations

import os
import re

import pytest

from support import runtime as rs

DENY = "handlers=mkdir-deny:EROFS"                 # EROFS: not an error mkdir in /tmp can get by itself
MKDIR = "mkdir /tmp/x; echo mkdir=$?"
IMAGE = "sysgate-busybox:test"


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    d = tmp_path_factory.mktemp("profiles")
    return {"notify": rs.notify_profile(d / "notify.json"),
            "platform": rs.notify_profile(d / "platform.json", ("mkdir", "mkdirat", "mknod"))}


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory, agent, profiles):
    why = rs.missing_daemon(rs.DOCKERD, rs.DOCKER)
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("docker")
    wrapper = rs.write_wrapper(d / "sysgate-runc")
    down = rs.write_wrapper(d / "sysgate-runc-down", "--agent-socket", str(d / "no-agent.sock"))
    socket_args = ["--agent-socket", agent.socket, "--metadata", DENY]
    config = {"runtimes": {
        "sysgate": {"path": wrapper, "runtimeArgs": socket_args},
        "sysgate-policy": {"path": wrapper, "runtimeArgs": [*socket_args, "--policy", profiles["platform"]]},
    }}
    daemon = rs.Dockerd(d, config, ["--add-runtime", f"sysgate-down={down}"])
    if daemon.why_not:
        daemon.stop()
        pytest.skip(f"dockerd cannot start on this machine: {daemon.why_not}")
    daemon.missing_socket = str(d / "no-agent.sock")
    try:
        out = daemon.docker("import", str(rs.rootfs_tarball(d)), IMAGE)
        assert out.returncode == 0, out.stderr
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, agent, profiles):
    why = rs.missing_daemon(rs.CONTAINERD, rs.CTR)
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("containerd")
    daemon = rs.Containerd(d)
    if daemon.why_not:
        daemon.stop()
        pytest.skip(f"containerd cannot start on this machine: {daemon.why_not}")
    daemon.wrapper = rs.write_wrapper(d / "sysgate-runc", "--agent-socket", agent.socket, "--metadata", DENY)
    daemon.policy_wrapper = rs.write_wrapper(d / "sysgate-runc-policy", "--agent-socket", agent.socket,
                                             "--metadata", DENY, "--policy", profiles["platform"])
    daemon.rootfs = rs.busybox_rootfs(d / "image")
    try:
        yield daemon
    finally:
        daemon.stop()


def joined(agent, cid: str, how: str = "creating", since: int = 0) -> re.Match:
    return agent.wait_log(rf"container {cid}: {how} process (\d+) joined group {cid} \(connection (\d+), "
                          rf"[^\n]*handlers: ([^\n)]*)\)", since=since)


def test_plain_docker_cannot_deliver_the_listener(dockerd, profiles):
    """The issue: docker 20.10 drops listenerPath, so runc refuses a NOTIFY profile."""
    out = dockerd.run("--security-opt", f"seccomp={profiles['notify']}", IMAGE, "sh", "-c", MKDIR)
    assert out.returncode != 0 and "listenerPath is not set" in out.stderr, out.stdout + out.stderr


def test_docker_mkdir_denied_by_the_agent(dockerd, agent, profiles):
    out = dockerd.run("--runtime", "sysgate", "--security-opt", f"seccomp={profiles['notify']}", IMAGE,
                      "sh", "-c", f"{MKDIR}; cat /proc/self/cgroup | grep -m1 -o 'docker/[0-9a-f]*'")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] == "mkdir=1" and "Read-only file system" in out.stderr, out.stdout + out.stderr
    cid = lines[1].split("/")[1]
    assert joined(agent, cid).group(3) == "mkdir-deny:EROFS"
    agent.wait_log(rf"container {cid} gone: group dropped")


def test_docker_profile_without_notify_runs_untouched(dockerd):
    """Docker's default profile has no NOTIFY rule: the wrapper leaves it (and mkdir) alone."""
    out = dockerd.run("--runtime", "sysgate", IMAGE, "sh", "-c", f"{MKDIR}; test -d /tmp/x && echo made")
    assert out.stdout.split() == ["mkdir=0", "made"], out.stdout + out.stderr


def test_docker_exec_joins_the_containers_group(dockerd, agent, profiles):
    since = agent.mark()
    started = dockerd.docker("run", "-d", "--pull", "never", "--network", "none", "--runtime", "sysgate",
                             "--security-opt", f"seccomp={profiles['notify']}", IMAGE, "sleep", "60")
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    try:
        init = joined(agent, cid, since=since)
        out = dockerd.docker("exec", cid, "sh", "-c", MKDIR)
        assert out.stdout.split() == ["mkdir=1"] and "Read-only file system" in out.stderr, out.stdout + out.stderr
        execd = joined(agent, cid, "running", since=since)
        assert execd.group(2) == "2" and execd.group(1) != init.group(1)
        assert execd.group(3) == "mkdir-deny:EROFS"
    finally:
        dockerd.docker("rm", "-f", cid)
    agent.wait_log(rf"container {cid} gone: group dropped", since=since)


def test_docker_platform_policy_applies_only_without_a_profile(dockerd, agent):
    """``--policy``: an unconfined container gets the platform's profile (mkdir and mknod notified);
    a container with a profile of its own (Docker's default) keeps it unchanged."""
    since = agent.mark()
    out = dockerd.run("--runtime", "sysgate-policy", "--security-opt", "seccomp=unconfined", IMAGE,
                      "sh", "-c", f"{MKDIR}; cat /proc/self/status | grep Seccomp:")
    assert out.stdout.split()[:3] == ["mkdir=1", "Seccomp:", "2"], out.stdout + out.stderr
    assert "Read-only file system" in out.stderr
    joined(agent, "[0-9a-f]{64}", since=since)
    out = dockerd.run("--runtime", "sysgate-policy", IMAGE, "sh", "-c", MKDIR)
    assert out.stdout.split() == ["mkdir=0"], out.stdout + out.stderr


def test_docker_missing_agent_fails_the_start_with_one_line(dockerd, profiles):
    out = dockerd.run("--runtime", "sysgate-down", "--name", "down", "--security-opt",
                      f"seccomp={profiles['notify']}", IMAGE, "sh", "-c", "echo started")
    assert out.returncode == 125 and "started" not in out.stdout, out.stdout + out.stderr
    line = f"sysgate-runc: agent socket {dockerd.missing_socket}: No such file or directory"
    [shown] = [text for text in out.stderr.splitlines() if line in text]      # once, on one line
    assert re.search(rf"OCI runtime create failed: {re.escape(line)} \(is sysgate agent running\?\)", shown), shown
    assert dockerd.docker("ps", "-q", "--filter", "name=down").stdout.strip() == ""


def test_containerd_runc_binary_and_annotations(containerd, agent, profiles, tmp_path):
    """``ctr run --runc-binary``; an ``io.sysgate.handlers`` annotation replaces the
    platform's ``handlers=`` (the agent keeps the last duplicate key)."""
    seccomp = ["--seccomp", "--seccomp-profile", profiles["notify"]]
    cid = f"ctr-{os.getpid()}"
    out = containerd.run(containerd.wrapper, rs.copy_rootfs(containerd.rootfs, tmp_path / "a"), cid,
                         "/bin/sh", "-c", MKDIR, options=seccomp)
    assert out.stdout.split() == ["mkdir=1"] and "Read-only file system" in out.stderr, out.stdout + out.stderr
    assert joined(agent, cid).group(3) == "mkdir-deny:EROFS"
    agent.wait_log(rf"container {cid} gone: group dropped")
    cid = f"ctr-annotated-{os.getpid()}"
    out = containerd.run(containerd.wrapper, rs.copy_rootfs(containerd.rootfs, tmp_path / "b"), cid,
                         "/bin/sh", "-c", MKDIR,
                         options=[*seccomp, "--annotation", "io.sysgate.handlers=mkdir-deny:ENOTDIR"])
    assert out.stdout.split() == ["mkdir=1"] and "Not a directory" in out.stderr, out.stdout + out.stderr
    assert joined(agent, cid).group(3) == "mkdir-deny:ENOTDIR"      # the later handlers= line wins


def test_containerd_unknown_annotation_refuses_the_container(containerd, tmp_path):
    cid = f"ctr-bad-{os.getpid()}"
    out = containerd.run(containerd.wrapper, rs.copy_rootfs(containerd.rootfs, tmp_path / "r"), cid,
                         "/bin/sh", "-c", "echo started", options=["--annotation", "io.sysgate.handler=typo"])
    assert out.returncode != 0 and "started" not in out.stdout
    assert "sysgate-runc: " in out.stderr and "unknown annotation io.sysgate.handler" in out.stderr, out.stderr


def test_containerd_platform_policy_for_containers_without_seccomp(containerd, agent, tmp_path):
    """``ctr run`` without ``--seccomp`` gives runc no profile: the ``--policy`` default fills it in."""
    cid = f"ctr-policy-{os.getpid()}"
    out = containerd.run(containerd.policy_wrapper, rs.copy_rootfs(containerd.rootfs, tmp_path / "r"), cid,
                         "/bin/sh", "-c", MKDIR)
    assert out.stdout.split() == ["mkdir=1"] and "Read-only file system" in out.stderr, out.stdout + out.stderr
    assert joined(agent, cid).group(3) == "mkdir-deny:EROFS"
    cid = f"ctr-nopolicy-{os.getpid()}"
    out = containerd.run(containerd.wrapper, rs.copy_rootfs(containerd.rootfs, tmp_path / "s"), cid,
                         "/bin/sh", "-c", MKDIR)
    assert out.stdout.split() == ["mkdir=0"], out.stdout + out.stderr        # the same run without --policy
