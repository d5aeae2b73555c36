"""OCI test helpers: a busybox bundle and runc/crun invocations that work in this sandbox.

``make_bundle`` builds ``<dir>/rootfs`` from the static ``/bin/busybox`` (Debian
``busybox-static``) and writes a ``config.json`` whose ``linux.seccomp`` notifies
``mkdir``/``mkdirat``/``mknod``/``mknodat``/``mount`` to ``listenerPath`` and allows the rest.

``Runtime`` runs ``runc``/``crun`` with a private ``--root``. crun (1.8) refuses hosts in
cgroup *hybrid* mode whose cgroup2 hierarchy still holds a controller ("cgroups in hybrid
mode not supported, drop all controllers from cgroupv2"); there it runs in a private
mount namespace with ``/sys/fs/cgroup/unified`` unmounted, which crun treats as plain
cgroup v1, like runc does.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

BUSYBOX = "/bin/busybox"
NOTIFIED = ("mkdir", "mkdirat", "mknod", "mknodat", "mount")
APPLETS = ("sh", "mkdir", "mknod", "mount", "echo", "cat", "ls", "stat", "sleep", "test", "rm", "true")
CGROUP_UNIFIED = "/sys/fs/cgroup/unified"


def missing_runtimes() -> dict[str, str]:
    """Runtime name -> why it cannot be used here (only for a missing binary or busybox)."""
    why = {}
    for name in ("runc", "crun"):
        if shutil.which(name) is None:
            why[name] = f"{name} is not installed (Debian package {name})"
        elif not os.path.exists(BUSYBOX):
            why[name] = f"{BUSYBOX} is missing (Debian package busybox-static)"
        elif os.geteuid() != 0:
            why[name] = "running OCI containers needs root"
    return why


#: runc and crun as pytest parameters, each skipped (with the reason) where it cannot run
RUNTIMES = [pytest.param(name, marks=pytest.mark.skipif(name in missing_runtimes(),
                                                         reason=missing_runtimes().get(name, "")))
            for name in ("runc", "crun")]


def seccomp_section(listener_path: str | None, metadata: str = "",
                    notified=NOTIFIED) -> dict:
    section = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": list(notified), "action": "SCMP_ACT_NOTIFY"}],
    }
    if listener_path is not None:
        section["listenerPath"] = listener_path
        section["listenerMetadata"] = metadata
    return section


def make_bundle(directory, args, listener_path: str | None, metadata: str = "",
                annotations: dict | None = None, notified=NOTIFIED) -> Path:
    """A runnable bundle in ``directory`` running ``args`` as root in a busybox rootfs."""
    bundle = Path(directory)
    rootfs = bundle / "rootfs"
    for sub in ("bin", "tmp", "proc", "sys", "dev", "etc", "mnt"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        link = rootfs / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/bin", "HOME=/tmp"],
            "cwd": "/tmp",
            "noNewPrivileges": True,
            "capabilities": {key: ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL",
                                   "CAP_SETUID", "CAP_SETGID"]
                             for key in ("bounding", "effective", "permitted")},
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "sysgate-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]},
        ],
        "annotations": dict(annotations or {}),
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "seccomp": seccomp_section(listener_path, metadata, notified),
        },
    }
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def _hybrid_with_v2_controllers() -> bool:
    try:
        return bool(Path(CGROUP_UNIFIED, "cgroup.controllers").read_text().split())
    except OSError:
        return False


class Runtime:
    """``runc`` or ``crun`` with its own state directory (``--root``)."""

    def __init__(self, name: str, state_dir):
        self.name = name
        self.root = str(state_dir)
        os.makedirs(self.root, exist_ok=True)

    def command(self, *args: str) -> list[str]:
        cmd = [self.name, "--root", self.root, *args]
        if self.name == "crun" and _hybrid_with_v2_controllers():
            return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                    f'umount -l {CGROUP_UNIFIED} && exec "$@"', "crun-hybrid", *cmd]
        return cmd

    def run(self, bundle, cid: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """``run --bundle B ID`` to completion; stdout/stderr captured as text."""
        return subprocess.run(self.command("run", "--bundle", str(bundle), cid), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)

    def run_once(self, bundle, cid: str, **kw) -> subprocess.CompletedProcess:
        """:meth:`run`, then delete the container whatever happened (its state would outlive the test)."""
        try:
            return self.run(bundle, cid, **kw)
        finally:
            self.delete(cid)

    def start_detached(self, bundle, cid: str) -> subprocess.Popen:
        """``run`` in the background (the container's stdio are the pipes of the Popen)."""
        return subprocess.Popen(self.command("run", "--bundle", str(bundle), cid), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def exec(self, cid: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("exec", cid, *argv), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def state(self, cid: str) -> dict | None:
        out = subprocess.run(self.command("state", cid), capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def delete(self, cid: str) -> None:
        subprocess.run(self.command("delete", "--force", cid), capture_output=True, timeout=30)
