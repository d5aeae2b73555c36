"""The OCI seccomp agent: accept listener fds from runc/crun and supervise them.

One thread runs everything: a selector watches the agent's listening socket, the
connections still sending their state, and the supervisor's epoll fd (notifications
are answered by :class:`~sysgate.supervisor.loop.Supervisor`). Connections are
non-blocking and bounded (count, bytes, fds, time), so a broken or hostile client only
loses its own connection.

Every container process joins the supervisor group named by the container id; a
``runc exec`` into a running container is a second connection with the same id and
joins the same group. When the last listener of a container hangs up (all its
processes are gone) the group's handlers are dropped.

With ``learn_dir`` the agent learns instead of enforcing: every container's notifications
are recorded and CONTINUEd (:mod:`.learning`), and its profile is written to ``learn_dir``
when it is gone.
"""
from __future__ import annotations

import logging
import os
import selectors
import socket
import stat
import struct
import time
from dataclasses import dataclass, field

from ..errors import SysgateError
from ..supervisor.loop import Supervisor
from . import container_handlers
from .config import AgentConfig, Selection
from .learning import ContainerLearner
from .protocol import MAX_FDS, MAX_STATE_BYTES, ContainerProcessState, ProtocolError, StateReader

log = logging.getLogger("sysgate.agent")
_UCRED = struct.Struct("=iII")


@dataclass(eq=False)
class Container:
    """A container known to the agent: its handler set and live listeners (-> process state)."""

    id: str
    handler_set: container_handlers.ContainerHandlers
    selection: object
    listeners: dict = field(default_factory=dict)
    connections: int = 0
    learner: ContainerLearner | None = None


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    reader: StateReader
    deadline: float
    peer: str


class Agent:
    """Serve ``socket_path`` for container runtimes; notifications go to ``supervisor``.

    ``connection_timeout`` bounds the time from accept to the runtime's EOF;
    ``max_connections`` bounds connections still sending (further ones are closed at once).
    """

    def __init__(self, socket_path: str, config: AgentConfig | None = None, supervisor: Supervisor | None = None,
                 *, connection_timeout: float = 5.0, max_connections: int = 64,
                 max_state_bytes: int = MAX_STATE_BYTES, max_fds: int = MAX_FDS,
                 learn_dir: str | None = None):
        if not socket_path:
            raise SysgateError("the agent socket path is empty")
        if not 0 < connection_timeout < float("inf"):
            raise SysgateError(f"the connection timeout must be a positive number of seconds, "
                               f"not {connection_timeout:g}")
        self.socket_path = socket_path
        self.config = config or AgentConfig()
        self.supervisor = supervisor or Supervisor()
        self.connection_timeout, self.max_connections = connection_timeout, max_connections
        self.max_state_bytes, self.max_fds = max_state_bytes, max_fds
        self.learn_dir = learn_dir
        self.containers: dict[str, Container] = {}
        self.rejected = 0
        self._pending: dict[int, _Connection] = {}
        self._owner: dict = {}       # supervisor Listener -> Container
        self._selector = selectors.DefaultSelector()
        self._server: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------
    def listen(self) -> None:
        """Bind the socket (mode 0600). A stale socket file is replaced; a live one (another
        agent answers) or any other file is an error."""
        try:
            if not stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                raise SysgateError(f"cannot listen on {self.socket_path}: it exists and is not a socket")
            if _answers(self.socket_path):
                raise SysgateError(f"another process is listening on {self.socket_path}")
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        old = os.umask(0o177)
        try:
            server.bind(self.socket_path)
        except OSError as exc:
            server.close()
            raise SysgateError(f"cannot listen on {self.socket_path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        server.listen(128)
        self._server = server
        self._selector.register(server, selectors.EVENT_READ, self._accept)
        self._selector.register(self.supervisor.fileno(), selectors.EVENT_READ, self._notifications)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        log.info("listening on %s", self.socket_path)

    def run(self, until=None) -> None:
        """Serve until :meth:`stop` (or ``until()`` is true, checked at least every 0.5 s). A stop
        requested before the call (a SIGTERM right after "ready") is kept: run returns at once."""
        if self._server is None:
            self.listen()
        while not self._stopping and not (until is not None and until()):
            self.run_once(0.5 if until is not None else None)

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for one round of events (bounded by connection and handler deadlines)."""
        for delay in (self._next_deadline(), self.supervisor.next_timeout()):
            if delay is not None:
                timeout = delay if timeout is None else min(timeout, delay)
        for key, _ in self._selector.select(timeout):
            key.data(key.fileobj)
        self._expire_connections(time.monotonic())
        self.supervisor.run_once(0)    # handler deadlines and worker results

    def stop(self) -> None:
        """Make :meth:`run` return (safe from signal handlers and other threads)."""
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Stop listening, drop pending connections, close every listener (waiting syscalls
        then fail with ENOSYS in the containers)."""
        for conn in list(self._pending.values()):
            self._drop(conn)
        if self._server is not None:
            self._selector.unregister(self._server)
            self._server.close()
            self._server = None
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
        self._selector.close()
        self.supervisor.close()
        for container in list(self.containers.values()):
            container.handler_set.close()
        self.containers.clear()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- connections -----------------------------------------------------------------
    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                sock, _ = server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:     # e.g. EMFILE: keep serving the others
                log.error("accept failed: %s", exc.strerror)
                return
            sock.setblocking(False)
            peer = _peer(sock)
            if len(self._pending) >= self.max_connections:
                self.rejected += 1
                log.warning("refusing connection from %s: %d connections still sending", peer, len(self._pending))
                sock.close()
                continue
            reader = StateReader(sock, self.max_state_bytes, self.max_fds)
            conn = _Connection(sock, reader, time.monotonic() + self.connection_timeout, peer)
            self._pending[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, self._readable)

    def _readable(self, sock: socket.socket) -> None:
        conn = self._pending.get(sock.fileno())
        if conn is None:
            return
        try:
            self._serve(conn)
        except Exception as exc:     # a bug reached by one client's bytes must not stop the others
            self._forget(conn)
            conn.reader.close()
            conn.sock.close()
            log.debug("internal error while serving %s", conn.peer, exc_info=True)
            self._reject(conn, f"internal error while reading its state: {type(exc).__name__}: "
                               f"{' '.join(str(exc).split())}", forget=False)

    def _serve(self, conn: _Connection) -> None:
        try:
            while not conn.reader.read():
                pass
        except BlockingIOError:
            return
        except ProtocolError as exc:
            self._reject(conn, str(exc))
            return
        self._forget(conn)
        try:
            state = conn.reader.result()
        except ProtocolError as exc:
            self._reject(conn, str(exc), forget=False)
            return
        finally:
            conn.sock.close()
        self._admit(state)

    def _expire_connections(self, now: float) -> None:
        for conn in [c for c in self._pending.values() if c.deadline <= now]:
            self._reject(conn, f"no complete container state within {self.connection_timeout:g} s")

    def _next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return max(0.0, min(c.deadline for c in self._pending.values()) - time.monotonic())

    def _reject(self, conn: _Connection, reason: str, forget: bool = True) -> None:
        self.rejected += 1
        log.warning("rejected connection from %s: %s", conn.peer, reason)
        if forget:
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        self._forget(conn)
        conn.reader.close()
        conn.sock.close()

    def _forget(self, conn: _Connection) -> None:
        if self._pending.pop(conn.sock.fileno(), None) is not None:
            self._selector.unregister(conn.sock)

    # --- containers ------------------------------------------------------------------
    def _admit(self, state: ContainerProcessState) -> None:
        """Add the state's listener to the container's group (creating the group first)."""
        container = self.containers.get(state.id)
        try:
            if container is None:
                container = self._new_container(state)
        except Exception as exc:     # ConfigError, OSError (pidfd of a dead pid), a handler factory bug
            log.error("container %s: refusing its listener (its notified syscalls will fail with ENOSYS): %s",
                      state.id, exc)
            log.debug("container %s: refused because of", state.id, exc_info=True)
            state.close()
            self.rejected += 1
            return
        fd = state.take_fd()
        try:
            lst = self.supervisor.add_listener(fd, group=state.id, on_release=self._released)
        except Exception as exc:     # e.g. epoll refusing the fd: this listener only
            os.close(fd)
            state.close()
            self.rejected += 1
            log.error("container %s: refusing its listener (its notified syscalls will fail with ENOSYS): %s",
                      state.id, exc)
            if not container.listeners:
                self._forget_container(container)
            return
        container.connections += 1
        if container.learner is not None:
            container.learner.processes += 1
        container.listeners[lst] = state
        self._owner[lst] = container
        log.info("container %s: %s process %d joined group %s (connection %d, ociVersion %s, handlers: %s)",
                 state.id, state.status or "?", state.pid, state.id, container.connections, state.oci_version,
                 "learning" if container.learner is not None
                 else ", ".join(map(str, container.selection.handlers)) or "none")

    def _new_container(self, state: ContainerProcessState) -> Container:
        if self.learn_dir is not None:
            return self._new_learning_container(state)
        context = {"Pid": state.pid, "Pid1": state.container_pid, "Container": state.id,
                   "Pod": "", "Namespace": "", "Bundle": state.bundle}
        selection = self.config.select(state.id, state.annotations, state.metadata, context)
        handler_set = container_handlers.build(selection, state)
        sup = self.supervisor
        sup.table(handler_set.handlers, group=state.id)
        sup.fallback(handler_set.fallback, group=state.id)
        container = Container(state.id, handler_set, selection)
        self.containers[state.id] = container
        return container

    def _new_learning_container(self, state: ContainerProcessState) -> Container:
        learner = ContainerLearner(state.id, state.bundle)
        self.supervisor.table({}, group=state.id)
        self.supervisor.fallback(learner, group=state.id)
        handlers = container_handlers.ContainerHandlers(fallback=learner)
        container = Container(state.id, handlers, Selection(), learner=learner)
        self.containers[state.id] = container
        return container

    def _write_learned(self, container: Container) -> None:
        learner = container.learner
        try:
            paths = learner.write(self.learn_dir, warn=lambda m: log.warning("container %s: %s", container.id, m))
        except Exception as exc:     # a bad id, a full disk: this container's profile only
            log.error("container %s: cannot write its learned profile: %s", container.id, exc)
            return
        obs = learner.observations
        log.info("container %s: learned %d syscalls (%d distinct), wrote %s", container.id, obs.total,
                 len(obs.by_syscall()), ", ".join(paths))

    def _released(self, lst) -> None:
        container = self._owner.pop(lst, None)
        if container is None:
            return
        state = container.listeners.pop(lst)
        if container.learner is not None and lst.reason != "hangup":    # the agent stops: what it did so far
            container.learner.unfinished = True
        log.info("container %s: process %d released (%s), %d listener(s) left",
                 state.id, state.pid, lst.reason, len(container.listeners))
        if not container.listeners:
            self._forget_container(container)

    def _forget_container(self, container: Container) -> None:
        del self.containers[container.id]
        container.handler_set.close()
        self.supervisor.discard_group(container.id)
        if container.learner is not None and container.learner.processes:
            self._write_learned(container)
        log.info("container %s gone: group dropped", container.id)

    # --- misc ------------------------------------------------------------------------
    def _notifications(self, _fd) -> None:
        self.supervisor.run_once(0)

    def _drain_wake(self, fd) -> None:
        try:
            os.read(fd, 64)
        except BlockingIOError:
            pass


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False


def _peer(sock: socket.socket) -> str:
    try:
        pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        return f"pid {pid} uid {uid}"
    except OSError:
        return "unknown peer"
