"""Hand-written seccomp filters for the install, launch and agent tests, and a forked child to
install them in (a filter is permanent: the test process itself must stay unfiltered)."""
from __future__ import annotations

from sysgate.arch.syscalls import number
from sysgate.bpf.insn import BPF_JEQ, BPF_JMP, BPF_K, jump, ld_abs, ret
from sysgate.kernel import abi
from sysgate.process.forked import call_in_child


def nr(name: str) -> int:
    """The native number of syscall ``name``."""
    return number(None, name)


def only(nr: int, action: int) -> list:
    """Return ``action`` for syscall ``nr``, ALLOW for everything else."""
    return [ld_abs(abi.OFFSET_NR), jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1), ret(action),
            ret(abi.SECCOMP_RET_ALLOW)]


def deny_mkdir(action: int) -> list:
    """ALLOW everything but mkdir/mkdirat, which get ``action``."""
    return [ld_abs(abi.OFFSET_NR), jump(BPF_JMP | BPF_JEQ | BPF_K, nr("mkdir"), 1, 0),
            jump(BPF_JMP | BPF_JEQ | BPF_K, nr("mkdirat"), 0, 1), ret(action), ret(abi.SECCOMP_RET_ALLOW)]


def notify_mkdir() -> list:
    """mkdir/mkdirat notified, everything else allowed."""
    return deny_mkdir(abi.SECCOMP_RET_USER_NOTIF)


def run_in_child(fn):
    """Run ``fn`` in a forked child. Returns (exit status as in subprocess, fn's JSON result);
    an exception is reported to the test as its name, message and ``tid``."""
    return call_in_child(fn, on_error=lambda exc: {"exception": type(exc).__name__, "message": str(exc),
                                                    "tid": getattr(exc, "tid", "-")})
