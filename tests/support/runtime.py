"""Test helpers for ``sysgate-runc``: wrapper scripts, a private dockerd and a private containerd.

Both daemons are Debian's (``docker.io`` 20.10 and ``containerd`` 1.6), each with its own
state, exec and socket paths under a test directory, so they never touch a system daemon.
Images come only from ``docker import`` of the busybox rootfs of :mod:`support.oci` (there is no
registry): containers run with ``--pull never --network none``.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from support import oci

import sysgate

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"          # /usr/local/bin/docker may be an unrelated newer client
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
SRC = str(Path(sysgate.__file__).resolve().parents[1])
START_TIMEOUT = 60


def write_wrapper(path, *options: str) -> str:
    """An executable ``sysgate-runc`` with ``options`` built in (daemons want a path, not a command line).

    The sources under test and this interpreter are named explicitly: dockerd, containerd
    and their shims do not pass the test's environment on."""
    words = " ".join(shlex.quote(w) for w in (sys.executable, "-m", "sysgate.runtime", *options))
    Path(path).write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(SRC)} exec {words} "$@"\n')
    os.chmod(path, 0o755)
    return str(path)


def busybox_rootfs(directory) -> Path:
    """The busybox rootfs of :func:`oci.make_bundle` (a fresh copy for each container run by ctr)."""
    return oci.make_bundle(directory, ["true"], None) / "rootfs"


def rootfs_tarball(directory) -> Path:
    rootfs = busybox_rootfs(Path(directory) / "image")
    tarball = Path(directory) / "busybox.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    return tarball


def missing_daemon(*binaries: str) -> str | None:
    """Why a daemon test cannot run at all here (binary missing, not root), else None."""
    if os.geteuid() != 0:
        return "running container daemons needs root"
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            return f"{binary} is not installed (Debian packages docker.io and containerd)"
    if not os.path.exists(oci.BUSYBOX):
        return f"{oci.BUSYBOX} is missing (Debian package busybox-static)"
    return None


class Daemon:
    """A daemon subprocess logging to a file; :meth:`stop` sends SIGTERM and waits."""

    def __init__(self, argv: list[str], log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, probe, what: str) -> str | None:
        """None once ``probe()`` is true; else why the daemon did not start (for a skip)."""
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return f"{what} exited ({self.proc.returncode}): {self.text()[-800:]}"
            if probe():
                return None
            time.sleep(0.2)
        return f"{what} did not start within {START_TIMEOUT}s: {self.text()[-800:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


class Dockerd(Daemon):
    """Debian's dockerd with private paths, no networking setup and vfs storage."""

    def __init__(self, directory: Path, config: dict, extra: list[str] = ()):
        self.dir = directory
        self.socket = str(directory / "docker.sock")
        (directory / "daemon.json").write_text(json.dumps(config))
        argv = [DOCKERD, "--config-file", str(directory / "daemon.json"),
                "--data-root", str(directory / "data"), "--exec-root", str(directory / "exec"),
                "--pidfile", str(directory / "docker.pid"), "-H", f"unix://{self.socket}",
                "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs", *extra]
        super().__init__(argv, directory / "dockerd.log")
        self.why_not = self.wait_ready(self._answers, "dockerd")

    def _answers(self) -> bool:
        return os.path.exists(self.socket) and self.docker("version", timeout=10).returncode == 0

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, "-H", f"unix://{self.socket}", *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``docker run --rm --pull never --network none ARGS``."""
        return self.docker("run", "--rm", "--pull", "never", "--network", "none", *args, timeout=timeout)


class Containerd(Daemon):
    """Debian's containerd with its own root, state and sockets (the CRI plugin disabled)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.socket = str(directory / "containerd.sock")
        config = directory / "config.toml"
        config.write_text("\n".join([
            "version = 2",
            f'root = "{directory / "root"}"',
            f'state = "{directory / "state"}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]", f'  address = "{self.socket}"',
            "[ttrpc]", f'  address = "{self.socket}.ttrpc"',
            "[debug]", '  address = ""', ""]))
        super().__init__([CONTAINERD, "--config", str(config)], directory / "containerd.log")
        self.why_not = self.wait_ready(self._answers, "containerd")

    def _answers(self) -> bool:
        return os.path.exists(self.socket) and self.ctr("version", timeout=10).returncode == 0

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([CTR, "--address", self.socket, *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def run(self, runc_binary: str, rootfs, cid: str, *argv: str, options=(), timeout: float = 60):
        """``ctr run --rm --runc-binary WRAPPER [OPTIONS] --rootfs ROOTFS CID ARGV``."""
        return self.ctr("run", "--rm", "--runc-binary", runc_binary, *options, "--rootfs", str(rootfs), cid, *argv,
                        timeout=timeout)


def notify_profile(path, notified=("mkdir", "mkdirat")) -> str:
    """A Docker-style profile (no listenerPath: Docker could not pass it anyway) notifying ``notified``."""
    Path(path).write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                                      "syscalls": [{"names": list(notified), "action": "SCMP_ACT_NOTIFY"}]}))
    return str(path)


def copy_rootfs(source: Path, directory: Path) -> Path:
    shutil.copytree(source, directory, symlinks=True)
    return directory
