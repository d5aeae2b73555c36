"""The policy language: syntax, semantics, constants, groups, includes, errors, warnings."""
import errno
import os

import pytest

from sysgate.arch import syscalls
from sysgate.errors import SourceError, SysgateError
from sysgate.kernel import abi
from sysgate.policy import constants
from sysgate.policy.groups import GROUPS, expand_group
from sysgate.policy.model import Action, And, Cmp, Not, Or
from sysgate.policy.parser import parse_policy

ALLOW = Action("allow")


def rules_of(text):
    return parse_policy(text).rules


def only_condition(text):
    (rule,) = parse_policy(text).rules
    return rule.condition


# --- settings -----------------------------------------------------------------------------------
def test_defaults_without_settings():
    p = parse_policy("read: allow\n")
    assert p.default == Action("kill_process")
    assert p.arches == [abi.native_arch()]
    assert p.bad_arch == Action("kill_process") and not p.allow_x32 and p.flags == []


def test_settings():
    p = parse_policy("default: errno(EPERM)\narch: x86_64, i386, aarch64\nbad_arch: trap(7)\n"
                     "allow_x32: true\nflags: log, SECCOMP_FILTER_FLAG_SPEC_ALLOW\n")
    assert p.default == Action("errno", errno.EPERM)
    assert p.arches == ["x86_64", "i386", "aarch64"]
    assert p.bad_arch == Action("trap", 7)
    assert p.allow_x32 is True
    assert p.flags == ["LOG", "SPEC_ALLOW"]


def test_arch_aliases_and_native():
    assert parse_policy("arch: amd64, arm64, native\n").arches == ["x86_64", "aarch64", abi.native_arch()]


@pytest.mark.parametrize("text, action", [
    ("allow", Action("allow")), ("errno(13)", Action("errno", 13)), ("errno(EACCES)", Action("errno", 13)),
    ("kill", Action("kill_thread")), ("kill_thread", Action("kill_thread")),
    ("kill_process", Action("kill_process")), ("trap", Action("trap")), ("trap(0x10)", Action("trap", 16)),
    ("log", Action("log")), ("notify", Action("notify")), ("notify(fs)", Action("notify", handler="fs")),
    ("trace(5)", Action("trace", 5)), ("errno(ENOSYS)", Action("errno", 38)),
])
def test_actions(text, action):
    (rule,) = rules_of(f"getpid: {text}\n")
    assert rule.action == action and rule.condition is None


# --- rules ----------------------------------------------------------------------------------------
def test_several_syscalls_and_groups():
    p = parse_policy("read, write, close: allow\n@mount: errno(EPERM)\n")
    assert [r.syscall for r in p.rules[:3]] == ["read", "write", "close"]
    assert [r.syscall for r in p.rules[3:]] == expand_group("@mount")
    assert all(r.action == Action("errno", 1) for r in p.rules[3:])
    assert p.rules[0].source == ("<policy>", 1) and p.rules[3].source == ("<policy>", 2)


def test_bare_condition_means_allow_and_falls_through():
    p = parse_policy("default: errno(EPERM)\nread: fd == 0\nread: fd == 1 -> errno(EBADF)\n")
    assert p.decide("read", (0,) * 6)[0] == ALLOW
    assert p.decide("read", (1,) + (0,) * 5)[0] == Action("errno", errno.EBADF)
    assert p.decide("read", (2,) + (0,) * 5)[0] == Action("errno", errno.EPERM)   # falls to default


def test_named_and_positional_arguments_and_widths():
    fd = syscalls.arg_index("read", "fd")
    width = syscalls.arg_width("read", fd)
    assert only_condition("read: fd == 3\n") == Cmp(fd, "==", 3, width=width)
    assert only_condition("read: arg0 == 3\n") == Cmp(0, "==", 3, width=width)
    assert only_condition("read: u64(fd) == 3\n") == Cmp(fd, "==", 3, width=64)
    assert only_condition("read: u32(arg2) == 3\n") == Cmp(2, "==", 3, width=32)


def test_negative_numbers_use_twos_complement_at_the_width():
    assert only_condition("read: fd == -1\n").value == 0xFFFFFFFF
    assert only_condition("read: u64(fd) == -1\n").value == 0xFFFFFFFFFFFFFFFF
    assert only_condition("read: u64(fd) == -0x8000000000000000\n").value == 1 << 63


@pytest.mark.parametrize("literal, value", [
    ("42", 42), ("0x2a", 42), ("0X2A", 42), ("0o52", 42), ("052", 42), ("0b101010", 42), ("4_2", 42),
    ("0", 0), ("O_WRONLY | O_CREAT", os.O_WRONLY | os.O_CREAT), ("~0 & 0", 0) if False else ("(1|2)", 3),
])
def test_number_literals(literal, value):
    assert only_condition(f"getpid: u64(arg0) == {literal}\n").value == value


def test_masked_comparisons_bind_tighter_than_equality():
    flags = syscalls.arg_index("openat", "flags")
    w = syscalls.arg_width("openat", flags)
    cond = only_condition("openat: flags & O_ACCMODE == O_RDONLY\n")
    assert cond == Cmp(flags, "&==", os.O_RDONLY, mask=os.O_ACCMODE, width=w)
    assert only_condition("openat: (flags & O_ACCMODE) == O_RDONLY\n") == cond
    assert only_condition("openat: (flags) & O_ACCMODE == O_RDONLY\n") == cond
    assert only_condition("openat: flags & O_ACCMODE != O_RDONLY\n") == Not(cond)


def test_masked_argument_alone_means_any_bit_set():
    p = parse_policy("default: allow\nopenat: flags & O_WRONLY -> errno(EACCES)\n")
    flags = syscalls.arg_index("openat", "flags")
    args = [0] * 6
    assert p.decide("openat", tuple(args))[0] == ALLOW
    args[flags] = os.O_WRONLY | os.O_CREAT
    assert p.decide("openat", tuple(args))[0] == Action("errno", errno.EACCES)


def test_set_membership():
    fd = syscalls.arg_index("write", "fd")
    w = syscalls.arg_width("write", fd)
    assert only_condition("write: fd in {1, 2} -> allow\n") == Or((Cmp(fd, "==", 1, width=w),
                                                                   Cmp(fd, "==", 2, width=w)))
    assert only_condition("write: fd in {1,}\n") == Cmp(fd, "==", 1, width=w)
    masked = only_condition("openat: flags & O_ACCMODE in {O_WRONLY, O_RDWR}\n")
    assert isinstance(masked, Or) and all(c.op == "&==" and c.mask == os.O_ACCMODE for c in masked.items)


def test_boolean_operators_and_precedence():
    # && binds tighter than ||, ! tightest
    cond = only_condition("kill: pid == 1 || pid == 2 && !(sig == 9)\n")
    assert isinstance(cond, Or) and isinstance(cond.items[1], And) and isinstance(cond.items[1].items[1], Not)
    p = parse_policy("default: errno(1)\nkill: pid == 1 || pid == 2 && !(sig == 9)\n")
    assert p.decide("kill", (1, 9, 0, 0, 0, 0))[0] == ALLOW
    assert p.decide("kill", (2, 9, 0, 0, 0, 0))[0] == Action("errno", 1)
    assert p.decide("kill", (2, 15, 0, 0, 0, 0))[0] == ALLOW


def test_brief_examples():
    p = parse_policy("""
default: errno(EPERM)
read: fd == 0
write: fd in {1, 2} -> allow
openat: flags & O_WRONLY -> errno(EACCES)
socket: domain == AF_UNIX || domain == AF_INET -> allow
ioctl: !(request == TIOCSTI)
kill: arg1 <= 15
mmap: (prot & PROT_EXEC) == 0
""")
    req = syscalls.arg_index("ioctl", "request")
    tiocsti = constants.lookup("TIOCSTI")
    assert tiocsti == 0x5412
    args = [0] * 6
    args[req] = tiocsti
    assert p.decide("ioctl", tuple(args))[0] == Action("errno", 1)
    assert p.decide("kill", (1, 15, 0, 0, 0, 0))[0] == ALLOW
    assert p.decide("kill", (1, 16, 0, 0, 0, 0))[0] == Action("errno", 1)
    prot = syscalls.arg_index("mmap", "prot")
    args = [0] * 6
    args[prot] = 0x1 | 0x4
    assert p.decide("mmap", tuple(args))[0] == Action("errno", 1)


def test_line_continuation_inside_brackets_and_backslash():
    p = parse_policy("write: fd in {\n  1,\n  2,\n}\nread: (fd == 0 ||\n   fd == 3) -> allow\n"
                     "close: fd == 1 \\\n  || fd == 2\n")
    assert len(p.rules) == 3 and [r.source[1] for r in p.rules] == [1, 5, 7]


def test_comments_and_blank_lines():
    assert len(rules_of("# hello\n\n   # indented\nread: allow  # trailing\n\n")) == 1


def test_constants_are_linux_values():
    assert constants.lookup("EPERM") == 1 and constants.lookup("O_CLOEXEC") == 0o2000000
    assert constants.lookup("AF_INET6") == 10 and constants.lookup("CLONE_NEWUSER") == 0x10000000
    assert constants.lookup("PR_SET_NO_NEW_PRIVS") == 38 and constants.lookup("AT_FDCWD") == -100
    assert constants.lookup("MAP_ANONYMOUS") == 0x20 and constants.lookup("IPPROTO_TCP") == 6
    assert constants.lookup("FIONREAD") == 0x541B and constants.lookup("SOCK_CLOEXEC") == 0o2000000
    assert constants.lookup("SECCOMP_RET_ALLOW") == abi.SECCOMP_RET_ALLOW
    # AT_FDCWD is negative: stored in two's complement at the argument's width
    assert only_condition("openat: dirfd == AT_FDCWD\n").value == (-100) & 0xFFFFFFFF


def test_groups_are_known_syscalls_and_expand_nested():
    known = syscalls.all_names()
    for name in GROUPS:
        members = expand_group(name)
        assert members and len(members) == len(set(members))
        assert set(members) <= known, (name, set(members) - known)
    service = set(expand_group("system-service"))
    assert set(expand_group("@file-system")) <= service and "mount" not in service
    assert "reboot" in expand_group("@privileged")
    with pytest.raises(SysgateError, match="did you mean @mount"):
        expand_group("@mout")


# --- includes ---------------------------------------------------------------------------------------
def test_include_relative_to_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.policy").write_text("write: allow\n")
    (tmp_path / "sub" / "mid.policy").write_text('default: errno(EACCES)\ninclude "inner.policy"\n')
    (tmp_path / "main.policy").write_text('read: allow\ninclude "sub/mid.policy"\nclose: allow\n'
                                          'include "sub/mid.policy"\n')
    p = parse_policy((tmp_path / "main.policy").read_text(), str(tmp_path / "main.policy"))
    assert [r.syscall for r in p.rules] == ["read", "write", "close"]      # a file is included once
    assert p.default == Action("errno", errno.EACCES)
    assert p.rules[1].source == (str(tmp_path / "sub" / "inner.policy"), 1)
    assert p.name == "main"


def test_include_text_uses_base_dir(tmp_path):
    (tmp_path / "x.policy").write_text("read: allow\n")
    assert len(parse_policy('include "x.policy"\n', base_dir=tmp_path).rules) == 1


def test_including_file_overrides_settings(tmp_path):
    (tmp_path / "base.policy").write_text("default: errno(EPERM)\n")
    p = parse_policy('include "base.policy"\ndefault: allow\n', base_dir=tmp_path)
    assert p.default == ALLOW


def test_include_cycle(tmp_path):
    (tmp_path / "a.policy").write_text('read: allow\ninclude "b.policy"\n')
    (tmp_path / "b.policy").write_text('\n\ninclude "a.policy"\n')
    with pytest.raises(SourceError) as e:
        parse_policy((tmp_path / "a.policy").read_text(), str(tmp_path / "a.policy"))
    assert str(e.value) == f"{tmp_path}/b.policy:3:9: include cycle: a.policy -> b.policy -> a.policy"


def test_self_include(tmp_path):
    (tmp_path / "a.policy").write_text('include "a.policy"\n')
    with pytest.raises(SourceError, match=r"a.policy:1:9: include cycle"):
        parse_policy((tmp_path / "a.policy").read_text(), str(tmp_path / "a.policy"))


def test_error_inside_included_file_names_that_file(tmp_path):
    (tmp_path / "inc.policy").write_text("read: allow\nwrite: fdd == 1\n")
    with pytest.raises(SourceError) as e:
        parse_policy('\ninclude "inc.policy"\n', "main.policy", base_dir=tmp_path)
    assert e.value.file == str(tmp_path / "inc.policy") and (e.value.line, e.value.column) == (2, 8)


# --- errors: every message carries file:line:column -----------------------------------------------------
ERRORS = [
    ("reed: allow\n", 1, 1, "unknown syscall 'reed'; did you mean 'read'?"),
    ("read: allow\nwirte: allow\n", 2, 1, "did you mean 'write'?"),
    ("read: fdd == 1\n", 1, 7, "read has no argument 'fdd'"),
    ("read: fdd == 1\n", 1, 7, "fd, buf, count"),
    ("read: arg6 == 1\n", 1, 7, "arg0..arg5"),
    ("read: fd == O_WRONGLY\n", 1, 13, "unknown constant 'O_WRONGLY'; did you mean 'O_WRONLY'?"),
    ("read: alow\n", 1, 7, "unknown action 'alow'; did you mean 'allow'?"),
    ("read: fd == 1 -> frob\n", 1, 18, "unknown action 'frob'; expected one of: allow, errno(N)"),
    ("read: errno\n", 1, 12, "errno needs a value, e.g. errno(EPERM)"),
    ("read: errno(EPRM)\n", 1, 13, "unknown errno name 'EPRM'; did you mean 'EPERM'?"),
    ("read: errno(5000)\n", 1, 13, "errno value must be 0..4095"),
    ("read: trace(0x10000)\n", 1, 13, "trace value must be 0..65535"),
    ("read: (fd == 1\n", 1, 7, "'(' is never closed"),
    ("read: fd == 1)\n", 1, 14, "unmatched ')'"),
    ("read: fd in {1, 2)\n", 1, 18, "')' does not match '{' opened at 1:13"),
    ("read: fd == \n", 1, 13, "expected a number or a constant, found the end of the line"),
    ("read: fd\n", 1, 9, "expected a comparison"),
    ("read fd == 1\n", 1, 6, "expected ':' after the syscall names"),
    ("read: fd & 3 < 2\n", 1, 14, "masked argument can only be compared with ==, != or in"),
    ("read: fd in {}\n", 1, 14, "empty set"),
    ("write: fd == 0x1ffffffff\n", 1, 14, "does not fit the 32-bit argument 'fd' of write"),
    ("read: u64(fd) == 0x10000000000000000\n", 1, 18, "does not fit the 64-bit argument"),
    ("@mout: allow\n", 1, 1, "unknown syscall group @mout; did you mean @mount?"),
    ("arch: x86_65\n", 1, 7, "unknown architecture 'x86_65'; did you mean 'x86_64'?"),
    ("flags: lgo\n", 1, 8, "unknown filter flag 'lgo'"),
    ("allow_x32: maybe\n", 1, 12, "allow_x32 takes true or false"),
    ("default: allow\ndefault: kill\n", 2, 1, "'default' is already set at line 1"),
    ("read: allow extra\n", 1, 13, "expected the end of the line, found 'extra'"),
    ("read: fd == 1 &&\n", 1, 17, "expected an argument name"),
    ("read: fd == 'x'\n", 1, 13, "unexpected character \"'\" (strings use double quotes)"),
    ("read: fd == 0x\n", 1, 13, "malformed number '0x'"),
    ("read: fd == 12abc\n", 1, 13, "malformed number '12abc'"),
    ("read: fd == 09\n", 1, 13, "malformed number '09'"),
    ('include "does-not-exist.policy"\n', 1, 9, "cannot include \"does-not-exist.policy\""),
    ("read, : allow\n", 1, 7, "expected a syscall name or @group"),
    ("read: notify(1)\n", 1, 14, "notify(...) takes a handler name"),
    ("read: u32(3) == 1\n", 1, 11, "u32(...) takes an argument name"),
    ("read: fd & 1 & 2 == 0\n", 1, 14, "masked only once"),
]


@pytest.mark.parametrize("text, line, column, message", ERRORS)
def test_error_positions(text, line, column, message, tmp_path):
    with pytest.raises(SourceError) as e:
        parse_policy(text, "test.policy", base_dir=tmp_path)
    assert str(e.value).startswith(f"test.policy:{line}:{column}: "), str(e.value)
    assert message in str(e.value)


# --- warnings ---------------------------------------------------------------------------------------------
def test_warning_for_rule_after_unconditional_rule():
    seen = []
    p = parse_policy("read, write: allow\n\nread: fd == 0 -> errno(1)\n", "w.policy", warn=seen.append)
    assert seen == p.warnings
    assert p.warnings == ["w.policy:3:1: this rule never applies to read: an unconditional rule at line 1 "
                          "already decides every call"]


def test_group_members_decided_earlier_are_not_warned():
    p = parse_policy("ptrace: notify\n@debug: errno(EPERM)\n")
    assert p.warnings == [] and p.decide("ptrace")[0] == Action("notify")


def test_warning_for_mask_that_can_never_match():
    p = parse_policy("openat: flags & 1 == 2\n", "m.policy")
    assert len(p.warnings) == 1 and p.warnings[0].startswith("m.policy:1:22: ")


def test_warning_for_syscall_missing_on_all_selected_arches():
    p = parse_policy("arch: aarch64\nopen: allow\nopenat: allow\n", "a.policy")
    assert p.warnings == ["a.policy:2:1: syscall 'open' does not exist on aarch64; its rules have no effect"]
    assert parse_policy("arch: x86_64, aarch64\nopen: allow\n").warnings == []
