"""sysgate asm / disasm / emulate."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sysgate.bpf.asm import assemble
from sysgate.bpf.insn import pack, unpack
from sysgate.cli import main
from sysgate.kernel.abi import native_arch

SOURCE = """\
        ld arch
        jne #AUDIT_ARCH_X86_64, kill
        ld nr
        jeq #SYS_openat, check
        ret #ALLOW
check:  ld args[2].lo
        jset #0x40, deny          # O_CREAT
        ret #ALLOW
deny:   ret #ERRNO(13)
kill:   ret #KILL_PROCESS
"""


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "p.bpfa"
    path.write_text(SOURCE)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_asm_raw_disasm_round_trip(source, tmp_path, capsys):
    raw = tmp_path / "p.bpf"
    assert run(capsys, "asm", source, "-o", raw, "--arch", "x86_64") == (0, "", "")
    assert unpack(raw.read_bytes()) == assemble(SOURCE, arch="x86_64")
    code, text, _ = run(capsys, "disasm", raw, "--arch", "x86_64")
    assert code == 0 and text.startswith(".arch x86_64\n")
    assert "jeq #257, L5" in text and "# openat" in text
    assert assemble(text) == assemble(SOURCE, arch="x86_64")
    code, numbered, _ = run(capsys, "disasm", raw, "--arch", "x86_64", "-n", "--no-annotate")
    assert numbered.splitlines()[4].endswith("# 3")


def test_asm_formats(source, tmp_path, capsys):
    code, c_text, _ = run(capsys, "asm", source, "--format", "c", "--arch", "x86_64")
    assert code == 0 and "struct sock_filter filter[] = {" in c_text
    assert "{ 0x06,   0,   0, 0x0005000d }, /* ret #ERRNO(13) */" in c_text
    c_file = tmp_path / "p.c"
    c_file.write_text(c_text)
    code, text, _ = run(capsys, "disasm", c_file, "--arch", "x86_64")
    assert code == 0 and assemble(text) == assemble(SOURCE, arch="x86_64")
    code, canonical, _ = run(capsys, "asm", c_file, "--format", "text", "--arch", "x86_64")
    assert canonical == text


def test_emulate(source, tmp_path, capsys):
    assert run(capsys, "emulate", source, "--arch", "x86_64", "--syscall", "openat", "--args=-100,0x1000,0x41") \
        == (0, "ERRNO(13) (0x0005000d) after 7 instructions\n", "")
    assert run(capsys, "emulate", source, "--arch", "x86_64", "--syscall", "openat", "--args", "1,2,1")[1] \
        == "ALLOW (0x7fff0000) after 7 instructions\n"
    assert run(capsys, "emulate", source, "--arch", "aarch64", "--syscall", "openat")[1] \
        == "KILL_PROCESS (0x80000000) after 3 instructions\n"
    code, out, _ = run(capsys, "emulate", source, "--arch", "x86_64", "--syscall", "257", "--trace")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 7 + 1
    assert lines[3].split()[:4] == ["3:", "jeq", "#257,", "L5"] and "A=0x00000101" in lines[3]
    raw = tmp_path / "p.bpf"
    raw.write_bytes(pack(assemble(SOURCE, arch="x86_64")))
    assert run(capsys, "emulate", raw, "--syscall", "read")[1] == "ALLOW (0x7fff0000) after 5 instructions\n"


def test_stdin(source, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pack(assemble("ret #TRAP(3)")))))
    assert run(capsys, "disasm", "-") == (0, f".arch {native_arch()}\n        ret #TRAP(3)\n", "")


@pytest.mark.parametrize("argv, message", [
    (["asm", "{missing}"], "cannot read {missing}: No such file or directory"),
    (["asm", "{bad}"], "{bad}:2:9: undefined label 'nowhere'"),
    (["asm", "{invalid}"], "{invalid}:1:1: division by the constant 0 [div-by-zero]"),
    (["disasm", "{odd}"], "{odd}: raw BPF must be a multiple of 8 bytes, this is 9"),
    (["disasm", "{invalid_raw}", "--check"], "{invalid_raw}: instruction 0 (div #0): division by the constant 0"),
    (["disasm", "{src}", "--arch", "vax"], "unknown architecture 'vax'"),
    (["emulate", "{src}", "--syscall", "opnat"], "unknown syscall 'opnat'"),
    (["emulate", "{src}", "--syscall", "read", "--args", "1,2,3,4,5,6,7"], "at most 6 arguments, got 7"),
    (["emulate", "{src}", "--syscall", "read", "--args", "1,zz"], "--args[1]: 'zz' is not a number"),
    (["emulate", "{src}", "--syscall", "read", "--ip", "0x1" + "0" * 16], "--ip: 18446744073709551616 is out"),
    (["emulate", "{invalid_raw}", "--syscall", "read"], "instruction 0 (div #0)"),
])
def test_bad_input_is_one_line_exit_2(argv, message, source, tmp_path, capsys):
    files = {"missing": tmp_path / "nope", "bad": tmp_path / "bad.s", "invalid": tmp_path / "inv.s",
             "odd": tmp_path / "odd.bpf", "invalid_raw": tmp_path / "inv.bpf", "src": source}
    files["bad"].write_text("ld nr\njeq #1, nowhere\nret a\n")
    files["invalid"].write_text("div #0\nret a\n")
    files["odd"].write_bytes(b"\0" * 9)
    files["invalid_raw"].write_bytes(pack(assemble("div #0\nret a", check=False)))
    fill = lambda s: s.format(**files)  # noqa: E731
    code, out, err = run(capsys, *map(fill, argv))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("sysgate: error: ") and fill(message) in err, err


def test_no_traceback_in_a_real_process(tmp_path):
    bad = tmp_path / "bad.s"
    bad.write_text("ld nr\n  ret #MAYBE\n")
    proc = subprocess.run([sys.executable, "-m", "sysgate", "asm", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"sysgate: error: {bad}:2:8: unknown constant 'MAYBE' (expected a number, an action " \
                          "such as ALLOW or ERRNO(1), AUDIT_ARCH_*, SYS_<syscall>)\n"


def test_asm_refuses_binary_to_a_terminal(source):
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "sysgate", "asm", str(source)], stdout=follower,
                          stderr=subprocess.PIPE, text=True)
    os.close(leader)
    os.close(follower)
    assert proc.returncode == 2 and "refusing to write binary BPF to a terminal" in proc.stderr


def test_asm_c_header_names_asm_the_source_and_arch(source, capsys):
    code, c_text, _ = run(capsys, "asm", source, "--format", "c", "--arch", "aarch64")
    assert code == 0
    assert c_text.splitlines()[0] == f"/* 10 instructions, written by sysgate asm from {source} for aarch64 */"


def test_c_header_cannot_end_its_comment_early(tmp_path, capsys):
    from sysgate.bpf import formats

    text = formats.to_c(assemble("ret #ALLOW"), origin="from a*/b\nc")
    assert text.splitlines()[0] == "/* 1 instructions, from a*\\/b?c */"
    assert formats.from_c(text) == assemble("ret #ALLOW")


def test_text_source_arch_decides_raw_byte_order_and_emulation(tmp_path, capsys):
    """A source with .arch s390x assembles to big-endian raw; disasm/emulate of the text use its .arch."""
    src = tmp_path / "s.s"
    src.write_text(".arch s390x\n ld arch\n jne #AUDIT_ARCH_S390X, 1\n ret #ALLOW\n ret #KILL_PROCESS\n")
    raw = tmp_path / "s.bpf"
    assert run(capsys, "asm", src, "-o", raw) == (0, "", "")
    assert raw.read_bytes()[:8] == bytes.fromhex("0020000000000004")
    assert run(capsys, "disasm", src)[1].startswith(".arch s390x\n")
    assert run(capsys, "emulate", src, "--syscall", "read")[1].startswith("ALLOW ")
    assert run(capsys, "emulate", src, "--syscall", "read", "--arch", "x86_64")[1].startswith("KILL_PROCESS ")
