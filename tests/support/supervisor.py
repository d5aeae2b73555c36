"""Helpers shared by the supervisor tests: a launched C target (``Run``), a notify-getppid filter, fd counting."""
from __future__ import annotations

import os

from sysgate.process import launch
from sysgate.arch import syscalls
from sysgate.bpf.insn import BPF_JEQ, BPF_JMP, BPF_K, jump, ld_abs, ret
from sysgate.kernel import abi

GETPPID = syscalls.number(None, "getppid")


def notify_getppid() -> list:
    """Native arch only; getppid -> USER_NOTIF; everything else allowed."""
    return [ld_abs(abi.OFFSET_ARCH), jump(BPF_JMP | BPF_JEQ | BPF_K, abi.AUDIT_ARCH[abi.native_arch()], 1, 0),
            ret(abi.SECCOMP_RET_KILL_PROCESS),
            ld_abs(abi.OFFSET_NR), jump(BPF_JMP | BPF_JEQ | BPF_K, GETPPID, 0, 1),
            ret(abi.SECCOMP_RET_USER_NOTIF), ret(abi.SECCOMP_RET_ALLOW)]


def notify_calls(*names: str) -> list:
    """Native arch only; the syscalls ``names`` -> USER_NOTIF; everything else allowed."""
    checks = []
    for name in names:
        checks += [jump(BPF_JMP | BPF_JEQ | BPF_K, syscalls.number(None, name), 0, 1), ret(abi.SECCOMP_RET_USER_NOTIF)]
    return [ld_abs(abi.OFFSET_ARCH), jump(BPF_JMP | BPF_JEQ | BPF_K, abi.AUDIT_ARCH[abi.native_arch()], 1, 0),
            ret(abi.SECCOMP_RET_KILL_PROCESS), ld_abs(abi.OFFSET_NR), *checks, ret(abi.SECCOMP_RET_ALLOW)]


class Run:
    """A launched C target whose stdout is a pipe."""

    def __init__(self, binary: str, *args, stdin=None, program=None, **spawn_options):
        r, w = os.pipe()
        try:
            self.target = launch.spawn([binary, *map(str, args)], program or notify_getppid(), stdout=w,
                                       stdin=stdin, **spawn_options)
        finally:
            os.close(w)
        self.out = r

    def readline(self) -> str:
        """One line of output (blocking; the tests bound everything else with timeouts)."""
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self.out, 1)
            if not chunk:
                break
            data += chunk
        return data.decode()

    def output(self) -> str:
        data = b""
        while chunk := os.read(self.out, 65536):
            data += chunk
        return data.decode()

    def finish(self, timeout: float = 10) -> int | None:
        """Close our end and release the target (killing it when still running)."""
        os.close(self.out)
        code = self.target.wait(timeout)
        if code is None:
            self.target.kill()
            code = self.target.wait()
        self.target.close()
        return code


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))
