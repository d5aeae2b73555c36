"""Install a seccomp filter on the calling process (or all its threads with TSYNC).

:func:`install` accepts anything that denotes a filter: a ``list[Insn]``, packed
bytes, a compiled ``Program`` or a ``Policy`` (compiled for the running
architecture). :func:`filter_flags` turns keyword options into the kernel's flag
bits, checking that the running kernel knows them. A TSYNC failure raises
:class:`TsyncError` carrying the TID of the thread that could not be
synchronised; :func:`install_tsync_retry` waits for such a thread to go away.
"""
from __future__ import annotations

import errno
import os
import time

from ..errors import SysgateError, UnsupportedError
from ..kernel import abi
from ..kernel import calls, procfs

#: Oldest kernel that knows each filter flag (for error messages).
FLAG_MIN_KERNEL = {
    "TSYNC": "3.17", "LOG": "4.14", "SPEC_ALLOW": "4.17", "NEW_LISTENER": "5.0",
    "TSYNC_ESRCH": "5.7", "WAIT_KILLABLE_RECV": "5.19",
}


class TsyncError(SysgateError):
    """TSYNC could not move every thread onto the new filter.

    ``tid`` is the thread that blocked it (None when TSYNC_ESRCH hid it);
    ``reason`` explains what /proc said about that thread.
    """

    def __init__(self, tid: int | None, reason: str = ""):
        self.tid, self.reason = tid, reason
        who = f"thread {tid}" if tid else "a thread (TID not reported with TSYNC_ESRCH)"
        super().__init__(f"TSYNC failed: {who} cannot be synchronised" + (f": {reason}" if reason else ""))


class InstallError(SysgateError):
    """The kernel refused the filter; ``errno`` is the kernel's error (0 if not from the kernel)."""

    def __init__(self, message: str, errno: int = 0):
        self.errno = errno
        super().__init__(message)


def program_bytes(program_or_policy, arch: str | None = None) -> bytes:
    """Packed BPF for a ``list[Insn]``, bytes, a compiled ``Program`` or a ``Policy``.

    A ``Policy`` is compiled with :func:`sysgate.compiler.compile_policy` for its own
    architectures when they include ``arch`` (default: the running one), else for ``arch`` only.
    """
    obj = program_or_policy
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        if not raw or len(raw) % abi.SOCK_FILTER.size:
            raise InstallError(f"a BPF program is a non-empty multiple of 8 bytes, not {len(raw)} bytes")
        return raw
    if hasattr(obj, "pack") and hasattr(obj, "insns"):  # compiler.Program
        return obj.pack()
    from ..policy.model import Policy

    if isinstance(obj, Policy):
        arch = arch or abi.native_arch()
        return compile_for(obj, obj.arches if arch in obj.arches else [arch])
    from collections.abc import Iterable     # here: the collections package costs a launch ~1 ms

    if isinstance(obj, Iterable):
        from ..bpf import insn as bpf

        insns = list(obj)
        if not insns or not all(isinstance(i, bpf.Insn) for i in insns):
            raise InstallError("a BPF program must be a non-empty list of Insn")
        return bpf.pack(insns)
    raise InstallError(f"cannot install a {type(obj).__name__}: expected a policy, a program or BPF bytes")


def compile_for(policy, arches: list[str]) -> bytes:
    """Packed BPF of ``policy`` compiled for ``arches`` (the compiler is imported on first use)."""
    from ..compiler import compile_policy

    return compile_policy(policy, arches=list(arches)).pack()


def filter_flags(*, tsync: bool = False, log: bool = False, spec_allow: bool = False,
                 new_listener: bool = False, tsync_esrch: bool = False,
                 wait_killable_recv: bool = False) -> int:
    """The SECCOMP_FILTER_FLAG_* bits for these options, checked against the running kernel.

    TSYNC together with NEW_LISTENER needs TSYNC_ESRCH (the kernel cannot return both a
    listener fd and a TID), so it is added automatically. WAIT_KILLABLE_RECV only makes
    sense with a listener and raises ``SysgateError`` without ``new_listener``.
    Raises ``UnsupportedError`` naming the kernel version a flag needs.
    """
    if wait_killable_recv and not new_listener:
        raise SysgateError("WAIT_KILLABLE_RECV applies to a listener: use it with new_listener")
    if tsync and new_listener:
        tsync_esrch = True
    wanted = {"TSYNC": tsync, "LOG": log, "SPEC_ALLOW": spec_allow, "NEW_LISTENER": new_listener,
              "TSYNC_ESRCH": tsync_esrch, "WAIT_KILLABLE_RECV": wait_killable_recv}
    flags = 0
    names = [name for name, on in wanted.items() if on]
    if names:
        from .features import features

        feats = features()
        for name in names:
            if not feats.has_flag(name):
                raise UnsupportedError(f"{name} needs Linux {FLAG_MIN_KERNEL[name]} "
                                       f"(this kernel is {feats.kernel})")
            flags |= abi.FILTER_FLAGS[name]
    return flags


def notifies(raw: bytes) -> bool:
    """True when the (native-order) program may return SECCOMP_RET_USER_NOTIF (:func:`.bpf.insn.may_notify`):
    then it is installed with a listener."""
    from ..bpf import insn as bpf   # here, not at the top: it imports typing, which a launch with bytes never needs

    return bpf.may_notify(bpf.unpack(raw))


def _seccomp_summary(tid: int) -> str:
    """What /proc says about a thread's seccomp state, e.g. 'filter mode, 3 filters'."""
    try:
        fields = procfs.read_status(f"/proc/self/task/{tid}/status")
    except OSError:
        return "gone"
    mode = {"0": "no seccomp", "1": "strict mode", "2": "filter mode"}.get(fields.get("Seccomp", ""), "unknown mode")
    count = fields.get("Seccomp_filters")
    return f"{mode}, {count} filters" if count is not None else mode


def explain_tsync_failure(tid: int) -> str:
    """Why the kernel refused to synchronise thread ``tid`` (read from /proc)."""
    theirs = _seccomp_summary(tid)
    if theirs == "gone":
        return "it has exited since (retrying should succeed)"
    ours = _seccomp_summary(calls.gettid())
    return (f"it is in {theirs} while the calling thread is in {ours}; a thread can only be moved onto "
            f"a filter that extends its own chain, so that thread installed a filter of its own "
            f"(or is changing its seccomp state right now)")


def install(program_or_policy, *, tsync: bool = False, log: bool = False, spec_allow: bool = False,
            new_listener: bool = False, tsync_esrch: bool = False, wait_killable_recv: bool = False,
            no_new_privs: bool = True) -> int | None:
    """Install a filter on the calling thread (every thread with ``tsync``).

    Returns the listener fd (O_CLOEXEC) when ``new_listener``, else None.
    ``no_new_privs`` sets PR_SET_NO_NEW_PRIVS first, which the kernel requires unless
    the caller has CAP_SYS_ADMIN. TSYNC with NEW_LISTENER adds TSYNC_ESRCH by itself
    (see :func:`filter_flags`). Raises :class:`TsyncError` when a thread cannot be
    synchronised, ``UnsupportedError`` for flags this kernel lacks and
    :class:`InstallError` when the kernel rejects the program.
    """
    raw = program_bytes(program_or_policy)
    flags = _install_flags(program_or_policy, tsync=tsync, log=log, spec_allow=spec_allow,
                           new_listener=new_listener, tsync_esrch=tsync_esrch, wait_killable_recv=wait_killable_recv)
    return install_raw(raw, flags, no_new_privs=no_new_privs)


def _install_flags(program_or_policy, **options) -> int:
    """:func:`filter_flags` for ``options`` plus the flags a policy's ``flags:`` setting asks for."""
    for name in policy_flag_options(program_or_policy):
        options[name] = True
    return filter_flags(**options)


def policy_flag_options(obj) -> list[str]:
    """The keyword options (``log``, ``spec_allow``…) a policy's ``flags:`` setting asks for."""
    from ..policy.model import Policy

    names = [str(f).lower() for f in obj.flags] if isinstance(obj, Policy) else []
    known = {name.lower() for name in abi.FILTER_FLAGS}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SysgateError(f"unknown filter flag(s) in the policy: {', '.join(unknown)}")
    return names


def install_raw(raw: bytes, flags: int, *, no_new_privs: bool = True) -> int | None:
    """Install packed BPF with already-checked ``flags``; see :func:`install` for the results."""
    if no_new_privs:
        calls.set_no_new_privs()
    try:
        ret = calls.seccomp_set_filter(raw, flags)
    except OSError as exc:
        raise install_error(exc, flags) from None
    if flags & abi.SECCOMP_FILTER_FLAG_TSYNC and not flags & abi.SECCOMP_FILTER_FLAG_NEW_LISTENER and ret > 0:
        raise TsyncError(ret, explain_tsync_failure(ret))
    return ret if flags & abi.SECCOMP_FILTER_FLAG_NEW_LISTENER else None


def install_error(exc: OSError, flags: int) -> SysgateError:
    """A user-facing error for a failed seccomp(SET_MODE_FILTER) with ``flags``."""
    code = exc.errno
    if code == errno.ESRCH and flags & abi.SECCOMP_FILTER_FLAG_TSYNC_ESRCH:
        return TsyncError(None, "TSYNC_ESRCH hides which thread; retry without new_listener to learn its TID")
    messages = {
        errno.EACCES: "the kernel requires no_new_privs or CAP_SYS_ADMIN to install a filter",
        errno.EBUSY: "an inherited filter already has a listener; the kernel allows one per filter chain",
        errno.ENOMEM: "the filter chain would exceed the kernel's 32768-instruction limit (or memory ran out)",
        errno.EINVAL: "the kernel rejected the BPF program or the flags (run `sysgate check` and the BPF checker)",
        errno.EFAULT: "bad program address",
    }
    return InstallError(f"cannot install the filter: {messages.get(code, os.strerror(code))}", code)


def install_tsync_retry(program_or_policy, attempts: int = 50, delay: float = 0.01, **options) -> int | None:
    """:func:`install` with ``tsync=True``, retrying while a thread cannot be synchronised.

    TSYNC fails when another thread's filter chain is not an ancestor of the caller's:
    that thread installed a filter of its own, or is in the middle of doing so. Such a
    thread may still exit (it then leaves /proc/self/task) or the caller may wait for
    it to finish; each failed attempt sleeps ``delay`` seconds (doubling, at most 1 s)
    and tries again. After ``attempts`` failures the last :class:`TsyncError` is raised,
    explaining the thread's seccomp state as /proc reports it. EAGAIN/EINTR (a thread
    in execve holds the credential lock) are retried the same way.
    """
    options["tsync"] = True
    nnp = options.pop("no_new_privs", True)
    raw = program_bytes(program_or_policy)
    flags = _install_flags(program_or_policy, **options)
    last: SysgateError | None = None
    for attempt in range(max(1, attempts)):
        try:
            return install_raw(raw, flags, no_new_privs=nnp)
        except TsyncError as exc:
            last = exc
            if exc.tid:
                _wait_thread_change(exc.tid, delay)
            else:
                time.sleep(delay)
        except InstallError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                raise
            last = exc
            time.sleep(delay)
        delay = min(delay * 2, 1.0)
    assert last is not None
    if isinstance(last, TsyncError) and last.tid:
        last = TsyncError(last.tid, explain_tsync_failure(last.tid) + f" (gave up after {attempts} attempts)")
    raise last


def _wait_thread_change(tid: int, timeout: float) -> None:
    """Sleep up to ``timeout`` until thread ``tid`` exits or its seccomp state changes."""
    before = _seccomp_summary(tid)
    deadline = time.monotonic() + timeout
    step = min(timeout, 0.001)
    while time.monotonic() < deadline:
        if _seccomp_summary(tid) != before:
            return
        time.sleep(step)
