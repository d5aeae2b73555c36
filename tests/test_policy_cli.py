"""``sysgate policy check|convert|groups`` and the example policies."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysgate.cli import main
from sysgate.policy_loader import load_policy
from sysgate.policy.oci import import_oci
from sysgate.policy.parser import parse_policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.policy"))
PODMAN = "/usr/share/containers/seccomp.json"


def test_check_ok(tmp_path, capsys):
    f = tmp_path / "p.policy"
    f.write_text("default: errno(EPERM)\nread, write: allow\nopenat: flags & O_ACCMODE == O_RDONLY\n")
    assert main(["policy", "check", str(f)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{f}: ok: 3 rules (1 conditional) for 3 syscalls; default errno(EPERM)")


def test_check_reports_error_with_position(tmp_path, capsys):
    f = tmp_path / "bad.policy"
    f.write_text("read: allow\nwrite: fd == O_WRONGLY\n")
    assert main(["policy", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert err == f"sysgate: error: {f}:2:14: unknown constant 'O_WRONGLY'; did you mean 'O_WRONLY'?\n"


def test_check_warnings_and_strict(tmp_path, capsys):
    f = tmp_path / "w.policy"
    f.write_text("read: allow\nread: fd == 0\n")
    assert main(["policy", "check", str(f)]) == 0
    assert f"warning: {f}:2:1: this rule never applies to read" in capsys.readouterr().err
    assert main(["policy", "check", "--strict", str(f)]) == 1


def test_check_missing_file(capsys):
    assert main(["policy", "check", "/nonexistent/p.policy"]) == 2
    assert "no such policy file" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(PODMAN), reason="podman's seccomp.json not installed")
def test_check_and_convert_podman_profile(tmp_path, capsys):
    assert main(["policy", "check", PODMAN, "--arch", "aarch64", "--caps", "CAP_SYS_ADMIN"]) == 0
    assert "arch aarch64, arm" in capsys.readouterr().out
    out = tmp_path / "podman.policy"
    assert main(["policy", "convert", PODMAN, "--to", "text", "-o", str(out)]) == 0
    text_policy = parse_policy(out.read_text(), str(out))
    original = load_policy(PODMAN)
    for name in ("read", "socket", "personality", "bpf", "clone", "getpid", "nonexistent"):
        for args in ((0,) * 6, (16, 3, 9, 0, 0, 0), (8, 0, 0, 0, 0, 0)):
            assert text_policy.decide(name, args)[0] == original.decide(name, args)[0]


def test_convert_text_to_oci_and_back(tmp_path, capsys):
    f = tmp_path / "p.policy"
    f.write_text("default: errno(EPERM)\narch: x86_64\nflags: log\nread: allow\n"
                 "write: fd in {1, 2}\nopenat: flags & O_ACCMODE == O_RDONLY -> allow\nptrace: trace(3)\n")
    assert main(["policy", "convert", str(f), "--to", "oci"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flags"] == ["SECCOMP_FILTER_FLAG_LOG"] and data["defaultErrnoRet"] == 1
    back, original = import_oci(data), load_policy(str(f))
    for name in ("read", "write", "openat", "ptrace", "close"):
        for v in (0, 1, 2, 3):
            args = (v, 0, v, 0, 0, 0)
            assert back.decide(name, args)[0] == original.decide(name, args)[0]


def test_convert_reads_stdin():
    out = subprocess.run([sys.executable, "-m", "sysgate", "policy", "convert", "-", "--to", "text"],
                         input='{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ptrace"], '
                               '"action": "SCMP_ACT_ERRNO"}]}', capture_output=True, text=True, check=True)
    assert "default: allow\n" in out.stdout and "ptrace: errno(EPERM)\n" in out.stdout


def test_groups(capsys):
    assert main(["policy", "groups"]) == 0
    out = capsys.readouterr().out
    assert "@file-system" in out and "@system-service" in out
    assert main(["policy", "groups", "mount"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("@mount (") and "umount2" in out
    assert main(["policy", "groups", "@nope"]) == 2


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_check_without_warnings(path, capsys):
    assert main(["policy", "check", "--strict", str(path)]) == 0


def _compiler_available():
    try:
        from sysgate.compiler import compile_policy  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _compiler_available(), reason="policy compiler not available")
def test_readonly_example_on_the_kernel(tmp_path):
    """The example policy really lets cat read and really stops a shell from creating a file."""
    policy = str(ROOT / "examples" / "readonly-tool.policy")
    cat = subprocess.run([sys.executable, "-m", "sysgate", "run", "--policy", policy, "--", "/bin/cat",
                          "/etc/hostname"], capture_output=True, text=True, timeout=60)
    assert cat.returncode == 0 and cat.stdout == Path("/etc/hostname").read_text()
    target = tmp_path / "created"
    sh = subprocess.run([sys.executable, "-m", "sysgate", "run", "--policy", policy, "--", "/bin/sh", "-c",
                         f"echo x > {target}"], capture_output=True, text=True, timeout=60)
    assert sh.returncode != 0 and "Permission denied" in sh.stderr and not target.exists()
