import ctypes
import errno
import os

import pytest

from sysgate.arch import syscalls
from sysgate.kernel import abi, notify
from sysgate.kernel import calls
from sysgate.process.features import detect
from sysgate.bpf.insn import BPF_JEQ, BPF_JMP, BPF_K, jump, ld_abs, pack, ret


def test_struct_sizes_match_kernel():
    assert calls.seccomp_notif_sizes() == (abi.SECCOMP_NOTIF.size, abi.SECCOMP_NOTIF_RESP.size, abi.SECCOMP_DATA.size)


def test_features_report_core_actions():
    f = detect(probe_listener=True)
    assert f.seccomp_available
    assert f.actions["ALLOW"] and f.actions["ERRNO"]
    assert f.flags["NEW_LISTENER"] and f.ioctls["NOTIF_ID_VALID"]


def test_unknown_action_not_available():
    assert not calls.seccomp_action_available(0x7FFE0000)


def _in_child(fn):
    """Run fn in a forked child; return its exit code (0 = fn returned True)."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if fn() else 1)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_errno_filter_applies_in_child():
    def child():
        calls.set_no_new_privs()
        calls.seccomp_set_filter(pack(_errno_unless_exit()))
        try:
            os.dup(0)
        except OSError as e:
            return e.errno == 77
        return False
    assert _in_child(child) == 0


def _errno_unless_exit():
    exit_group = syscalls.number(None, "exit_group")
    return [ld_abs(0), jump(BPF_JMP | BPF_JEQ | BPF_K, exit_group, 0, 1),
            ret(abi.SECCOMP_RET_ALLOW), ret(abi.SECCOMP_RET_ERRNO | 77)]


def test_listener_roundtrip_in_child():
    """The child notifies on getppid; the parent answers with a fake value."""
    getppid = syscalls.number(None, "getppid")
    prog = pack([ld_abs(0), jump(BPF_JMP | BPF_JEQ | BPF_K, getppid, 0, 1),
                 ret(abi.SECCOMP_RET_USER_NOTIF), ret(abi.SECCOMP_RET_ALLOW)])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        calls.set_no_new_privs()
        fd = calls.seccomp_set_filter(prog, abi.SECCOMP_FILTER_FLAG_NEW_LISTENER)
        os.write(w, fd.to_bytes(4, "little"))
        os._exit(0 if os.getppid() == 4242 else 1)
    os.close(w)
    fd_in_child = int.from_bytes(os.read(r, 4), "little")
    pidfd = calls.pidfd_open(pid)
    listener = calls.pidfd_getfd(pidfd, fd_in_child)
    n = notify.recv(listener)
    assert n.pid == pid and n.data.nr == getppid and n.data.arch == abi.AUDIT_ARCH[abi.native_arch()]
    assert notify.id_valid(listener, n.id)
    notify.send(listener, n.id, val=4242)
    assert not notify.id_valid(listener, n.id)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(OSError) as e:
        notify.send(listener, n.id, val=1)
    assert e.value.errno == errno.ENOENT
    for fd in (listener, pidfd, r):
        os.close(fd)


def test_process_vm_read_and_write_own_memory():
    buf = ctypes.create_string_buffer(b"hello world", 11)
    address = ctypes.addressof(buf)
    assert calls.process_vm_readv(os.getpid(), address, 5) == b"hello"
    assert calls.process_vm_readv(os.getpid(), address, 0) == b""
    assert calls.process_vm_writev(os.getpid(), address, b"HE") == 2
    assert buf.raw == b"HEllo world"
    with pytest.raises(OSError) as e:
        calls.process_vm_readv(os.getpid(), 8, 4)
    assert e.value.errno == errno.EFAULT
