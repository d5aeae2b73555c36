"""``sysgate compile`` and ``sysgate explain``."""
from __future__ import annotations

import subprocess
import sys

import pytest

from sysgate.bpf.asm import assemble
from sysgate.bpf.insn import unpack
from sysgate.compiler import compile_policy
from sysgate.policy_loader import load_policy

POLICY = """\
default: errno(EPERM)
arch: x86_64, i386
read, write, close, exit_group: allow
openat: flags & O_ACCMODE == O_RDONLY
openat: errno(EACCES)
socket: domain == AF_UNIX || domain == AF_INET -> allow
"""


def sysgate(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "sysgate", *args], capture_output=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr.decode()
    return proc


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "p.policy"
    path.write_text(POLICY)
    return path


def test_compile_raw_c_and_text(policy_file, tmp_path):
    out = tmp_path / "p.bpf"
    sysgate("compile", str(policy_file), "-o", str(out))
    program = compile_policy(load_policy(str(policy_file)))
    assert out.read_bytes() == program.pack()
    text = sysgate("compile", str(policy_file), "--format", "text").stdout.decode()
    assert assemble(text) == program.insns
    c = sysgate("compile", str(policy_file), "--format", "c").stdout.decode()
    assert "struct sock_filter" in c and c.count("{ 0x") == len(program)


def test_compile_arch_and_frequencies(policy_file, tmp_path):
    freq = tmp_path / "freq"
    freq.write_text("read 100\nwrite 50\n")
    raw = sysgate("compile", str(policy_file), "--arch", "x86_64", "--frequencies", str(freq)).stdout
    policy = load_policy(str(policy_file))
    assert unpack(raw) == compile_policy(policy, ["x86_64"], frequencies={"read": 100, "write": 50}).insns


def test_explain(policy_file):
    out = sysgate("explain", str(policy_file), "openat", "AT_FDCWD", "0", "O_RDWR").stdout.decode()
    assert out.startswith(f"openat(AT_FDCWD, 0, O_RDWR) -> errno(EACCES) by rule at {policy_file}:5 (")
    assert out.rstrip().endswith("instructions)")
    out = sysgate("explain", str(policy_file), "openat", "-100", "0", "0").stdout.decode()
    assert f"-> allow by rule at {policy_file}:4" in out
    out = sysgate("explain", str(policy_file), "kill", "1", "9").stdout.decode()
    assert "-> errno(EPERM) by the default action" in out
    out = sysgate("explain", str(policy_file), "read", "--arch", "aarch64").stdout.decode()
    assert "-> kill_process by the bad_arch action" in out
    out = sysgate("explain", str(policy_file), "socket", "1", "--arch", "i386").stdout.decode()
    assert f"-> allow by rule at {policy_file}:6" in out


@pytest.mark.parametrize("args, message", [
    (["explain", "{p}", "nosuch"], "unknown syscall"),
    (["explain", "{p}", "read", "NOT_A_CONSTANT"], "neither a number nor a known constant"),
    (["compile", "{p}", "--arch", "vax"], "unknown architecture"),
    (["compile", "/nonexistent.policy"], "no such policy file"),
])
def test_errors_are_one_line(policy_file, args, message):
    proc = sysgate(*[a.format(p=policy_file) for a in args], check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


# --------------------------------------------------------------------------- warnings
OCI_PROFILE = """{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
  {"names": ["mkdirat", "not_a_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
  {"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 210,
   "args": [{"index": 0, "value": 1000, "op": "SCMP_CMP_EQ"}]},
  {"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 211,
   "args": [{"index": 1, "value": 2000, "op": "SCMP_CMP_EQ"}]}
]}
"""


def _warnings(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith("warning: ")]


def test_compile_prints_the_warnings_policy_check_prints(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(OCI_PROFILE)
    checked = _warnings(sysgate("policy", "check", str(profile)).stderr)
    assert len(checked) == 2 and "unknown syscalls ignored: not_a_syscall" in checked[0]
    assert "dup3 rules with different actions overlap" in checked[1]
    out = tmp_path / "p.bpf"
    proc = sysgate("compile", str(profile), "-o", str(out))
    assert _warnings(proc.stderr) == checked and out.stat().st_size > 0
    proc = sysgate("compile", str(profile), "--strict", "-o", str(tmp_path / "strict.bpf"), check=False)
    err = proc.stderr.decode().splitlines()
    assert proc.returncode == 2 and err[:2] == checked and len(err) == 3
    assert err[2] == f"sysgate: error: {profile}: 2 warning(s) and --strict: nothing written"
    assert not (tmp_path / "strict.bpf").exists()


def test_compile_warns_of_rules_absent_on_the_compiled_arches(tmp_path):
    """open exists on x86_64 (the policy's arch, so the parser is silent) but not on aarch64."""
    path = tmp_path / "p.policy"
    path.write_text("default: allow\narch: x86_64\nopen, openat: errno(EPERM)\n")
    assert _warnings(sysgate("compile", str(path), "--format", "text").stderr) == []
    proc = sysgate("compile", str(path), "--arch", "aarch64", "--format", "text")
    assert _warnings(proc.stderr) == [f"warning: {path}: syscall(s) open do not exist on aarch64; their rules "
                                      f"have no effect there"]
    assert sysgate("compile", str(path), "--arch", "aarch64", "--strict", check=False).returncode == 2


# --------------------------------------------------------------------------- what BPF cannot carry
NOTIFY_POLICY = """\
default: allow
arch: x86_64
flags: log
mkdirat: errno(EPERM)
uname: notify(identity)
"""


@pytest.fixture
def notify_policy(tmp_path):
    path = tmp_path / "n.policy"
    path.write_text(NOTIFY_POLICY)
    return path


@pytest.mark.parametrize("fmt", ["raw", "c", "text"])
def test_bpf_formats_refuse_to_drop_routes_flags_and_the_listener(notify_policy, tmp_path, fmt):
    out = tmp_path / "n.out"
    proc = sysgate("compile", str(notify_policy), "--format", fmt, "-o", str(out), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and not out.exists(), err
    assert err.startswith(f"sysgate: error: {notify_policy}: {fmt} BPF cannot carry the handler routes of its "
                          f"notify(NAME) actions (uname -> identity); its filter flags (log); that it needs a "
                          f"listener: installed without one (e.g. by bwrap --seccomp), the calls it sends to "
                          f"USER_NOTIF (uname) fail with ENOSYS; ")
    assert "--format filter" in err and "--allow-lossy" in err
    proc = sysgate("compile", str(notify_policy), "--format", fmt, "-o", str(out), "--allow-lossy")
    assert _warnings(proc.stderr) == [
        f"warning: {notify_policy}: dropped from the {fmt} BPF: the handler routes of its notify(NAME) actions "
        f"(uname -> identity)",
        f"warning: {notify_policy}: dropped from the {fmt} BPF: its filter flags (log)",
        f"warning: {notify_policy}: dropped from the {fmt} BPF: that it needs a listener: installed without one "
        f"(e.g. by bwrap --seccomp), the calls it sends to USER_NOTIF (uname) fail with ENOSYS"]
    assert out.stat().st_size > 0


def test_a_bare_notify_rule_alone_still_needs_the_listener_said(tmp_path):
    path = tmp_path / "p.policy"
    path.write_text("default: allow\nptrace: notify\n")
    proc = sysgate("compile", str(path), "--format", "text", check=False)
    assert proc.returncode == 2 and b"needs a listener" in proc.stderr and b"routes" not in proc.stderr
    path.write_text("default: allow\nptrace: errno(EPERM)\n")
    assert sysgate("compile", str(path), "--format", "text").stderr == b""


UNAME = r"""
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

/* Install the raw BPF file argv[1] the way bwrap --seccomp does (no listener), then call
   uname and mkdirat: print what each returned. */
int main(int argc, char **argv) {
    static struct sock_filter insns[4096];
    FILE *f = fopen(argv[1], "rb");
    size_t n = fread(insns, sizeof insns[0], 4096, f);
    struct sock_fprog prog = { .len = (unsigned short)n, .filter = insns };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        perror("seccomp");
        return 2;
    }
    struct utsname u;
    long r = syscall(SYS_uname, &u);
    printf("uname %ld %d\n", r, r ? errno : 0);
    r = syscall(SYS_mkdirat, -100, "/nonexistent-dir/x", 0700);
    printf("mkdirat %ld %d\n", r, r ? errno : 0);
    return 0;
}
"""


def test_lossy_raw_bpf_really_fails_notified_calls_with_enosys(notify_policy, tmp_path):
    """Why raw BPF is refused: without a listener the kernel fails USER_NOTIF calls with ENOSYS."""
    import errno

    from support.cprog import cprog

    raw = tmp_path / "n.bpf"
    sysgate("compile", str(notify_policy), "-o", str(raw), "--allow-lossy")
    proc = subprocess.run([cprog(UNAME), str(raw)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [f"uname -1 {errno.ENOSYS}", f"mkdirat -1 {errno.EPERM}"]


def test_format_filter_keeps_routes_and_flags_for_sysgate_run(notify_policy, tmp_path):
    """--format filter writes a stored filter that sysgate run --filter answers with the handler."""
    import json

    stored = tmp_path / "n.json"
    proc = sysgate("compile", str(notify_policy), "--format", "filter", "-o", str(stored))
    assert _warnings(proc.stderr) == []
    doc = json.loads(stored.read_text())
    assert doc["metadata"]["handlers"] == {"uname": ["identity"]} and doc["flags"] == {"log": True}
    proc = subprocess.run([sys.executable, "-m", "sysgate", "run", "--filter", str(stored), "--handlers",
                           '{"identity": {"hostname": "stored-box"}}', "--", "uname", "-n"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "stored-box\n", proc.stderr


def test_c_header_names_compile_the_policy_and_the_arches(policy_file):
    c = sysgate("compile", str(policy_file), "--format", "c").stdout.decode()
    assert c.splitlines()[0].endswith(f"instructions, compiled by sysgate compile from {policy_file} "
                                      f"for x86_64, i386 */")
    assert "sysgate asm" not in c


def test_explain_is_unaffected_by_notify_routes(notify_policy):
    out = sysgate("explain", str(notify_policy), "uname").stdout.decode()
    assert out.startswith(f"uname() -> notify(identity) by rule at {notify_policy}:5 (")


def test_compile_warns_when_a_32_bit_arch_cannot_test_a_64_bit_constant(tmp_path):
    path = tmp_path / "w.policy"
    path.write_text("default: allow\narch: x86_64, i386\nlseek: u64(arg1) == 0x100000002 -> errno(EINVAL)\n"
                    "lseek: u64(arg1) == -1 -> errno(EINVAL)\nread: u64(arg2) < 0x100000000 -> kill\n")
    out = tmp_path / "w.bpf"
    proc = sysgate("compile", str(path), "--arch", "i386", "-o", str(out))
    assert _warnings(proc.stderr) == [
        f"warning: {path}:3: lseek: arguments are 32 bits on i386: arg1 == 0x100000002 never holds there "
        f"(the high word is 0)",
        f"warning: {path}:5: read: arguments are 32 bits on i386: arg2 < 0x100000000 always holds there "
        f"(the high word is 0)"]
    # what the warning says is what the filter does (libseccomp would compare the truncated 2 and 0:
    # refuse lseek(fd, 2) and let every read through a rule meant to kill them all)
    emulate = ("emulate", str(out), "--arch", "i386", "--syscall")
    assert sysgate(*emulate, "lseek", "--args", "3,2").stdout.startswith(b"ALLOW ")
    assert sysgate(*emulate, "lseek", "--args", "3,0xffffffff").stdout.startswith(b"ERRNO(22) ")
    assert sysgate(*emulate, "read", "--args", "0,0,5").stdout.startswith(b"KILL")
    assert _warnings(sysgate("compile", str(path), "--arch", "x86_64", "-o", str(out)).stderr) == []


def test_oci_listener_and_launch_flags_are_not_dropped_silently(tmp_path):
    profile = tmp_path / "l.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock", '
                       '"listenerMetadata": "box", "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"], '
                       '"syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}')
    proc = sysgate("compile", str(profile), "--format", "text", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1
    assert "its filter flags (log, tsync)" in err and "(mkdirat) fail with ENOSYS" in err
    assert "its OCI listenerPath '/run/agent.sock' and listenerMetadata 'box'" in err
    proc = sysgate("compile", str(profile), "--format", "filter", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.count("\n") == 1 and "ENOSYS" not in err and "routes" not in err
    assert err.startswith(f"sysgate: error: {profile}: stored filter cannot carry its filter flags tsync (")
    assert "listenerPath '/run/agent.sock'" in err
    proc = sysgate("compile", str(profile), "--format", "filter", "--allow-lossy")
    assert [w.split(": ", 3)[3][:22] for w in _warnings(proc.stderr)] == ["its filter flags tsync",
                                                                          "its OCI listenerPath '"]


def test_only_the_sysgate_program_freezes_the_collector(policy_file, tmp_path):
    """``sysgate compile`` asks to leave its objects to the exit (gc.freeze in cli.command); an
    in-process main() must not freeze the caller's collector, and the program's output is the
    in-process one."""
    import gc

    from sysgate.cli import main

    inproc, program = tmp_path / "a.bpf", tmp_path / "b.bpf"
    frozen = gc.get_freeze_count()
    assert main(["compile", str(policy_file), "-o", str(inproc)]) == 0
    assert gc.get_freeze_count() == frozen
    script = ("import gc, sys\nfrom sysgate.cli import command\ncode = command()\n"
              "print(gc.get_freeze_count() > 0)\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", script, "compile", str(policy_file), "-o", str(program)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "True"
    assert program.read_bytes() == inproc.read_bytes()
