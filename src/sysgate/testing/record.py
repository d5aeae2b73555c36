"""Record real notifications, with the target memory handlers read and the replies sent.

:class:`Recorder` wraps handlers registered on a real :class:`~sysgate.supervisor.Supervisor`::

    with Recorder("calls.jsonl", sup) as rec:
        sup.on("openat", rec.wrap(fs_handler))
        sup.fallback(rec.wrap(lambda n: Reply.continue_()))
        ...

The file is JSON lines: a header ``{"format": "sysgate-record", ...}``, then one object
per notification: ``id pid arch nr syscall args ip group``, ``io`` (the memory reads —
address, length or string limit, and the bytes returned or the errno — and ADDFD
results, in call order) and ``reply`` (what the kernel got: see :func:`reply_dict`).
:mod:`sysgate.testing.replay` feeds such a file back into handlers without a kernel.
"""
from __future__ import annotations

import base64
import datetime
import json
import threading

from ..files import read_text
from ..errors import SysgateError
from ..kernel import abi
from ..supervisor import Reply, TargetGone
from ..supervisor.notification import errno_value

FORMAT = "sysgate-record"
VERSION = 1


# --- values <-> JSON ---------------------------------------------------------------------
def reply_dict(reply: Reply, injected_fd: bool = False) -> dict:
    """A reply as recorded: ``{"kind": "value", "value": V}``, ``{"kind": "errno", "errno": E}``,
    ``{"kind": "continue"}`` or ``{"kind": "inject_fd", "value": FD}``."""
    if injected_fd:
        return {"kind": "inject_fd", "value": reply.val}
    if reply.flags & abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE:
        return {"kind": "continue"}
    if reply.error:
        return {"kind": "errno", "errno": reply.error}
    return {"kind": "value", "value": reply.val}


def reply_from_dict(doc: dict) -> Reply:
    problem = _reply_problem(doc)
    if problem or doc["kind"] in REPLY_KINDS_WITHOUT_VERDICT:
        raise SysgateError(f"not a reply: {doc!r}" + (f" ({problem})" if problem else ""))
    if doc["kind"] == "continue":
        return Reply.continue_()
    if doc["kind"] == "errno":
        return Reply.errno(doc["errno"])
    return Reply.value(doc["value"])


def encode_bytes(data: bytes) -> dict:
    """``{"text": ...}`` for UTF-8 data (readable paths), else ``{"base64": ...}``."""
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def decode_bytes(doc: dict) -> bytes:
    if "text" in doc:
        return doc["text"].encode("utf-8")
    return base64.b64decode(doc["base64"], validate=True)


def header(default: Reply, on_error_errno: int, **extra) -> dict:
    """The first line of a recording."""
    return {"format": FORMAT, "version": VERSION, "native_arch": abi.native_arch(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "default": reply_dict(default), "on_error_errno": on_error_errno, **extra}


def load(path) -> tuple[dict, list[dict]]:
    """(header, records) of a recording; SysgateError with file:line for malformed input."""
    lines = read_text(path, "sysgate recording").splitlines()
    docs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            if not docs:
                raise SysgateError(f"{path}: not a sysgate recording (line {number} is not JSON)") from None
            raise SysgateError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
        if not isinstance(doc, dict):
            raise SysgateError(f"{path}:{number}: expected a JSON object")
        doc["line"] = number
        docs.append(doc)
    if not docs or docs[0].get("format") != FORMAT:
        raise SysgateError(f"{path}: not a sysgate recording (the first line must have \"format\": \"{FORMAT}\")")
    if docs[0].get("version") != VERSION:
        raise SysgateError(f"{path}: recording version {docs[0].get('version')!r} is not supported "
                           f"(this sysgate reads version {VERSION})")
    if "default" in docs[0] and (problem := _reply_problem(docs[0]["default"])):
        raise SysgateError(f"{path}:{docs[0]['line']}: \"default\": {problem}")
    for doc in docs[1:]:
        missing = [k for k in ("nr", "arch", "args", "reply") if k not in doc]
        if missing:
            raise SysgateError(f"{path}:{doc['line']}: record lacks {', '.join(missing)}")
        problem = _record_problem(doc)
        if problem:
            raise SysgateError(f"{path}:{doc['line']}: {problem}")
    return docs[0], docs[1:]


# --- validation of loaded records (hand-edited or truncated files) -------------------------
REPLY_KINDS_WITHOUT_VERDICT = ("gone", "none")
U64 = (0, 2**64 - 1)


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _reply_problem(reply) -> str | None:
    """Why ``reply`` is not a recorded reply, or None."""
    if not isinstance(reply, dict):
        return "a reply must be an object with a \"kind\""
    kind = reply.get("kind")
    if kind in ("continue", *REPLY_KINDS_WITHOUT_VERDICT):
        return None
    if kind == "errno":
        return None if _is_int(reply.get("errno"), 0, 4095) else "\"errno\" must be a number 0..4095"
    if kind in ("value", "inject_fd"):
        return None if _is_int(reply.get("value"), -2**63, 2**63 - 1) else "\"value\" must be a 64-bit integer"
    return f"unknown reply kind {kind!r} (expected continue, errno, value, inject_fd or gone)"


def _io_problem(io) -> str | None:
    """Why ``io`` is not a recorded list of memory reads and ADDFDs, or None."""
    if not isinstance(io, list) or not all(isinstance(e, dict) for e in io):
        return "\"io\" must be a list of objects"
    for event in io:
        if event.get("kind") == "addfd":
            if not _is_int(event.get("result"), 0, 2**31 - 1):
                return "an addfd event needs a \"result\" fd number"
        elif not _is_int(event.get("address"), *U64):
            return "a memory event needs an \"address\" 0..2**64-1"
        elif "errno" in event and not _is_int(event["errno"], 0, 4095):
            return "a memory event's \"errno\" must be a number 0..4095"
        elif "text" in event and not isinstance(event["text"], str):
            return "a memory event's \"text\" must be a string"
        elif "base64" in event and "text" not in event:
            try:
                base64.b64decode(event["base64"], validate=True)
            except (TypeError, ValueError):
                return "a memory event's \"base64\" is not base64 data"
    return None


def _record_problem(doc: dict) -> str | None:
    """Why a notification record cannot be replayed, or None."""
    args = doc["args"]
    if not isinstance(args, list) or len(args) > 6 or not all(_is_int(a, -2**63, 2**64 - 1) for a in args):
        return "\"args\" must be a list of at most 6 integers (64-bit)"
    if not (_is_int(doc["nr"], -2**31, 2**31 - 1) or isinstance(doc["nr"], str)):
        return "\"nr\" must be a syscall number (32-bit) or name"
    if not isinstance(doc["arch"], str):
        return "\"arch\" must be an architecture name"
    try:
        abi.canonical_arch(doc["arch"])
    except SysgateError as exc:
        return f"\"arch\": {exc}"
    for key, (low, high) in (("id", U64), ("pid", (0, 2**32 - 1)), ("ip", U64)):
        if doc.get(key) is not None and not _is_int(doc[key], low, high):
            return f"\"{key}\" must be an integer {low}..{high}"
    problem = _reply_problem(doc["reply"])
    return f"\"reply\": {problem}" if problem else _io_problem(doc.get("io", []))


# --- recording -----------------------------------------------------------------------------
class _Recording:
    """What a handler gets instead of the real notification: everything is delegated, and
    memory reads, ADDFDs and replies are written down on the way."""

    __slots__ = ("_n", "_io", "_reply")

    def __init__(self, n, io: list, reply: list):
        object.__setattr__(self, "_n", n)
        object.__setattr__(self, "_io", io)
        object.__setattr__(self, "_reply", reply)

    def __getattr__(self, name):
        return getattr(self._n, name)

    def __setattr__(self, name, value):
        setattr(self._n, name, value)

    def __repr__(self) -> str:
        return repr(self._n)

    def read_memory(self, address: int, length: int) -> bytes:
        event = {"kind": "memory", "address": address, "length": length}
        return self._read(event, self._n.read_memory, address, length)

    def read_string(self, address: int, max: int = 4096) -> bytes:
        event = {"kind": "string", "address": address, "max": max}
        return self._read(event, self._n.read_string, address, max)

    def _read(self, event: dict, read, address: int, size: int) -> bytes:
        try:
            data = read(address, size)
        except OSError as exc:
            event["errno"] = exc.errno
            self._io.append(event)
            raise
        except TargetGone:
            event["gone"] = True
            self._io.append(event)
            raise
        event.update(encode_bytes(data))
        self._io.append(event)
        return data

    def inject_fd(self, fd: int, target_fd: int | None = None, send: bool = True, cloexec: bool = False) -> int:
        number = self._n.inject_fd(fd, target_fd, send, cloexec)
        self._io.append({"kind": "addfd", "target_fd": target_fd, "send": send, "result": number})
        if send:
            self._reply.append(reply_dict(Reply.value(number), injected_fd=True))
        return number

    def send_reply(self, reply: Reply) -> bool:
        sent = self._n.send_reply(reply)
        self._reply.append(reply_dict(reply))
        return sent

    def send_value(self, value: int) -> bool:
        return self.send_reply(Reply.value(value))

    def send_errno(self, e) -> bool:
        return self.send_reply(Reply.errno(e))

    def send_continue(self) -> bool:
        return self.send_reply(Reply.continue_())


class Recorder:
    """Writes every notification that passes through a :meth:`wrap`-ped handler to ``path``.

    ``supervisor`` (or ``default`` / ``on_error_errno``) tells what a handler returning None or
    raising is answered with, so the recording holds the replies the kernel really got.
    """

    def __init__(self, path, supervisor=None, *, default: Reply | None = None,
                 on_error_errno: int | str | None = None, **header_extra):
        self.default = default or getattr(supervisor, "default", None) or Reply.errno("EPERM")
        self.on_error_errno = errno_value(on_error_errno if on_error_errno is not None
                                          else getattr(supervisor, "on_error_errno", "EPERM"))
        self._lock = threading.Lock()
        self.count = 0
        try:
            self._file = open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise SysgateError(f"cannot write {path}: {exc.strerror}") from None
        self._write(header(self.default, self.on_error_errno, **header_extra))

    def wrap(self, handler):
        """``handler`` recording what it does; keeps its ``blocking``/``deadline``/``name``."""
        recorder = self

        def recorded(n):
            return recorder.call(handler, n)

        for attr in ("blocking", "deadline", "name", "syscalls"):
            if hasattr(handler, attr):
                setattr(recorded, attr, getattr(handler, attr))
        recorded.__wrapped__ = handler
        recorded.process_safe = False     # count and file position are this process's
        return recorded

    def call(self, handler, n):
        """Run ``handler`` on a recording view of ``n``; write the record; return its result."""
        io: list = []
        reply: list = []
        try:
            result = handler(_Recording(n, io, reply))
        except TargetGone:
            self._record(n, io, {"kind": "gone"})
            raise
        except Exception as exc:
            self._record(n, io, reply[0] if reply else {**reply_dict(Reply.errno(self.on_error_errno)),
                                                        "exception": repr(exc)})
            raise
        if reply:
            outcome = reply[0]
        elif isinstance(result, Reply):
            outcome = reply_dict(result)
        elif result is None:
            outcome = reply_dict(self.default)
        else:
            outcome = {**reply_dict(Reply.errno(self.on_error_errno)), "exception": f"returned {result!r}"}
        self._record(n, io, outcome)
        return result

    def _record(self, n, io: list, reply: dict) -> None:
        doc = {"id": n.id, "pid": n.pid, "arch": n.arch, "nr": n.nr, "syscall": n.syscall, "args": list(n.args),
               "ip": n.instruction_pointer, "group": _group(n), "io": io, "reply": reply}
        self._write(doc)
        self.count += 1

    def _write(self, doc: dict) -> None:
        line = json.dumps(doc, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _group(n) -> str:
    try:
        return n.group
    except AttributeError:
        return "default"
