"""``sysgate agent`` with real runc and crun containers (busybox rootfs, notify on mkdir/mknod/mount)."""
from __future__ import annotations

import array
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from support import oci
from support.agent import CONNECTION_TIMEOUT, AgentProcess
from support.oci import RUNTIMES

AGENT_CONFIG = {"containers": [{"id": "cfg-*", "handlers": ["mkdir-deny:EROFS"], "metadata": False}]}
RUN = os.getpid()     # container ids (and so cgroup paths) unique to this test run


def run_container(runtime: str, tmp_path, cid: str, script: str, socket_path: str, metadata: str = ""):
    bundle = oci.make_bundle(tmp_path / cid, ["sh", "-c", script], socket_path, metadata)
    return oci.Runtime(runtime, tmp_path / "state").run_once(bundle, cid)


VERDICTS = """
mkdir /tmp/x; echo mkdir=$?
test -d /tmp/x && echo x-is-dir
mknod /dev/null2 c 1 3; echo mknod-null=$?
echo hi > /dev/null2 && echo null2-writable
mknod /dev/sda b 8 0; echo mknod-sda=$?
mknod /dev/mem2 c 1 1; echo mknod-mem=$?
mount -t tmpfs none /mnt; echo mount=$?
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_container_sees_the_agents_verdicts(runtime, agent, tmp_path):
    cid = f"verdicts-{runtime}-{RUN}"
    out = run_container(runtime, tmp_path, cid, VERDICTS, agent.socket,
                        "handlers=mkdir-emulate,mknod-emulate,mount-deny:EACCES")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    # the container has no CAP_MKNOD: only the agent can have created /dev/null2
    assert lines == ["mkdir=0", "x-is-dir", "mknod-null=0", "null2-writable", "mknod-sda=1", "mknod-mem=1",
                     "mount=255"], out.stdout + out.stderr
    assert "mounting none on /mnt failed: Permission denied" in out.stderr     # EACCES, not the kernel's EPERM
    assert "/dev/sda: Operation not permitted" in out.stderr
    agent.wait_log(rf"container {cid}: creating process \d+ joined group {cid} \(connection 1, ociVersion "
                   rf"{'0.2.0' if runtime == 'crun' else '1.0'}")
    agent.wait_log(rf"container {cid} gone: group dropped")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_metadata_template_and_config_file(runtime, agent, tmp_path):
    script = "mkdir /tmp/y; echo mkdir=$?; ls -d /tmp/y*"
    out = run_container(runtime, tmp_path, f"tmpl-{runtime}-{RUN}", script, agent.socket,
                        "MKDIR_TMPL=-in-{{.Container}}")
    assert out.stdout.split() == ["mkdir=0", f"/tmp/y-in-tmpl-{runtime}-{RUN}"], out.stdout + out.stderr
    # the config file's entry for cfg-* ignores the container's metadata
    out = run_container(runtime, tmp_path, f"cfg-{runtime}-{RUN}", script, agent.socket, "handlers=mkdir-emulate")
    assert out.stdout.split()[0] == "mkdir=1" and "Read-only file system" in out.stderr, out.stdout + out.stderr


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_metadata_fails_closed(runtime, agent, tmp_path):
    """An unknown handler refuses the container's listener: notified syscalls fail (ENOSYS)."""
    cid = f"badmeta-{runtime}-{RUN}"
    out = run_container(runtime, tmp_path, cid, "mkdir /tmp/q; echo mkdir=$?; echo alive", agent.socket,
                        "handlers=no-such-handler")
    assert out.stdout.split() == ["mkdir=1", "alive"] and "Function not implemented" in out.stderr, out.stderr
    agent.wait_log(rf"container {cid}: refusing its listener [^\n]*unknown handler 'no-such-handler'")


MOUNTS = """
mount -t tmpfs none /mnt; echo tmpfs=$?
grep -c ' /mnt tmpfs ' /proc/mounts
mount -t proc proc /mnt; echo proc=$?
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_mount_emulate_tmpfs_only(runtime, agent, tmp_path):
    """The agent mounts tmpfs in the container's mount namespace (it has no CAP_SYS_ADMIN);
    proc is not allowed (EPERM), and MOUNT_PROC=true refuses the listener (ENOSYS)."""
    out = run_container(runtime, tmp_path, f"mount-{runtime}-{RUN}", MOUNTS, agent.socket,
                        "handlers=mount-emulate:tmpfs,mkdir-emulate")
    assert out.stdout.split() == ["tmpfs=0", "1", "proc=1"], out.stdout + out.stderr
    assert "mount: permission denied" in out.stderr          # busybox's words for EPERM
    cid = f"mountproc-{runtime}-{RUN}"
    out = run_container(runtime, tmp_path, cid, MOUNTS, agent.socket, "MOUNT_PROC=true")
    assert out.stdout.split()[0] == "tmpfs=255" and "Function not implemented" in out.stderr, out.stderr
    agent.wait_log(rf"container {cid}: refusing its listener [^\n]*proc is not supported")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_default_action_kill_container(runtime, agent, tmp_path):
    """seccompagent's DEFAULT_ACTION=kill-container: a notified syscall without handler kills init."""
    out = run_container(runtime, tmp_path, f"kill-{runtime}-{RUN}",
                        "echo before; mount -t tmpfs none /mnt; echo after",
                        agent.socket, "DEFAULT_ACTION=kill-container\nhandlers=mkdir-deny")
    assert out.stdout.split() == ["before"], out.stdout + out.stderr
    assert out.returncode != 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exec_joins_the_containers_group(runtime, agent, tmp_path):
    cid = f"exec-{runtime}-{RUN}"
    bundle = oci.make_bundle(tmp_path / cid, ["sleep", "30"], agent.socket, "MKDIR_TMPL=-{{.Pid}}")
    rt = oci.Runtime(runtime, tmp_path / "state")
    proc = rt.start_detached(bundle, cid)
    try:
        first = agent.wait_log(rf"container {cid}: creating process (\d+) joined group {cid} \(connection 1")
        init_pid = first.group(1)
        out = rt.exec(cid, "sh", "-c", "mkdir /tmp/e; echo rc=$?; ls -d /tmp/e*")
        assert out.stdout.split() == ["rc=0", f"/tmp/e-{init_pid}"], out.stdout + out.stderr
        second = agent.wait_log(rf"container {cid}: running process (\d+) joined group {cid} \(connection 2")
        assert second.group(1) != init_pid
        agent.wait_log(rf"container {cid}: process {second.group(1)} released \(hangup\), 1 listener\(s\) left")
    finally:
        subprocess.run(rt.command("kill", cid, "KILL"), capture_output=True, timeout=30)
        proc.wait(30)
        rt.delete(cid)
    agent.wait_log(rf"container {cid} gone: group dropped")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_start_fails_cleanly_without_agent(runtime, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("running OCI containers needs root")
    missing = str(tmp_path / "no-agent.sock")
    cid = f"down-{runtime}-{RUN}"
    out = run_container(runtime, tmp_path, cid, "echo started", missing)
    assert out.returncode != 0
    assert "started" not in out.stdout
    assert missing in out.stderr and re.search(r"(?i)no such file or directory", out.stderr), out.stderr
    assert oci.Runtime(runtime, tmp_path / "state").state(cid) is None


def hostile_clients(socket_path: str, listener_like: int) -> list[socket.socket]:
    """Connections that are broken in different ways; all are left open."""
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(socket_path)
        return s

    def fds_msg(s, data, fds):
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])

    state = json.dumps({"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 1, "metadata": "",
                        "state": {"id": "hostile", "status": "creating", "pid": 1}}).encode()
    clients = []
    garbage = connect()
    garbage.send(b"\xff{{{ not json }")
    garbage.shutdown(socket.SHUT_WR)
    no_fd = connect()
    no_fd.send(state)
    too_many = connect()
    fds_msg(too_many, state, [listener_like] * 40)
    wrong_fd = connect()
    fds_msg(wrong_fd, state, [listener_like])
    silent = connect()
    silent.send(state[:20])          # never finishes, never closes
    idle = connect()                 # sends nothing at all
    clients += [garbage, no_fd, too_many, wrong_fd, silent, idle]
    return clients


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_hostile_clients_do_not_affect_others(runtime, agent, tmp_path):
    since = agent.mark()
    devnull = os.open("/dev/null", os.O_RDONLY)
    clients = hostile_clients(agent.socket, devnull)
    os.close(devnull)
    try:
        start = time.monotonic()
        out = run_container(runtime, tmp_path, f"after-hostile-{runtime}-{RUN}", "mkdir /tmp/z; echo mkdir=$?",
                            agent.socket, "handlers=mkdir-deny:ENOTDIR")
        assert time.monotonic() - start < CONNECTION_TIMEOUT      # not stuck behind the silent clients
        assert out.stdout.split() == ["mkdir=1"] and "Not a directory" in out.stderr, out.stdout + out.stderr
        for reason in ("not valid JSON", "0 were attached", "more than 16 fds",
                       "not a seccomp listener", "no complete container state within"):
            agent.wait_log(f"rejected connection from pid {os.getpid()} uid 0: [^\n]*{reason}",
                           timeout=CONNECTION_TIMEOUT + 5, since=since)
    finally:
        for client in clients:
            client.close()
    assert agent.proc.poll() is None


def test_sigterm_stops_the_agent_and_removes_the_socket(tmp_path):
    proc = AgentProcess(tmp_path)
    assert os.path.exists(proc.socket)
    assert proc.stop() == 0
    assert not os.path.exists(proc.socket)


def test_second_agent_on_a_live_socket_is_refused(agent):
    out = subprocess.run([sys.executable, "-m", "sysgate", "agent", "--socket", agent.socket],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and f"another process is listening on {agent.socket}" in out.stderr
    assert agent.proc.poll() is None and os.path.exists(agent.socket)
