"""Ask the running kernel what a seccomp filter does: a test helper.

``kernel_verdict(program, data)`` forks a child, installs ``program`` in a fresh
thread of it (filters are per-thread, so several programs share one child),
makes the syscall ``data.nr(*data.args)`` through libc's ``syscall()`` and
reports the outcome as a :class:`Verdict`:

* ``errno N``     the call failed with errno N (ERRNO(N), capped at 4095; ENOSYS
                  for TRACE without a tracer, USER_NOTIF without a listener, or an
                  allowed call of an unassigned syscall number)
* ``returned R``  the call returned R >= 0 (ERRNO(0), or an allowed call that succeeded)
* ``trap N``      SIGSYS with si_code SYS_SECCOMP and si_errno N (TRAP(N))
* ``killed_thread`` / ``killed_process``  KILL_THREAD / KILL_PROCESS (or an unknown action)
* ``rejected N``  seccomp(2) refused the program with errno N (EINVAL: the checker said no)

The kernel fills ``seccomp_data.arch`` and ``instruction_pointer`` itself: build
the data with :func:`probe_data` so an emulator sees the same words. Every
installed program is preceded by :data:`GUARD`, which lets every syscall except
the probe (told apart by its instruction pointer) through, so the child can
still report; it clears A, so ``program`` starts as it would alone. ALLOWed
probes really run: use unassigned syscall numbers (>= 1000, below 0x40000000)
or harmless calls.

    >>> kernel_verdict(assemble("ret #ERRNO(5)"), probe_data(1000))
    Verdict(kind='errno', value=5)
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import select
import signal
import threading
from dataclasses import dataclass, field
from functools import cache
from typing import Iterable, Sequence

from sysgate.bpf.disasm import as_program
from sysgate.bpf.insn import BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_IMM, Insn, jump, ld_abs, pack, ret, stmt
from sysgate.kernel import abi
from sysgate.kernel import calls

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
PR_SET_DUMPABLE = 4
SYS_SECCOMP = 1
#: An unassigned syscall number used to discover the probe's instruction pointer.
DISCOVERY_NR = 0xF423F


@dataclass(frozen=True)
class Verdict:
    kind: str
    value: int = 0
    #: si_call_addr of a trap (not compared).
    ip: int = field(default=0, compare=False, repr=False)


ENOSYS = Verdict("errno", errno.ENOSYS)


def expected_verdict(action: int, allowed: Verdict = ENOSYS) -> Verdict:
    """What the kernel does for filter return value ``action``; ``allowed`` is the
    outcome of the syscall itself (default: ENOSYS, an unassigned number)."""
    base, data = action & abi.SECCOMP_RET_ACTION_FULL, action & abi.SECCOMP_RET_DATA
    if base == abi.SECCOMP_RET_ERRNO:
        return Verdict("errno", min(data, 4095)) if data else Verdict("returned", 0)
    if base == abi.SECCOMP_RET_TRAP:
        return Verdict("trap", data)
    if base in (abi.SECCOMP_RET_TRACE, abi.SECCOMP_RET_USER_NOTIF):
        return ENOSYS
    if base in (abi.SECCOMP_RET_ALLOW, abi.SECCOMP_RET_LOG):
        return allowed
    if base == abi.SECCOMP_RET_KILL_THREAD:
        return Verdict("killed_thread", signal.SIGSYS)
    return Verdict("killed_process", signal.SIGSYS)


# --------------------------------------------------------------------------- the probe
class _SigInfo(ctypes.Structure):
    _fields_ = [("signo", ctypes.c_int), ("errno", ctypes.c_int), ("code", ctypes.c_int),
                ("_pad", ctypes.c_int), ("call_addr", ctypes.c_void_p), ("syscall", ctypes.c_int),
                ("arch", ctypes.c_uint)]


_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(_SigInfo), ctypes.c_void_p)


class _SigAction(ctypes.Structure):  # glibc's struct sigaction
    _fields_ = [("handler", _HANDLER), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


_traps: dict[int, tuple[int, int]] = {}  # thread ident -> (si_errno, si_call_addr)


def _on_sigsys(signo, info, _context):
    if info.contents.code == SYS_SECCOMP:
        _traps[threading.get_ident()] = (info.contents.errno, info.contents.call_addr or 0)


_handler = _HANDLER(_on_sigsys)


def _catch_sigsys() -> None:
    action = _SigAction(_handler, (ctypes.c_ulong * 16)(), 4)  # SA_SIGINFO
    if _libc.sigaction(signal.SIGSYS, ctypes.byref(action), None):
        raise OSError(ctypes.get_errno(), "sigaction(SIGSYS)")


def _probe(nr: int, args: Sequence[int]) -> list:
    ident = threading.get_ident()
    _traps.pop(ident, None)
    r = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    err = ctypes.get_errno()
    trap = _traps.pop(ident, None)
    if trap:
        return ["trap", trap[0], trap[1]]
    return ["errno", err, 0] if r == -1 else ["returned", r, 0]


# --------------------------------------------------------------------------- guard
def _guard(ip: int) -> list[Insn]:
    lo, hi = (abi.OFFSET_IP + 4, abi.OFFSET_IP) if abi.is_big_endian(abi.native_arch()) else \
        (abi.OFFSET_IP, abi.OFFSET_IP + 4)
    return [ld_abs(lo), jump(BPF_JMP | BPF_JEQ | BPF_K, ip & 0xFFFFFFFF, 0, 2),
            ld_abs(hi), jump(BPF_JMP | BPF_JEQ | BPF_K, ip >> 32, 1, 0),
            ret(abi.SECCOMP_RET_ALLOW), stmt(BPF_LD | BPF_IMM, 0)]


@cache
def probe_ip() -> int:
    """seccomp_data.instruction_pointer of every probe (the same in all forked children)."""
    prog = [ld_abs(abi.OFFSET_NR), jump(BPF_JMP | BPF_JEQ | BPF_K, DISCOVERY_NR, 0, 1),
            ret(abi.SECCOMP_RET_TRAP), ret(abi.SECCOMP_RET_ALLOW)]
    (verdict,), = kernel_batch([(prog, [abi.SeccompData(DISCOVERY_NR, 0)])], guard=False)
    if verdict.kind != "trap" or not verdict.ip:
        raise RuntimeError(f"could not find the probe's instruction pointer: {verdict}")
    return verdict.ip


def probe_data(nr: int, args: Sequence[int] = ()) -> abi.SeccompData:
    """The seccomp_data the kernel builds for a probe of syscall ``nr`` with ``args``."""
    args = tuple(a & 0xFFFFFFFFFFFFFFFF for a in args) + (0,) * (6 - len(args))
    return abi.SeccompData(_signed32(nr), abi.AUDIT_ARCH[abi.native_arch()], probe_ip(), args)


def _signed32(nr: int) -> int:
    nr &= 0xFFFFFFFF
    return nr - (1 << 32) if nr & 0x80000000 else nr


# --------------------------------------------------------------------------- running
def kernel_verdict(program, data: abi.SeccompData) -> Verdict:
    """The kernel's verdict on one probe (``program``: bytes or instructions)."""
    return kernel_verdicts(program, [data])[0]


def kernel_verdicts(program, datas: Iterable[abi.SeccompData], guard: bool = True) -> list[Verdict]:
    return kernel_batch([(program, list(datas))], guard)[0]


def kernel_install_errno(program, guard: bool = True) -> int:
    """0 if seccomp(2) accepts ``program`` (behind the guard), else its errno."""
    return kernel_install_errnos([program], guard)[0]


def kernel_install_errnos(programs: Iterable, guard: bool = True) -> list[int]:
    """:func:`kernel_install_errno` for many programs, in one child. Without ``guard``
    an accepted program must allow the child's own syscalls."""
    return _run([(p, []) for p in programs], guard)[1]


def kernel_batch(cases: Sequence[tuple[object, Sequence[abi.SeccompData]]], guard: bool = True,
                 timeout: float = 60) -> list[list[Verdict]]:
    """Verdicts for many (program, [data…]) cases, all in one child when nothing kills it.

    Without ``guard`` the program is installed as is: it must then allow the
    syscalls the child makes to report (write, futex, exit…)."""
    return _run(cases, guard, timeout)[0]


def _run(cases, guard: bool, timeout: float = 60):
    expected_ip = probe_ip() if guard else None
    prefix = _guard(expected_ip) if guard else []
    work = []
    for program, datas in cases:
        probes = []
        for d in datas:
            if guard and (d.instruction_pointer != expected_ip or d.arch != abi.AUDIT_ARCH[abi.native_arch()]):
                raise ValueError("build the data with probe_data(): the kernel fills in arch and ip itself")
            probes.append((_signed32(d.nr), tuple(d.args) + (0,) * (6 - len(d.args))))
        work.append((pack(prefix + as_program(program)), probes))
    results = [[None] * len(probes) for _, probes in work]
    installed = [None] * len(work)
    position = (0, 0)
    while position is not None:
        position = _fork(work, position, results, installed, timeout)
    return results, installed


def _fork(work, position, results, installed, timeout):
    """Run ``work`` from ``position`` in a child; returns where to resume if it was killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            _child(work, position, w)
        except BaseException as exc:  # reported to the parent
            os.write(w, (json.dumps(["E", f"{type(exc).__name__}: {exc}"]) + "\n").encode())
            code = 3
        os._exit(code)
    os.close(w)
    current, buf = None, b""
    try:
        while True:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError(f"kernel probe child stuck at case/probe {current}")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                current = _record(json.loads(line), results, installed, current)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and current is not None:
        ci, j = current
        results[ci][j] = Verdict("killed_process", os.WTERMSIG(status))
        return (ci, j + 1) if j + 1 < len(results[ci]) else (ci + 1, 0) if ci + 1 < len(results) else None
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"kernel probe child failed with status {status}")
    return None


def _record(msg: list, results, installed, current):
    kind = msg[0]
    if kind == "E":
        raise RuntimeError(f"kernel probe child: {msg[1]}")
    if kind == "I":
        installed[msg[1]] = 0
    elif kind == "R":
        installed[msg[1]] = msg[2]
        results[msg[1]] = [Verdict("rejected", msg[2])] * len(results[msg[1]])
    elif kind == "S":
        return (msg[1], msg[2])
    elif kind == "V":
        results[msg[1]][msg[2]] = Verdict(msg[3], msg[4], msg[5])
    elif kind == "K":
        results[msg[1]][msg[2]] = Verdict("killed_thread", int(signal.SIGSYS))
    return current


def _child(work, position, w: int) -> None:
    _catch_sigsys()
    calls.set_no_new_privs()
    calls.prctl(PR_SET_DUMPABLE, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ci, j = position
    while ci < len(work):
        while j is not None:
            j = _thread(ci, *work[ci], j, w)
        ci, j = ci + 1, 0


def _emit(w: int, *msg) -> None:
    os.write(w, (json.dumps(msg) + "\n").encode())


def _thread(ci: int, program: bytes, probes, start: int, w: int):
    """Install ``program`` in a new thread and run probes from ``start``; returns the probe
    to resume at if the thread was killed, else None."""
    state = {"tid": None, "next": start}
    done = threading.Event()

    def body():
        state["tid"] = threading.get_native_id()
        try:
            calls.seccomp_set_filter(program)
        except OSError as exc:
            _emit(w, "R", ci, exc.errno)
            return done.set()
        _emit(w, "I", ci)
        for j in range(start, len(probes)):
            state["next"] = j + 1
            _emit(w, "S", ci, j)
            _emit(w, "V", ci, j, *_probe(*probes[j]))
        done.set()

    threading.Thread(target=body, daemon=True).start()
    while not done.wait(0.001):
        tid = state["tid"]
        if tid is not None and not os.path.exists(f"/proc/self/task/{tid}"):
            if done.is_set():
                break
            _emit(w, "K", ci, state["next"] - 1)
            return state["next"] if state["next"] < len(probes) else None
    return None
