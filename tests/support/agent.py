"""``sysgate agent`` in a subprocess (also ``--learn``), for the agent, learning and runtime-wrapper
tests; handing a launched process's listener over to an agent as runc does."""
from __future__ import annotations

import array
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from sysgate.process import launch
from support.filters import notify_mkdir

# fork + exec of another applet, a pipe, a file in the container's /tmp
LEARN = "echo hi; ls / > /tmp/listing; cat /tmp/listing | busybox grep -c bin; echo done"
#: the runtime's own set-up: before the filter is installed, so never learned
SETUP = {"mount", "umount2", "pivot_root", "unshare", "setns", "sethostname", "keyctl", "seccomp", "mkdir"}
CONNECTION_TIMEOUT = 3.0   # the agent's --timeout: how long a runtime may take to send its state


class AgentProcess:
    """``sysgate agent`` in a subprocess; its log goes to a file the tests read."""

    def __init__(self, directory, config: dict | None = None,
                 options=("--timeout", str(CONNECTION_TIMEOUT))):
        self.socket = str(directory / "agent.sock")
        self.log_path = directory / "agent.log"
        argv = [sys.executable, "-m", "sysgate", "agent", "--socket", self.socket, *options]
        if config is not None:
            (directory / "agent.json").write_text(json.dumps(config))
            argv += ["--config", str(directory / "agent.json")]
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.wait_log(r"ready on ")

    def text(self) -> str:
        return self.log_path.read_text()

    def mark(self) -> int:
        """The log's current length: pass it as ``since`` to ignore older lines."""
        return len(self.text())

    def wait_log(self, pattern: str, timeout: float = 10, since: int = 0) -> re.Match:
        end = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text()[since:])
            if match:
                return match
            assert self.proc.poll() is None, f"agent exited ({self.proc.returncode}):\n{self.text()}"
            if time.monotonic() > end:
                raise AssertionError(f"no {pattern!r} in the agent log:\n{self.text()}")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        self.log.close()
        return code


class LearningAgent(AgentProcess):
    """``sysgate agent --learn DIR`` in a subprocess."""

    def __init__(self, directory):
        self.learned = directory / "learned"
        self.learned.mkdir()
        super().__init__(directory, options=("--learn", str(self.learned)))


def printed_profile(socket_path: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "sysgate", "agent", "--socket", socket_path, "--learning-profile"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def allowed(profile: dict) -> set[str]:
    return {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]}


def hand_over(socket_path: str, target, cid: str, status: str, metadata: str = "") -> None:
    """What runc does: send the state JSON with the target's listener attached."""
    state = {"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": target.pid, "metadata": metadata,
             "state": {"ociVersion": "1.0.2-dev", "id": cid, "status": status, "pid": target.pid,
                       "bundle": "/nonexistent", "annotations": {}}}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(socket_path)
        s.sendmsg([json.dumps(state).encode()],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [target.listener]).tobytes())])
    os.close(target.listener)
    target.listener = None


def spawn_mkdir(tmp_path, name: str, delay: float = 0.3):
    out = open(tmp_path / f"{name}.out", "w+")
    script = f"sleep {delay}; mkdir {tmp_path / name}; echo rc=$?"
    return launch.spawn(["sh", "-c", script], notify_mkdir(), stdout=out, stderr=out), out
