"""systemd unit files as policies: the group table against systemd-analyze, the SystemCallFilter=
semantics under real filters (a C probe run by ``sysgate run``), drop-in writing, and a fuzzed parser.

systemd is not PID 1 here, so ``systemd-run`` cannot run the same unit; the oracle is
``systemd-analyze syscall-filter`` (systemd 252 on this machine) for group contents and the
rules of systemd.exec(5) / load-fragment.c, written out per case below.
"""
from __future__ import annotations

import errno
import re
import shutil
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.compiler import hypothesis_settings
from support.cprog import cprog
from sysgate.arch import syscalls
from sysgate.errors import SysgateError
from sysgate.policy import groups
from sysgate.policy_loader import detect_format, load_text
from sysgate.policy.model import ALLOW, KILL_PROCESS, Action, Policy, Rule
from sysgate.policy.systemd import format_systemd, parse_unit

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


# --- the group table -----------------------------------------------------------------

def _analyze_groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True,
                         text=True, check=True).stdout
    table: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if re.fullmatch(r"@[a-z0-9-]+", line):
            current = table.setdefault(line, [])
        elif line.startswith("    ") and current is not None and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.startswith("    "):
            current = None
    return table


def _expand(table, name, seen=()):
    out = set()
    for member in table[name]:
        if member.startswith("@"):
            if member not in seen:
                out |= _expand(table, member, seen + (name,))
        else:
            out.add(member)
    return out


@needs_analyze
def test_shipped_groups_are_exactly_systemd_analyze():
    live = _analyze_groups()
    assert len(live) >= 25
    assert sorted(groups.systemd_table()) == sorted(live)
    for name in live:
        assert set(groups.expand_systemd_group(name)) == _expand(live, name), name
        assert groups.expand_group("@systemd:" + name[1:]) == groups.expand_systemd_group(name)


def test_sysgate_groups_keep_their_names():
    """A bare @mount is still sysgate's group; systemd's is @systemd:mount, and they differ."""
    assert groups.expand_group("@mount") == groups._expand_in(groups.GROUPS, "@mount", "")
    assert set(groups.expand_group("@mount")) != set(groups.expand_group("@systemd:mount"))
    with pytest.raises(SysgateError, match="did you mean @mount"):
        groups.expand_group("@systemd:mout")
    with pytest.raises(SysgateError, match="systemd's group is @systemd:cpu-emulation"):
        groups.expand_group("@cpu-emulation")


def _cli(*args, input=None):
    return subprocess.run([sys.executable, "-m", "sysgate", *args], capture_output=True, text=True, input=input)


@needs_analyze
def test_cli_groups_lists_systemd_members():
    r = _cli("policy", "groups", "@systemd:privileged")
    assert r.returncode == 0, r.stderr
    shown = set(r.stdout.split("\n", 1)[1].split())
    assert shown == _expand(_analyze_groups(), "@privileged")


# --- reading -------------------------------------------------------------------------

def _unit(body: str) -> Policy:
    return parse_unit("[Service]\nExecStart=/bin/true\n" + body, "t.service")


def test_detects_units_and_dropins():
    assert detect_format("[Unit]\nDescription=x\n") == "systemd"
    assert detect_format("# drop-in\n\n[Service]\nSystemCallFilter=~mkdir\n") == "systemd"
    assert detect_format("SystemCallFilter=@basic-io\n") == "systemd"
    assert detect_format("default: allow\nmkdir: errno(EPERM)\n") == "text"
    assert detect_format('{"defaultAction": "SCMP_ACT_ALLOW"}') == "oci"


@needs_analyze
def test_allow_list_adds_default_and_later_lines_edit_the_set():
    live = _analyze_groups()
    p = _unit("SystemCallFilter=@basic-io\nSystemCallFilter=~read\nSystemCallFilter=socket\n")
    known = syscalls.all_names()
    allowed = (_expand(live, "@basic-io") | _expand(live, "@default") | {"socket"}) - {"read"}
    assert p.default == KILL_PROCESS
    assert {r.syscall for r in p.rules if r.action == ALLOW} == allowed & known
    # a ~ line in allow-list mode removes even implicit @default members, as systemd's hashmap_remove does
    assert _unit("SystemCallFilter=write\nSystemCallFilter=~execve\n").decide("execve")[0] == KILL_PROCESS


def test_deny_list_errno_suffixes_reset_and_error_number():
    p = _unit("SystemCallFilter=~rmdir\n"
              "SystemCallFilter=\n"                      # reset: rmdir allowed again, mode forgotten
              "SystemCallFilter=~mkdir:EUCLEAN chdir:4000 @swap:kill acct\n"
              "SystemCallFilter=chdir\n"                 # plain line in deny mode: remove
              "SystemCallErrorNumber=ENOTNAM\n")
    assert p.default == ALLOW
    assert p.decide("rmdir")[0] == ALLOW
    assert p.decide("chdir")[0] == ALLOW
    assert p.decide("mkdir")[0] == Action("errno", errno.EUCLEAN)
    assert p.decide("swapon")[0] == KILL_PROCESS
    assert p.decide("acct")[0] == Action("errno", errno.ENOTNAM)


def test_allow_list_suffix_is_ignored_like_systemd():
    p = _unit("SystemCallFilter=write mkdir:EPERM\n")
    assert p.decide("mkdir")[0] == KILL_PROCESS
    assert any("cannot take an error number" in w for w in p.warnings)
    p = _unit("SystemCallFilter=write\nSystemCallFilter=~mkdir:EPERM\n")
    assert p.decide("mkdir")[0] == KILL_PROCESS
    assert any("its error number is not used" in w for w in p.warnings)


def test_architectures_and_log():
    assert _unit("SystemCallArchitectures=native\n").arches == ["x86_64"]
    p = _unit("SystemCallFilter=~mkdir\n")
    assert p.arches == ["x86_64", "i386"] and not p.allow_x32
    p = _unit("SystemCallArchitectures=x86\nSystemCallArchitectures=x86-64\n")
    assert p.arches == ["i386", "x86_64"]
    p = _unit("SystemCallFilter=~mkdir\nSystemCallLog=openat\n")
    assert p.decide("openat")[0] == Action("log") and p.decide("mkdir")[0] == KILL_PROCESS
    p = _unit("SystemCallFilter=~mkdir\nSystemCallLog=~openat\n")
    assert p.default == Action("log") and p.decide("openat")[0] == ALLOW
    assert p.decide("mkdir")[0] == KILL_PROCESS        # the stricter verdict of the two filters


@pytest.mark.parametrize("body, message", [
    ("SystemCallFilter=~mkdri\n", "unknown syscall 'mkdri'"),
    ("SystemCallFilter=~@mout\n", "did you mean @mount"),
    ("SystemCallFilter=~mkdir:EWHAT\n", "bad error number"),
    ("SystemCallFilter=~mkdir:4096\n", "bad error number"),
    ("SystemCallArchitectures=vax\n", "unknown architecture"),
    ("SystemCallLog=~mkdir:EPERM\n", "takes no :errno"),
    ("SystemCallFilter ~mkdir\n", "expected KEY=VALUE"),
])
def test_bad_units_are_one_line_errors(tmp_path, body, message):
    path = tmp_path / "bad.service"
    path.write_text("[Service]\n" + body)
    r = _cli("policy", "check", str(path))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert f"{path}:2:" in r.stderr or "architecture" in message or "KEY=VALUE" in message


_ADVERSARIAL = st.text(alphabet="[]~@:=\\#;\n \tSystemCalFrErNumbAhitu-_EPRMkdx0123456789",
                       max_size=200)


@hypothesis_settings(300)
@given(st.one_of(_ADVERSARIAL, st.builds(lambda body: "[Service]\nSystemCallFilter=" + body, _ADVERSARIAL)))
def test_parser_never_crashes(text):
    try:
        p = parse_unit(text, "fuzz.service")
    except SysgateError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(p, Policy)


# --- real behaviour --------------------------------------------------------------------

PROBE = r"""
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
/* argv: syscall numbers. Each is made in its own child with NULL/zero arguments (harmless:
   EFAULT or EINVAL when allowed); prints "nr sig N" or "nr ret R errno E" per call. */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fds[2];
        if (pipe(fds)) return 120;
        pid_t pid = fork();
        if (pid == 0) {
            long r = syscall(atol(argv[i]), 0, 0, 0, 0, 0, 0);
            int e = r < 0 ? errno : 0;
            char buf[64];
            int n = snprintf(buf, sizeof buf, "%ld %d", r, e);
            write(fds[1], buf, n);
            _exit(0);
        }
        close(fds[1]);
        char buf[64] = {0};
        read(fds[0], buf, sizeof buf - 1);
        close(fds[0]);
        int status;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status)) printf("%s sig %d\n", argv[i], WTERMSIG(status));
        else { long r; int e; sscanf(buf, "%ld %d", &r, &e); printf("%s ret %ld errno %d\n", argv[i], r, e); }
        fflush(stdout);
    }
    return 0;
}
"""

OK = "ok"
SIGSYS = "SIGSYS"


def _observe(tmp_path, unit: str, names: list[str], *, m32: bool = False) -> tuple[int, dict[str, object]]:
    path = tmp_path / "probe.service"
    path.write_text(unit)
    arch = "i386" if m32 else "x86_64"
    numbers = {str(syscalls.number(arch, n)): n for n in names}
    r = subprocess.run([sys.executable, "-m", "sysgate", "run", "--force", "--policy", str(path), "--",
                        cprog(PROBE, m32=m32), *numbers], capture_output=True, text=True, timeout=60)
    seen: dict[str, object] = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        name = numbers[parts[0]]
        if parts[1] == "sig":
            seen[name] = SIGSYS if int(parts[2]) == 31 else f"signal {parts[2]}"
        else:
            seen[name] = int(parts[4]) if int(parts[2]) < 0 else OK
    return r.returncode, seen


def _normalise(seen: dict[str, object], distinctive: set[int]) -> dict[str, object]:
    """An errno the kernel itself returns for NULL arguments (EFAULT, EINVAL…) means allowed."""
    return {n: (v if v == SIGSYS or v in distinctive or not isinstance(v, int) else OK) for n, v in seen.items()}


CASES = {
    "allow-list": (
        "SystemCallFilter=@system-service\nSystemCallFilter=~@mount mkdir\nSystemCallErrorNumber=ENAVAIL\n",
        {"getpid": OK, "uname": OK, "mkdir": errno.ENAVAIL, "mount": errno.ENAVAIL, "umount2": errno.ENAVAIL,
         "chroot": errno.ENAVAIL, "reboot": errno.ENAVAIL, "acct": errno.ENAVAIL, "rmdir": OK}),
    "deny-list with errno suffixes": (
        "SystemCallFilter=~mkdir:EUCLEAN @mount:ENOTNAM ptrace\n",
        {"getpid": OK, "mkdir": errno.EUCLEAN, "mount": errno.ENOTNAM, "pivot_root": errno.ENOTNAM,
         "ptrace": SIGSYS, "rmdir": OK}),
    "several lines, reset, SystemCallErrorNumber": (
        "SystemCallFilter=~rmdir\nSystemCallFilter=\nSystemCallFilter=~mkdir:4000 chdir:EUCLEAN\n"
        "SystemCallFilter=chdir\nSystemCallErrorNumber=ENOTNAM\nSystemCallFilter=~acct @swap:kill\n",
        {"rmdir": OK, "mkdir": 4000, "chdir": OK, "acct": errno.ENOTNAM, "swapon": SIGSYS, "getpid": OK}),
    "allow-list gets @default implicitly": (
        "SystemCallFilter=@basic-io @file-system @process @signal @ipc\nSystemCallErrorNumber=EUCLEAN\n",
        {"getpid": OK, "getppid": OK, "mkdir": OK, "socket": errno.EUCLEAN, "mount": errno.EUCLEAN,
         "sysinfo": errno.EUCLEAN, "uname": errno.EUCLEAN}),   # uname: in sysgate's @default, not systemd's
}


@needs_analyze
@pytest.mark.parametrize("case", list(CASES))
def test_real_filter_matches_systemd_semantics(tmp_path, case):
    body, expected = CASES[case]
    live = _analyze_groups()
    if case == "allow-list gets @default implicitly":      # the premise: only @default allows these
        listed = set().union(*(_expand(live, g) for g in ("@basic-io", "@file-system", "@process", "@signal", "@ipc")))
        assert {"getpid", "getppid"} <= _expand(live, "@default") - listed
        assert not {"sysinfo", "uname"} & (listed | _expand(live, "@default"))
    distinctive = {v for v in expected.values() if isinstance(v, int)}
    rc, seen = _observe(tmp_path, "[Unit]\nDescription=probe\n[Service]\n" + body, list(expected))
    assert rc == 0
    assert _normalise(seen, distinctive) == expected


def test_architectures_native_kills_i386_and_default_filters_it_by_name(tmp_path):
    deny = "[Service]\nSystemCallFilter=~mkdir:EUCLEAN\n"
    rc, seen = _observe(tmp_path, deny, ["mkdir", "getpid"], m32=True)
    assert rc == 0 and _normalise(seen, {errno.EUCLEAN}) == {"mkdir": errno.EUCLEAN, "getpid": OK}
    rc, seen = _observe(tmp_path, deny + "SystemCallArchitectures=native\n", ["getpid"], m32=True)
    assert seen == {} and rc != 0                       # the i386 program dies at its first syscall
    rc, seen = _observe(tmp_path, deny + "SystemCallArchitectures=native\n", ["mkdir"])
    assert rc == 0 and _normalise(seen, {errno.EUCLEAN}) == {"mkdir": errno.EUCLEAN}


# --- writing ---------------------------------------------------------------------------

_NAMES = sorted(n for n in syscalls.table("x86_64"))
_ACTIONS = st.one_of(st.just(ALLOW), st.just(KILL_PROCESS), st.just(Action("log")),
                     st.builds(lambda e: Action("errno", e), st.integers(0, 4095)))


@st.composite
def _expressible(draw):
    default = draw(st.one_of(st.just(ALLOW), st.just(KILL_PROCESS),
                             st.builds(lambda e: Action("errno", e), st.integers(0, 4095))))
    rules = []
    for name in draw(st.lists(st.sampled_from(_NAMES), max_size=30, unique=True)):
        action = draw(_ACTIONS)
        if default != ALLOW and action.kind not in ("allow", "log"):
            action = default                           # an allow-list denies with the default only
        rules.append(Rule(name, action))
    arches = draw(st.sampled_from([["x86_64"], ["x86_64", "i386"], ["i386"]]))
    return Policy(default=default, rules=rules, arches=arches)


@hypothesis_settings(150)
@given(_expressible())
def test_drop_in_round_trips(policy):
    text = format_systemd(policy)
    back = load_text(text, "dropin.conf")
    assert back.arches == policy.arches
    for name in _NAMES:
        assert back.decide(name)[0] == policy.decide(name)[0], name


def test_convert_refuses_what_systemd_cannot_say(tmp_path):
    path = tmp_path / "p.policy"
    path.write_text("default: allow\nmkdir: errno(EPERM)\nopenat: arg0 == 3 -> errno(EACCES)\nbpf: trace(1)\n")
    r = _cli("policy", "convert", "--to", "systemd", str(path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "argument conditions (openat)" in r.stderr and "trace (bpf)" in r.stderr


def test_convert_writes_a_drop_in_that_loads_back(tmp_path):
    path = tmp_path / "p.policy"
    path.write_text("default: errno(EPERM)\narch: x86_64\nexecve: errno(EPERM)\n@basic-io: allow\n@default: allow\n")
    r = _cli("policy", "convert", "--to", "systemd", str(path))
    assert r.returncode == 0, r.stderr
    assert "[Service]" in r.stdout and "SystemCallFilter=~execve" in r.stdout
    assert "SystemCallErrorNumber=EPERM" in r.stdout
    back = load_text(r.stdout, "x.conf")
    assert back.decide("execve")[0] == Action("errno", errno.EPERM) and back.decide("read")[0] == ALLOW


def test_systemd_groups_are_usable_in_sysgate_policies():
    """`@systemd:NAME` names systemd's group in the policy language too; a bare `@mount` stays sysgate's."""
    from sysgate.policy_loader import load_text

    systemd = load_text("default: allow\n@systemd:mount: errno(EPERM)\n", "s.policy")
    assert {r.syscall for r in systemd.rules} >= {"mount", "umount2", "pivot_root"}
    with pytest.raises(SysgateError, match="unknown systemd syscall group"):
        load_text("default: allow\n@systemd:nosuch: errno(EPERM)\n", "s.policy")
