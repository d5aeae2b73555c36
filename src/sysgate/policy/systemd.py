"""systemd unit files (``SystemCallFilter=`` and friends): read them as policies, write drop-ins.

Reading follows systemd 252 (``config_parse_syscall_filter`` and friends in
src/core/load-fragment.c, ``seccomp_parse_syscall_filter`` and ``apply_syscall_filter``
in src/shared/seccomp-util.c and src/core/execute.c; man systemd.exec(5)):

* ``SystemCallFilter=`` lines are read in order. The first non-empty one after the
  start (or after a reset) decides the mode: without ``~`` it is an **allow-list**
  and systemd's ``@default`` group is added to it implicitly; with ``~`` it is a
  **deny-list**.
* Later lines edit the same set: in allow-list mode a plain line adds names and a
  ``~`` line removes them (even ``@default`` members); in deny-list mode a ``~`` line
  adds names and a plain line removes them.
* An empty assignment (``SystemCallFilter=``) empties the set and forgets the mode.
* ``@group`` is systemd's group (the shipped systemd 252 table, nested groups
  expanded), never sysgate's group of the same name.
* ``name:ERRNO`` (an errno name, a number 0..4095, or ``kill``) sets the action of a
  denied entry, overriding ``SystemCallErrorNumber=``; a suffix on an allow-list entry
  makes systemd ignore the entry, and so does sysgate (with a warning); on a ``~`` entry
  of an allow-list systemd drops the suffix (the call is just removed): sysgate warns.
* ``SystemCallErrorNumber=`` is the action for denied calls without a suffix: an errno
  or ``kill``; unset or empty means kill the process.
* ``SystemCallArchitectures=`` (``native``, ``x86-64``, ``x86``, ``x32``, ``arm64``…;
  repeated lines add, empty resets) limits the architectures: calls of any other one
  kill the process. Without it systemd filters every local architecture by name;
  sysgate does the same for x86_64 + i386 (aarch64 + arm) and keeps rejecting x32,
  which systemd would filter too (x32 is off in most kernels).
* ``SystemCallLog=`` (same list syntax, no ``@default``, no suffixes) logs the listed
  calls (or, with ``~``, all others) when the filter allows them: systemd loads it as
  a second filter, and the kernel takes the stricter verdict.

Where systemd merely logs and ignores bad input (an unknown syscall or group, an
unparsable errno, a line without ``=``), sysgate refuses the file with one line:
a typo in a deny-list must not silently allow the call. Names that exist only on
architectures sysgate has no table for (``arc_gettls``…) are dropped from groups.

Writing (:func:`format_systemd`) produces a self-contained ``[Service]`` drop-in: it
resets the settings first, so it replaces whatever the unit had.
"""
from __future__ import annotations

import errno as errno_mod
import re
from dataclasses import dataclass, field
from collections.abc import Callable

from ..arch import syscalls, table
from ..errors import SourceError, SysgateError
from ..kernel import abi
from .groups import expand_systemd_group
from .model import ALLOW, KILL_PROCESS, Action, Policy, Rule

#: section names of unit files; SystemCall*= settings belong to the exec sections
UNIT_SECTIONS = ("Unit", "Install", "Service", "Socket", "Mount", "Swap", "Timer", "Path", "Slice",
                 "Scope", "Automount", "Target", "Device")
EXEC_SECTIONS = ("Service", "Socket", "Mount", "Swap")
KEYS = ("SystemCallFilter", "SystemCallErrorNumber", "SystemCallArchitectures", "SystemCallLog")

_HEADER = re.compile(r"\[([A-Za-z][A-Za-z0-9-]*)\]")
_KEY_LINE = re.compile(r"^[ \t]*SystemCall(Filter|ErrorNumber|Architectures|Log)[ \t]*=", re.M)

#: systemd architecture names (seccomp_arch_from_string) -> sysgate's (the architecture table's)
SYSTEMD_ARCHES = {a.systemd: a.name for a in table.SUPPORTED if a.systemd}
_ARCH_TO_SYSTEMD = {v: k for k, v in SYSTEMD_ARCHES.items()}


def _local_arches(native: str) -> list[str]:
    """What systemd filters when SystemCallArchitectures= is unset: the native arch and the
    compat ABIs its kernel runs, x32 (an ABI told apart by a number bit) left out: see above."""
    return [native, *(c for c in table.get(native).compat if not table.get(c).nr_bit)]


KILL = "kill"          # the errno slot's "kill the process" value (systemd's SECCOMP_ERROR_NUMBER_KILL)
MAX_ERRNO = 4095


def looks_like_unit(text: str) -> bool:
    """A unit file or drop-in: its first line that is not blank or a comment is a known
    ``[Section]`` header, or some line sets ``SystemCallFilter=``/``…ErrorNumber=``/
    ``…Architectures=``/``…Log=``. Neither can start a sysgate policy or a JSON profile."""
    for line in text.lstrip("\ufeff").splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        m = _HEADER.fullmatch(stripped)
        if m and (m.group(1) in UNIT_SECTIONS or m.group(1).startswith("X-")):
            return True
        break
    return bool(_KEY_LINE.search(text))


@dataclass
class _List:
    """One of systemd's name sets (SystemCallFilter=, SystemCallLog=): mode + entries."""

    allow_list: bool = False
    entries: dict[str, object] | None = None        # name -> errno/KILL/None; None: never set
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class _Unit:
    filter: _List = field(default_factory=_List)
    log: _List = field(default_factory=_List)
    errno: object = None                           # None (kill), KILL or an errno
    arches: list[str] | None = None
    seen: bool = False


def parse_unit(text: str, filename: str = "<unit>", *,
               warn: Callable[[str], None] | None = None) -> Policy:
    """The policy a unit file's ``SystemCall*=`` settings mean (see the module docstring)."""
    say = warn or (lambda message: None)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        say(message)

    unit = _Unit()
    section = None
    for number, line in _logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            m = _HEADER.fullmatch(stripped)
            if not m:
                raise SourceError(f"bad section header {_short(stripped)}", filename, number)
            section = m.group(1)
            continue
        if "=" not in stripped:
            raise SourceError(f"expected KEY=VALUE, found {_short(stripped)}", filename, number)
        key, value = (part.strip() for part in stripped.split("=", 1))
        if key not in KEYS:
            continue                                   # ExecStart= and the rest: not ours
        if section is not None and section not in EXEC_SECTIONS:
            note(f"{filename}:{number}: {key}= in [{section}] is ignored (systemd reads it in "
                 f"[{'], ['.join(EXEC_SECTIONS)}] only)")
            continue
        unit.seen = True
        where = (filename, number)
        if key == "SystemCallFilter":
            _edit(unit.filter, value, where, errnos=True, note=note, implicit_default=True)
        elif key == "SystemCallLog":
            _edit(unit.log, value, where, errnos=False, note=note, implicit_default=False)
        elif key == "SystemCallErrorNumber":
            unit.errno = None if not value else _errno_or_kill(value, where)
        else:
            if not value:
                unit.arches = None
                continue
            unit.arches = unit.arches or []
            for word in value.split():
                arch = _arch(word, where)
                if arch not in unit.arches:
                    unit.arches.append(arch)
    if not unit.seen:
        raise SysgateError(f"{filename}: no SystemCallFilter=, SystemCallErrorNumber=, "
                           f"SystemCallArchitectures= or SystemCallLog= in an exec section")
    policy = _to_policy(unit, filename)
    policy.warnings.extend(warnings)
    return policy


def _logical_lines(text: str):
    """(first line number, text) of each line, backslash-continued lines joined with a space."""
    pending, start = None, 0
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        if pending is None:
            start = number
        body = line.rstrip("\r")
        if pending is not None and body.strip()[:1] in ("#", ";"):
            continue                                   # systemd skips comments inside continuations
        joined = body if pending is None else pending + " " + body
        if joined.endswith("\\"):
            pending = joined[:-1]
            continue
        pending = None
        yield start, joined
    if pending is not None:
        yield start, pending


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _edit(target: _List, value: str, where: tuple[str, int], *, errnos: bool, note, implicit_default: bool) -> None:
    """Apply one ``SystemCallFilter=``/``SystemCallLog=`` line the way systemd does."""
    file, line = where
    if not value:
        target.entries, target.allow_list = None, False
        return
    invert = value.startswith("~")
    if invert:
        value = value[1:]
    if target.entries is None:
        target.entries, target.allow_list = {}, not invert
        if target.allow_list and implicit_default:
            for name in _names("@default", where):
                target.entries[name] = None
                target.lines[name] = line
    add = (not invert) == target.allow_list
    for word in value.split():
        name, num = word, None
        if ":" in word:
            name, suffix = word.split(":", 1)
            if not errnos:
                raise SourceError(f"{word!r}: this setting takes no :errno suffix", file, line)
            num = _errno_or_kill(suffix, where)
            if not name:
                raise SourceError(f"{word!r}: no syscall name before ':'", file, line)
            if not invert:
                note(f"{file}:{line}: {word}: allow-listed system calls cannot take an error number; "
                     f"ignored, as systemd ignores it")
                continue
            if target.allow_list:
                note(f"{file}:{line}: {word}: in an allow-list a ~ entry is only removed; its error number "
                     f"is not used (SystemCallErrorNumber= decides), as in systemd")
        for member in _names(name, where):
            if add:
                target.entries[member] = num
                target.lines[member] = line
            else:
                target.entries.pop(member, None)


def _names(word: str, where: tuple[str, int]) -> list[str]:
    """The syscalls ``word`` names: a systemd ``@group`` (expanded) or one syscall."""
    known = syscalls.all_names()
    if word.startswith("@"):
        try:
            members = expand_systemd_group(word)
        except SysgateError as exc:
            raise SourceError(str(exc), *where) from None
        return [m for m in members if m in known]
    if word not in known:
        raise SourceError(f"unknown syscall {word!r}", *where)
    return [word]


def _errno_or_kill(text: str, where: tuple[str, int]):
    """systemd's ``seccomp_parse_errno_or_action``: ``kill``, an errno name, or 0..4095."""
    if text == KILL:
        return KILL
    value = getattr(errno_mod, text, None) if text.startswith("E") else None
    if isinstance(value, int):
        return value
    if text.isdigit() and int(text) <= MAX_ERRNO:
        return int(text)
    raise SourceError(f"bad error number {text!r}: expected kill, an errno name (EPERM) or 0..{MAX_ERRNO}",
                      *where)


def _arch(word: str, where: tuple[str, int]) -> str:
    if word == "native":
        return abi.native_arch()
    if word not in SYSTEMD_ARCHES:
        raise SourceError(f"unknown architecture {word!r}; known: native, {', '.join(SYSTEMD_ARCHES)}", *where)
    return SYSTEMD_ARCHES[word]


def _action(num) -> Action:
    return KILL_PROCESS if num is None or num == KILL else Action("errno", num)


def _to_policy(unit: _Unit, filename: str) -> Policy:
    native = abi.native_arch()
    if unit.arches is not None:
        arches = [a for a in unit.arches if a != "x32"] or [native]
        if "x32" in unit.arches and "x86_64" not in arches:
            arches.append("x86_64")                    # x32 calls arrive with the x86_64 AUDIT_ARCH
        policy = Policy(arches=arches, allow_x32="x32" in unit.arches)
    else:
        policy = Policy(arches=_local_arches(native))
    policy.name = filename
    negative = _action(unit.errno)
    flt = unit.filter
    decided: dict[str, Action] = {}
    if flt.entries is None:
        policy.default = ALLOW
    elif flt.allow_list:
        policy.default = negative
        decided = {name: ALLOW for name in flt.entries}
    else:
        policy.default = ALLOW
        decided = {name: (negative if num is None else _action(num)) for name, num in flt.entries.items()}
    lines = dict(flt.lines)
    if unit.log.entries is not None:
        logged = unit.log.entries
        if unit.log.allow_list:
            for name in logged:
                if decided.get(name, policy.default) == ALLOW:
                    decided[name] = Action("log")
                    lines.setdefault(name, unit.log.lines.get(name, 0))
        elif policy.default == ALLOW:
            policy.default = Action("log")
            for name in logged:
                decided.setdefault(name, ALLOW)
                lines.setdefault(name, unit.log.lines.get(name, 0))
            decided = {n: (Action("log") if a == ALLOW and n not in logged else a) for n, a in decided.items()}
        else:
            decided = {n: (Action("log") if a == ALLOW and n not in logged else a) for n, a in decided.items()}
    policy.rules = [Rule(name, action, None, (filename, lines.get(name, 0))) for name, action in decided.items()
                    if action != policy.default]
    return policy


# --- writing -----------------------------------------------------------------------

def format_systemd(policy: Policy, *, header: str | None = None) -> str:
    """``policy`` as a ``[Service]`` drop-in. Raises SysgateError, listing every reason,
    when systemd cannot express it (argument conditions, notify/trace/trap/kill_thread
    actions, per-syscall errnos in an allow-list, filter flags, a listener…)."""
    reasons: list[str] = []
    conditional = [r.syscall for r in policy.rules if r.condition is not None]
    if conditional:
        reasons.append(f"argument conditions ({_few(conditional)})")
    decided: dict[str, Action] = {}
    for rule in policy.rules:
        if rule.condition is None:
            decided.setdefault(rule.syscall, rule.action)
    expressible = {"allow", "errno", "kill_process", "log"}
    odd = sorted({a.kind for a in decided.values()} - expressible)
    if odd:
        reasons.append(f"actions {', '.join(odd)} ({_few([n for n, a in decided.items() if a.kind in odd])})")
    big = [n for n, a in decided.items() if a.kind == "errno" and a.data > MAX_ERRNO]
    if big:
        reasons.append(f"errno values above {MAX_ERRNO} ({_few(big)})")
    if policy.default.kind not in ("allow", "errno", "kill_process") or \
            (policy.default.kind == "errno" and policy.default.data > MAX_ERRNO):
        reasons.append(f"default {policy.default}")
    if policy.bad_arch != KILL_PROCESS:
        reasons.append(f"bad_arch {policy.bad_arch} (systemd kills)")
    if policy.flags:
        reasons.append(f"filter flags {', '.join(policy.flags)}")
    if policy.listener_path or policy.listener_metadata:
        reasons.append("a notify listener")
    foreign = [a for a in policy.arches if a not in _ARCH_TO_SYSTEMD]
    if foreign:
        reasons.append(f"architectures {', '.join(foreign)}")
    allow_list = policy.default.kind != "allow"
    if allow_list:
        other = [n for n, a in decided.items() if a.kind not in ("allow", "log") and a != policy.default]
        if other:
            reasons.append(f"denials other than the default {policy.default} in an allow-list ({_few(other)})")
    if reasons:
        raise SysgateError("cannot write this policy as systemd settings: " + "; ".join(reasons))

    arches = [_ARCH_TO_SYSTEMD[a] for a in policy.arches]
    if policy.allow_x32 and "x32" not in arches:
        arches.append("x32")
    out = [f"# {line}".rstrip() for line in (header or "").splitlines()]
    out += ["[Service]", "SystemCallFilter=", "SystemCallLog=", "SystemCallArchitectures=",
            f"SystemCallArchitectures={' '.join(arches)}"]
    logged = [n for n, a in decided.items() if a.kind == "log"]
    if allow_list:
        out.append(f"SystemCallErrorNumber={_errno_text(policy.default)}")
        allowed = [n for n, a in decided.items() if a.kind in ("allow", "log")]
        out += _chunks("SystemCallFilter=", allowed or ["@default"])
        implicit = [n for n in _names("@default", ("", 0)) if n not in allowed]
        out += _chunks("SystemCallFilter=~", implicit)
    else:
        out.append("SystemCallErrorNumber=kill")
        denied = [n if a == KILL_PROCESS else f"{n}:{_errno_text(a)}"
                  for n, a in decided.items() if a.kind in ("errno", "kill_process")]
        out += _chunks("SystemCallFilter=~", denied)
    out += _chunks("SystemCallLog=", logged)
    return "\n".join(out) + "\n"


def _errno_text(action: Action) -> str:
    if action.kind != "errno":
        return KILL
    return errno_mod.errorcode.get(action.data, str(action.data))


def _chunks(prefix: str, words: list[str], per_line: int = 8) -> list[str]:
    return [prefix + " ".join(words[i:i + per_line]) for i in range(0, len(words), per_line)]


def _few(names: list[str]) -> str:
    names = list(dict.fromkeys(names))
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
