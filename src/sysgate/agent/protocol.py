"""The OCI seccomp-notify socket protocol (runtime-spec ``linux.seccomp.listenerPath``).

A runtime (runc, crun) connects to the agent's AF_UNIX stream socket and sends the
``ContainerProcessState`` JSON with the listener fds attached (SCM_RIGHTS, first
message only); ``"fds"`` names the attached fds in order (today ``["seccompFd"]``).
runc sends compact JSON with ociVersion ``1.0.x``, crun pretty-prints it with ``0.2.0``.
The JSON may arrive in several pieces. It is complete at EOF *or* as soon as the
bytes form one whole JSON object: the runtimes' end of the connection can stay open
for the container's whole life (the container inherits it), so waiting for EOF would
leave the container blocked on its first notified syscall.

:class:`StateReader` reads one connection incrementally (non-blocking friendly) and
enforces limits so a broken or hostile client cannot exhaust the agent: a byte cap,
a nesting cap (checked while the bytes arrive, before any JSON parser recurses), an fd
cap (extra fds are dropped by the kernel via MSG_CTRUNC), fds only in the first
message, and nothing but the named fds kept open. The end of the object is found by
one linear scan over the bytes as they arrive, never by re-parsing what came so far.
"""
from __future__ import annotations

import array
import json
import os
import re
import socket
from dataclasses import dataclass, field

from ..errors import SysgateError
from ..kernel.notify import is_listener

SECCOMP_FD_NAME = "seccompFd"
MAX_STATE_BYTES = 256 * 1024
MAX_FDS = 16
MAX_DEPTH = 32          # runc and crun send 3 levels; json.loads recurses once per level
_PID_LIMIT = 2**31      # pid_t
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INT = array.array("i").itemsize


class ProtocolError(SysgateError):
    """A client sent something that is not a valid container process state."""


@dataclass(eq=False)
class ContainerProcessState:
    """What a runtime tells the agent about one seccomp-filtered container process.

    ``fds`` maps names from the message's ``"fds"`` to fds now owned by this object
    (close them with :meth:`close` or take them with :meth:`take_fd`).
    """

    oci_version: str
    pid: int
    metadata: str
    id: str
    status: str
    container_pid: int
    bundle: str
    annotations: dict[str, str]
    fds: dict[str, int] = field(default_factory=dict)

    @property
    def seccomp_fd(self) -> int:
        return self.fds[SECCOMP_FD_NAME]

    def take_fd(self, name: str = SECCOMP_FD_NAME) -> int:
        """Hand over ownership of one fd (it is no longer closed by :meth:`close`)."""
        return self.fds.pop(name)

    def close(self) -> None:
        for fd in self.fds.values():
            _close(fd)
        self.fds.clear()


class StateReader:
    """Reads one connection until the state is complete, then :meth:`result` parses it.

    Call :meth:`read` whenever the socket is readable; it returns True once a whole JSON
    object has arrived (or at EOF). Every error raises :class:`ProtocolError` after
    closing what was received.
    """

    def __init__(self, sock: socket.socket, max_bytes: int = MAX_STATE_BYTES, max_fds: int = MAX_FDS):
        self.sock, self.max_bytes, self.max_fds = sock, max_bytes, max_fds
        self.data = bytearray()
        self.received_fds: list[int] = []
        self.messages = 0
        self.done = False
        self._scan = _ObjectEnd()

    def read(self) -> bool:
        """One recvmsg; True once the state is complete. Raises BlockingIOError if nothing is ready."""
        try:
            chunk, ancdata, flags, _ = self.sock.recvmsg(
                min(65536, self.max_bytes + 1 - len(self.data)),
                socket.CMSG_SPACE(self.max_fds * _INT), socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError, TimeoutError):
            raise
        except OSError as exc:
            self.close()
            raise ProtocolError(f"reading the container state failed: {exc.strerror}") from None
        fds = _collect_fds(ancdata)
        first = self.messages == 0
        self.messages += 1
        self.received_fds += fds
        if flags & socket.MSG_CTRUNC:
            self._fail(f"more than {self.max_fds} fds attached")
        if fds and not first:
            self._fail("fds attached after the first message")
        if not chunk and not ancdata:
            self.done = True
            return True
        self.data += chunk
        if len(self.data) > self.max_bytes:
            self._fail(f"container state larger than {self.max_bytes} bytes")
        try:
            self.done = self._scan.feed(chunk)
        except ProtocolError:
            self.close()
            raise
        return self.done

    def read_all(self, timeout: float | None = None) -> ContainerProcessState:
        """Blocking convenience: read until complete (each recv bounded by ``timeout``) and parse."""
        self.sock.settimeout(timeout)
        try:
            while not self.read():
                pass
        except socket.timeout:
            self._fail("timed out waiting for the end of the container state")
        return self.result()

    def result(self) -> ContainerProcessState:
        """Parse the collected JSON and map the fds by name; unnamed/extra fds are closed."""
        if not self.done:
            self._fail("the container state is not complete yet")
        try:
            return parse_state(bytes(self.data), self.received_fds)
        except ProtocolError:
            self.close()
            raise
        finally:
            self.received_fds = []

    def close(self) -> None:
        """Close every fd received so far (used on errors and timeouts)."""
        for fd in self.received_fds:
            _close(fd)
        self.received_fds = []

    def _fail(self, message: str):
        self.close()
        raise ProtocolError(message)


def parse_state(data: bytes, fds: list[int]) -> ContainerProcessState:
    """Validate the state JSON and pair ``fds`` with the names in ``"fds"``.

    On success the named fds belong to the result and the rest are closed; on error
    nothing is closed (the caller owns ``fds``).
    """
    if not data:
        raise ProtocolError("empty container state (no JSON before EOF)")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"container state is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("container state is not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError("container state must be a JSON object")
    state = doc.get("state")
    if not isinstance(state, dict):
        raise ProtocolError('container state lacks the "state" object')
    names = doc.get("fds", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ProtocolError('"fds" must be a list of names')
    if len(set(names)) != len(names):
        raise ProtocolError(f'"fds" names an fd twice: {names}')
    if len(names) != len(fds):
        raise ProtocolError(f'"fds" names {len(names)} fd(s) but {len(fds)} were attached')
    if SECCOMP_FD_NAME not in names:
        raise ProtocolError(f'no "{SECCOMP_FD_NAME}" in "fds" ({names})')
    annotations = state.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise ProtocolError('"state.annotations" must map strings to strings')
    result = ContainerProcessState(
        oci_version=_field(doc, "ociVersion", str),
        pid=_field(doc, "pid", int, 0),
        metadata=_field(doc, "metadata", str, ""),
        id=_field(state, "id", str),
        status=_field(state, "status", str, ""),
        container_pid=_field(state, "pid", int, 0),
        bundle=_field(state, "bundle", str, ""),
        annotations=dict(annotations),
    )
    if not result.id:
        raise ProtocolError('"state.id" is empty')
    for key, value in (("state.id", result.id), ("state.status", result.status), ("ociVersion", result.oci_version)):
        if _CONTROL.search(value):      # they are logged: one line per event, no forged lines
            raise ProtocolError(f'"{key}" contains control characters: {value[:64]!r}')
    mapping = dict(zip(names, fds))
    if not is_listener(mapping[SECCOMP_FD_NAME]):
        raise ProtocolError(f'"{SECCOMP_FD_NAME}" is not a seccomp listener fd')
    result.fds = {SECCOMP_FD_NAME: mapping.pop(SECCOMP_FD_NAME)}
    for fd in mapping.values():     # fds we have no use for
        _close(fd)
    return result


class _ObjectEnd:
    """Finds the end of one JSON object in a byte stream fed chunk by chunk.

    Tracks strings, escapes and bracket depth only (the full parse comes once, at the
    end), so the total work is linear in the bytes received, and a message nested
    deeper than ``max_depth`` is refused before any recursive parser sees it.
    """

    _SPECIAL = re.compile(rb'[\\"{}\[\]]')

    def __init__(self, max_depth: int = MAX_DEPTH):
        self.max_depth = max_depth
        self.depth = 0
        self.started = self.in_string = self.escaped = False

    def feed(self, chunk: bytes) -> bool:
        """True once the top-level object has closed; ProtocolError for what cannot become one."""
        if not chunk:       # (an fds-only message): nothing to scan, and a pending escape stays pending
            return False
        if not self.started:
            body = chunk.lstrip()
            if not body:
                return False
            if body[:1] != b"{":
                raise ProtocolError(f"container state is not valid JSON: a JSON object starts with '{{', "
                                    f"this with {bytes(body[:16])!r}")
            self.started = True
        skip = 1 if self.escaped else 0       # the byte after a backslash at the end of the last chunk
        self.escaped = False
        for match in self._SPECIAL.finditer(chunk, skip):
            at, char = match.start(), match.group()
            if at < skip:
                continue
            if self.in_string:
                if char == b"\\":
                    skip = at + 2
                    self.escaped = skip > len(chunk)
                elif char == b'"':
                    self.in_string = False
            elif char == b'"':
                self.in_string = True
            elif char in (b"{", b"["):
                self.depth += 1
                if self.depth > self.max_depth:
                    raise ProtocolError(f"container state nested deeper than {self.max_depth} levels")
            else:
                self.depth -= 1
                if self.depth == 0:
                    return True
        return False


def encode_state(state: ContainerProcessState, pretty: bool = False) -> bytes:
    """The JSON a runtime would send for ``state`` (fds named in ``state.fds`` order)."""
    inner = {"ociVersion": state.oci_version, "id": state.id, "status": state.status,
             "pid": state.container_pid, "bundle": state.bundle, "annotations": state.annotations}
    doc = {"ociVersion": state.oci_version, "fds": list(state.fds), "pid": state.pid,
           "metadata": state.metadata, "state": inner}
    return json.dumps(doc, indent=4 if pretty else None).encode()


def _field(obj: dict, key: str, kind: type, default=None):
    value = obj.get(key, default)
    if value is None or (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ProtocolError(f'"{key}" must be a {kind.__name__}, not {type(value).__name__}'
                            if key in obj else f'"{key}" is missing')
    if kind is int and not 0 <= value < _PID_LIMIT:
        raise ProtocolError(f'"{key}" must be a pid (0 to {_PID_LIMIT - 1}), not {value}')
    return value


def _collect_fds(ancdata) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - len(payload) % _INT])
            fds += arr.tolist()
    return fds


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
