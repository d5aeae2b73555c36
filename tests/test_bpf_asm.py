"""Assembler, disassembler and file formats: syntax, errors, exact round trips."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.bpfprograms import raw_insns, valid_programs
from sysgate.bpf import formats
from sysgate.bpf.asm import assemble, strip_comment
from sysgate.bpf.disasm import disassemble, insn_text
from sysgate.bpf.insn import (BPF_ABS, BPF_ALU, BPF_DIV, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT,
                              BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_LDX, BPF_LEN, BPF_MEM, BPF_MISC, BPF_NEG,
                              BPF_RET, BPF_ST, BPF_TAX, BPF_W, BPF_X, BPF_A, BPF_H, BPF_B, BPF_MSH, Insn, pack)
from sysgate.errors import SourceError

EXAMPLE = """\
# deny openat with EACCES, kill foreign arches
        ld arch                       ; A = seccomp_data.arch
        jne #AUDIT_ARCH_X86_64, kill
        ld nr
        jeq #SYS_openat, deny         # fall through when false
        jge #1000, 0, 1
        ret #ALLOW
deny:   ret #ERRNO(13)
kill:
        ret #KILL_PROCESS
"""


def test_example_assembles_to_the_expected_instructions():
    assert assemble(EXAMPLE, arch="x86_64") == [
        Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 4),
        Insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 5, 0xC000003E),
        Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0),
        Insn(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 257),
        Insn(BPF_JMP | BPF_JGE | BPF_K, 0, 1, 1000),
        Insn(BPF_RET | BPF_K, 0, 0, 0x7FFF0000),
        Insn(BPF_RET | BPF_K, 0, 0, 0x0005000D),
        Insn(BPF_RET | BPF_K, 0, 0, 0x80000000),
    ]


def test_example_disassembles_canonically():
    assert disassemble(assemble(EXAMPLE, arch="x86_64"), "x86_64") == """\
.arch x86_64
        ld arch
        jne #0xc000003e, L7             # AUDIT_ARCH_X86_64
        ld nr
        jeq #257, L6                    # openat
        jlt #1000, L6
        ret #ALLOW
L6:     ret #ERRNO(13)
L7:     ret #KILL_PROCESS
"""


@pytest.mark.parametrize("text, expected", [
    ("ld #5", Insn(BPF_LD | BPF_IMM, 0, 0, 5)),
    ("LD #-1", Insn(BPF_LD | BPF_IMM, 0, 0, 0xFFFFFFFF)),
    ("ld #0b101", Insn(BPF_LD | BPF_IMM, 0, 0, 5)),
    ("ld #len", Insn(BPF_LD | BPF_W | BPF_LEN)),
    ("ld len", Insn(BPF_LD | BPF_W | BPF_LEN)),
    ("ldx #len", Insn(BPF_LDX | BPF_W | BPF_LEN)),
    ("ld [x]", Insn(BPF_LD | BPF_W | BPF_IND)),
    ("ldh [x + 2]", Insn(BPF_LD | BPF_H | BPF_IND, 0, 0, 2)),
    ("ldb [7]", Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 7)),
    ("ldx 4*([14]&0xf)", Insn(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 14)),
    ("ldx M[3]", Insn(BPF_LDX | BPF_W | BPF_MEM, 0, 0, 3)),
    ("ld ip.hi", Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 12)),
    ("ld args[5].hi", Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 60)),
    ("add X", Insn(BPF_ALU | 0x00 | BPF_X)),
    ("div #3", Insn(BPF_ALU | BPF_DIV | BPF_K, 0, 0, 3)),
    ("neg", Insn(BPF_ALU | BPF_NEG)),
    ("tax", Insn(BPF_MISC | BPF_TAX)),
    ("ret A", Insn(BPF_RET | BPF_A)),
    ("ret #kill", Insn(BPF_RET | BPF_K, 0, 0, 0)),
    ("ret #trace(5)", Insn(BPF_RET | BPF_K, 0, 0, 0x7FF00005)),
    ("ret #USER_NOTIF", Insn(BPF_RET | BPF_K, 0, 0, 0x7FC00000)),
    ("ret #0x7fff0000", Insn(BPF_RET | BPF_K, 0, 0, 0x7FFF0000)),
    ("jmp 3", Insn(BPF_JMP | BPF_JA, 0, 0, 3)),
    ("jneq #1, 4", Insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 4, 1)),
    ("jne x, 1, 2", Insn(BPF_JMP | BPF_JEQ | BPF_X, 2, 1, 0)),
    ("jle #9, 3", Insn(BPF_JMP | BPF_JGT | BPF_K, 0, 3, 9)),
    ("jset #0x10, 1, 2", Insn(BPF_JMP | BPF_JSET | BPF_K, 1, 2, 0x10)),
    (".insn 0xffff, 255, 1, -1", Insn(0xFFFF, 255, 1, 0xFFFFFFFF)),
])
def test_syntax(text, expected):
    assert assemble(text, arch="x86_64", check=False) == [expected]


def test_big_endian_halves_and_arch_directive():
    assert assemble(".arch s390x\n ld args[0].lo\n ld ip.hi", check=False) == [
        Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 20), Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 8)]
    # the directive wins over the default
    assert assemble(".arch s390x\n ld args[1].lo", arch="x86_64", check=False)[0].k == 28
    assert disassemble([Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 20)], "s390x").splitlines()[1].split() == \
        ["ld", "args[0].lo"]


def test_syscall_names_follow_the_arch():
    assert assemble(".arch aarch64\n ld nr\n jeq #SYS_openat, 0\n ret a")[1].k == 56
    assert assemble("ld nr\n jeq #__NR_openat, 0\n ret a", arch="x86_64")[1].k == 257


def test_comments():
    assert strip_comment("ret #ALLOW # why") == "ret #ALLOW "
    assert strip_comment("  #only a comment") == "  "
    assert strip_comment("ld #1; see #2") == "ld #1"
    assert strip_comment("ld #1 #") == "ld #1 "
    assert assemble("# a\n; b\n\n  ret #ALLOW ; c\n") == [Insn(BPF_RET | BPF_K, 0, 0, 0x7FFF0000)]


@pytest.mark.parametrize("source, line, column, message", [
    ("ld nr\n  frob #1\n ret a", 2, 3, "unknown instruction 'frob'"),
    ("ld nr\njeq #1, nowhere\nret a", 2, 9, "undefined label 'nowhere'"),
    ("a: ret a\nret #ALLOW\nja a", 3, 4, "backward jump to 'a'"),
    ("x: ld nr\nx: ret a", 2, 1, "label 'x' already defined on line 1"),
    ("ld nr\njeq #1, end\nret a\nend:", 2, 9, "label 'end' (line 4) is not followed by an instruction"),
    ("ld #1 #2\nret a", 1, 7, "a comment needs a space after '#'"),
    ("ld #0x1g\nret a", 1, 5, "bad number '0x1g'"),
    ("ld #0x100000000\nret a", 1, 5, "out of range"),
    ("ret #ERRNO(70000)", 1, 12, "action data 70000 out of range"),
    ("ret #MAYBE", 1, 6, "unknown constant 'MAYBE'"),
    ("ld args[6].lo\nret a", 1, 9, "argument index 6 out of range"),
    ("ld args[1]\nret a", 1, 4, "say which half"),
    ("ld nr.lo\nret a", 1, 4, "'nr' is a 32-bit field"),
    ("ld foo\nret a", 1, 4, "unknown seccomp_data field 'foo'"),
    ("ldx [4]\nret a", 1, 5, "ldx takes"),
    ("st #1\nret a", 1, 4, "expected a scratch memory slot"),
    ("jeq #1\nret a", 1, 7, "expected ',' and a jump target"),
    ("jeq #1, 256\nret a", 1, 9, "jump offset 256 out of range 0..255"),
    ("ret x", 1, 5, "ret takes"),
    ("ld nr\n.arch x86_64\nret a", 2, 1, ".arch must come before the first instruction"),
    (".arch vax\nret a", 1, 7, "unknown architecture 'vax'"),
    (".org 5", 1, 2, "unknown directive '.org'"),
    ("ret a\nld nr $", 2, 7, "unexpected character '$'"),
    ("ld #SYS_nosuchcall\nret a", 1, 5, "unknown syscall 'SYS_nosuchcall'"),
    ("ld nr\ndiv #0\nret a", 2, 1, "division by the constant 0 [div-by-zero]"),
    ("ld nr\nld M[2]\nret a", 2, 1, "M[2] may be loaded before it is stored [memory-unset]"),
    ("ld nr", 1, 1, "must end with ret [last-ret]"),
])
def test_errors_point_at_the_source(source, line, column, message):
    with pytest.raises(SourceError) as err:
        assemble(source, file="f.bpf", arch="x86_64")
    assert (err.value.file, err.value.line, err.value.column) == ("f.bpf", line, column), str(err.value)
    assert message in err.value.message
    assert str(err.value).startswith(f"f.bpf:{line}:{column}: ")


def test_far_conditional_jump_is_an_error():
    source = "ld nr\njeq #1, far\n" + "ld #0\n" * 256 + "far: ret a\n"
    with pytest.raises(SourceError, match="256 instructions ahead; a conditional jump reaches at most 255"):
        assemble(source)
    assemble(source.replace("jeq #1, far", "ja far"))  # ja takes a 32-bit offset
    assemble(source.replace("ld #0\n", "", 1))          # 255 is still in range


# --------------------------------------------------------------------------- round trips
@settings(max_examples=300, deadline=None)
@given(st.lists(raw_insns, min_size=1, max_size=30), st.sampled_from(["x86_64", "s390x", "aarch64", "ppc64le"]))
def test_any_program_round_trips(program, arch):
    """asm(disasm(p)) == p for every 8-byte pattern, and the text is a fixed point."""
    text = disassemble(program, arch)
    assert assemble(text, check=False) == program
    assert disassemble(assemble(text, check=False), arch) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_programs())
def test_valid_program_round_trips(program):
    text = disassemble(program, numbers=True)
    assert assemble(text) == program
    assert disassemble(assemble(text), numbers=True) == text


def _num(k: int, mask: bool = False) -> str:
    return f"0x{k:x}" if mask or k >= 0x10000 else str(k)


@st.composite
def canonical_texts(draw):
    """Canonical assembler text written directly (not by the disassembler)."""
    n = draw(st.integers(1, 25))
    lines, targets = [], set()
    k32 = st.integers(0, 0xFFFFFFFF)
    for pc in range(n):
        kind = draw(st.sampled_from(["field", "imm", "mem", "alu", "misc", "ret", "jump", "ja", "raw", "abs"]))
        if kind == "field":
            text = "ld " + draw(st.sampled_from(["nr", "arch", "ip.lo", "ip.hi"] +
                                                [f"args[{i}].{h}" for i in range(6) for h in ("lo", "hi")]))
        elif kind == "abs":
            text = f"{draw(st.sampled_from(['ldh', 'ldb']))} [{_num(draw(k32))}]"
        elif kind == "imm":
            text = f"{draw(st.sampled_from(['ld', 'ldx']))} #{_num(draw(k32))}"
        elif kind == "mem":
            text = f"{draw(st.sampled_from(['ld', 'ldx', 'st', 'stx']))} M[{draw(st.integers(0, 15))}]"
        elif kind == "alu":
            op = draw(st.sampled_from(["add", "sub", "mul", "div", "mod", "and", "or", "xor", "lsh", "rsh"]))
            text = f"{op} x" if draw(st.booleans()) else f"{op} #{_num(draw(k32), op in ('and', 'or', 'xor'))}"
        elif kind == "misc":
            text = draw(st.sampled_from(["tax", "txa", "neg", "ld #len", "ldx #len", "ret a"]))
        elif kind == "ret":
            text = "ret #" + draw(st.sampled_from(["ALLOW", "KILL_THREAD", "KILL_PROCESS", "ERRNO(0)", "ERRNO(13)",
                                                   "TRAP(2)", "TRACE(9)", "LOG", "USER_NOTIF", "0x12345678"]))
        elif kind == "raw":
            text = f".insn 0x07, 0, 0, 0x{draw(st.integers(1, 0xFFFFFFFF)):x}"   # tax with a k
        elif pc == n - 1:
            text = "ret a"
        elif kind == "ja":
            t = draw(st.integers(pc + 1, n - 1))
            targets.add(t)
            text = f"ja L{t}"
        else:
            op = draw(st.sampled_from(["jeq", "jgt", "jge", "jset", "jne", "jlt", "jle"]))
            cmp = "x" if draw(st.booleans()) else f"#{_num(draw(k32), op == 'jset')}"
            reach = min(n - 1, pc + 256)
            # canonical forms: one target when the other offset is 0; jne/jlt/jle when jt == 0 only;
            # two targets otherwise (jset has no inverse, so its jt may be 0)
            two = op in ("jeq", "jgt", "jge", "jset") and pc + 2 <= n - 1 and draw(st.booleans())
            first = pc + 1 if (op == "jset" or not two) and op not in ("jne", "jlt", "jle") else pc + 2
            if first > reach:
                text = "txa"
            else:
                t = draw(st.integers(first, reach))
                f = draw(st.integers(pc + 2, reach)) if two else None
                targets.update([t, f] if two else [t])
                text = f"{op} {cmp}, L{t}, L{f}" if two else f"{op} {cmp}, L{t}"
        lines.append(text)
    body = "".join(f"{f'L{pc}:' if pc in targets else '':<8}{text}\n" for pc, text in enumerate(lines))
    return ".arch x86_64\n" + body


@settings(max_examples=300, deadline=None)
@given(canonical_texts())
def test_canonical_text_round_trips(text):
    """disasm(asm(text)) == text for canonical text written independently of the disassembler."""
    program = assemble(text, check=False)
    assert disassemble(program, annotate=False) == text


def test_insn_text_spells_offsets_as_numbers():
    assert insn_text(Insn(BPF_JMP | BPF_JGT | BPF_K, 0, 3, 9)) == "jle #9, 3"
    assert insn_text(Insn(BPF_JMP | BPF_JSET | BPF_K, 0, 3, 0xFF)) == "jset #0xff, 0, 3"
    assert insn_text(Insn(BPF_ST, 1, 0, 1)) == ".insn 0x02, 1, 0, 0x1"


# --------------------------------------------------------------------------- formats
@settings(max_examples=100, deadline=None)
@given(st.lists(raw_insns, min_size=1, max_size=20))
def test_c_and_raw_formats_round_trip(program):
    c_text = formats.to_c(program)
    assert formats.from_c(c_text) == program
    for fmt in formats.FORMATS:
        data = formats.dump(program, fmt)
        assert formats.detect(data) == fmt or (fmt == "raw" and b"\0" not in data)
        assert formats.load(data, fmt=fmt) == program


def test_c_input_variants():
    text = "static struct sock_filter f[] = {\n  { 0x06, 0, 0, 0x7fff0000U }, // allow\n /* { 1, 2, 3, 4 } */ };"
    assert formats.from_c(text) == [Insn(BPF_RET | BPF_K, 0, 0, 0x7FFF0000)]
    with pytest.raises(SourceError, match=r"x\.c:2:9: jt '300' is out of range 0\.\.255"):
        formats.from_c("f[] = {\n{ 0x06, 300, 0, 0 } };", "x.c")
    with pytest.raises(SourceError, match="no '{ code, jt, jf, k }' entries"):
        formats.from_c("int x;", "x.c")


def test_raw_load_errors():
    with pytest.raises(SourceError, match="multiple of 8 bytes, this is 9"):
        formats.load(pack([Insn(6)]) + b"\0")
    assert formats.load(pack([Insn(6)])) == [Insn(6)]
