"""Launch a command under a filter: fork, install in the child only, then execve.

The listener reaches the parent without any help from the filtered side::

    child                                   parent
    -----                                   ------
    set up stdio, cwd, signals, NNP
    N = lowest free fd; write N to status
    seccomp(NEW_LISTENER) -> fd N           pidfd_getfd(pidfd, N) until it is a listener
    read(go)   [may be notified]            CONTINUE the launcher's notifications; write go
    execve     [may be notified]            CONTINUE ...
    (status pipe closes on exec)            status EOF: the new image runs

Once the status pipe has closed, every notification belongs to the new image:
one already received is kept in ``Target.pending`` for the supervisor; the rest stay
queued on the listener. The launcher never writes to a pipe after the install,
except to report a failed execve (then its own notifications are still answered).
A filter must let ``read`` and ``execve`` through (allow, log or notify) or the
launcher dies before the command starts.
"""
from __future__ import annotations

import ctypes
import errno
import os
import select
try:        # the C module signal.py wraps in enums: importing enum costs a launch about 3 ms, and ints do here
    import _signal as signal
except ImportError:     # pragma: no cover (an interpreter without it)
    import signal
import struct

from ..errors import SysgateError
from .install import filter_flags, install_error, notifies, policy_flag_options, program_bytes
from ..kernel import abi
from ..kernel import calls

# Start-up: ``sysgate run`` of a filter without notifications imports neither the listener's
# module (kernel.notify), nor Landlock's, nor shutil/subprocess/dataclasses (see
# benchmarks/startup_compile.py); each is imported where it is used.

#: subprocess.DEVNULL (importing subprocess costs a start-up more than the rest of this module)
DEVNULL = -3

_libc = ctypes.CDLL(None, use_errno=True)
_MSG = struct.Struct("=iii")            # kind, stage/value, errno
_MSG_LISTENER_FD, _MSG_SETUP_FAILED, _MSG_EXEC_FAILED = 1, 2, 3
_STAGES = ("stdio", "cwd", "pass_fds", "signals", "no_new_privs", "landlock", "seccomp")


class LaunchError(SysgateError):
    """The command could not be started; ``exit_code`` follows env(1): 127 not found, 126 not runnable."""

    def __init__(self, message: str, exit_code: int = 127, errno: int = 0):
        self.exit_code, self.errno = exit_code, errno
        super().__init__(message)


class Target:
    """A launched, filtered process.

    ``listener`` is the seccomp listener fd in this process (None when the filter never
    notifies); ``pending`` holds notifications of the new image received during the
    launch, which the supervisor must answer before reading the listener. ``group`` names
    the stored filter the target was launched from (targets of one group share handlers).
    (A plain class, not a dataclass: importing dataclasses costs ``sysgate run`` a third of its start-up.)
    """

    def __init__(self, pid: int, pidfd: int, listener: int | None, argv: list[str],
                 pending: list | None = None, group: str | None = None, filter: object | None = None,
                 returncode: int | None = None):
        self.pid, self.pidfd, self.listener, self.argv = pid, pidfd, listener, argv
        self.pending = [] if pending is None else pending     # kernel.notify.RawNotification
        self.group, self.filter, self.returncode = group, filter, returncode

    def __repr__(self) -> str:
        return (f"Target(pid={self.pid!r}, pidfd={self.pidfd!r}, listener={self.listener!r}, argv={self.argv!r}, "
                f"pending={self.pending!r}, group={self.group!r}, filter={self.filter!r}, "
                f"returncode={self.returncode!r})")

    def poll(self) -> int | None:
        """The return code if the target has exited (reaping it), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for exit: the exit code, or ``-N`` if killed by signal N (like subprocess).

        With a listener, someone must answer its notifications meanwhile. Returns None
        when ``timeout`` (seconds) expires first.
        """
        if self.returncode is None:
            if timeout is not None and not select.select([self.pidfd], [], [], timeout)[0]:
                return None
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` through the pidfd (never hits a recycled pid); no-op once exited."""
        if self.returncode is None and self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Close the listener and the pidfd (notified syscalls still waiting fail with ENOSYS)."""
        for name in ("listener", "pidfd"):
            fd = getattr(self, name)
            if fd is not None and fd >= 0:
                os.close(fd)
                setattr(self, name, None if name == "listener" else -1)

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        """Kill the target if still running, reap it and release the fds."""
        if self.poll() is None:
            self.kill()
            if self.listener is not None:
                os.close(self.listener)
                self.listener = None
            self.wait()
        self.close()


def exit_status(returncode: int) -> int:
    """A shell-style status: the exit code, or 128+N for death by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def spawn(argv, filter, *, env=None, cwd=None, stdin=None, stdout=None, stderr=None, pass_fds=(),
          sigmask=None, listener: bool | None = None, log: bool = False, spec_allow: bool = False,
          wait_killable_recv: bool = False, group: str | None = None, landlock=None) -> Target:
    """Run ``argv`` with ``filter`` installed in the child only; returns a :class:`Target`.
    The one launcher (:meth:`sysgate.process.filter.Filter.spawn` calls it).

    ``filter`` is a policy (its ``flags:`` log/spec_allow/wait_killable_recv apply too), a
    compiled program, a ``list[Insn]``, BPF bytes or a stored :class:`sysgate.process.filter.Filter`
    (whose flags apply too, and whose group is the target's unless ``group`` is given;
    ``Target.filter`` is then that Filter). ``argv[0]`` is
    searched in ``PATH`` (of ``env`` when given). ``stdin``/``stdout``/``stderr`` are fds or
    objects with ``fileno()``; None inherits ours. ``pass_fds`` stay open in the target.
    ``sigmask`` is the target's signal mask (default: ours). ``listener`` forces (or
    suppresses) NEW_LISTENER; by default a listener is created when the program can
    return USER_NOTIF. ``landlock`` (a :class:`sysgate.sandbox.landlock.LandlockPlan`) is enforced in the
    child after no_new_privs and before the filter. Raises :class:`LaunchError` when the
    command cannot be run.
    """
    stored = filter if _is_stored_filter(filter) else None
    if stored is not None:
        raw, wanted = stored.program, {name for name, on in stored.flags.items() if on}
        group = stored.group if group is None else group
    else:
        raw, wanted = program_bytes(filter), set(policy_flag_options(filter))
    if listener is None:
        listener = notifies(raw)
    flags = filter_flags(log=log or "log" in wanted, spec_allow=spec_allow or "spec_allow" in wanted,
                         new_listener=listener,
                         wait_killable_recv=wait_killable_recv or "wait_killable_recv" in wanted)
    return _launch(argv, raw, flags, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                   pass_fds=pass_fds, sigmask=sigmask, group=group, filter=stored, landlock=landlock)


def _is_stored_filter(obj) -> bool:
    """Is ``obj`` a :class:`sysgate.process.filter.Filter`? (Told by its shape: filter.py imports
    this module, so this one does not import it.)"""
    return isinstance(getattr(obj, "program", None), bytes) and isinstance(getattr(obj, "flags", None), dict)


def _launch(argv, raw: bytes, flags: int, *, env=None, cwd=None, stdin=None, stdout=None, stderr=None,
            pass_fds=(), sigmask=None, group: str | None = None, filter=None, landlock=None) -> Target:
    """:func:`spawn` with packed BPF and checked SECCOMP_FILTER_FLAG_* ``flags``."""
    argv = [os.fsdecode(a) for a in argv]
    if not argv:
        raise LaunchError("no command given", 127)
    plan = _ChildPlan(argv, raw, flags, env, cwd, (stdin, stdout, stderr), pass_fds, sigmask)
    if landlock is not None:
        exe = os.path.join(os.fsdecode(plan.cwd or b"."), os.fsdecode(plan.path))   # as the child's execve sees it
        try:
            from ..kernel.landlock import restrict_self

            plan.restrict_self = restrict_self          # imported before the fork: the child only makes calls
            plan.ruleset = landlock.ruleset(exe)
        except OSError as exc:
            for fd in plan.child_only_fds():
                os.close(fd)
            raise LaunchError(f"cannot run {argv[0]!r}: Landlock ruleset: {exc.strerror}", 126, exc.errno) from None
    status_r, status_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        pid = os.fork()
    except BaseException:
        for fd in (status_r, status_w, go_r, go_w, *plan.child_only_fds()):
            os.close(fd)
        raise
    if pid == 0:
        os.close(status_r)
        os.close(go_w)
        plan.run_child(status_w, go_r)  # never returns
    os.close(status_w)
    os.close(go_r)
    target = Target(pid, os.pidfd_open(pid), None, argv, group=group, filter=filter)
    try:
        _bring_up(target, plan, status_r, go_w)
    except BaseException:
        target.__exit__(None, None, None)
        raise
    finally:
        for fd in (status_r, go_w, *plan.child_only_fds()):
            os.close(fd)
    return target


def _resolve(argv0: str, env) -> str:
    """The file execve should run: argv0 itself when it has a slash, else the PATH match."""
    if "/" in argv0:
        return argv0
    import shutil

    path = (env if env is not None else os.environ).get("PATH", os.defpath)
    found = shutil.which(argv0, path=path)
    if found is None:
        raise LaunchError(f"cannot run {argv0!r}: {os.strerror(errno.ENOENT)}", 127, errno.ENOENT)
    return found


def _fileno(obj, devnull: list) -> int | None:
    """An fd for a stdio argument: None (inherit), an fd, a file object or subprocess.DEVNULL.
    A /dev/null opened for DEVNULL is appended to ``devnull`` for the caller to close."""
    if obj is None:
        return None
    if obj == DEVNULL:
        if not devnull:
            devnull.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        return devnull[0]
    if isinstance(obj, int):
        if obj < 0:
            raise LaunchError(f"invalid stdio argument {obj} (an fd, a file or subprocess.DEVNULL)", 125)
        return obj
    return obj.fileno()


def _cstrings(items: list[bytes]):
    array = (ctypes.c_char_p * (len(items) + 1))()
    array[:-1] = items
    array[-1] = None
    return array


class _ChildPlan:
    """Everything the child needs, built in the parent so the child mostly makes syscalls."""

    def __init__(self, argv, raw, flags, env, cwd, stdio, pass_fds, sigmask):
        self.path = os.fsencode(_resolve(argv[0], env))
        environ = os.environb if env is None else {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
        self.argv_c = _cstrings([os.fsencode(a) for a in argv])
        self.envp_c = _cstrings([k + b"=" + v for k, v in environ.items()])
        self.path_c = ctypes.c_char_p(self.path)
        self.cwd = os.fsencode(cwd) if cwd is not None else None
        self.devnull: list[int] = []
        self.stdio = [_fileno(s, self.devnull) for s in stdio]
        self.pass_fds = tuple(pass_fds)
        self.sigmask = sigmask
        self.flags = flags
        self.ruleset: int | None = None         # a Landlock ruleset fd to enforce before the filter
        self.restrict_self = None               # with it, kernel.landlock.restrict_self
        self.new_listener = bool(flags & abi.SECCOMP_FILTER_FLAG_NEW_LISTENER)
        self.prog_buf = ctypes.create_string_buffer(raw, len(raw))
        self.fprog = calls.SockFprog(len(raw) // 8, ctypes.cast(self.prog_buf, ctypes.c_void_p))
        self.go_byte = ctypes.create_string_buffer(1)
        self.exec_msg = ctypes.create_string_buffer(_MSG.size)
        self.read = _libc.read
        self.write = _libc.write
        self.execve = _libc.execve
        self.get_errno = ctypes.get_errno

    def child_only_fds(self) -> list[int]:
        """Fds opened for the child (DEVNULL, the Landlock ruleset) that the parent closes after the fork."""
        return self.devnull + ([self.ruleset] if self.ruleset is not None else [])

    # --- runs in the forked child -------------------------------------------------
    def run_child(self, status_w: int, go_r: int) -> None:
        """Never returns: whatever happens (even KeyboardInterrupt), the child ends in _exit."""
        try:
            self._prepare_and_install(status_w)
            self._after_install(status_w, go_r)
        finally:
            os._exit(127)

    def _prepare_and_install(self, status_w: int) -> None:
        stage = 0
        try:
            self._setup_stdio()
            stage = 1
            if self.cwd is not None:
                os.chdir(self.cwd)
            stage = 2
            for fd in self.pass_fds:
                os.set_inheritable(fd, True)
            stage = 3
            if self.sigmask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; exec would keep that
                _libc.signal(sig, None)
            stage = 4
            calls.set_no_new_privs()
            stage = 5
            if self.ruleset is not None:        # before the filter: it must not see Landlock's calls
                self.restrict_self(self.ruleset)
                os.close(self.ruleset)
            stage = 6
            if self.new_listener:
                probe = os.dup(status_w)  # the listener will get this number (dup: no path for Landlock to refuse)
                os.close(probe)
                os.write(status_w, _MSG.pack(_MSG_LISTENER_FD, probe, 0))
            calls.seccomp(abi.SECCOMP_SET_MODE_FILTER, self.flags, self.fprog)
        except OSError as exc:
            os.write(status_w, _MSG.pack(_MSG_SETUP_FAILED, stage, exc.errno or 0))
            os._exit(127)
        except BaseException:
            os._exit(127)

    def _setup_stdio(self) -> None:
        import fcntl

        copies = [None if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in self.stdio]
        for target_fd, copy in enumerate(copies):
            if copy is not None:
                os.dup2(copy, target_fd)
                os.close(copy)

    def _after_install(self, status_w: int, go_r: int) -> None:
        """From here on every syscall may be notified: only pre-built ctypes calls."""
        if self.new_listener:
            while self.read(go_r, self.go_byte, 1) < 0 and self.get_errno() == errno.EINTR:
                pass
        self.execve(self.path_c, self.argv_c, self.envp_c)
        _MSG.pack_into(self.exec_msg, 0, _MSG_EXEC_FAILED, 0, self.get_errno())
        self.write(status_w, self.exec_msg, _MSG.size)
        os._exit(127)


def _bring_up(target: Target, plan: _ChildPlan, status_r: int, go_w: int) -> None:
    """Parent side: fetch the listener, answer the launcher's notifications, confirm the exec."""
    msg = _read_msg(status_r)
    if plan.new_listener and msg and msg[0] == _MSG_LISTENER_FD:
        target.listener = _fetch_listener(target, status_r, msg[1], plan.flags)
        os.write(go_w, b"g")
        msg = None
    if msg is None:
        msg = _serve_until_exec(target, status_r)
    if msg is None:
        return
    kind, _, err = msg
    if kind == _MSG_SETUP_FAILED:
        raise _setup_failure(target, msg, plan.flags)
    _finish_failed_exec(target, status_r)
    hint = " (the filter denies execve?)" if err == errno.EPERM else ""
    raise LaunchError(f"cannot run {target.argv[0]!r}: {os.strerror(err)}{hint}",
                      127 if err == errno.ENOENT else 126, err)


def _read_msg(status_r: int):
    """One status message, or None at EOF (exec done, or the child died)."""
    data = b""
    while len(data) < _MSG.size:
        chunk = os.read(status_r, _MSG.size - len(data))
        if not chunk:
            return None
        data += chunk
    return _MSG.unpack(data)


def _fetch_listener(target: Target, status_r: int, number: int, flags: int) -> int:
    """pidfd_getfd the child's fd ``number`` once its seccomp() has created the listener."""
    from ..kernel import notify

    poller = select.poll()
    poller.register(status_r, select.POLLIN)
    poller.register(target.pidfd, select.POLLIN)
    wait_ms = 0
    spins = 0
    while True:
        try:
            fd = calls.pidfd_getfd(target.pidfd, number)
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ESRCH):  # not yet, or exited (the pipe says why)
                raise LaunchError(f"cannot fetch the listener of {target.argv[0]!r}: {exc.strerror}", 126,
                                  exc.errno) from None
        else:
            if notify.is_listener(fd):
                return fd
            os.close(fd)
        if poller.poll(wait_ms):
            msg = _read_msg(status_r) if select.select([status_r], [], [], 0)[0] else None
            if msg is not None:
                raise _setup_failure(target, msg, flags)
            raise LaunchError(f"cannot run {target.argv[0]!r}: the launcher died before installing the filter",
                              126)
        spins += 1
        if spins < 20:
            os.sched_yield()
        else:
            wait_ms = min(10, wait_ms + 1)


def _setup_failure(target: Target, msg, flags: int) -> SysgateError:
    """The error for a child that failed before its execve (message kind _MSG_SETUP_FAILED)."""
    _, stage, err = msg
    if _STAGES[stage] == "seccomp":
        return install_error(OSError(err, os.strerror(err)), flags)
    return LaunchError(f"cannot run {target.argv[0]!r}: {_STAGES[stage]} setup failed: {os.strerror(err)}", 126, err)


def _serve_until_exec(target: Target, status_r: int):
    """CONTINUE the launcher's own notifications until the status pipe reports.

    Returns None after a successful execve, or the failure message.
    """
    if target.listener is None:
        return _read_msg(status_r)
    from ..kernel import notify

    poller = select.poll()
    poller.register(status_r, select.POLLIN)
    poller.register(target.listener, select.POLLIN)
    while True:
        ready = dict(poller.poll())
        if status_r in ready:
            return _read_msg(status_r)
        if ready.get(target.listener, 0) & select.POLLIN:
            try:
                notif = notify.recv(target.listener)
            except OSError:  # ENOENT: the syscall was interrupted or the launcher died
                continue
            if select.select([status_r], [], [], 0)[0]:
                # The exec closed the status pipe before this notification was generated:
                # it belongs to the new image. (A failed exec sends a message instead.)
                msg = _read_msg(status_r)
                if msg is None:
                    target.pending.append(notif)
                    return None
                notify.try_continue(target.listener, notif.id)
                return msg
            notify.try_continue(target.listener, notif.id)
        elif ready.get(target.listener, 0) & (select.POLLHUP | select.POLLERR):
            return _read_msg(status_r)


def _finish_failed_exec(target: Target, status_r: int) -> None:
    """After a failed execve the launcher writes and exits: answer it and reap it."""
    if target.listener is not None:
        from ..kernel import notify

        poller = select.poll()
        poller.register(target.pidfd, select.POLLIN)
        poller.register(target.listener, select.POLLIN)
        while target.pidfd not in dict(poller.poll()):
            try:
                notify.try_continue(target.listener, notify.recv(target.listener).id)
            except OSError:
                pass
    target.wait()
