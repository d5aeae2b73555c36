"""One received notification: lazy decoding, target-memory reads, and the single reply.

A :class:`Notification` is built by the supervisor loop for each
``SECCOMP_IOCTL_NOTIF_RECV``. Only ``id`` and ``pid`` are decoded up front; the
architecture, syscall name, arguments and named arguments are decoded on first use.
A handler answers exactly once, either by sending (the ``send_*`` verbs of
:class:`Notification`: :meth:`~Notification.send_value`, :meth:`~Notification.send_errno`,
:meth:`~Notification.send_continue`, :meth:`~Notification.send_reply`, or
:meth:`~Notification.inject_fd` with ``send=True``) or by returning a :class:`Reply` (built with
``Reply.value``, ``Reply.errno``, ``Reply.continue_``) or None (the supervisor's default
verdict). A second reply raises :class:`ReplyError`.
"""
from __future__ import annotations

import errno as _errno
import functools
import logging
import struct
import threading

from ..errors import SysgateError
from ..kernel import abi, notify
from . import memory

log = logging.getLogger("sysgate.supervisor")

#: id, pid, flags, then nr and arch read as one native u64 (the dispatch key).
HEADER = struct.Struct("=QIIQ")
_ARGS = abi.SECCOMP_DATA
_pack_resp = abi.SECCOMP_NOTIF_RESP.pack
_send_into = notify.send_into
_ENOENT = _errno.ENOENT

# reply states
OPEN, REPLIED, ASYNC = 0, 1, 2


class TargetGone(Exception):
    """The notification is no longer valid: the target died or its syscall was interrupted.

    Normal during supervision; raised by memory reads (never return stale data) and by
    :meth:`Notification.inject_fd`. A handler may let it propagate: the supervisor moves on
    (any reply would fail with ENOENT anyway, which is what ``Stats.gone`` counts).
    """


class ReplyError(SysgateError):
    """A notification was answered twice (a programming error in a handler)."""


class DeadlineExceeded(ReplyError):
    """The handler replied after its deadline: the supervisor already answered (fail closed)."""


class ErrnoError(SysgateError, ValueError):
    """An errno name or number that does not exist."""


def errno_value(e: int | str) -> int:
    """An errno given as a number or a name (``"EPERM"``) -> its positive number."""
    if isinstance(e, str):
        value = getattr(_errno, e.upper(), None)
        if not isinstance(value, int):
            raise ErrnoError(f"unknown errno name {e!r}")
        return value
    if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < 4096:
        raise ErrnoError(f"errno must be a name or a number 0..4095, not {e!r}")
    return e


def return_register(val: int) -> int:
    """``val`` as the kernel's signed 64-bit ``seccomp_notif_resp.val``: unsigned values up to
    2**64 - 1 pass in two's complement; anything wider is a ValueError (a handler bug, answered
    like any other, instead of a reply that cannot be packed and leaves the target waiting)."""
    if not -(1 << 63) <= val < (1 << 64):
        raise ValueError(f"return value {val} does not fit in 64 bits")
    return val - (1 << 64) if val >= (1 << 63) else val


class Reply:
    """A verdict a handler can return (or configure as the supervisor's default)."""

    __slots__ = ("val", "error", "flags")

    def __init__(self, val: int = 0, error: int = 0, flags: int = 0):
        if flags not in (0, abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE) or (flags and (val or error)):
            # the kernel refuses these with EINVAL: a handler bug, answered like any other
            raise ValueError(f"cannot send val={val} error={error} flags={flags}: flags is 0, or "
                             "SECCOMP_USER_NOTIF_FLAG_CONTINUE alone")
        self.val, self.error, self.flags = return_register(val), errno_value(error), flags

    @classmethod
    def value(cls, val: int) -> "Reply":
        """The syscall returns ``val``."""
        return cls(val)

    @classmethod
    def errno(cls, e: int | str) -> "Reply":
        """The syscall fails with errno ``e`` (number or name)."""
        return cls(0, errno_value(e))

    @classmethod
    def continue_(cls) -> "Reply":
        """Let the kernel run the syscall. NOT a security decision: see :meth:`Notification.send_continue`."""
        return cls(0, 0, abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def __repr__(self) -> str:
        if self.flags:
            return "Reply.continue_()"
        return f"Reply.errno({self.error})" if self.error else f"Reply.value({self.val})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Reply) and (self.val, self.error, self.flags) == (other.val, other.error, other.flags)


@functools.lru_cache(maxsize=4096)
def _arch_and_name(audit: int, nr: int) -> tuple[str, str]:
    """(arch, syscall name) of a notified call, looked up once per (AUDIT_ARCH, nr): both are
    read on every call (the handler's checks, dispatch by name), and the table lookups are not free."""
    arch = abi.arch_from_audit(audit, nr)
    return arch, _syscall_name(arch, nr)


def _syscall_name(arch: str, nr: int) -> str:
    from ..arch import syscalls

    try:
        name = syscalls.name(arch, nr)
    except SysgateError:  # an architecture without a table
        name = None
    return name or f"syscall_{nr}"


def _param_names(name: str, arch: str) -> tuple[str, ...]:
    from ..arch import syscalls

    try:
        sig = syscalls.signature(name, arch)
    except SysgateError:
        sig = None
    return sig.arg_names if sig is not None else ()


class Notification:
    """One notified syscall of a target thread, waiting for exactly one reply."""

    __slots__ = ("listener", "raw", "id", "pid", "_state", "_data", "_names", "deadline")

    def __init__(self, listener, raw: bytearray, nid: int, pid: int):
        self.listener = listener    #: the :class:`~sysgate.supervisor.loop.Listener` it came from
        self.raw = raw              #: the 80 bytes RECV filled in
        self.id = nid
        self.pid = pid              #: TID of the calling thread (0 if not in our pid namespace)
        self._state = OPEN
        self._data = self._names = None     # decoded on first use (deadline is set by share)

    # --- decoding (lazy) ---------------------------------------------------------
    def _decode(self):
        data = self._data
        if data is None:
            data = self._data = _ARGS.unpack_from(self.raw, 16)
        return data

    def _arch_name_pair(self) -> tuple[str, str]:
        names = self._names
        if names is None:
            nr, audit = self._decode()[:2]
            names = self._names = _arch_and_name(audit, nr)
        return names

    @property
    def nr(self) -> int:
        return self._decode()[0]

    @property
    def audit_arch(self) -> int:
        return self._decode()[1]

    @property
    def arch(self) -> str:
        """Architecture name (``x86_64``, ``i386``, ``x32``…)."""
        return self._arch_name_pair()[0]

    @property
    def instruction_pointer(self) -> int:
        return self._decode()[2]

    @property
    def args(self) -> tuple[int, ...]:
        """The six argument registers as the syscall uses them: unsigned 64-bit, or for a
        32-bit ABI (i386 via ``int $0x80``, arm…) their low 32 bits: the kernel ignores the
        upper halves, which a 64-bit process can fill with anything (see :attr:`raw_args`)."""
        data = self._decode()
        if data[1] & abi.AUDIT_ARCH_64BIT:
            return data[3:]
        return tuple(a & 0xFFFFFFFF for a in data[3:])

    @property
    def raw_args(self) -> tuple[int, ...]:
        """The six argument registers exactly as seccomp_data holds them."""
        return self._decode()[3:]

    @property
    def syscall(self) -> str:
        """Syscall name (``syscall_<nr>`` when the table does not know it)."""
        return self._arch_name_pair()[1]

    @property
    def arguments(self) -> dict[str, int]:
        """Raw arguments by parameter name, from the syscall's signature (empty when unknown)."""
        return dict(zip(_param_names(self.syscall, self.arch), self.args))

    @property
    def group(self) -> str:
        return self.listener.group.name

    @property
    def state(self) -> dict:
        """The per-group state dict shared by all targets of this notification's group."""
        return self.listener.group.state

    @property
    def replied(self) -> bool:
        return self._state == REPLIED

    def __repr__(self) -> str:
        return f"<Notification id={self.id} pid={self.pid} {self.arch}:{self.syscall}{self.args}>"

    # --- validity and target memory -----------------------------------------------
    def valid(self) -> bool:
        """True while the target still waits for this reply (ID_VALID)."""
        fd = self.listener.fd
        if fd < 0:
            return False
        try:
            return notify.id_valid(fd, self.id)
        except OSError:
            return False

    def check_valid(self) -> None:
        """Raise :class:`TargetGone` unless the target still waits for this reply (after reading
        anything that names the target by tid: the tid may have been recycled)."""
        if not self.valid():
            raise TargetGone(f"notification {self.id} is no longer valid")

    _check_valid = check_valid   # the name sysgate.testing.fake calls

    def _checked(self, read, *args):
        """``read(pid, *args)``, then ID_VALID: never hand out data read from a stale notification."""
        try:
            data = read(self.pid, *args)
        except OSError:
            self.check_valid()
            raise
        self.check_valid()
        return data

    def read_memory(self, address: int, length: int) -> bytes:
        """Up to ``length`` bytes of target memory; ID_VALID is checked after the read.

        Raises :class:`TargetGone` when the notification became invalid, OSError(EFAULT) for an
        unmapped address, OSError(ESRCH) when the target is in a pid namespace we cannot see.
        """
        return self._checked(memory.read, address, length)

    def read_string(self, address: int, max: int = memory.PATH_MAX) -> bytes:
        """The NUL-terminated string at ``address`` (bytes, without the NUL), checked like
        :meth:`read_memory`. Raises OSError(ENAMETOOLONG) when no NUL occurs within ``max`` bytes."""
        data = self._checked(memory.read_cstring, address, max)
        if data is None:
            raise OSError(_errno.ENAMETOOLONG, "string argument longer than the limit")
        return data

    # --- replies -------------------------------------------------------------------
    def _claim(self) -> None:
        if self._state == REPLIED:
            raise ReplyError(f"notification {self.id} was already answered")
        self._state = REPLIED

    def _unclaim(self) -> None:
        self._state = OPEN

    def try_claim(self) -> bool:
        """Claim the reply unless someone already did (used by the loop for deadlines)."""
        try:
            self._claim()
            return True
        except ReplyError:
            return False

    def _send(self, val: int, error: int, flags: int) -> bool:
        lst = self.listener
        if lst.fd < 0:  # released (shutdown): the kernel already failed the syscall with ENOSYS
            return False
        try:
            _send_into(lst.fd, bytearray(_pack_resp(self.id, val, -error, flags)))
        except OSError as exc:
            if exc.errno == _ENOENT:
                lst.stats.gone += 1
                return False
            raise
        return True

    def send_value(self, value: int) -> bool:
        """Answer: the syscall returns ``value``. False when the target was already gone."""
        value = return_register(value)
        self._claim()
        return self._send(value, 0, 0)

    def send_errno(self, e: int | str) -> bool:
        """Answer: the syscall fails with ``e`` (number or name such as ``"EACCES"``)."""
        error = errno_value(e)
        self._claim()
        return self._send(0, error, 0)

    def send_continue(self) -> bool:
        """Let the kernel execute the syscall as if it had been allowed.

        This is NOT a security decision: pointer arguments can be rewritten by another
        thread between our check and the kernel's use (TOCTOU). Only continue calls that
        would be acceptable whatever their memory arguments say.
        """
        self._claim()
        return self._send(0, 0, abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def send_reply(self, reply: Reply) -> bool:
        """Answer with a :class:`Reply`. When it cannot be sent (fields changed after it was
        built into something the kernel refuses), the notification stays unanswered and the
        error propagates, so that the caller's fail-closed answer can still be sent."""
        if reply.__class__ is not Reply:
            raise TypeError(f"a handler returns a Reply or None, not {reply!r}")
        self._claim()
        try:
            return self._send(reply.val, reply.error, reply.flags)
        except Exception:
            self._unclaim()
            raise

    def inject_fd(self, fd: int, target_fd: int | None = None, send: bool = True, cloexec: bool = False) -> int:
        """Install our ``fd`` in the target (SECCOMP_IOCTL_NOTIF_ADDFD); returns its number there.

        ``target_fd`` picks the number (ADDFD_FLAG_SETFD, replacing what is open there);
        ``send`` also answers the syscall with that number atomically (ADDFD_FLAG_SEND), which
        counts as this notification's reply. Raises :class:`TargetGone` when the target went
        away, and OSError (EMFILE, EBADF…) when the target cannot take the fd; a failed
        send leaves the notification unanswered.
        """
        if send:
            self._claim()
        try:
            return notify.addfd(self.listener.fd, self.id, fd, target_fd, cloexec=cloexec, send=send)
        except OSError as exc:
            if send:
                self._unclaim()
            if exc.errno in (_ENOENT, _errno.ESRCH):
                self.listener.stats.gone += 1
                raise TargetGone(f"notification {self.id}: target gone during ADDFD") from None
            raise

    def answer_later(self) -> None:
        """Take the reply over: neither the worker pool nor the deadline will answer; the caller
        must send it with :meth:`send_later` (a handler that waits elsewhere, such as a connect
        completing, without holding a worker). Raises ReplyError when already answered."""
        self._claim()

    def send_later(self, reply: Reply) -> bool:
        """Send the reply taken over with :meth:`answer_later`. False when the target is gone."""
        return self._send(reply.val, reply.error, reply.flags)


class SharedNotification(Notification):
    """A notification handed to a worker thread: the worker and the loop (deadline) race to
    answer it, so claiming the reply takes a lock. :func:`share` switches ``__class__`` to this
    (or to a subclass of it and of a test notification class)."""

    __slots__ = ()

    def _claim(self) -> None:
        with _CLAIM_LOCK:
            if self._state == REPLIED:
                raise self._second_reply()
            self._state = REPLIED

    def _unclaim(self) -> None:
        self._state = ASYNC

    def _second_reply(self) -> ReplyError:
        if _late(self):
            return DeadlineExceeded(f"notification {self.id}: deadline passed, already answered")
        return ReplyError(f"notification {self.id} was already answered")

    def claim_at_deadline(self) -> bool:
        """Claim the reply for the deadline's fail-closed answer; False when the handler answered
        first. Afterwards the handler's own reply raises :class:`DeadlineExceeded`."""
        with _CLAIM_LOCK:
            if self._state == REPLIED:
                return False
            self.deadline.expired = True   # first: whoever then sees REPLIED sees it expired
            self._state = REPLIED
            return True


_CLAIM_LOCK = threading.Lock()


def _late(n: Notification) -> bool:
    """True when the dispatcher answered ``n`` at its deadline."""
    deadline = getattr(n, "deadline", None)
    return deadline is not None and deadline.expired


_SHARED: dict[type, type] = {Notification: SharedNotification}


def share(n: Notification, deadline: "Deadline") -> None:
    """Prepare ``n`` to be answered by a worker thread or, at ``deadline``, by the dispatcher."""
    cls = n.__class__
    shared = _SHARED.get(cls)
    if shared is None:    # e.g. sysgate.testing.fake.FakeNotification, replayed with a deadline
        shared = _SHARED[cls] = type(f"Shared{cls.__name__}", (SharedNotification, cls), {"__slots__": ()})
    n.__class__ = shared
    n._state = ASYNC
    n.deadline = deadline


def answer_or_fail_closed(n: Notification, fn, default: Reply, on_error_errno: int) -> Exception | None:
    """Run handler ``fn`` on ``n`` and answer it exactly once: the rule of every dispatcher (the
    supervisor's loop and workers, the replay dispatcher), written once, on the hot path.

    None sends ``default``, a returned :class:`Reply` is sent (unless the handler answered
    itself). Fail closed (answer ``on_error_errno``, unless answered already) when the handler
    raises, returns anything else, or returns a reply that cannot be sent; returning a Reply
    after answering is a :class:`ReplyError` (or :class:`DeadlineExceeded` when the deadline
    answered first: the late verdict is dropped). Returns the exception, None when all went well,
    for the caller to count or report. TargetGone (the target is gone) and DeadlineExceeded (the
    deadline answered) get no answer.
    """
    try:
        result = fn(n)
        if n._state != REPLIED:
            n.send_reply(default if result is None else result)
        elif result is not None and result.__class__ is Reply:
            if _late(n):
                raise DeadlineExceeded(f"notification {n.id}: deadline passed, returned {result!r} is dropped")
            raise ReplyError(f"handler answered notification {n.id} and also returned {result!r}")
    except (TargetGone, DeadlineExceeded) as exc:
        return exc
    except Exception as exc:
        fail_closed(n, on_error_errno)
        return exc
    return None


def fail_closed(n: Notification, error: int) -> bool:
    """Answer ``n`` with errno ``error`` unless someone already claimed its reply. False when it
    was claimed, the target is gone or the SEND failed (only logged: nothing is left to try)."""
    return n.try_claim() and send_claimed_error(n, error)


def send_claimed_error(n: Notification, error: int) -> bool:
    """Send errno ``error`` for ``n``, whose reply the caller has claimed (e.g. at its deadline)."""
    try:
        return n._send(0, error, 0)
    except OSError as err:
        log.error("cannot answer notification %d: %s", n.id, err)
        return False


class Deadline:
    """When a worker-run handler must have answered; ``expired`` is set when the dispatcher
    answered in its place; ``job`` is its :class:`~sysgate.supervisor.workers.Job`."""

    __slots__ = ("when", "expired", "notification", "handler", "job", "lease")

    def __init__(self, when: float, notification: Notification, handler):
        self.when, self.notification, self.handler, self.expired = when, notification, handler, False
        self.job = self.lease = None

    def __lt__(self, other: "Deadline") -> bool:
        return self.when < other.when
