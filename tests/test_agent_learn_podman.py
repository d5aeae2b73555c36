"""``sysgate agent --learn`` with real podman containers.

podman passes the profile's ``listenerPath`` to the runtime (runc here), so the agent learns a
podman container like a bare runc one: the learned profile, given back to podman with
``--security-opt seccomp=FILE`` and no agent, runs the same container and refuses ``mkdir``.

podman runs with a private storage (``--root``/``--runroot``/``--tmpdir`` under pytest's tmp
dir, the ``vfs`` driver): its image is a ``podman import`` of the busybox rootfs of
:func:`oci.make_bundle` (no registry, nothing is pulled), and nothing of the host's podman
state is touched. ``cgroupfs`` because there is no systemd here; the ulimits because
podman's default ``nofile``/``nproc`` exceed what this sandbox lets a container raise to.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from support import oci
from sysgate.agent.learning import ALWAYS
from support.agent import LEARN, SETUP, LearningAgent, allowed, printed_profile

IMAGE = "localhost/sysgate-busybox:test"


class Podman:
    """podman with its own storage under ``directory``; containers run with runc and no network."""

    def __init__(self, directory):
        self.directory = directory
        self.globals = ["podman", "--root", str(directory / "root"), "--runroot", str(directory / "runroot"),
                        "--tmpdir", str(directory / "tmp"), "--storage-driver", "vfs",
                        "--cgroup-manager", "cgroupfs", "--events-backend", "none"]

    def __call__(self, *args: str, wrap=(), timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*wrap, *self.globals, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def import_busybox(self) -> subprocess.CompletedProcess:
        oci.make_bundle(self.directory / "image", ["true"], None)
        tarball = self.directory / "rootfs.tar"
        subprocess.run(["tar", "-C", str(self.directory / "image" / "rootfs"), "-cf", str(tarball), "."], check=True)
        # podman 4.3 writes its blob-info cache to /var/lib/containers/cache whatever --root says:
        # the import runs in a private mount namespace with a tmpfs over /var/lib
        private = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   'mount -t tmpfs tmpfs /var/lib && exec "$@"', "private-var-lib"]
        return self("import", str(tarball), IMAGE, wrap=private)

    def run(self, script: str, seccomp: str, cidfile=None) -> subprocess.CompletedProcess:
        """``podman run --rm`` of ``sh -c script`` with ``--security-opt seccomp=<seccomp>``."""
        cid = ["--cidfile", str(cidfile)] if cidfile is not None else []
        return self("run", "--rm", *cid, "--runtime", "runc", "--ulimit", "nofile=1024:1024",
                    "--ulimit", "nproc=1024:1024", "--network", "none", "--security-opt", f"seccomp={seccomp}",
                    IMAGE, "sh", "-c", script)

    def clean(self) -> None:
        self("rm", "--all", "--force")
        self("rmi", "--all", "--force")
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (Debian package podman)")
    if shutil.which("runc") is None or not os.path.exists(oci.BUSYBOX):
        pytest.skip("podman's containers here need runc and busybox-static")
    if os.geteuid() != 0:
        pytest.skip("running podman containers with a private storage needs root")
    pm = Podman(tmp_path_factory.mktemp("podman"))
    try:
        imported = pm.import_busybox()
        assert imported.returncode == 0, imported.stderr
        probe = pm.run("echo probe", "unconfined")
        if probe.returncode != 0 or probe.stdout != "probe\n":
            pytest.skip(f"podman cannot run a container on this machine: {probe.stderr.strip()}")
        yield pm
    finally:
        pm.clean()


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    proc = LearningAgent(tmp_path_factory.mktemp("podman-learning-agent"))
    yield proc
    assert proc.stop() == 0, proc.text()


def test_podman_container_learned_through_the_agent_runs_without_it(podman, agent, tmp_path):
    learning = dict(printed_profile(agent.socket))
    assert learning["listenerPath"] == agent.socket
    (tmp_path / "learning.json").write_text(json.dumps(learning))
    cidfile = tmp_path / "cid"
    out = podman.run(LEARN, str(tmp_path / "learning.json"), cidfile=cidfile)
    assert out.returncode == 0 and out.stdout.split() == ["hi", "1", "done"], out.stdout + out.stderr
    cid = cidfile.read_text().strip()           # podman's container id is the one the runtime gives the agent
    agent.wait_log(rf"container {cid}: learned \d+ syscalls \(\d+ distinct\), wrote ")
    learned = agent.learned / f"{cid}.json"
    assert (agent.learned / f"{cid}.yaml").exists() and (agent.learned / f"{cid}.policy").exists()
    names = allowed(json.loads(learned.read_text()))
    assert {"execve", "wait4", *ALWAYS} <= names and names & {"pipe", "pipe2"}, names
    assert not names & SETUP, names & SETUP         # podman's and runc's set-up came before the filter

    # applied by podman alone (the agent is not involved: no listenerPath, no notify action)...
    assert "SCMP_ACT_NOTIFY" not in learned.read_text() and "listenerPath" not in learned.read_text()
    for attempt in range(3):
        again = podman.run(LEARN, str(learned))
        assert again.returncode == 0 and again.stdout.split() == ["hi", "1", "done"], again.stdout + again.stderr
    # ... it refuses what the container never did: mkdir gets EPERM
    script = LEARN + "; mkdir /tmp/new; echo mkdir=$?; test -d /tmp/new || echo absent"
    refused = podman.run(script, str(learned))
    assert refused.stdout.split() == ["hi", "1", "done", "mkdir=1", "absent"], refused.stdout + refused.stderr
    assert "Operation not permitted" in refused.stderr, refused.stderr
    # without a profile the kernel lets the same container mkdir
    free = podman.run(script, "unconfined")
    assert free.stdout.split() == ["hi", "1", "done", "mkdir=0"], free.stdout + free.stderr
