"""Cost of one fs-handled ``openat``: sysgate's ``fs`` handler vs a minimal Python loop vs C.

A C target (benchmarks/c/opener.c) opens and closes an allowed file N times under a filter
that notifies ``openat`` and measures the mean per call itself, so every supervisor is timed
the same way:

  (a) C       benchmarks/c/fsfloor.c: RECV, process_vm_readv of the path, the fsuid/fsgid
              from /proc/TID/status, /proc/TID/root, ID_VALID, openat2 RESOLVE_IN_ROOT (as the
              target's fsuid when it differs), ADDFD with SEND
  (b) python  the same steps in a minimal Python loop (:func:`python_floor`), no rule check
  (c) sysgate ``Supervisor`` with the real ``FsHandler`` (``allow read DIR/**``), which also
              checks the rules, the user namespace, the object's real path, and reopens the
              checked O_PATH fd; it runs in a worker thread (the handler is ``blocking``),
              which keeps receiving the target's calls itself (a lease, see
              sysgate.supervisor.leases: no hand-off between the loop and the worker per call)

Runs are interleaved and the median of ``--repeat`` is reported, with sysgate / Python floor
and sysgate / C. Exit status 1 only when sysgate is more than 2x the Python floor. Nothing
is pinned unless ``--pin`` (every process on CPU 0: the ADDFD wake-ups stay on one CPU).
The C programs are compiled with gcc into a temporary directory at run time.

    python benchmarks/fsopen.py [-n 20000] [--repeat 5] [--pin]
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from sysgate.arch import syscalls                                      # noqa: E402
from notify import compile_c, notify_only, parse_target               # noqa: E402  (benchmarks/notify.py)
from sysgate.handlers.fs import FsHandler                              # noqa: E402
from sysgate.kernel import abi                                         # noqa: E402
from sysgate.process import launch                                     # noqa: E402
from sysgate.supervisor import Supervisor                              # noqa: E402


def notify_openat() -> list:
    return notify_only("openat")


def spawn_target(bins, n: int, path: str):
    r, w = os.pipe()
    try:
        target = launch.spawn([bins["opener"], str(n), path], notify_openat(), stdout=w)
    finally:
        os.close(w)
    return target, r


def finish(target, r: int, n: int) -> float:
    out = b""
    while chunk := os.read(r, 256):
        out += chunk
    os.close(r)
    target.wait()
    target.close()
    return parse_target(out.decode(), n)


# --- the Python floor ---------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_NR = {name: syscalls.number(None, name) for name in ("process_vm_readv", "openat2", "setfsuid", "setfsgid")}


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def python_floor(listener: int) -> None:
    """The same steps as fsfloor.c, in as little Python as it takes (preallocated buffers)."""
    recv_req, send_req = abi.SECCOMP_IOCTL_NOTIF_RECV, abi.SECCOMP_IOCTL_NOTIF_SEND
    addfd_req, valid_req = abi.SECCOMP_IOCTL_NOTIF_ADDFD, abi.SECCOMP_IOCTL_NOTIF_ID_VALID
    header = struct.Struct("=QI4xI4x8xQQQ")     # id, pid, nr, args[0..2]
    resp, addfd, u64 = abi.SECCOMP_NOTIF_RESP, abi.SECCOMP_NOTIF_ADDFD, struct.Struct("=Q")
    zero = bytes(abi.SECCOMP_NOTIF.size)
    buf = ctypes.create_string_buffer(4096)
    local, remote = _IoVec(ctypes.addressof(buf), 4096), _IoVec(0, 0)
    how = _OpenHow(0, 0, 0x10 | 0x02)           # RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
    own = os.geteuid(), os.getegid()
    nr_read, nr_open2, nr_fsuid, nr_fsgid = (_NR[k] for k in ("process_vm_readv", "openat2", "setfsuid", "setfsgid"))
    ioctl, byref = fcntl.ioctl, ctypes.byref
    one, zero_flags, how_size = ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_size_t(24)   # variadic: full width
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    while True:
        events = poller.poll()
        if not events[0][1] & select.POLLIN:
            return
        raw = bytearray(zero)
        try:
            ioctl(listener, recv_req, raw, True)
        except OSError:
            continue
        nid, pid, _, _, address, flags = header.unpack_from(raw)
        remote.base, remote.len = address, 4096 - (address & 4095)
        got = _syscall(nr_read, pid, byref(local), one, byref(remote), one, zero_flags)
        path = buf.raw[:got]
        end = path.find(b"\0")
        try:
            with open(f"/proc/{pid}/status", "rb", buffering=0) as f:
                status = f.read(4096)
            uid = int(status[status.index(b"\nUid:"):].split(None, 5)[4])
            gid = int(status[status.index(b"\nGid:"):].split(None, 5)[4])
            root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (OSError, ValueError):
            ioctl(listener, send_req, bytearray(resp.pack(nid, 0, -13, 0)), True)
            continue
        try:
            if got <= 0 or end < 0:
                raise OSError(14, "bad path")
            ioctl(listener, valid_req, bytearray(u64.pack(nid)), True)
            switch = (uid, gid) != own
            if switch:
                _syscall(nr_fsgid, gid)
                _syscall(nr_fsuid, uid)
            how.flags = (flags & ~os.O_CLOEXEC) | os.O_CLOEXEC
            fd = _syscall(nr_open2, root, ctypes.c_char_p(path[:end]), byref(how), how_size)
            err = ctypes.get_errno()
            if switch:
                _syscall(nr_fsuid, own[0])
                _syscall(nr_fsgid, own[1])
            if fd < 0:
                raise OSError(err, os.strerror(err))
        except OSError as exc:
            try:
                ioctl(listener, send_req, bytearray(resp.pack(nid, 0, -exc.errno, 0)), True)
            except OSError:
                pass
            continue
        finally:
            os.close(root)
        try:
            ioctl(listener, addfd_req, bytearray(addfd.pack(nid, abi.SECCOMP_ADDFD_FLAG_SEND, fd, 0,
                                                            flags & os.O_CLOEXEC)), True)
        except OSError:
            pass
        os.close(fd)


# --- the runs -------------------------------------------------------------------------------
def run_c(bins, n: int, path: str) -> float:
    target, r = spawn_target(bins, n, path)
    loop = subprocess.Popen([bins["fsfloor"], str(target.listener)], pass_fds=(target.listener,))
    os.close(target.listener)
    target.listener = None
    result = finish(target, r, n)
    loop.wait(timeout=60)
    return result


def run_python(bins, n: int, path: str) -> float:
    target, r = spawn_target(bins, n, path)
    python_floor(target.listener)
    return finish(target, r, n)


def run_sysgate(bins, n: int, path: str, directory: str) -> float:
    target, r = spawn_target(bins, n, path)
    handler = FsHandler([f"allow read {directory}/**"])
    with Supervisor() as sup:
        handler.install(sup, only=("openat",))
        sup.add_target(target)
        sup.run_until_idle()
    handler.close()
    return finish(target, r, n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=20000, help="opens per run (default 20000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each, the median is reported (default 5)")
    ap.add_argument("--pin", action="store_true", help="run everything on CPU 0")
    args = ap.parse_args(argv)
    if not shutil.which("gcc"):
        print("gcc is needed to build the C target and floor", file=sys.stderr)
        return 2
    if args.pin:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as work:
        # the opener is static: a dynamic loader's own opens would be notified too
        bins = compile_c(work, ("opener", "fsfloor"), static=("opener",))
        directory = os.path.join(work, "data")
        os.mkdir(directory)
        path = os.path.join(directory, "allowed")
        with open(path, "w") as f:
            f.write("x")
        runs: dict[str, list[float]] = {"c": [], "python": [], "sysgate": []}
        for _ in range(args.repeat):   # interleaved, so drifting machine load hits all alike
            runs["c"].append(run_c(bins, args.n, path))
            runs["python"].append(run_python(bins, args.n, path))
            runs["sysgate"].append(run_sysgate(bins, args.n, path, directory))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"fs-handled openat (median of {args.repeat}; n={args.n}; {'pinned to CPU 0' if args.pin else 'unpinned'})")
    for name, value in med.items():
        print(f"  {name:8s} {value:8.2f} µs   ({value / med['c']:.2f}x C, {value / med['python']:.2f}x Python)"
              f"   min {min(runs[name]):.2f}   runs: " + " ".join(f"{v:.2f}" for v in runs[name]))
    ratio = med["sysgate"] / med["python"]
    print(f"sysgate / Python floor = {ratio:.2f}   (target <= 2.0)")
    print(f"sysgate / C floor      = {med['sysgate'] / med['c']:.2f}   (informational)")
    return 0 if ratio <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
