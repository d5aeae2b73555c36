"""``sysgate compile`` and ``sysgate explain``."""
from __future__ import annotations

import subprocess
import sys

import pytest

from sysgate.bpf.asm import assemble
from sysgate.bpf.insn import unpack
from sysgate.compiler import compile_policy
from sysgate.policy.loader import load_policy

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
