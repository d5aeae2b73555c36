"""Security review checks: compat (i386) calls reach handlers decoded with i386 numbers and
32-bit arguments, layouts a handler does not implement fail closed, fds never leak, and the
launched target cannot reach the listener."""
from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

from support.handlers import notify_policy, run_bytes
from sysgate.process import launch
from sysgate.handlers.fs import FsHandler
from sysgate.handlers.identity import IdentityHandler
from sysgate.handlers.net import NetHandler
from sysgate.policy.model import ALLOW, Action, Policy, Rule
from sysgate.supervisor import Reply, Supervisor

from support.supervisor import fd_count

HOST = "gate32"
NRES = 9

# i386 program: each result (eax) is stored in res[i]; at the end res, the utsname and
# what was read from the opened file are written to stdout.
I386 = r"""
.section .bss
.lcomm uts, 390
.lcomm res, {res_size}
.lcomm rbuf, 64
.section .data
path: .asciz "{path}"
dpath: .asciz "/etc/hostname"
addr: .short 2
      .byte {port_hi}, {port_lo}, 127, 0, 0, 1
      .zero 8
daddr: .short 2
      .byte {port_hi}, {port_lo}, 127, 0, 0, 2
      .zero 8
# struct compat msghdr (28 bytes): no name, no iov, no control
msg: .zero 28
     .fill 64, 1, 0xff
.section .text
.globl _start
_start:
  movl $122, %eax          # uname (new_utsname)
  movl $uts, %ebx
  int $0x80
  movl %eax, res
  movl $295, %eax          # openat(AT_FDCWD, path, O_RDONLY)
  movl $-100, %ebx
  movl $path, %ecx
  xorl %edx, %edx
  int $0x80
  movl %eax, res+4
  movl %eax, %ebx          # read(fd, rbuf, 64)
  movl $3, %eax
  movl $rbuf, %ecx
  movl $64, %edx
  int $0x80
  movl %eax, res+8
  movl $295, %eax          # openat of a path the rules deny
  movl $-100, %ebx
  movl $dpath, %ecx
  xorl %edx, %edx
  int $0x80
  movl %eax, res+12
  movl $359, %eax          # socket(AF_INET, SOCK_STREAM, 0)
  movl $2, %ebx
  movl $1, %ecx
  xorl %edx, %edx
  int $0x80
  movl %eax, res+16
  movl %eax, %ebx          # connect(s, 127.0.0.1:port) allowed
  movl $362, %eax
  movl $addr, %ecx
  movl $16, %edx
  int $0x80
  movl %eax, res+20
  movl $359, %eax          # a second socket, connect(127.0.0.2:port) denied
  movl $2, %ebx
  movl $1, %ecx
  xorl %edx, %edx
  int $0x80
  movl %eax, %ebx
  movl $362, %eax
  movl $daddr, %ecx
  movl $16, %edx
  int $0x80
  movl %eax, res+24
  movl $370, %eax          # sendmsg(s, compat msghdr, 0): decoded as i386's layout
  movl res+16, %ebx
  movl $msg, %ecx
  xorl %edx, %edx
  int $0x80
  movl %eax, res+28
  movl $122, %eax          # uname(8): a bad buffer is EFAULT, not a handler crash
  movl $8, %ebx
  int $0x80
  movl %eax, res+32
  movl $4, %eax
  movl $1, %ebx
  movl $res, %ecx
  movl ${res_size}, %edx
  int $0x80
  movl $4, %eax
  movl $1, %ebx
  movl $uts, %ecx
  movl $390, %edx
  int $0x80
  movl $4, %eax
  movl $1, %ebx
  movl $rbuf, %ecx
  movl $64, %edx
  int $0x80
  movl $1, %eax
  xorl %ebx, %ebx
  int $0x80
"""

# x86_64 program making i386 calls with int $0x80 and garbage in the upper register halves
# (which the kernel ignores for a compat call): uname and openat+read, then write the results.
INT80_FROM_64 = r"""
.section .bss
.lcomm uts, 390
.lcomm res, 16
.lcomm rbuf, 64
.section .data
path: .asciz "{path}"
.section .text
.globl _start
_start:
  movabs $0xdead000000000000, %r12
  movq $uts, %rbx
  orq %r12, %rbx
  movq $122, %rax
  orq %r12, %rax
  movl $122, %eax
  int $0x80
  movl %eax, res
  movq $path, %rcx
  orq %r12, %rcx
  movq $-100, %rbx
  movq %r12, %rdx           # flags: O_RDONLY in the low half
  movl $295, %eax
  int $0x80
  movl %eax, res+4
  movslq %eax, %rdi         # read(fd, rbuf, 64) with the 64-bit syscall
  movq $rbuf, %rsi
  movq $64, %rdx
  xorl %eax, %eax
  syscall
  movl %eax, res+8
  movq $1, %rax             # write(1, res, 12); write(1, uts, 390); write(1, rbuf, 64)
  movq $1, %rdi
  movq $res, %rsi
  movq $12, %rdx
  syscall
  movq $1, %rax
  movq $1, %rdi
  movq $uts, %rsi
  movq $390, %rdx
  syscall
  movq $1, %rax
  movq $1, %rdi
  movq $rbuf, %rsi
  movq $64, %rdx
  syscall
  movq $60, %rax
  xorl %edi, %edi
  syscall
"""


def _build(tmp_path, name: str, source: str, bits32: bool) -> str:
    if not (shutil.which("as") and shutil.which("ld")):
        pytest.skip("binutils (as, ld) not installed")
    src, obj, exe = tmp_path / f"{name}.s", tmp_path / f"{name}.o", tmp_path / name
    src.write_text(source)
    subprocess.run(["as", *(["--32"] if bits32 else []), "-o", str(obj), str(src)], check=True)
    subprocess.run(["ld", *(["-m", "elf_i386"] if bits32 else []), "-o", str(exe), str(obj)], check=True)
    return str(exe)


def _compat_policy(*handlers) -> Policy:
    policy = notify_policy(*handlers)
    policy.arches = ["x86_64", "i386"]
    return policy


def _results(out: bytes, count: int) -> list[int]:
    return list(struct.unpack(f"={count}i", out[:4 * count]))


@pytest.fixture
def listening():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv
    srv.close()


def test_i386_calls_are_routed_by_i386_names_and_compat_layouts_fail_closed(tmp_path, listening):
    secret = tmp_path / "data.txt"
    secret.write_bytes(b"compat-ok\n")
    port = listening.getsockname()[1]
    exe = _build(tmp_path, "compat", I386.format(res_size=4 * NRES, path=secret, port_hi=port >> 8,
                                                 port_lo=port & 0xFF), bits32=True)
    fs = FsHandler([f"allow read {tmp_path}/**"])
    net = NetHandler([f"allow connect 127.0.0.1:{port}"])
    ident = IdentityHandler(hostname=HOST)
    code, out = run_bytes([exe], fs, net, ident, policy=_compat_policy(fs, net, ident))
    assert code == 0, out
    uname, fd, nread, denied_open, sock, conn, denied_conn, sendmsg, bad_uname = _results(out, NRES)
    uts = out[4 * NRES:4 * NRES + 390]
    assert uname == 0 and uts[65:65 + len(HOST) + 1] == HOST.encode() + b"\0"
    assert fd >= 3 and nread == len(b"compat-ok\n")
    assert out[4 * NRES + 390:].startswith(b"compat-ok\n")
    assert denied_open == -errno.EACCES
    assert sock >= 0 and conn == 0
    assert denied_conn == -errno.EACCES
    assert sendmsg == 0                       # the 28-byte compat msghdr (read as a 64-bit one, its 0xff
                                              # tail would be pointers: EFAULT); 0 bytes sent, as the kernel
    assert bad_uname == -errno.EFAULT


def test_int80_from_64bit_process_uses_low_register_halves(tmp_path):
    data = tmp_path / "d.txt"
    data.write_bytes(b"low-half\n")
    exe = _build(tmp_path, "int80", INT80_FROM_64.format(path=data), bits32=False)
    fs = FsHandler([f"allow read {tmp_path}/**"])
    ident = IdentityHandler(hostname=HOST)
    code, out = run_bytes([exe], fs, ident, policy=_compat_policy(fs, ident))
    assert code == 0, out
    uname, fd, nread = _results(out, 3)
    assert uname == 0, errno.errorcode.get(-uname)
    assert out[12 + 65:12 + 65 + len(HOST)] == HOST.encode()
    assert fd >= 3 and nread == len(b"low-half\n"), (fd, nread)
    assert out[12 + 390:].startswith(b"low-half\n")


def test_handlers_refuse_architectures_they_do_not_decode():
    from sysgate.testing import FakeNotification

    ident = IdentityHandler(hostname=HOST)
    n = FakeNotification("uname", [0x1000], arch="aarch64")
    assert ident(n) == Reply.errno(errno.ENOSYS)
    net = NetHandler(["allow connect *"])
    assert net(FakeNotification("sendmsg", [3, 0x1000, 0], arch="x32")) == Reply.errno(errno.ENOSYS)


def test_x32_numbers_are_named_from_the_x32_table():
    from sysgate.testing import FakeNotification

    n = FakeNotification(0x40000000 | 42, [3, 0, 16], arch="x32")   # x32 connect
    assert (n.arch, n.syscall) == ("x32", "connect")
    m = FakeNotification(42, [3, 0, 16])                            # x86_64 42 = connect too
    assert (m.arch, m.syscall) == ("x86_64", "connect")
    i = FakeNotification(42, [0, 0], arch="i386")                   # i386 42 = pipe
    assert (i.arch, i.syscall) == ("i386", "pipe")


def test_listener_is_not_inherited_by_the_target():
    """The listener is created O_CLOEXEC: the command has no seccomp notify fd after exec."""
    policy = Policy(default=ALLOW, rules=[Rule("acct", Action("notify", handler="x"))])
    r, w = os.pipe()
    try:
        target = launch.spawn(["/bin/sh", "-c", "ls -l /proc/$$/fd"], policy, stdout=w, stderr=w)
    finally:
        os.close(w)
    assert target.listener is not None
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    assert target.wait(10) == 0
    target.close()
    assert b"->" in out and b"seccomp" not in out, out


def test_no_fd_leaks_across_allowed_denied_and_killed_targets(tmp_path, listening):
    """Every fd the supervisor opens for a target (paths, dup'd sockets, pidfds) is closed,
    also on denials, EFAULT, compat refusals and targets killed in the middle of a call."""
    import threading

    data = tmp_path / "data.txt"
    data.write_bytes(b"compat-ok\n")
    port = listening.getsockname()[1]
    compat = _build(tmp_path, "compat", I386.format(res_size=4 * NRES, path=data, port_hi=port >> 8,
                                                    port_lo=port & 0xFF), bits32=True)
    int80 = _build(tmp_path, "int80", INT80_FROM_64.format(path=data), bits32=False)
    loop = f"while :; do cat {data} /etc/hostname /nonexistent; done >/dev/null 2>&1"

    def handlers():
        return (FsHandler([f"allow read {tmp_path}/**", "allow read /usr/**", "allow read /lib*/**",
                           "allow read /etc/ld.so.cache", "allow rw /dev/null"]),
                NetHandler([f"allow connect 127.0.0.1:{port}"]), IdentityHandler(hostname=HOST))

    received = []

    def run_killed(calls: int) -> None:
        """Kill the looping target once ``calls`` notifications arrived: mid-call, by count, not by a
        timer (a loaded machine must not turn this into a kill before any call)."""
        hs = handlers()
        target = launch.spawn(["/bin/sh", "-c", loop], _compat_policy(*hs))
        sup = Supervisor()

        def kill_when_busy():
            for _ in range(30000):
                if sup.stats.received >= calls:
                    break
                time.sleep(0.001)
            target.kill()

        try:
            for h in hs:
                h.install(sup)
            sup.add_target(target)
            threading.Thread(target=kill_when_busy, daemon=True).start()
            assert sup.run_until_idle(30)
            received.append(sup.stats.received)
            assert sup.stats.errors == 0
        finally:
            sup.close()
            for h in hs:
                h.close()
        target.wait(5)
        target.close()

    for _ in range(2):                      # warm-up: caches, lazily opened module files
        run_bytes([compat], *handlers(), policy=_compat_policy(*handlers()))
        run_killed(40)
    before = fd_count()
    for i in range(6):
        hs = handlers()
        assert run_bytes([compat], *hs, policy=_compat_policy(*hs))[0] == 0
        hs = handlers()
        assert run_bytes([int80], *hs, policy=_compat_policy(*hs))[0] == 0
        run_killed(15 + 25 * i)
    assert fd_count() == before, os.listdir("/proc/self/fd")
    assert min(received) > 10                # the killed targets were busy in notified calls
