"""Syscall tables and signatures: known numbers, round trips, libseccomp agreement, the
running kernel (real filters in forked children), the generators, the API and the CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from sysgate.arch import syscalls
from sysgate.bpf.insn import BPF_JEQ, BPF_JMP, BPF_K, jump, ld_abs, pack, ret
from sysgate.cli import main as cli_main
from sysgate.errors import SysgateError
from sysgate.kernel import abi
from sysgate.kernel import calls
from support import import_tool

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"

KNOWN = [
    ("x86_64", "read", 0), ("x86_64", "openat", 257), ("x86_64", "seccomp", 317),
    ("i386", "seccomp", 354), ("aarch64", "seccomp", 277), ("arm", "seccomp", 383),
    ("riscv64", "seccomp", 277), ("s390x", "seccomp", 348), ("ppc64le", "seccomp", 358),
    ("x32", "read", 0x40000000), ("x32", "seccomp", 0x40000000 + 317),
    ("aarch64", "openat", 56), ("arm", "cacheflush", 0xF0002), ("arm", "set_tls", 0xF0005),
    ("riscv64", "riscv_flush_icache", 259), ("i386", "socketcall", 102),
    ("x86_64", "fchmodat2", 452), ("aarch64", "mseal", 462),
]
MAIN_ARCHES = ["x86_64", "i386", "x32", "aarch64", "arm", "riscv64", "s390x", "ppc64le"]
CORE = ["read", "write", "close", "openat", "execve", "execveat", "exit", "exit_group", "clone",
        "clone3", "futex", "getpid", "gettid", "kill", "tgkill", "rt_sigaction", "rt_sigreturn",
        "ioctl", "socket", "connect", "bind", "seccomp", "prctl", "pidfd_open", "pidfd_getfd",
        "process_vm_readv", "close_range", "openat2", "wait4", "waitid", "dup3", "pipe2", "brk",
        "munmap", "mprotect", "ppoll", "epoll_pwait", "getrandom", "memfd_create", "statx"]


@pytest.mark.parametrize("arch,name,nr", KNOWN)
def test_known_numbers(arch, name, nr):
    assert syscalls.number(arch, name) == nr
    assert syscalls.name(arch, nr) == name
    assert syscalls.resolve(arch, name) == nr


def test_supported_arches_are_exactly_those_with_tables():
    """One list: what abi accepts, what syscalls lists and what data/syscalls holds agree."""
    assert sorted(abi.SUPPORTED_ARCHES) == syscalls.table_files() == sorted(abi.AUDIT_ARCH)
    assert syscalls.arches() == list(abi.SUPPORTED_ARCHES)
    supported = "supported: " + ", ".join(abi.SUPPORTED_ARCHES)
    for name in (*abi.UNSUPPORTED_AUDIT_ARCH, "SCMP_ARCH_MIPS64", "loong64", "vax"):
        with pytest.raises(SysgateError) as raised:
            syscalls.table(name)
        assert str(raised.value).endswith(supported)
        with pytest.raises(ValueError, match=supported):
            abi.canonical_arch(name)
    # their AUDIT_ARCH values are still named when seen
    assert abi.arch_from_audit(abi.UNSUPPORTED_AUDIT_ARCH["mips64"]) == "mips64"


def test_arches_and_aliases():
    assert syscalls.arches() == MAIN_ARCHES
    assert syscalls.number("amd64", "read") == 0
    assert syscalls.number("arm64", "read") == 63
    assert syscalls.number("SCMP_ARCH_AARCH64", "read") == 63
    assert syscalls.number("ppc64el", "read") == 3
    # an alias resolves, the reverse lookup gives the canonical name
    assert syscalls.number("arm", "sync_file_range2") == syscalls.number("arm", "arm_sync_file_range") == 341
    assert syscalls.name("arm", 341) == "arm_sync_file_range"
    assert syscalls.number("aarch64", "open") is None
    assert syscalls.name("x86_64", 100000) is None


@pytest.mark.parametrize("arch", MAIN_ARCHES)
def test_round_trip_and_core(arch):
    tbl = syscalls.table(arch)
    assert len(set(tbl.values())) == len(tbl), "two canonical names share a number"
    for nm, nr in tbl.items():
        assert syscalls.name(arch, nr) == nm
        assert syscalls.number(arch, nm) == nr
        assert syscalls.resolve(arch, nr) == nr == syscalls.resolve(arch, str(nr))
    assert [c for c in CORE if c not in tbl] == []
    if arch == "x32":
        assert all(nr & abi.X32_SYSCALL_BIT for nr in tbl.values())
    tbl.clear()                                    # a copy: the cache is untouched
    assert syscalls.number(arch, "read") is not None


def test_all_names():
    names = syscalls.all_names()
    assert {"read", "open", "cacheflush", "riscv_flush_icache", "socketcall", "mmap2"} <= names
    assert names == set().union(*(syscalls.table(a) for a in syscalls.arches())) | {"sync_file_range2"}


def test_metadata_names_the_source_headers():
    data = json.loads((ROOT / "src/sysgate/data/syscalls/aarch64.json").read_text())
    assert data["linux_headers_version"].startswith("6.")
    assert "aarch64-linux-gnu" in data["source"] and "linux-libc-dev-arm64-cross" in data["headers"]
    assert set(data["newer"]) <= set(data["syscalls"])


_LIBSECCOMP_COMPARE = r"""
import json, sys, seccomp
tables = json.load(sys.stdin)
arch_names = {"x86_64": "X86_64", "i386": "X86", "x32": "X32", "aarch64": "AARCH64", "arm": "ARM",
              "riscv64": "RISCV64", "s390x": "S390X", "ppc64le": "PPC64LE"}
out = {}
for arch, table in tables.items():
    a = getattr(seccomp.Arch, arch_names[arch])
    seen = {}
    for name in table:
        try:
            seen[name] = seccomp.resolve_syscall(a, name)
        except Exception:
            pass
    out[arch] = seen
print(json.dumps(out))
"""


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no /usr/bin/python3")
def test_numbers_agree_with_libseccomp():
    tables = {a: syscalls.table(a) for a in MAIN_ARCHES}
    proc = subprocess.run([SYSTEM_PYTHON, "-c", _LIBSECCOMP_COMPARE], input=json.dumps(tables),
                          capture_output=True, text=True, timeout=60)
    if proc.returncode and "No module named 'seccomp'" in proc.stderr:
        pytest.skip("python3-seccomp is not installed")
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)
    compared = 0
    for arch, known in theirs.items():
        # libseccomp reports multiplexed calls as the multiplexer's number, unknown ones as < 0
        multiplexers = {syscalls.number(arch, "socketcall"), syscalls.number(arch, "ipc")}
        for nm, nr in known.items():
            if nr < 0 or (nr in multiplexers and nm not in ("socketcall", "ipc")):
                continue
            assert tables[arch][nm] == nr, (arch, nm)
            compared += 1
    assert compared > 2500


# --------------------------------------------------------------------------- the running kernel
#: (syscall, how Python makes glibc call it, how the result shows the errno)
_PROBES = {
    "getcwd": lambda: os.getcwd(),
    "sched_yield": lambda: os.sched_yield(),
    "kill": lambda: os.kill(os.getpid(), 0),
    "getpriority": lambda: os.getpriority(os.PRIO_PROCESS, 0),
    "chdir": lambda: os.chdir("/"),
    "getsid": lambda: os.getsid(0),
    "getppid": lambda: os.getppid(),         # glibc returns the raw -errno for getppid
    "fchdir": lambda: os.fchdir(0),
}


def _errno_filter(numbers: list[int]) -> bytes:
    """ERRNO(nr & 0xfff) for each of ``numbers`` on the native arch, ALLOW otherwise."""
    prog = [ld_abs(abi.OFFSET_ARCH),
            jump(BPF_JMP | BPF_JEQ | BPF_K, abi.AUDIT_ARCH[abi.native_arch()], 0, 2 * len(numbers) + 1),
            ld_abs(abi.OFFSET_NR)]
    for nr in numbers:
        prog += [jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1), ret(abi.SECCOMP_RET_ERRNO | (nr & 0xFFF))]
    return pack(prog + [ret(abi.SECCOMP_RET_ALLOW)])


def _run_probes_in_child(numbers: dict[str, int]) -> dict[str, object]:
    """Fork; the child installs the filter, makes each call, reports errno (or the value)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            calls.set_no_new_privs()
            calls.seccomp_set_filter(_errno_filter(list(numbers.values())))
            seen = {}
            for name in numbers:
                try:
                    seen[name] = ["value", _PROBES[name]()]
                except OSError as exc:
                    seen[name] = ["errno", exc.errno]
            os.write(wfd, json.dumps(seen).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        raw = fh.read()
    os.waitpid(pid, 0)
    return json.loads(raw)


def test_native_table_matches_the_running_kernel():
    arch = abi.native_arch()
    numbers = {name: syscalls.number(arch, name) for name in _PROBES}
    numbers = {n: nr for n, nr in numbers.items() if nr is not None}
    assert len(numbers) >= 6
    seen = _run_probes_in_child(numbers)
    for name, nr in numbers.items():
        expected = nr & 0xFFF
        if name == "getppid":
            assert seen[name] == ["value", -expected], name
        else:
            assert seen[name] == ["errno", expected], name


def test_kernel_wrappers_use_the_tables():
    import threading

    assert calls._nr("seccomp") == syscalls.number(None, "seccomp")
    assert calls.gettid() == threading.get_native_id()
    with pytest.raises(OSError):
        calls._nr("no_such_syscall")


# --------------------------------------------------------------------------- generators
@pytest.mark.skipif(shutil.which("gcc") is None or not Path("/usr/aarch64-linux-gnu/include").is_dir(),
                    reason="needs gcc and the linux-libc-dev-*-cross headers")
def test_tables_are_reproducible_from_the_headers():
    proc = subprocess.run([sys.executable, str(ROOT / "tools/gen_syscall_tables.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not Path("/usr/share/man/man2/read.2.gz").exists(), reason="needs manpages-dev")
def test_signatures_are_reproducible_from_the_man_pages():
    proc = subprocess.run([sys.executable, str(ROOT / "tools/gen_signatures.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_troff_synopsis_parsing():
    gen = import_tool("gen_signatures")
    page = "\n".join([
        ".SH SYNOPSIS", ".nf", ".B #include <unistd.h>", ".PP",
        '.BI "ssize_t read(int " fd ", void " buf [. count "], size_t " count );',
        '.BI "int execve(const char *" pathname ", char *const _Nullable " argv [],',
        '.BI "           char *const _Nullable " envp []);',
        '.BI "[[deprecated]] int syscall(SYS_tkill, pid_t " tid ", int " sig );',
        '.BI "int fcntl(int " fd ", int " cmd ", ... /* " arg " */ );"',
        '.BI "int clone(int (*" "fn" ")(void *_Nullable), void *" stack \\',
        '", int " flags );',
        ".fi", ".SH DESCRIPTION", "int notme(int x);"])
    found = {name: (params, raw) for name, params, raw in gen.prototypes(gen.synopsis_text(page))}
    assert found["read"] == ([("fd", "int"), ("buf", "void *"), ("count", "size_t")], False)
    assert found["execve"][0] == [("pathname", "const char *"), ("argv", "char *const *"),
                                  ("envp", "char *const *")]
    assert found["tkill"] == ([("tid", "pid_t"), ("sig", "int")], True)
    assert found["fcntl"][0] == [("fd", "int"), ("cmd", "int")]
    assert found["clone"][0][0] == ("fn", "int (*)(void *)")
    assert "notme" not in found
    assert gen.classify("int", "dirfd") == ("fd", 32)
    assert gen.classify("const char *", "pathname") == ("string", 64)
    assert gen.classify("unsigned long", "mountflags") == ("flags", 64)
    assert gen.classify("pid_t", "pid") == ("int", 32)
    assert gen.classify("uid_t", "owner") == ("uint32", 32)
    assert gen.classify("size_t", "count") == ("ulong", 64)
    assert gen.classify("off_t", "offset") == ("long", 64)


# --------------------------------------------------------------------------- signatures
@pytest.mark.parametrize("name,args", [
    ("read", ["fd", "buf", "count"]),
    ("write", ["fd", "buf", "count"]),
    ("openat", ["dirfd", "pathname", "flags", "mode"]),
    ("connect", ["sockfd", "addr", "addrlen"]),
    ("mmap", ["addr", "length", "prot", "flags", "fd", "offset"]),
    ("clone", ["flags", "stack", "parent_tid", "child_tid", "tls"]),
    ("execve", ["pathname", "argv", "envp"]),
    ("clone3", ["cl_args", "size"]),
    ("openat2", ["dirfd", "pathname", "how", "size"]),
    ("faccessat", ["dirfd", "pathname", "mode"]),
    ("preadv2", ["fd", "iov", "iovcnt", "pos_l", "pos_h", "flags"]),
    ("rt_sigaction", ["sig", "act", "oact", "sigsetsize"]),
    ("newfstatat", ["dirfd", "pathname", "statbuf", "flags"]),
    ("exit_group", ["status"]),
    ("getpid", []),
    ("getpgrp", []),                       # not the BSD getpgrp(pid) the man page also shows
    ("getdents64", ["fd", "dirp", "count"]),
    ("ptrace", ["request", "pid", "addr", "data"]),
])
def test_signature_names(name, args):
    sig = syscalls.signature(name)
    assert sig is not None and list(sig.arg_names) == args
    assert len(sig.params) <= 6


def test_signature_kinds_and_format():
    sig = syscalls.signature("openat")
    assert [p.kind for p in sig.params] == ["fd", "string", "flags", "uint32"]
    assert [p.width for p in sig.params] == [32, 64, 32, 32]
    assert str(sig) == "openat(int dirfd, const char *pathname, int flags, mode_t mode)"
    assert syscalls.signature("no_such_call") is None
    # every signature of a known syscall fits in six arguments
    data = json.loads((ROOT / "src/sysgate/data/signatures.json").read_text())
    assert all(len(params) <= 6 for params in data["signatures"].values())
    assert len(data["signatures"]) > 450


def test_clone_order_per_arch():
    assert syscalls.signature("clone", "x86_64").arg_names[3] == "child_tid"
    for arch in ("i386", "arm", "aarch64", "riscv64", "ppc64le"):
        assert syscalls.signature("clone", arch).arg_names[3:] == ("tls", "child_tid")
    assert syscalls.signature("clone", "s390x").arg_names[:2] == ("stack", "flags")
    assert syscalls.arg_index("clone", "flags", "s390x") == 1
    assert syscalls.signature("mmap", "i386").arg_names == ("args",)


def test_arg_index_and_width():
    assert syscalls.arg_width("read", 0) == 32
    assert syscalls.arg_width("read", 2) == 64
    assert syscalls.arg_width("read", 5) == 64
    assert syscalls.arg_width("no_such_call", 0) == 64
    assert syscalls.arg_width("read", 2, "arm") == 32
    assert syscalls.arg_index("read", "count") == 2
    assert syscalls.arg_index("read", "arg1") == 1
    assert syscalls.arg_index("no_such_call", "arg5") == 5
    with pytest.raises(SysgateError, match="fd, buf, count"):
        syscalls.arg_index("read", "fdd")
    with pytest.raises(SysgateError, match="arg0..arg5"):
        syscalls.arg_index("no_such_call", "fd")
    with pytest.raises(SysgateError):
        syscalls.arg_index("read", "arg6")


def test_resolve_errors():
    with pytest.raises(SysgateError, match="did you mean openat"):
        syscalls.resolve("x86_64", "opneat")
    with pytest.raises(SysgateError, match="exists on x86_64"):
        syscalls.resolve("aarch64", "open")
    with pytest.raises(SysgateError, match="no syscall table"):
        syscalls.resolve("mips", "read")
    with pytest.raises(SysgateError, match="unknown architecture"):
        syscalls.resolve("sparc", "read")
    for bad in ("", "12abc", -1, 2**40, None, 1.5, True):
        with pytest.raises(SysgateError):
            syscalls.resolve("x86_64", bad)
    assert syscalls.resolve("x86_64", " SYS_openat ") == 257
    assert syscalls.resolve("x86_64", "__NR_read") == 0
    assert syscalls.resolve("x86_64", "0x101") == 257
    assert syscalls.resolve("x86_64", 999) == 999


@settings(max_examples=300, deadline=None)
@given(arch=st.sampled_from(MAIN_ARCHES + ["amd64", "bogus", ""]),
       value=st.one_of(st.text(max_size=40), st.integers(min_value=-2**70, max_value=2**70),
                       st.sampled_from(sorted(syscalls.all_names()))))
def test_resolve_never_tracebacks(arch, value):
    try:
        nr = syscalls.resolve(arch, value)
    except SysgateError as exc:
        assert str(exc)
        return
    assert isinstance(nr, int) and 0 <= nr <= 0x7FFFFFFF


@settings(max_examples=200, deadline=None)
@given(syscall=st.sampled_from(["read", "clone", "no_such_call"]), arg=st.text(max_size=20))
def test_arg_index_never_tracebacks(syscall, arg):
    try:
        assert 0 <= syscalls.arg_index(syscall, arg) < 6
    except SysgateError:
        pass


# --------------------------------------------------------------------------- CLI
def test_cli_lookup(capsys):
    assert cli_main(["syscalls", "openat", "0x101"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("openat  x86_64=257 i386=295 x32=0x40000101 aarch64=56 arm=322")
    assert out[0].endswith("openat(int dirfd, const char *pathname, int flags, mode_t mode)")
    assert cli_main(["syscalls", "--arch", "arm64", "--json", "read"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["read"]["numbers"] == {"aarch64": 63}
    assert [p["name"] for p in data["read"]["signature"]] == ["fd", "buf", "count"]


def test_cli_table_and_errors(capsys):
    assert cli_main(["syscalls", "--arch", "arm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(syscalls.table("arm"))
    assert any(line.split() == ["0xf0002", "cacheflush(unsigned", "long", "start,", "unsigned", "long",
                                "end,", "int", "flags)"] for line in lines)
    assert cli_main(["syscalls", "opneat"]) == 2
    assert "did you mean openat" in capsys.readouterr().err
    assert cli_main(["syscalls", "--arch", "aarch64", "open"]) == 2
    assert cli_main(["syscalls", "--arch", "sparc"]) == 2
    assert "unknown architecture" in capsys.readouterr().err
