"""``attach``: install a seccomp filter into an already running process.

The target is checked first (it exists, is a user-space process, not a zombie,
not stopped, not traced, not in strict mode, runs x86_64 code, and all its
threads share one filter chain), then one of its threads (the thread-group
leader unless it has exited) is made to run, through :class:`~sysgate.attach.inject.Injection`::

    prctl(PR_SET_NO_NEW_PRIVS, 1)                 # unless already set
    seccomp(SECCOMP_SET_MODE_FILTER, TSYNC [| NEW_LISTENER | TSYNC_ESRCH], &prog)
    close(listener)                               # after sysgate took its own copy (pidfd_getfd)

TSYNC gives every thread of the process the filter (and no_new_privs) at once,
threads blocked in system calls included; the kernel refuses atomically when a
thread's filter chain has diverged, so nothing half-installed is left behind.
"""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field

from ..errors import SysgateError, UnsupportedError
from . import ptrace
from ..arch import syscalls, table
from .inject import ARCHES, Injection, Refused, SeizeError, X86_64
from ..process.install import TsyncError, filter_flags, install_error, program_bytes
from ..kernel import abi, notify
from ..kernel import calls, procfs

PF_KTHREAD = 0x00200000
_FPROG = struct.Struct("=HxxxxxxQ")  # struct sock_fprog on a 64-bit target


@dataclass
class AttachedTarget:
    """A process that now runs under the attached filter.

    ``pidfd`` refers to the process; ``listener_fd`` is sysgate's copy of the
    filter's notification fd (None without a listener); ``group`` is the stored
    filter's group (for the supervisor), ``warnings`` what went less than perfectly,
    ``pending`` notifications already received from the listener during the attach
    (the supervisor must answer them first, e.g. ``add_listener(fd, pending=...)``).
    Both fds are owned by this object: :meth:`close` (or ``with``) releases them.
    """

    pid: int
    pidfd: int
    listener_fd: int | None
    group: str = ""
    warnings: list[str] = field(default_factory=list)
    pending: list[notify.RawNotification] = field(default_factory=list)

    def take_listener(self) -> int:
        """Hand the listener over (e.g. to ``Supervisor.add_listener``): the caller now owns it."""
        if self.listener_fd is None:
            raise SysgateError(f"process {self.pid} was attached without a listener")
        fd, self.listener_fd = self.listener_fd, None
        return fd

    def close(self) -> None:
        if self.listener_fd is not None:
            os.close(self.listener_fd)
            self.listener_fd = None
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __enter__(self) -> "AttachedTarget":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- looking at the target before touching it ---------------------------------
def _stat_fields(path: str) -> list[str]:
    """Fields of /proc/…/stat from field 3 (state) on; the command name may contain spaces."""
    with open(path) as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _describe(pid: int) -> str:
    """``process PID (comm)``, how errors name the target."""
    return f"process {pid} ({_process_name(pid)})"


def _exe_abi(task: str, pid: int) -> str:
    """The ABI of the executable of /proc ``task`` (a thread of ``pid``): its arch name, from the
    ELF class, machine and byte order, or a description of an ELF sysgate has no arch for."""
    with open(f"{task}/exe", "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF" or len(header) < 20:
        raise UnsupportedError(f"process {pid}: its executable is not an ELF file")
    elf_class, big_endian = header[4], header[5] == 2
    machine = int.from_bytes(header[18:20], "big" if big_endian else "little")
    arch = table.by_elf(elf_class, machine, big_endian)
    return arch.name if arch else f"ELF class {elf_class}, machine {machine}"


def permission_hint(pid: int) -> str:
    """Why ptrace is probably refused, and what to do about it."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
    except (OSError, ValueError):
        scope = 0
    if scope >= 3:
        return "Yama ptrace_scope is 3: no process may be traced until reboot"
    if scope == 2:
        return "Yama ptrace_scope is 2: only a process with CAP_SYS_PTRACE may attach (run as root)"
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = -1
    if os.geteuid() != 0 and owner not in (-1, os.geteuid()):
        return f"the target runs as uid {owner} and you are uid {os.geteuid()}: run as root or as that user"
    if scope == 1 and os.geteuid() != 0:
        return ("Yama ptrace_scope is 1: only ancestors may attach; run as root or "
                "set `sysctl kernel.yama.ptrace_scope=0`")
    return ("sysgate lacks CAP_SYS_PTRACE over the target (a container without it, an LSM, or a "
            "non-dumpable target such as a setuid program); run as root on the host")


def _live_threads(pid: int) -> list[int]:
    """Threads of ``pid`` that are not zombies, the thread-group leader first."""
    try:
        tids = sorted((int(t) for t in os.listdir(f"/proc/{pid}/task")), key=lambda t: (t != pid, t))
    except FileNotFoundError:
        raise SysgateError(f"no process with PID {pid}") from None
    live = []
    for tid in tids:
        try:
            if _stat_fields(f"/proc/{pid}/task/{tid}/stat")[0] not in "ZX":
                live.append(tid)
        except (OSError, IndexError):
            continue
    return live


#: Blocking calls the kernel does not restart after a ptrace stop: they fail with EINTR
#: (as after SIGSTOP/SIGCONT, see signal(7)), so a thread sleeping in one is injected last.
NOT_RESTARTED = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "semop", "semtimedop", "rt_sigtimedwait",
                 "io_getevents", "io_pgetevents")


def _injection_thread(pid: int, threads: list[int], arch: str) -> int:
    """The thread to inject into: the first (leader first) not sleeping in a NOT_RESTARTED call."""
    avoid = {syscalls.number(arch, name) for name in NOT_RESTARTED} - {None}
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                current = f.read().split(maxsplit=1)[0]
        except (OSError, IndexError):
            continue
        if not (current.isdigit() and int(current) in avoid):
            return tid
    return threads[0]


def _check_one_filter_chain(name: str, pid: int, threads: list[int]) -> None:
    """TSYNC needs every thread on the same filter chain; refuse early when the counts already differ."""
    counts = {}
    for tid in threads:
        try:
            counts[tid] = int(procfs.read_status(f"/proc/{pid}/task/{tid}/status").get("Seccomp_filters", "0"))
        except (OSError, ValueError):
            continue
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"thread {tid}: {n}" for tid, n in sorted(counts.items()))
        raise SysgateError(f"the threads of {name} have different seccomp filters ({detail}); one filter "
                           "can only be synchronised onto threads that share their filter chain")


def _check_not_traced(name: str, pid: int, tid: int) -> None:
    tracer = int(procfs.read_status(f"/proc/{pid}/task/{tid}/status").get("TracerPid", "0"))
    if tracer:
        raise SysgateError(f"{name} is already traced by process {tracer} ({_process_name(tracer)}); "
                           "a thread can have only one tracer: detach the debugger or strace first")


def check_target(pid: int) -> tuple[int, "X86_64"]:
    """Refuse targets ptrace injection cannot handle; return (thread to inject into, its arch).

    Raises SysgateError with the reason (and a hint) for: no such process,
    sysgate itself, kernel threads, zombies, stopped or already traced
    processes, seccomp strict mode, and unsupported architectures.
    """
    if pid <= 0:
        raise SysgateError(f"invalid PID {pid}")
    if pid == os.getpid():
        raise SysgateError("sysgate cannot attach to itself")
    name = _describe(pid)
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
        status = procfs.read_status(f"/proc/{pid}/status")
    except FileNotFoundError:
        raise SysgateError(f"no process with PID {pid}") from None
    if int(fields[6]) & PF_KTHREAD:
        raise SysgateError(f"{name} is a kernel thread; only user-space processes can be filtered")
    threads = _live_threads(pid)  # the leader may have exited while other threads run on
    if not threads:
        raise SysgateError(f"{name} is a zombie (it has exited and waits for its parent to reap it)")
    tid = _injection_thread(pid, threads, abi.native_arch())
    _check_not_traced(name, pid, tid)
    if _stat_fields(f"/proc/{pid}/task/{tid}/stat")[0] in "Tt":
        raise SysgateError(f"{name} is stopped; resume it first (kill -CONT {pid})")
    if status.get("Seccomp", "0").strip() == str(abi.SECCOMP_MODE_STRICT):
        raise SysgateError(f"{name} is in seccomp strict mode; it cannot install a filter")
    _check_one_filter_chain(name, pid, threads)
    try:
        target_abi = _exe_abi(f"/proc/{pid}/task/{tid}", pid)
    except PermissionError:
        raise SysgateError(f"not permitted to inspect {name}: {permission_hint(pid)}") from None
    except FileNotFoundError:
        raise SysgateError(f"{name} has no executable (exited, or a kernel thread)") from None
    arch = ARCHES.get(target_abi)
    if arch is None or target_abi != abi.native_arch():
        supported = ", ".join(a for a in ARCHES if a == abi.native_arch()) or "none on this machine"
        raise UnsupportedError(f"{name} runs {target_abi} code; sysgate attach supports: {supported}")
    return tid, arch


# --- the injection -------------------------------------------------------------
def _seccomp_failure(result: int, pid: int, flags: int) -> SysgateError:
    """The user-facing error for a failed injected seccomp() that returned ``result``."""
    if result > 0 or -result == errno.ESRCH:  # ESRCH: TSYNC_ESRCH hid the thread
        return TsyncError(result if result > 0 else None,
                          f"it has a seccomp filter that the thread sysgate injected into (in process {pid}) "
                          "lacks; nothing was installed")
    err = install_error(OSError(-result, os.strerror(-result)), flags)
    hint = " (use --no-listener or a policy without notify rules)" if -result == errno.EBUSY else ""
    return SysgateError(f"process {pid}: {err}{hint}")


def attach(pid: int, program, *, listener: bool = True, **options) -> AttachedTarget:
    """Install ``program`` on every thread of process ``pid``.

    ``program`` is a stored :class:`~sysgate.process.filter.Filter` (its flags and group are
    used) or anything :func:`sysgate.process.install.program_bytes` takes (packed BPF,
    ``list[Insn]``, a compiled program, a Policy). ``options`` are further filter
    flags (``log``, ``spec_allow``, ``wait_killable_recv``). With ``listener``
    (needed for notify rules) the filter gets a notification fd, which is copied
    into this process with pidfd_getfd and closed in the target. Raises
    SysgateError when the target cannot be attached to; it then runs on as before
    (except that no_new_privs may already be set on one thread).
    """
    from ..process.filter import Filter

    group = ""
    if isinstance(program, Filter):
        options = {**program.flags, **options}
        group, program = program.group, program.program
    if not listener:
        options.pop("wait_killable_recv", None)
    raw = program_bytes(program)
    flags = filter_flags(tsync=True, new_listener=listener, **options)
    tid, arch = check_target(pid)
    name = _describe(pid)
    try:
        pidfd = calls.pidfd_open(pid)
    except ProcessLookupError:
        raise SysgateError(f"no process with PID {pid}") from None
    target = AttachedTarget(pid, pidfd, None, group)
    fd_source = pidfd
    try:
        if listener and tid != pid:
            fd_source = _thread_pidfd(pid, tid)
        with Injection(pid, tid, arch, name) as inj:
            _install(inj, raw, flags, target, fd_source)
    except SeizeError as exc:
        target.close()
        if exc.errno == errno.EPERM:
            _check_not_traced(name, pid, tid)
            raise SysgateError(f"ptrace is not permitted on {name}: {permission_hint(pid)}") from None
        raise
    except BaseException:
        target.close()
        raise
    finally:
        if fd_source != pidfd:
            os.close(fd_source)
    return target


def _install(inj: Injection, raw: bytes, flags: int, target: AttachedTarget, fd_source: int) -> None:
    """The injected calls: no_new_privs, seccomp(), then take and close the listener."""
    status = procfs.read_status(f"/proc/{inj.pid}/task/{inj.tid}/status")
    chain = _filter_chain(inj, status)
    if chain is not None:
        inj.vet = lambda name, args, ip: _kills(chain, inj.arch.name, name, args, ip)
    if status.get("NoNewPrivs", "0").strip() != "1":
        result = inj.call("prctl", abi.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if result != 0:
            raise SysgateError(f"{inj.name}: prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(-result)}")
    fprog = inj.write_scratch(bytes(_FPROG.size) + raw)
    inj.memory.write(fprog, _FPROG.pack(len(raw) // abi.SOCK_FILTER.size, fprog + _FPROG.size))
    result = inj.call("seccomp", abi.SECCOMP_SET_MODE_FILTER, flags, fprog)
    listener = bool(flags & abi.SECCOMP_FILTER_FLAG_NEW_LISTENER)
    if result < 0 or (result > 0 and not listener):
        raise _seccomp_failure(result, inj.pid, flags)
    _verify_installed(inj, raw, target)
    if chain is not None:
        chain.insert(0, raw)  # from now on our calls pass the new filter too
    if listener:
        target.listener_fd = calls.pidfd_getfd(fd_source, result)
        _close_in_target(inj, result, target)
    target.warnings += inj.free_scratch(target.listener_fd)
    target.pending = inj.pending


def _verify_installed(inj: Injection, raw: bytes, target) -> None:
    """Read back the newest filter: another thread of the target could have rewritten the
    program in its memory between our write and the kernel's copy."""
    try:
        installed = ptrace.seccomp_filters(inj.tid)
    except OSError as exc:
        target.warnings.append(f"could not read back the installed filter ({os.strerror(exc.errno)}); "
                               f"it was not verified")
        return
    if not installed or installed[0] != raw:
        raise SysgateError(f"{inj.name}: the filter the kernel installed is not the one sysgate wrote "
                           f"(the target changed it in memory during the attach); the process now carries "
                           f"an unknown filter — kill it")


def _filter_chain(inj: Injection, status: dict[str, str]) -> list[bytes] | None:
    """The thread's current filters (newest first) to vet our calls with; None if unknown."""
    if status.get("Seccomp", "0").strip() != str(abi.SECCOMP_MODE_FILTER):
        return []
    try:
        return ptrace.seccomp_filters(inj.tid)
    except OSError:  # EACCES: no CAP_SYS_ADMIN, or sysgate is filtered itself
        return None


def _kills(chain: list[bytes], arch: str, name: str, args: tuple[int, ...], ip: int) -> str | None:
    """Why system call ``name(args)`` made at ``ip`` would kill the target under ``chain``, else None."""
    from ..bpf.emulator import emulate

    data = abi.SeccompData(syscalls.number(arch, name), abi.AUDIT_ARCH[arch], ip,
                           tuple(a & 0xFFFFFFFFFFFFFFFF for a in args) + (0,) * (6 - len(args)))
    for program in chain:
        action, _ = emulate(program, data, arch)
        if action & abi.SECCOMP_RET_ACTION_FULL not in _SURVIVABLE:
            return f"its seccomp filter answers {name}() with {abi.action_name(action)}"
    return None


_SURVIVABLE = {abi.SECCOMP_RET_TRAP, abi.SECCOMP_RET_ERRNO, abi.SECCOMP_RET_USER_NOTIF, abi.SECCOMP_RET_TRACE,
               abi.SECCOMP_RET_LOG, abi.SECCOMP_RET_ALLOW}


def _thread_pidfd(pid: int, tid: int) -> int:
    """A pidfd to take fds from thread ``tid`` when the thread-group leader (and its fd table) is gone."""
    try:
        return calls.pidfd_open(tid, calls.PIDFD_THREAD)
    except OSError as exc:
        raise UnsupportedError(f"process {pid}: its thread-group leader has exited; taking the listener "
                               f"from thread {tid} needs PIDFD_THREAD (Linux 6.9+): {exc.strerror}") from None


def _close_in_target(inj: Injection, fd: int, target: AttachedTarget) -> None:
    """Close the target's own copy of the listener (else it could answer its own notifications).

    The new filter already applies to this close(): a notified close is let through, one
    the filter refuses leaves the copy in place (with a warning), and so does one that would
    kill the target (checked beforehand with the BPF emulator).
    """
    try:
        result = inj.call("close", fd, listener=target.listener_fd)
    except Refused as exc:
        target.warnings.append(f"{exc}; the target keeps a copy of the listener as fd {fd}")
        return
    if result != 0:
        target.warnings.append(f"the filter refused close({fd}) in the target ({os.strerror(-result)}); "
                               f"the target keeps a copy of the listener as fd {fd}")
