"""The checker against seccomp(2): every rule, and random programs."""
from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.bpfkernel import kernel_install_errnos
from support.bpfprograms import any_programs, raw_insns
from sysgate.bpf.asm import assemble
from sysgate.bpf.checker import RULES, BPFCheckError, check, is_valid
from sysgate.bpf.insn import Insn, ret
from sysgate.errors import SysgateError
from sysgate.kernel import abi

ALLOW = ret(abi.SECCOMP_RET_ALLOW)


def prog(text: str) -> list[Insn]:
    return assemble(text, check=False)


#: rule -> [(program the kernel rejects, index of the bad instruction, near-identical valid program)]
CASES = {
    "opcode": [(".insn 0x8c, 0, 0, 0\n ret a", 0, "neg\n ret a"),               # neg x does not exist
               ("ld #1\n .insn 0x0e, 0, 0, 0", 1, "ld #1\n ret a"),            # ret x
               (".insn 0x100, 0, 0, 0\n ret a", 0, ".insn 0x00, 0, 0, 0\n ret a")],
    "div-by-zero": [("ld #1\n div #0\n ret a", 1, "ld #1\n div #1\n ret a")],
    "shift-range": [("ld #1\n lsh #32\n ret a", 1, "ld #1\n lsh #31\n ret a"),
                    ("ld #1\n rsh #0xffffffff\n ret a", 1, "ld #1\n rsh #0\n ret a")],
    "memory-slot": [("ld #1\n st M[16]\n ret a", 1, "ld #1\n st M[15]\n ret a"),
                    ("st M[0]\n ldx M[16]\n ret a", 1, "st M[0]\n ldx M[0]\n ret a")],
    "jump-range": [("ja 1\n ret a", 0, "ja 0\n ret a"),
                   ("ld nr\n jeq #1, 2, 0\n ret #ALLOW\n ret a", 1, "ld nr\n jeq #1, 1, 0\n ret #ALLOW\n ret a"),
                   ("ld nr\n jgt #1, 0, 255\n ret a", 1, "ld nr\n jgt #1, 0, 0\n ret a"),
                   ("ja 0xffffffff\n ret a", 0, "ja 0\n ret a")],
    "ancillary": [("ld [0xfffff040]\n ret a", 0, "ld [60]\n ret a"),
                  ("ldb [0xffffffff]\n ret a", 0, "ld [0]\n ret a")],
    "last-ret": [("ld nr", 0, "ret a"), ("ret a\n ld nr", 1, "ld nr\n ret a")],
    "memory-unset": [("ld M[0]\n ret a", 0, "st M[0]\n ld M[0]\n ret a"),
                     ("ld nr\n jeq #1, 0, 1\n st M[3]\n ldx M[3]\n ret a", 3,
                      "ld nr\n st M[3]\n jeq #1, 0, 1\n st M[3]\n ldx M[3]\n ret a"),
                     # the kernel keeps the slots of the code before a ret for the code after it
                     ("ret #ALLOW\n ld M[0]\n ret a", 1, "st M[0]\n ret #ALLOW\n ld M[0]\n ret a"),
                     ("ld nr\n jeq #1, 1, 0\n st M[1]\n ld M[1]\n ret a", 3,
                      "ld nr\n st M[1]\n jeq #1, 1, 0\n st M[1]\n ld M[1]\n ret a")],
    "seccomp-opcode": [("ld #1\n mod #3\n ret a", 1, "ld #1\n div #3\n ret a"),
                       ("ld #1\n mod x\n ret a", 1, "ld #1\n div x\n ret a"),
                       ("ldh [0]\n ret a", 0, "ld [0]\n ret a"),
                       ("ldb [4]\n ret a", 0, "ld [4]\n ret a"),
                       ("ld [x + 0]\n ret a", 0, "ld [0]\n ret a"),
                       ("ldh [x + 2]\n ret a", 0, "ld [0]\n ret a"),
                       ("ldxb 4*([0]&0xf)\n ret a", 0, "ldx #0\n ret a")],
    "seccomp-load": [("ld [2]\n ret a", 0, "ld [4]\n ret a"),
                     ("ld [64]\n ret a", 0, "ld [60]\n ret a"),
                     ("ld [0xfffff000]\n ret a", 0, "ld [0]\n ret a")],   # a known SKF_AD_* load
}
FLAT = [(rule, bad, index, good) for rule, cases in CASES.items() for bad, index, good in cases]


def test_every_rule_has_cases():
    assert set(CASES) | {"length"} == set(RULES)


@pytest.fixture(scope="module")
def kernel_errnos():
    """seccomp(2)'s errno for every program of CASES (bad, good), in one child."""
    programs = [p for _, bad, _, good in FLAT for p in (prog(bad), prog(good))]
    errnos = kernel_install_errnos(programs)
    return {case: (errnos[2 * i], errnos[2 * i + 1]) for i, case in enumerate(FLAT)}


@pytest.mark.parametrize("case", FLAT, ids=[f"{r}-{i}" for i, (r, *_) in enumerate(FLAT)])
def test_rule_matches_the_kernel(kernel_errnos, case):
    rule, bad, index, good = case
    bad_errno, good_errno = kernel_errnos[case]
    assert bad_errno == errno.EINVAL, "the kernel accepted the bad program"
    assert good_errno == 0, "the kernel refused the good program"
    with pytest.raises(BPFCheckError) as err:
        check(prog(bad))
    assert (err.value.rule, err.value.index) == (rule, index)
    assert isinstance(err.value, SysgateError)
    check(prog(good))


def test_length_matches_the_kernel():
    # without the guard: the length limit counts every instruction
    programs = [[], [ALLOW] * 4096, [ALLOW] * 4097, [ALLOW]]
    assert kernel_install_errnos(programs, guard=False) == [errno.EINVAL, 0, errno.EINVAL, 0]
    for p, ok in zip(programs, [False, True, False, True]):
        assert is_valid(p) == ok
    with pytest.raises(BPFCheckError) as err:
        check([ALLOW] * 4097)
    assert err.value.rule == "length" and err.value.index is None


def test_error_message_names_index_instruction_and_rule():
    with pytest.raises(BPFCheckError) as err:
        check(prog("ld nr\n div #0\n ret a"))
    assert str(err.value) == "instruction 1 (div #0): division by the constant 0 [div-by-zero]"


def test_accepts_bytes():
    from sysgate.bpf.insn import pack
    check(pack(prog("ld nr\n ret a")))
    with pytest.raises(BPFCheckError):
        check(pack(prog("ld nr")))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(any_programs(), st.lists(raw_insns, min_size=1, max_size=4)), min_size=40, max_size=40))
def test_random_programs_match_the_kernel(programs):
    """Kernel acceptance == checker acceptance (behind the guard, which accepts and rejects nothing itself)."""
    programs = [p for p in programs if p]  # the guard would make an empty program valid
    verdicts = kernel_install_errnos(programs)
    for program, kernel_errno in zip(programs, verdicts):
        assert kernel_errno in (0, errno.EINVAL)
        assert is_valid(program) == (kernel_errno == 0), [tuple(i) for i in program]
