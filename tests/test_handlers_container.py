"""container handler with real targets: device nodes, mkdir allow-list, mounts in the target's namespace, sysinfo."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from sysgate.errors import SysgateError
from sysgate.handlers.container import ContainerHandler, MountRule
from support.handlers import run

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]


@pytest.fixture
def shared_dir():
    path = tempfile.mkdtemp(prefix="sysgate-ct-")
    os.chown(path, 65534, 65534)
    yield path
    shutil.rmtree(path)


def results(out: str) -> dict[str, tuple[int, int]]:
    return {w[0]: (int(w[1]), int(w[2])) for w in (line.split() for line in out.splitlines()) if len(w) == 3}


def test_mknod_and_mkdir_for_an_unprivileged_target(target_c, shared_dir):
    handler = ContainerHandler(mkdir=[f"{shared_dir}/made"], mkdir_otherwise="EACCES")
    code, out = run([*NOBODY, target_c, "nodes", shared_dir], handler)
    got = results(out)
    assert got["null"] == (0, 0) and got["fifo"] == (0, 0) and got["mkdir"] == (0, 0), out
    assert got["sda"] == (-1, errno.EPERM) and got["mem"] == (-1, errno.EPERM)
    assert got["mkdir-other"] == (-1, errno.EACCES)
    st = os.lstat(f"{shared_dir}/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    made = os.lstat(f"{shared_dir}/made")
    assert stat.S_ISDIR(made.st_mode) and made.st_uid == 65534 and made.st_mode & 0o777 == 0o750 & ~0o022
    assert stat.S_ISFIFO(os.lstat(f"{shared_dir}/fifo").st_mode)


def test_without_the_handler_the_kernel_refuses(target_c, shared_dir):
    out = subprocess.run([*NOBODY, target_c, "nodes", shared_dir], capture_output=True, text=True).stdout
    assert results(out)["null"] == (-1, errno.EPERM)


def test_paths_resolve_inside_a_chrooted_target(shared_dir):
    os.makedirs(f"{shared_dir}/bin")
    os.makedirs(f"{shared_dir}/dev")
    shutil.copy("/bin/busybox", f"{shared_dir}/bin/busybox")
    os.symlink("/../../..", f"{shared_dir}/dev/up")        # absolute symlink: means the chroot's /
    code, out = run(["chroot", "--userspec=65534:65534", shared_dir, "/bin/busybox", "sh", "-c",
                     "mknod /dev/up/null c 1 3 && mkdir /dev/up/made && echo done; mkdir /dev/up/other"],
                    ContainerHandler(mkdir=["/made"], mkdir_otherwise="EACCES"))
    assert "done" in out and "Permission denied" in out, out   # /made allowed (as the target sees it), /other not
    assert os.lstat(f"{shared_dir}/null").st_uid == 65534
    assert stat.S_ISCHR(os.lstat(f"{shared_dir}/null").st_mode) and os.path.isdir(f"{shared_dir}/made")
    assert not os.path.exists("/null") and not os.path.exists("/made")


def test_mount_tmpfs_lands_in_the_target_namespace(target_c, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    handler = ContainerHandler(mounts=[{"fstype": "tmpfs", "target": f"{mnt}", "flags": ["MS_NOSUID", "MS_NODEV"]}])
    try:
        code, out = run([target_c, "mounts", str(mnt)], handler)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)])
            pytest.fail("the tmpfs leaked into the supervisor's mount namespace")
    got = results(out)
    assert got["private"] == (0, 0) and got["tmpfs"] == (0, 0), out
    assert got["write"] == (0, 0) and got["inside-visible"] == (0, 0)
    assert got["ramfs"] == (-1, errno.EPERM)
    assert os.listdir(mnt) == []          # the directory made inside lives on the namespace's tmpfs


def test_mount_rules():
    rule = MountRule("tmpfs", "/mnt/**", ["MS_NOSUID"])
    assert rule.allows("tmpfs", "/mnt/x", 2, "tmpfs") and not rule.allows("tmpfs", "/mnt/x", 2 | 4, "tmpfs")
    assert not rule.allows("proc", "/mnt/x", 0, "proc") and not rule.allows("tmpfs", "/etc", 0, "tmpfs")
    with pytest.raises(SysgateError):
        MountRule("tmpfs", "/x", ["MS_BOGUS"])
    with pytest.raises(SysgateError):
        ContainerHandler(memory="lots")


def test_sysinfo_reports_the_configured_memory():
    script = ("import ctypes\nb=ctypes.create_string_buffer(112)\n"
              "ctypes.CDLL(None).sysinfo(b)\nimport struct\n"
              "t,f=struct.unpack_from('=QQ', b.raw, 32); u=struct.unpack_from('=I', b.raw, 104)[0]\n"
              "print(t*u, f*u, struct.unpack_from('=H', b.raw, 80)[0] > 0)")
    code, out = run(["/usr/bin/python3", "-S", "-c", script], ContainerHandler(memory=256 << 20))
    total, free, procs = out.split()
    assert int(total) == 256 << 20 and int(free) == 256 << 20 and procs == "True"


@pytest.mark.parametrize("fstype", ["proc", "sysfs", "mqueue", "cgroup", "cgroup2"])
def test_mount_rules_refuse_filesystems_of_other_namespaces(fstype):
    """The helper joins only the mount namespace: these would show the host's processes, devices..."""
    with pytest.raises(SysgateError, match=f"mount rule for '{fstype}': not supported; the mount helper joins "
                                           f"only the target's mount namespace"):
        ContainerHandler(mounts=[{"fstype": fstype, "target": "/mnt/**"}])
    with pytest.raises(SysgateError, match="would show the host's"):
        MountRule.from_config(fstype)


def test_cli_refuses_a_proc_mount_rule_before_the_command_runs(tmp_path):
    (tmp_path / "m.policy").write_text("default: allow\nmount: notify(container)\n")
    config = json.dumps({"container": {"mounts": [{"fstype": "proc", "target": f"{tmp_path}/**"}]}})
    marker = tmp_path / "ran"
    res = subprocess.run([sys.executable, "-m", "sysgate", "run", "--policy", str(tmp_path / "m.policy"),
                          "--handlers", config, "--", "touch", str(marker)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 125 and not marker.exists() and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("sysgate: error: mount rule for 'proc': not supported") and \
        "host's processes (pid namespace)" in res.stderr
