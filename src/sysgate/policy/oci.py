"""OCI runtime-spec seccomp profiles and Docker/podman profile templates.

Import follows what runc does with a profile (and what libseccomp then makes of it):

* ``defaultAction``/``defaultErrnoRet``; ``errnoRet`` of ERRNO and TRACE rules defaults
  to EPERM; a rule whose action equals the default action is skipped (libseccomp refuses it);
* ``architectures`` (runtime spec) are added to the target architecture; a Docker
  template's ``archMap`` entry for the target gives it and its ``subArchitectures``;
* a rule's ``args`` with *different* indexes must all hold; when an index repeats,
  runc adds every condition as a rule of its own, so the rule matches if *any* holds;
* Docker templates: a rule applies when its ``includes`` (``arches``, ``caps`` — all
  of them —, ``minKernel``) match the target and its ``excludes`` (any arch/cap, or
  the kernel being at least ``minKernel``) do not;
* libseccomp keeps one unconditional rule per syscall: the first one wins and
  replaces every conditional rule of that syscall; identical conditional rules
  merge; the same condition with two different actions is an error (as in runc);
* syscall names unknown on every architecture are ignored with a warning.

Conditional rules keep the profile's order. libseccomp orders *overlapping*
conditional rules with different actions by its own criteria (higher argument
index first); real profiles avoid such overlaps, and this module does not model it.

Export turns the first-match rules into disjoint OCI rules (each later rule gets
the negation of the earlier ones with other actions), so the result does not
depend on order. Comparisons are exported as 64-bit (libseccomp's and runc's
comparison width), exact for arguments whose upper 32 bits are zero.
"""
from __future__ import annotations

import errno as errno_mod
import json
import os
from itertools import product
from typing import Callable

from .. import syscalls
from ..errors import SourceError, SysgateError
from ..kernel import abi
from .model import Action, And, Cmp, Expr, Not, Or, Policy, Rule

#: Capabilities Docker grants a container by default (moby's default capability set).
DOCKER_DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

ACTIONS = {
    "SCMP_ACT_ALLOW": "allow", "SCMP_ACT_ERRNO": "errno", "SCMP_ACT_KILL": "kill_thread",
    "SCMP_ACT_KILL_THREAD": "kill_thread", "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap", "SCMP_ACT_TRACE": "trace", "SCMP_ACT_LOG": "log", "SCMP_ACT_NOTIFY": "notify",
}
EXPORT_ACTIONS = {
    "allow": "SCMP_ACT_ALLOW", "errno": "SCMP_ACT_ERRNO", "kill_thread": "SCMP_ACT_KILL_THREAD",
    "kill_process": "SCMP_ACT_KILL_PROCESS", "trap": "SCMP_ACT_TRAP", "trace": "SCMP_ACT_TRACE",
    "log": "SCMP_ACT_LOG", "notify": "SCMP_ACT_NOTIFY",
}
OPS = {"SCMP_CMP_EQ": "==", "SCMP_CMP_NE": "!=", "SCMP_CMP_LT": "<", "SCMP_CMP_LE": "<=",
       "SCMP_CMP_GT": ">", "SCMP_CMP_GE": ">=", "SCMP_CMP_MASKED_EQ": "&=="}
EXPORT_OPS = {v: k for k, v in OPS.items()}
#: libseccomp architecture tokens (SCMP_ARCH_*) for our arch names.
SCMP_ARCHES = {
    "x86_64": "X86_64", "i386": "X86", "x32": "X32", "aarch64": "AARCH64", "arm": "ARM",
    "riscv64": "RISCV64", "s390x": "S390X", "s390": "S390", "ppc64le": "PPC64LE", "ppc64": "PPC64",
    "mips": "MIPS", "mipsel": "MIPSEL", "mips64": "MIPS64", "mipsel64": "MIPSEL64",
    "mips64n32": "MIPS64N32", "mipsel64n32": "MIPSEL64N32", "loongarch64": "LOONGARCH64",
}
U64 = (1 << 64) - 1


# --- import ----------------------------------------------------------------------------------
def import_oci(data: dict | str, arch: str | None = None, *, filename: str = "<json>",
               warn: Callable[[str], None] | None = None, caps=None, kernel: str | tuple | None = None) -> Policy:
    """A Policy from an OCI ``linux.seccomp`` object or a Docker/podman profile template.

    ``arch`` is the target architecture (default: native); ``caps`` the container's
    capabilities for ``includes``/``excludes`` (default: Docker's default set);
    ``kernel`` the kernel version for ``minKernel`` (default: the running kernel)."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SourceError(f"invalid JSON: {exc.msg}", filename, exc.lineno, exc.colno) from None
    if isinstance(data, dict) and isinstance(data.get("linux"), dict) and "seccomp" in data["linux"]:
        data = data["linux"]["seccomp"]       # a whole runtime-spec config.json
    if not isinstance(data, dict):
        raise SourceError("a seccomp profile must be a JSON object", filename)
    return _Importer(data, arch, filename, warn, caps, kernel).policy()


class _Importer:
    def __init__(self, data, arch, filename, warn, caps, kernel):
        self.data, self.file = data, filename
        self.target = abi.canonical_arch(arch) if arch else abi.native_arch()
        self.caps = set(DOCKER_DEFAULT_CAPS if caps is None else caps)
        self.kernel = _version(kernel if kernel is not None else os.uname().release)
        self.warnings: list[str] = []
        self.warn_cb = warn

    def error(self, where: str, message: str) -> SourceError:
        return SourceError(f"{where}: {message}" if where else message, self.file)

    def field(self, obj: dict, key: str, kind, where: str):
        """``obj[key]`` checked to be of ``kind`` (list/dict/str/int); missing or null gives an empty value."""
        value = obj.get(key)
        if value is None:
            return kind()
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = {list: "a list", dict: "an object", str: "a string", int: "a number"}
            raise self.error(f"{where}.{key}" if where else key, f"must be {names[kind]}, not {json.dumps(value)}")
        return value

    def strings(self, obj: dict, key: str, where: str) -> list[str]:
        items = self.field(obj, key, list, where)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.error(f"{where}.{key}[{i}]" if where else f"{key}[{i}]", "must be a string")
        return items

    def warn(self, message: str) -> None:
        text = f"{self.file}: {message}"
        self.warnings.append(text)
        if self.warn_cb:
            self.warn_cb(text)

    def policy(self) -> Policy:
        d = self.data
        default = self.action(d.get("defaultAction", "SCMP_ACT_KILL"), d.get("defaultErrnoRet"), "defaultAction")
        policy = Policy(default=default, arches=self.arches(), bad_arch=Action("kill_thread"),
                        flags=self.flags(), listener_path=self.field(d, "listenerPath", str, "") or None,
                        listener_metadata=self.field(d, "listenerMetadata", str, "") or None,
                        name=os.path.splitext(os.path.basename(self.file))[0] if not self.file.startswith("<")
                        else "policy")
        policy.allow_x32 = "x32" in policy.arches
        policy.rules = self.rules(default)
        policy.warnings = self.warnings
        return policy

    def arches(self) -> list[str]:
        names: list[str] = []
        for i, entry in enumerate(self.field(self.data, "archMap", list, "")):
            if not isinstance(entry, dict):
                raise self.error(f"archMap[{i}]", "must be an object")
            main = self.arch(self.field(entry, "architecture", str, f"archMap[{i}]"), f"archMap[{i}].architecture")
            if main == self.target:
                names = [main] + [self.arch(s, f"archMap[{i}].subArchitectures")
                                  for s in self.strings(entry, "subArchitectures", f"archMap[{i}]")]
                break
        for i, name in enumerate(self.strings(self.data, "architectures", "")):
            names.append(self.arch(name, f"architectures[{i}]"))
        names = [n for n in dict.fromkeys([self.target, *names]) if n]
        return names

    def arch(self, name, where: str) -> str | None:
        try:
            return abi.canonical_arch(str(name))
        except ValueError:
            self.warn(f"{where}: architecture {name!r} is not supported; ignored")
            return None

    def flags(self) -> list[str]:
        out = []
        for i, flag in enumerate(self.strings(self.data, "flags", "")):
            key = str(flag).removeprefix("SECCOMP_FILTER_FLAG_")
            if key not in abi.FILTER_FLAGS:
                raise self.error(f"flags[{i}]", f"unknown filter flag {flag!r}")
            out.append(key)
        return out

    def action(self, name, errno_ret, where: str) -> Action:
        kind = ACTIONS.get(name) if isinstance(name, str) else None
        if kind is None:
            raise self.error(where, f"unknown action {name!r}; known: {', '.join(ACTIONS)}")
        if errno_ret is not None and kind not in ("errno", "trace"):
            raise self.error(where, f"errnoRet is only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {name}")
        if kind in ("errno", "trace"):
            value = errno_mod.EPERM if errno_ret is None else errno_ret
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
                raise self.error(where, f"errnoRet must be a number 0..65535, not {value!r}")
            return Action(kind, value)
        return Action(kind)

    def applies(self, entry: dict, where: str) -> bool:
        inc = self.field(entry, "includes", dict, where)
        exc = self.field(entry, "excludes", dict, where)
        w_inc, w_exc = f"{where}.includes", f"{where}.excludes"
        inc_arches = {_canonical_or_none(a) for a in self.strings(inc, "arches", w_inc)}
        exc_arches = {_canonical_or_none(a) for a in self.strings(exc, "arches", w_exc)}
        inc_kernel, exc_kernel = self.field(inc, "minKernel", str, w_inc), self.field(exc, "minKernel", str, w_exc)
        if inc_arches and self.target not in inc_arches:
            return False
        if self.target in exc_arches:
            return False
        if not all(c in self.caps for c in self.strings(inc, "caps", w_inc)):
            return False
        if any(c in self.caps for c in self.strings(exc, "caps", w_exc)):
            return False
        if inc_kernel and self.kernel < _version(inc_kernel):
            return False
        if exc_kernel and self.kernel >= _version(exc_kernel):
            return False
        return True

    def rules(self, default: Action) -> list[Rule]:
        entries = self.field(self.data, "syscalls", list, "")
        per_syscall: dict[str, list[tuple[Expr | None, Action, str]]] = {}
        unknown: list[str] = []
        for i, entry in enumerate(entries):
            where = f"syscalls[{i}]"
            if not isinstance(entry, dict):
                raise self.error(where, "must be an object")
            names = self.strings(entry, "names", where)
            if self.field(entry, "name", str, where):
                if names:
                    raise self.error(where, "use either 'name' or 'names', not both")
                names = [entry["name"]]
            action = self.action(entry.get("action"), entry.get("errnoRet"), where)
            if not self.applies(entry, where) or action == default:
                continue
            conditions = self.conditions(self.field(entry, "args", list, where), where)
            for name in names:
                if name not in syscalls.all_names():
                    unknown.append(name)
                    continue
                for cond in conditions:
                    per_syscall.setdefault(name, []).append((cond, action, where))
        if unknown:
            self.warn(f"unknown syscalls ignored: {', '.join(dict.fromkeys(unknown))}")
        rules: list[Rule] = []
        for name, items in per_syscall.items():
            rules.extend(self.libseccomp_rules(name, items))
        return rules

    def conditions(self, args: list, where: str) -> list[Expr | None]:
        """The conditions of one profile rule: one (an AND) or, when an index repeats, one per arg."""
        cmps = []
        for j, arg in enumerate(args):
            at = f"{where}.args[{j}]"
            if not isinstance(arg, dict):
                raise self.error(at, "must be an object")
            index, op = arg.get("index"), OPS.get(arg.get("op")) if isinstance(arg.get("op"), str) else None
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 5:
                raise self.error(at, f"index must be 0..5, not {index!r}")
            if op is None:
                raise self.error(at, f"unknown op {arg.get('op')!r}; known: {', '.join(OPS)}")
            value, value2 = arg.get("value", 0), arg.get("valueTwo", 0)
            for v in (value, value2):
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= U64:
                    raise self.error(at, f"values must be unsigned 64-bit numbers, not {v!r}")
            cmps.append(Cmp(index, "&==", value2, mask=value) if op == "&==" else Cmp(index, op, value))
        if not cmps:
            return [None]
        if len({c.arg for c in cmps}) < len(cmps):
            return list(cmps)
        return [cmps[0] if len(cmps) == 1 else And(tuple(cmps))]

    def libseccomp_rules(self, name: str, items) -> list[Rule]:
        for cond, action, where in items:
            if cond is None:
                return [Rule(name, action, None, (f"{self.file}:{where}", 0))]
        seen: dict[Expr, Action] = {}
        rules = []
        for cond, action, where in items:
            if cond in seen:
                if seen[cond] != action:
                    raise self.error(where, f"{name}: the same condition already has action {seen[cond]} "
                                            f"(libseccomp rejects conflicting rules)")
                continue
            seen[cond] = action
            rules.append(Rule(name, action, cond, (f"{self.file}:{where}", 0)))
        self.warn_overlaps(name, rules)
        return rules

    def warn_overlaps(self, name: str, rules: list[Rule]) -> None:
        """Conditional rules with different actions that can match the same call: libseccomp
        orders those by its own criteria, not by the profile's order that sysgate keeps."""
        for i, first in enumerate(rules):
            for second in rules[i + 1:]:
                if first.action != second.action and _may_overlap(first.condition, second.condition, name):
                    self.warn(f"{first.source[0].rsplit(':', 1)[-1]} and {second.source[0].rsplit(':', 1)[-1]}: "
                              f"{name} rules with different actions overlap; libseccomp may not apply them "
                              f"in profile order, sysgate does")
                    return


def _may_overlap(a: Expr, b: Expr, syscall: str) -> bool:
    """Whether some arguments satisfy both conjunctions ``a`` and ``b`` (of imported literals)."""
    literals = [c for e in (a, b) for c in (e.items if isinstance(e, And) else (e,))]
    try:
        return bool(_simplify(literals, syscall))
    except SysgateError:          # not expressible as single literals, but certainly satisfiable
        return True


def _canonical_or_none(name: str) -> str | None:
    try:
        return abi.canonical_arch(name)
    except ValueError:
        return None


def _version(text) -> tuple[int, ...]:
    if isinstance(text, tuple):
        return text
    parts = []
    for piece in str(text).split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


# --- export ----------------------------------------------------------------------------------
MAX_TERMS = 4096


def export_oci(policy: Policy, *, warn: Callable[[str], None] | None = None) -> dict:
    """``policy`` as an OCI runtime-spec ``linux.seccomp`` object (what runc/crun take).

    Raises SysgateError when a condition cannot be written as OCI rules (e.g. a
    range on one argument that is neither bounded on one side nor small)."""
    say = warn or (lambda message: None)
    out: dict = {"defaultAction": EXPORT_ACTIONS[policy.default.kind]}
    if policy.default.kind in ("errno", "trace"):
        out["defaultErrnoRet"] = policy.default.data
    arches = [a for a in policy.arches if a in SCMP_ARCHES]
    if policy.allow_x32 and "x32" not in arches and "x86_64" in arches:
        arches.append("x32")
    out["architectures"] = [f"SCMP_ARCH_{SCMP_ARCHES[a]}" for a in arches]
    if policy.flags:
        out["flags"] = [f"SECCOMP_FILTER_FLAG_{f}" for f in policy.flags]
    if policy.listener_path:
        out["listenerPath"] = policy.listener_path
    if policy.listener_metadata:
        out["listenerMetadata"] = policy.listener_metadata
    if policy.bad_arch.kind not in ("kill_thread", "kill_process"):
        say(f"bad_arch {policy.bad_arch} has no OCI equivalent; runc uses kill_thread")
    entries: list[dict] = []
    for name in policy.syscalls():
        rules = [r for r in policy.rules if r.syscall == name]
        found = [(action, frozenset(args)) for action, terms in _disjoint(rules, policy.default) for args in terms]
        for action, args in dict.fromkeys(found):
            if not any(a == action and other < args for a, other in found):   # drop subsumed terms
                entries.append(_entry(name, action, list(args), say))
    out["syscalls"] = _merge_names(entries)
    return out


def _entry(name: str, action: Action, args: list[Cmp], say) -> dict:
    if action.kind == "notify" and action.handler:
        say(f"{name}: the notify handler {action.handler!r} has no OCI equivalent")
    if action.kind == "trap" and action.data:
        say(f"{name}: trap({action.data}) loses its value in OCI")
    entry: dict = {"names": [name], "action": EXPORT_ACTIONS[action.kind]}
    if action.kind in ("errno", "trace"):
        entry["errnoRet"] = action.data
    if args:
        entry["args"] = [{"index": c.arg, "value": c.mask, "valueTwo": c.value, "op": "SCMP_CMP_MASKED_EQ"}
                         if c.op == "&==" else {"index": c.arg, "value": c.value, "valueTwo": 0,
                                                "op": EXPORT_OPS[c.op]}
                         for c in sorted(args, key=lambda c: c.arg)]
    return entry


def _merge_names(entries: list[dict]) -> list[dict]:
    """Entries that differ only in the syscall name become one entry with several names."""
    merged: dict[str, dict] = {}
    for entry in entries:
        key = json.dumps({k: v for k, v in entry.items() if k != "names"}, sort_keys=True)
        if key in merged:
            names = merged[key]["names"]
            names.extend(n for n in entry["names"] if n not in names)
        else:
            merged[key] = entry
    return list(merged.values())


def _disjoint(rules: list[Rule], default: Action):
    """(action, [conjunction of 64-bit literals, ...]) per rule, pairwise disjoint across
    actions, without rules whose action is the default."""
    earlier: list[tuple[Action, Expr | None]] = []
    for rule in rules:
        if any(cond is None for _, cond in earlier):
            break                                   # an unconditional rule already decides every call
        blockers = [Not(cond) for act, cond in earlier if act != rule.action]
        earlier.append((rule.action, rule.condition))
        if rule.action == default:
            continue
        parts = ([rule.condition] if rule.condition is not None else []) + blockers
        terms = []
        for conj in _dnf(And(tuple(parts))):
            terms.extend(_simplify(conj, rule.syscall))
        if terms:
            yield rule.action, ([[]] if [] in terms else terms)


def _dnf(expr: Expr, negate: bool = False) -> list[list[Cmp]]:
    """Disjunctive normal form over 64-bit literals (== != < <= > >= &==)."""
    if isinstance(expr, Not):
        return _dnf(expr.item, not negate)
    if isinstance(expr, (And, Or)):
        conjunctive = isinstance(expr, And) != negate
        parts = [_dnf(i, negate) for i in expr.items]
        if not conjunctive:
            return [t for p in parts for t in p]
        result: list[list[Cmp]] = [[]]
        for p in parts:
            result = [a + b for a in result for b in p]
            if len(result) > MAX_TERMS:
                raise SysgateError("condition too complex to export to OCI")
        return result
    c = Cmp(expr.arg, expr.op, expr.value, expr.mask)          # widen to 64 bits
    if not negate:
        return [[c]]
    if c.op != "&==":
        return [[Cmp(c.arg, {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}[c.op], c.value)]]
    if c.value & ~c.mask:
        return [[]]                                            # never equal: the negation always holds
    bits = [1 << b for b in range(64) if c.mask >> b & 1]
    return [[Cmp(c.arg, "&==", (~c.value) & bit, mask=bit)] for bit in bits]


def _simplify(conj: list[Cmp], syscall: str) -> list[list[Cmp]]:
    """Rewrite a conjunction so each argument has at most one literal (runc ORs repeated
    indexes); may return several conjunctions (alternatives) or none (unsatisfiable)."""
    by_arg: dict[int, list[Cmp]] = {}
    for c in conj:
        by_arg.setdefault(c.arg, []).append(c)
    choices = []
    for arg, lits in sorted(by_arg.items()):
        options = _one_arg(lits, syscall)
        if not options:
            return []
        choices.append(options)
    out = []
    for combo in product(*choices):
        out.append([c for c in combo if c is not None])
        if len(out) > MAX_TERMS:
            raise SysgateError("condition too complex to export to OCI")
    return out


def _one_arg(lits: list[Cmp], syscall: str) -> list[Cmp | None]:
    """Alternative single literals (None = no constraint) equivalent to the AND of ``lits``."""
    lits = list(dict.fromkeys(lits))
    if len(lits) == 1:
        return lits
    arg = lits[0].arg
    lo, hi, excluded, mask, want = 0, U64, set(), 0, 0
    for c in lits:
        if c.op == "==":
            lo, hi = max(lo, c.value), min(hi, c.value)
        elif c.op == "!=":
            excluded.add(c.value)
        elif c.op == "<":
            if c.value == 0:
                return []
            hi = min(hi, c.value - 1)
        elif c.op == "<=":
            hi = min(hi, c.value)
        elif c.op == ">":
            if c.value == U64:
                return []
            lo = max(lo, c.value + 1)
        elif c.op == ">=":
            lo = max(lo, c.value)
        else:
            if (want ^ c.value) & mask & c.mask or c.value & ~c.mask:
                return []
            mask, want = mask | c.mask, want | c.value
    if lo > hi:
        return []
    masked = Cmp(arg, "&==", want, mask=mask) if mask else None
    if masked is not None:                      # values the mask already rules out need no exclusion
        excluded = {v for v in excluded if v & mask == want}
    intervals = _split(lo, hi, sorted(v for v in excluded if lo <= v <= hi))
    if masked is not None:
        if intervals == [(0, U64)]:
            return [masked]
        if sum(b - a + 1 for a, b in intervals) <= 64:
            return [Cmp(arg, "==", v) for a, b in intervals for v in range(a, b + 1) if v & mask == want]
        raise SysgateError(f"{syscall}: a masked comparison together with a range on arg{arg} "
                           f"cannot be expressed in an OCI profile")
    out: list[Cmp | None] = []
    for a, b in intervals:
        if a == 0 and b == U64:
            out.append(None)
        elif a == b:
            out.append(Cmp(arg, "==", a))
        elif a == 0:
            out.append(Cmp(arg, "<=", b))
        elif b == U64:
            out.append(Cmp(arg, ">=", a))
        elif b - a < 64:
            out.extend(Cmp(arg, "==", v) for v in range(a, b + 1))
        else:
            raise SysgateError(f"{syscall}: the range {a:#x}..{b:#x} of arg{arg} cannot be expressed in an "
                               f"OCI profile (runc ORs conditions on the same argument)")
    return out


def _split(lo: int, hi: int, holes: list[int]) -> list[tuple[int, int]]:
    """[lo, hi] minus ``holes`` (sorted, inside the range) as closed intervals."""
    out, start = [], lo
    for h in holes:
        if h > start:
            out.append((start, h - 1))
        start = h + 1
    if start <= hi:
        out.append((start, hi))
    return out
