"""Byte order of compiled filters for every supported architecture, against libseccomp.

A filter is loaded by the kernel of its target architecture, so ``sysgate compile``
writes raw BPF in that kernel's byte order (s390x: big-endian), like libseccomp's
``seccomp_export_bpf``. The two compilers emit different programs, but both begin with
``ld [4]; jeq #AUDIT_ARCH_…``: those bytes must agree, and only decode as such in the
architecture's own byte order. Then every file must read back (disasm, emulate, asm)
to the policy's verdicts and the same bytes.
"""
from __future__ import annotations

import struct

import pytest

from support import libseccomp_baseline as baseline
from sysgate.arch import syscalls
from sysgate.bpf import formats
from sysgate.bpf.asm import assemble
from sysgate.bpf.emulator import Emulator
from sysgate.bpf.insn import Insn, pack, unpack
from sysgate.cli import main
from sysgate.compiler import CompileError, compile_policy
from sysgate.errors import SourceError
from sysgate.kernel import abi
from sysgate.policy_loader import load_policy

#: Written down here, not derived from sysgate: the kernels' byte orders.
BYTE_ORDER = {"x86_64": "little", "i386": "little", "x32": "little", "aarch64": "little", "arm": "little",
              "riscv64": "little", "s390x": "big", "ppc64le": "little"}
#: include/uapi/linux/audit.h
AUDIT_ARCH = {"x86_64": 0xC000003E, "i386": 0x40000003, "x32": 0xC000003E, "aarch64": 0xC00000B7,
              "arm": 0x40000028, "riscv64": 0xC00000F3, "s390x": 0x80000016, "ppc64le": 0xC0000015}
ARCHES = list(BYTE_ORDER)
STRUCT = {"little": "<HBBI", "big": ">HBBI"}

POLICY = """\
default: allow
arch: {arch}
mkdirat: errno(EPERM)
getpid: errno(ESRCH)
lseek: u64(arg1) == 0x100000002 -> errno(EINVAL)
"""
#: (syscall, args) probes for the round trip; the lseek ones tell the halves of a 64-bit argument apart.
PROBES = [("mkdirat", ()), ("getpid", ()), ("read", ()), ("lseek", (3, 0x100000002)), ("lseek", (3, 0x200000001)),
          ("lseek", (3, 0x100000000))]
#: Probes whose verdict differs on 32-bit kernels, where an argument is one 32-bit word.
WIDE_PROBES = [("lseek", (3, 2))]
ALLOW_RET = 0x7FFF0000
NARROW = {"i386", "arm"}

needs_libseccomp = pytest.mark.skipif(not baseline.available(), reason="python3-seccomp is not installed")


def test_the_supported_architectures_are_the_ones_tested():
    assert sorted(syscalls.arches()) == sorted(ARCHES)


def _policy_file(tmp_path, arch):
    path = tmp_path / f"{arch}.policy"
    path.write_text(POLICY.format(arch=arch))
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def libseccomp_filters():
    """libseccomp's exported BPF for the policy, per architecture."""
    if not baseline.available():
        pytest.skip("python3-seccomp is not installed")
    policies = {arch: load_policy_text(arch) for arch in ARCHES}
    results = baseline.compile_batch([baseline.job(policies[arch], [arch]) for arch in ARCHES])
    for arch, result in zip(ARCHES, results):
        assert result["error"] is None and not result["skipped"], (arch, result)
    return {arch: result["raw"] for arch, result in zip(ARCHES, results)}


def load_policy_text(arch):
    from sysgate.policy_loader import load_text

    return load_text(POLICY.format(arch=arch), f"<{arch}>")


def _fields(raw: bytes, order: str) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from(STRUCT[order], raw, off) for off in range(0, len(raw), 8)]


@needs_libseccomp
@pytest.mark.parametrize("arch", ARCHES)
def test_raw_output_has_the_byte_order_libseccomp_exports(arch, tmp_path, capsys, libseccomp_filters):
    out = tmp_path / "f.bpf"
    assert _run(capsys, "compile", _policy_file(tmp_path, arch), "--arch", arch, "-o", out)[0] == 0
    ours, theirs = out.read_bytes(), libseccomp_filters[arch]
    order = BYTE_ORDER[arch]
    wrong = "big" if order == "little" else "little"
    for raw in (ours, theirs):
        code, jt, jf, k = _fields(raw, order)[0]
        assert (code, k) == (0x20, 4)                       # ld [4]: seccomp_data.arch
        code, _, _, k = _fields(raw, order)[1]
        assert (code, k) == (0x15, AUDIT_ARCH[arch])        # jeq #AUDIT_ARCH_<arch>
        assert _fields(raw, wrong)[0] != (0x20, 0, 0, 4)    # the other order does not decode so
    assert ours[:8] == theirs[:8]                           # the same bytes for `ld [4]`
    assert ours[8:10] == theirs[8:10] and ours[12:16] == theirs[12:16]   # jeq's code and constant
    # read with the arch's byte order, both programs decide every syscall of the arch alike
    mine, libseccomp = (Emulator(formats.load(raw, arch=arch), arch) for raw in (ours, theirs))
    bit = abi.X32_SYSCALL_BIT if arch == "x32" else 0
    lseek = syscalls.number(arch, "lseek")
    for nr in syscalls.table(arch).values():
        for args in [(0,) * 6, (3, 0x100000002, 0, 0, 0, 0), (3, 0x200000001, 0, 0, 0, 0)]:
            data = abi.SeccompData(nr | bit, AUDIT_ARCH[arch], 0, args)
            if arch in NARROW and nr == lseek and args[1] >> 32:
                continue        # the one intended difference, below
            assert mine.run(data)[0] == libseccomp.run(data)[0], (arch, nr, args)
    if arch in NARROW:
        # A 32-bit kernel's argument has a high word of 0: `u64(arg1) == 0x100000002` can never
        # hold. libseccomp compares the truncated constant (2) and refuses lseek(fd, 2); sysgate
        # decides the comparison by itself (so `arg < 0x100000000 -> kill` cannot fail open).
        data = abi.SeccompData(lseek, AUDIT_ARCH[arch], 0, (3, 2, 0, 0, 0, 0))
        assert mine.run(data)[0] == ALLOW_RET and libseccomp.run(data)[0] != ALLOW_RET


@pytest.mark.parametrize("arch", ARCHES)
def test_compile_raw_reads_back_for_every_arch(arch, tmp_path, capsys):
    """compile -> raw -> emulate/disasm (CLI, --arch) gives the policy's verdicts; disasm -> asm
    gives the same bytes back; all of the arch's syscalls agree with the policy."""
    path = _policy_file(tmp_path, arch)
    out = tmp_path / "f.bpf"
    assert _run(capsys, "compile", path, "-o", out)[0] == 0
    raw = out.read_bytes()
    policy = load_policy(str(path))
    for name, args in PROBES + WIDE_PROBES:
        if syscalls.number(arch, name) is None:
            continue
        seen = tuple(a & 0xFFFFFFFF for a in args) if arch in NARROW else tuple(args)   # what a 32-bit kernel passes
        action, _ = policy.decide(name, seen + (0,) * (6 - len(args)))
        code, text, err = _run(capsys, "emulate", out, "--arch", arch, "--syscall", name,
                               "--args", ",".join(map(str, args)))
        assert code == 0 and text.split()[1] == f"(0x{action.ret():08x})", (name, args, text, err)
    code, text, _ = _run(capsys, "disasm", out, "--arch", arch)
    assert code == 0 and text.startswith(f".arch {arch}\n")
    source = tmp_path / "f.s"
    source.write_text(text)
    again = tmp_path / "again.bpf"
    assert _run(capsys, "asm", source, "-o", again) == (0, "", "")   # .arch picks the byte order
    assert again.read_bytes() == raw
    program = formats.load(raw, arch=arch)
    emulator = Emulator(program, arch)
    bit = abi.X32_SYSCALL_BIT if arch == "x32" else 0
    for name, nr in syscalls.table(arch).items():
        for args in [(0,) * 6, (3, 0x100000002, 0, 0, 0, 0)]:
            if arch in NARROW:
                args = tuple(a & 0xFFFFFFFF for a in args)      # what a 32-bit kernel passes
            ret, _ = emulator.run(abi.SeccompData(nr | bit, AUDIT_ARCH[arch], 0, args))
            assert ret == policy.decide(name, args)[0].ret(), (arch, name, args)


@pytest.mark.parametrize("arch", ARCHES)
def test_a_wrong_byte_order_guess_is_an_error(arch, tmp_path, capsys):
    path = _policy_file(tmp_path, arch)
    out = tmp_path / "f.bpf"
    assert _run(capsys, "compile", path, "-o", out)[0] == 0
    other = next(a for a in ARCHES if BYTE_ORDER[a] != BYTE_ORDER[arch])
    for argv in (["disasm", out, "--arch", other], ["emulate", out, "--arch", other, "--syscall", "read"]):
        code, text, err = _run(capsys, *argv)
        assert code == 2 and text == "" and err.count("\n") == 1, err
        assert f"this raw BPF is {BYTE_ORDER[arch]}-endian" in err and f"--arch {other} reads it" in err
        assert err.rstrip().endswith(f"pass --arch {'x86_64' if arch == 'x32' else arch}"), err
    if BYTE_ORDER[arch] != BYTE_ORDER[abi.native_arch()]:
        code, _, err = _run(capsys, "disasm", out)
        assert code == 2 and "without --arch it is read in this machine's byte order" in err


def test_a_file_in_the_wrong_order_for_its_arch_is_named(tmp_path):
    """A s390x filter written little-endian (what sysgate did before) is not silently misread."""
    program = compile_policy(load_policy_text("s390x"))
    with pytest.raises(SourceError, match="s390x kernels read big-endian, so the file is in the wrong byte order"):
        formats.load(pack(program.insns, "little"), "old.bpf", arch="s390x")


def test_c_output_is_the_same_instructions_as_the_raw_bytes(tmp_path, capsys):
    """A C array has no byte order: its numbers are the instructions the big-endian raw file holds."""
    path = _policy_file(tmp_path, "s390x")
    out = tmp_path / "f.bpf"
    assert _run(capsys, "compile", path, "-o", out)[0] == 0
    code, c_text, _ = _run(capsys, "compile", path, "--format", "c")
    assert code == 0 and formats.from_c(c_text) == unpack(out.read_bytes(), "big")
    assert c_text.startswith(f"/* {len(formats.from_c(c_text))} instructions, compiled by sysgate compile "
                             f"from {path} for s390x */\n")


def test_mixed_byte_orders_cannot_be_one_raw_file(tmp_path, capsys):
    path = _policy_file(tmp_path, "x86_64")
    code, out, err = _run(capsys, "compile", path, "--arch", "x86_64,s390x", "--format", "raw", "-o",
                          tmp_path / "f.bpf")
    assert code == 2 and err.count("\n") == 1
    assert "mix little-endian (x86_64) and big-endian (s390x)" in err and not (tmp_path / "f.bpf").exists()
    assert _run(capsys, "compile", path, "--arch", "x86_64,s390x", "--format", "c")[0] == 0
    with pytest.raises(CompileError):
        compile_policy(load_policy_text("x86_64"), ["x86_64", "s390x"]).byteorder


@pytest.mark.parametrize("arch", ARCHES)
def test_asm_disasm_round_trip_byte_exact(arch, tmp_path, capsys):
    """asm (text -> raw for the .arch) and disasm/asm of raw with --arch keep every byte."""
    source = tmp_path / "p.s"
    source.write_text(f".arch {arch}\n ld arch\n jne #0x{AUDIT_ARCH[arch]:x}, kill\n ld args[1].lo\n"
                      f" jeq #7, deny\n ret #ALLOW\ndeny: ret #ERRNO(1)\nkill: ret #KILL_PROCESS\n")
    raw = tmp_path / "p.bpf"
    assert _run(capsys, "asm", source, "-o", raw) == (0, "", "")
    data = raw.read_bytes()
    assert unpack(data, BYTE_ORDER[arch]) == assemble(source.read_text())
    again = tmp_path / "again.bpf"
    assert _run(capsys, "asm", raw, "--arch", arch, "-o", again) == (0, "", "")
    assert again.read_bytes() == data
    code, text, _ = _run(capsys, "disasm", raw, "--arch", arch)
    source.write_text(text)
    assert _run(capsys, "asm", source, "-o", again) == (0, "", "") and again.read_bytes() == data
    # args[1].lo is the word at +4 on a big-endian kernel
    assert unpack(data, BYTE_ORDER[arch])[2] == Insn(0x20, 0, 0, 0x18 + (4 if BYTE_ORDER[arch] == "big" else 0))


def test_stored_filter_holds_the_program_in_the_target_byte_order(tmp_path, capsys):
    import base64
    import json

    path = _policy_file(tmp_path, "s390x")
    raw, stored = tmp_path / "f.bpf", tmp_path / "f.json"
    assert _run(capsys, "compile", path, "-o", raw)[0] == 0
    assert _run(capsys, "compile", path, "--format", "filter", "-o", stored)[0] == 0
    doc = json.loads(stored.read_text())
    assert doc["arches"] == ["s390x"] and base64.b64decode(doc["program"]) == raw.read_bytes()
