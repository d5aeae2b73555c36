"""sysgate learn: observe real commands, write policies, check them with sysgate run."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from sysgate.arch import syscalls
from sysgate.errors import SysgateError
from sysgate.learn import (Observations, learned_policy, observe, parse_action, policy_text, summary_text,
                           header_text)
from sysgate.learn.pins import PINS
from support.cli import sysgate

PYTHON = "/usr/bin/python3"
EPERM = parse_action("errno(EPERM)")


def learn(policy: str, *command: str, **kw) -> subprocess.CompletedProcess:
    result = sysgate("learn", "-o", policy, *kw.pop("options", ()), "--", *command, **kw)
    assert result.returncode == 0, result.stderr
    return result


# --- the writer, without a kernel ---------------------------------------------------------
NAMES = ["read", "write", "openat", "close", "mmap", "socket", "clone", "ioctl", "prctl", "unshare"]
VALUES = st.sampled_from([0, 1, 2, 10, 16, 17, 0x80001, 0x5401, 0x5413, 0x1200011, 0x3d0f00, 0x10000000,
                          0x40000000, 15, 38])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.tuples(VALUES, VALUES)), min_size=1, max_size=12),
       st.sampled_from(NAMES), st.tuples(VALUES, VALUES))
def test_learned_policy_allows_exactly_what_was_seen(calls, probe_name, probe_values):
    obs = Observations()
    for name, (a, b) in calls:
        obs.add("x86_64", syscalls.number("x86_64", name), _args(name, a, b))
    policy = learned_policy(obs)
    assert policy.default == EPERM and not policy.warnings
    for name, (a, b) in calls:
        assert policy.decide(name, _args(name, a, b))[0].kind == "allow"
    probe = _args(probe_name, *probe_values)
    seen = any(name == probe_name and (not PINS.get(name) or
               all(p.value(_args(name, a, b), "x86_64") == p.value(probe, "x86_64") for p in PINS[name]))
               for name, (a, b) in calls)
    assert (policy.decide(probe_name, probe)[0].kind == "allow") == (seen or probe_name == "execve")


def _args(name: str, a: int, b: int) -> tuple[int, ...]:
    """Six registers with ``a``/``b`` in the syscall's pinned positions (or the first two)."""
    regs = [0x77] * 6
    positions = [p.index("x86_64") for p in PINS.get(name, ())] or [0, 1]
    for pos, value in zip(positions + [i for i in range(6) if i not in positions], (a, b)):
        regs[pos] = value
    return tuple(regs)


def test_policy_text_is_grouped_named_and_minimal():
    obs = Observations()
    for name, args in [("read", ()), ("openat", ()), ("socket", (1, 0x80001)), ("socket", (1, 2)),
                       ("socket", (10, 1)), ("clone", (0x1200011,)), ("ioctl", (1, 0x5401)),
                       ("ioctl", (1, 0x5413))]:
        obs.add("x86_64", syscalls.number("x86_64", name), (*args, *(0,) * (6 - len(args))), tid=5)
    text = policy_text(obs, default="kill_process", header="learned for a test")
    assert text.startswith("# learned for a test\ndefault: kill_process\narch: x86_64\n")
    assert "# @default\nexecve: allow" in text and "# @basic-io\nread: allow" in text
    assert "socket: domain == AF_UNIX && type in {SOCK_DGRAM, SOCK_STREAM|SOCK_CLOEXEC}" in text
    assert "socket: domain == AF_INET6 && type == SOCK_STREAM" in text
    assert "clone: flags == SIGCHLD|CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID" in text
    assert "ioctl: request in {TCGETS, TIOCGWINSZ}" in text
    unpinned = policy_text(obs, unpinned=["socket"])
    assert "socket: domain" not in unpinned and "socket" in unpinned and "ioctl: request" in unpinned
    assert "ioctl: request" not in policy_text(obs, unpinned=["all"])
    summary = summary_text(obs, 0)
    assert "8 syscalls, 5 distinct, 1 thread(s); exit status 0" in summary and "socket" in summary
    assert "exit status 3" in header_text(["true"], obs, 3)


def test_bad_default_is_a_user_error():
    with pytest.raises(SysgateError, match="--default"):
        parse_action("errno(NOPE)")


# --- real commands --------------------------------------------------------------------------
def test_learn_shell_command_then_run_it_and_deny_the_rest(tmp_path):
    policy, data = str(tmp_path / "sh.policy"), tmp_path / "x"
    script = f"echo hi > {data}; cat {data}"
    learned = learn(policy, "sh", "-c", script)
    assert learned.stdout == "hi\n"
    assert "distinct" in learned.stderr and "calls  syscall" in learned.stderr and "wrote" in learned.stderr
    text = open(policy).read()
    assert text.startswith("# Learned by `sysgate learn`") and "# Command: sh -c" in text
    assert "default: errno(EPERM)" in text and "execve" in text and "mkdir" not in text
    data.unlink()
    again = sysgate("run", "--policy", policy, "--", "sh", "-c", script)
    assert (again.returncode, again.stdout) == (0, "hi\n"), again.stderr
    denied = sysgate("run", "--policy", policy, "--", "sh", "-c", f"mkdir {tmp_path}/d")
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr
    assert not (tmp_path / "d").exists()


PY_SOCKET = ("import socket, sys, threading\n"
             "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
             "s = socket.socket(getattr(socket, sys.argv[1]), socket.SOCK_STREAM); s.close(); print('ok')\n")


def test_learn_python_pins_socket_family_and_threads(tmp_path):
    policy = str(tmp_path / "py.json")             # *.json: OCI format
    learned = learn(policy, PYTHON, "-c", PY_SOCKET, "AF_UNIX")
    assert learned.stdout == "thread\nok\n"
    doc = json.load(open(policy))
    assert doc["defaultAction"] == "SCMP_ACT_ERRNO" and doc["defaultErrnoRet"] == errno.EPERM
    sockets = [e for e in doc["syscalls"] if "socket" in e["names"]]
    assert sockets and all(e.get("args") for e in sockets)          # pinned, not unconditional
    ok = sysgate("run", "--policy", policy, "--", PYTHON, "-c", PY_SOCKET, "AF_UNIX")
    assert (ok.returncode, ok.stdout) == (0, "thread\nok\n"), ok.stderr
    other = sysgate("run", "--policy", policy, "--", PYTHON, "-c", PY_SOCKET, "AF_INET")
    assert other.returncode == 1 and "PermissionError: [Errno 1]" in other.stderr
    text_policy = str(tmp_path / "py.policy")
    learn(text_policy, PYTHON, "-c", PY_SOCKET, "AF_UNIX", options=["--format", "text"])
    text = open(text_policy).read()
    assert "socket: domain == AF_UNIX && type == SOCK_STREAM|SOCK_CLOEXEC" in text
    # clone3 answered ENOSYS, so the thread came from clone, whose flags are pinned
    assert "clone3: errno(ENOSYS)" in text and "CLONE_THREAD" in text


UNSHARE = ("import ctypes, sys\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "print(libc.unshare(int(sys.argv[1], 0)), ctypes.get_errno())\n")


def test_namespace_flags_are_pinned(tmp_path):
    policy = str(tmp_path / "ns.policy")
    newuts, newnet = "0x04000000", "0x40000000"
    learn(policy, PYTHON, "-c", UNSHARE, newuts)
    assert "unshare: flags == CLONE_NEWUTS" in open(policy).read()
    same = sysgate("run", "--policy", policy, "--", PYTHON, "-c", UNSHARE, newuts)
    assert same.stdout == "0 0\n", same.stderr
    other = sysgate("run", "--policy", policy, "--", PYTHON, "-c", UNSHARE, newnet)
    assert other.stdout == f"-1 {errno.EPERM}\n", other.stderr


I386 = """
.section .data
msg: .ascii "hi32\\n"
.section .text
.globl _start
_start:
  {extra}
  movl $4, %eax
  movl $1, %ebx
  movl $msg, %ecx
  movl $5, %edx
  int $0x80
  movl $1, %eax
  xorl %ebx, %ebx
  int $0x80
"""
# getppid (i386 nr 64); exit status = its errno when it fails, else 0
GETPPID = """movl $64, %eax
  int $0x80
  xorl %ebx, %ebx
  cmpl $0, %eax
  jge 1f
  movl %eax, %ebx
  negl %ebx
  movl $1, %eax
  int $0x80
1:"""


@pytest.fixture(scope="module")
def i386_programs(tmp_path_factory):
    if not (shutil.which("as") and shutil.which("ld")):
        pytest.skip("binutils (as, ld) not installed")
    out = tmp_path_factory.mktemp("i386")
    programs = {}
    for name, extra in (("plain", ""), ("extra", GETPPID)):
        src, obj, exe = out / f"{name}.s", out / f"{name}.o", out / name
        src.write_text(I386.format(extra=extra))
        subprocess.run(["as", "--32", "-o", str(obj), str(src)], check=True)
        subprocess.run(["ld", "-m", "elf_i386", "-o", str(exe), str(obj)], check=True)
        programs[name] = str(exe)
    return programs


def test_learn_i386_compat_program(i386_programs, tmp_path):
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        obs, code = observe([i386_programs["plain"]], stdout=devnull)
    finally:
        os.close(devnull)
    assert code == 0
    # only the program's own calls: nothing of the launcher (its execve ran before the image)
    assert dict(obs.counts) == {("i386", "write"): 1, ("i386", "exit"): 1}
    policy = str(tmp_path / "i386.policy")
    learn(policy, i386_programs["plain"])
    text = open(policy).read()
    assert "arch: x86_64, i386" in text             # x86_64 for the launcher's execve
    ok = sysgate("run", "--policy", policy, "--", i386_programs["plain"])
    assert (ok.returncode, ok.stdout) == (0, "hi32\n"), ok.stderr
    denied = sysgate("run", "--policy", policy, "--", i386_programs["extra"])
    assert denied.returncode == errno.EPERM and denied.stdout == ""
    native = str(tmp_path / "native.policy")        # --arch without i386: the compat calls get bad_arch
    warned = learn(native, i386_programs["plain"], options=["--arch", "x86_64"])
    assert "syscalls of i386 were seen but the policy leaves that out" in warned.stderr
    killed = sysgate("run", "--policy", native, "--", i386_programs["plain"])
    assert killed.returncode == 128 + 31 and "SIGSYS" in killed.stderr


def test_progress_failures_and_errors(tmp_path):
    policy = str(tmp_path / "p.policy")
    shown = sysgate("learn", "-o", policy, "--progress", "--", "sh", "-c", "exit 3")
    assert shown.returncode == 3 and re.search(r"sysgate learn: \d+ syscalls, \d+ distinct\x1b\[K", shown.stderr)
    assert "the command failed (status 3)" in shown.stderr and os.path.exists(policy)
    quiet = sysgate("learn", "-o", policy, "--", "true")
    assert "\x1b[K" not in quiet.stderr               # stderr is not a terminal
    for args, message in ((["--", "/nonexistent/cmd"], "cannot run"),
                          (["--default", "errno(NOPE)", "--", "true"], "--default"),
                          (["--no-pin", "sockett", "--", "true"], "--no-pin"),
                          (["--arch", "vax", "--", "true"], "--arch"),
                          ([], "no command given")):
        bad = sysgate("learn", "-o", policy, *args)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    nowhere = sysgate("learn", "-o", str(tmp_path / "no" / "such.policy"), "--", "sh", "-c", "echo ran")
    assert nowhere.returncode == 2 and "no such directory" in nowhere.stderr and nowhere.stdout == ""
    stdout = sysgate("learn", "-o", "-", "--", "true")
    assert stdout.returncode == 0 and stdout.stdout.startswith("# Learned by")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([p for pins in PINS.values() for p in pins]),
       st.one_of(st.integers(0, 64), st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1)))
def test_pinned_values_are_written_so_the_parser_reads_them_back(pin, value):
    from sysgate.policy.parser import parse_policy

    value &= (1 << syscalls.arg_width(pin.syscall, pin.index())) - 1
    policy = parse_policy(f"{pin.syscall}: {pin.arg} == {pin.namer.text(value)}\n")
    cond = policy.rules[0].condition
    assert (cond.op, cond.arg, cond.value) == ("==", pin.index(), value)
