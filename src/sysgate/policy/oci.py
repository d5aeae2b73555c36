"""OCI runtime-spec seccomp profiles, Docker/podman profile templates and Kubernetes
Security Profiles Operator ``SeccompProfile`` objects.

Import checks every field (unknown fields, types, required fields, values) and reports the
first problem with its JSON path; then it follows what runc does with a profile (and what libseccomp then makes of it):

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
* syscall names unknown on every architecture are ignored with a warning;
* a ``SeccompProfile``'s ``spec`` holds the runtime-spec fields; its ``baseProfileName``
  names another object in the cluster and is an error here.

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
import re
from collections.abc import Callable
from functools import cache
from itertools import product

from ..arch import syscalls, table
from ..errors import SourceError, SysgateError
from ..kernel import abi
from . import constants, jsondoc, overlap
from .jsondoc import did_you_mean, kind, member, short
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
#: libseccomp architecture tokens (SCMP_ARCH_*) for our arch names (the architecture table's).
SCMP_ARCHES = {a.name: a.scmp for a in table.ARCHES}
U64 = (1 << 64) - 1


# --- import ----------------------------------------------------------------------------------
#: libseccomp architectures sysgate cannot filter: a profile may name them for other hosts.
FOREIGN_ARCHES = ("ppc", "parisc", "parisc64", "m68k", "sh", "sheb")
#: Go's GOARCH spellings (Docker's ``includes.arches``) beyond ``abi.ARCH_ALIASES``.
GO_ARCHES = {a.goarch: a.name for a in table.ARCHES
             if a.goarch and a.goarch != a.name and a.goarch not in abi.ARCH_ALIASES}
#: Kubernetes Security Profiles Operator: API group/versions of its ``SeccompProfile`` kind.
SPO_VERSIONS = tuple(f"security-profiles-operator.x-k8s.io/{v}" for v in ("v1", "v1beta1", "v1alpha1"))
MAX_ERRNO = 4095        # the kernel caps SECCOMP_RET_ERRNO data at MAX_ERRNO

# The fields of each object, with their JSON type. A runtime-spec ``linux.seccomp`` object uses
# a subset of the Docker/podman template's (moby's and containers/common's Go types);
# ``defaultErrno``/``errno`` are containers/common's errno names.
_PROFILE = {"defaultAction": str, "defaultErrnoRet": int, "defaultErrno": str, "architectures": list,
            "archMap": list, "flags": list, "listenerPath": str, "listenerMetadata": str, "syscalls": list}
_SYSCALL = {"names": list, "name": str, "action": str, "errnoRet": int, "errno": str, "args": list,
            "comment": str, "includes": dict, "excludes": dict}
_ARG = {"index": int, "value": int, "valueTwo": int, "op": str}
_FILTER = {"caps": list, "arches": list, "minKernel": str}
_ARCH_MAP = {"architecture": str, "subArchitectures": list}
_SPO_OBJECT = {"apiVersion": str, "kind": str, "metadata": dict, "spec": dict, "status": dict}
_SPO_SPEC = {"disabled": bool, "baseProfileName": str, "defaultAction": str, "architectures": list, "flags": list,
             "listenerPath": str, "listenerMetadata": str, "syscalls": list}
_SPO_SYSCALL = {"names": list, "action": str, "errnoRet": int, "args": list}
_TYPE_NAMES = {list: "a list", dict: "an object", str: "a string", int: "an integer", bool: "a boolean"}
#: A kernel release (compiled by re's cache when a profile names one, not at import).
_RELEASE = r"(?s)(\d{1,9})\.(\d{1,9})(?:\.(\d{1,9}))?(?:[-+~_.].*)?\Z"


@cache
def capability_names() -> frozenset[str]:
    """Every Linux capability name (``CAP_CHOWN`` … ``CAP_CHECKPOINT_RESTORE``)."""
    return frozenset(n for n in constants.table() if n.startswith("CAP_") and n != "CAP_LAST_CAP")


def parse_caps(names, what: str = "--caps") -> frozenset[str]:
    """Capability names as Docker takes them (``SYS_ADMIN``, ``cap_sys_admin``, ``ALL``) as
    ``CAP_*`` names; SysgateError for an unknown one."""
    known = capability_names()
    out: set[str] = set()
    for name in names:
        key = name.strip().upper() if isinstance(name, str) else ""
        if key == "ALL":
            out |= known
            continue
        key = key if key.startswith("CAP_") else "CAP_" + key
        if key not in known:
            raise SysgateError(f"{what}: unknown capability {short(name)}{did_you_mean(key, known)}")
        out.add(key)
    return frozenset(out)


def parse_kernel(release, what: str = "--kernel") -> tuple[int, ...]:
    """A kernel version (``6.1``, ``5.10.0-27-amd64``, or a tuple) as a tuple of numbers."""
    if isinstance(release, tuple) and release and all(isinstance(p, int) and p >= 0 for p in release):
        return release
    version = _release(release)
    if version is None:
        raise SysgateError(f"{what}: {short(release)} is not a kernel version (expected X.Y or X.Y.Z, e.g. 6.1)")
    return version


def _release(text) -> tuple[int, ...] | None:
    m = re.match(_RELEASE, text) if isinstance(text, str) else None
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def import_oci(data: dict | str, arch: str | None = None, *, filename: str = "<json>",
               warn: Callable[[str], None] | None = None, caps=None, kernel: str | tuple | None = None) -> Policy:
    """A Policy from an OCI ``linux.seccomp`` object, a runtime-spec ``config.json``, a
    Docker/podman profile template, or a Kubernetes Security Profiles Operator
    ``SeccompProfile`` (JSON text or the decoded value).

    ``arch`` is the target architecture (default: native); ``caps`` the container's
    capabilities for ``includes``/``excludes`` (default: Docker's default set);
    ``kernel`` the kernel version for ``minKernel`` (default: the running kernel).
    Every field is checked: an unknown field, a wrong type, a missing required field or
    a bad value is a SourceError naming its JSON path (``$.syscalls[3].names[0]``)."""
    if isinstance(data, str):
        data = jsondoc.decode(data, filename)
    return _Importer(arch, filename, warn, caps, kernel).policy(data)


class _Importer:
    def __init__(self, arch, filename, warn, caps, kernel):
        self.file = filename
        self.target = abi.canonical_arch(arch) if arch else abi.native_arch()
        self.caps = parse_caps(DOCKER_DEFAULT_CAPS if caps is None else caps)
        self.kernel = parse_kernel(kernel if kernel is not None else os.uname().release,
                                   "--kernel" if kernel is not None else "the running kernel's release")
        self.warnings: list[str] = []
        self.warn_cb = warn
        self.known_syscalls = syscalls.all_names()
        self.action_cache: dict[tuple, Action] = {}

    def error(self, where: str, message: str) -> SourceError:
        return SourceError(f"{where}: {message}", self.file)

    def warn(self, message: str) -> None:
        text = f"{self.file}: {message}"
        self.warnings.append(text)
        if self.warn_cb:
            self.warn_cb(text)

    # --- shapes ------------------------------------------------------------------------
    def check_object(self, obj, fields: dict, required: tuple, where: str) -> dict:
        """``obj`` is an object with only ``fields`` (of their types; null counts as absent)
        and every ``required`` one. ``where`` is the object's JSON path, or a function giving it
        (built only for an error message)."""
        if type(obj) is dict:                       # the fast path: nothing to report
            for key, value in obj.items():
                expected = fields.get(key)
                if expected is None or (value is not None and type(value) is not expected):
                    break
            else:
                for key in required:
                    if obj.get(key) is None:
                        break
                else:
                    return obj
        where = where if isinstance(where, str) else where()
        if type(obj) is not dict:
            raise self.error(where, f"must be an object, not {kind(obj)}")
        for key, value in obj.items():
            expected = fields.get(key)
            if expected is None:
                hint = did_you_mean(key, fields) or f"; known fields: {', '.join(fields)}"
                raise self.error(member(where, key), f"unknown field{hint}")
            if value is not None and type(value) is not expected:
                raise self.error(member(where, key), f"must be {_TYPE_NAMES[expected]}, not {kind(value)}")
        for key in required:
            if obj.get(key) is None:
                raise self.error(member(where, key), "missing (a required field)")
        return obj

    def strings(self, obj: dict, key: str, where: str) -> list[str]:
        items = obj.get(key) or []
        for i, item in enumerate(items):
            if type(item) is not str:
                raise self.error(f"{member(where, key)}[{i}]", f"must be a string, not {kind(item)}")
        return items

    # --- the document ------------------------------------------------------------------------
    def policy(self, data) -> Policy:
        profile, where, fields, syscall_fields = self.unwrap(data)
        self.check_object(profile, fields, ("defaultAction",), where)
        default = self.action(profile, where, "defaultAction", "defaultErrnoRet", "defaultErrno")
        policy = Policy(default=default, arches=self.arches(profile, where), bad_arch=Action("kill_thread"),
                        flags=self.flags(profile, where), listener_path=profile.get("listenerPath") or None,
                        listener_metadata=profile.get("listenerMetadata") or None,
                        name=os.path.splitext(os.path.basename(self.file))[0] if not self.file.startswith("<")
                        else "policy")
        if policy.listener_metadata and not policy.listener_path:
            self.warn(f"{member(where, 'listenerMetadata')}: has no effect without listenerPath")
        policy.allow_x32 = "x32" in policy.arches
        policy.rules = self.rules(profile.get("syscalls") or [], default, member(where, "syscalls"), syscall_fields)
        policy.warnings = self.warnings
        return policy

    def unwrap(self, data):
        """(the profile object, its JSON path, its fields, its rules' fields)."""
        if type(data) is not dict:
            raise self.error("$", f"a seccomp profile must be a JSON object, not {kind(data)}")
        if "kind" in data or "apiVersion" in data:
            return self.security_profiles_operator(data)
        if "linux" in data or "ociVersion" in data:          # a whole runtime-spec config.json
            linux = data.get("linux")
            if type(linux) is not dict:
                raise self.error("$.linux", "missing: this config.json has no seccomp profile" if linux is None
                                 else f"must be an object, not {kind(linux)}")
            if linux.get("seccomp") is None:
                raise self.error("$.linux.seccomp", "missing: this config.json has no seccomp profile")
            return linux["seccomp"], "$.linux.seccomp", _PROFILE, _SYSCALL
        return data, "$", _PROFILE, _SYSCALL

    def security_profiles_operator(self, data):
        self.check_object(data, _SPO_OBJECT, ("apiVersion", "kind", "spec"), "$")
        if data["kind"] != "SeccompProfile":
            raise self.error("$.kind", f"{short(data['kind'])} is not a seccomp profile (sysgate reads the "
                                       f"SeccompProfile kind of the Security Profiles Operator)")
        if data["apiVersion"] not in SPO_VERSIONS:
            raise self.error("$.apiVersion", f"unknown API version {short(data['apiVersion'])} for SeccompProfile"
                                             f"{did_you_mean(data['apiVersion'], SPO_VERSIONS)} "
                                             f"(known: {', '.join(SPO_VERSIONS)})")
        spec = self.check_object(data["spec"], _SPO_SPEC, ("defaultAction",), "$.spec")
        if spec.get("baseProfileName"):
            raise self.error("$.spec.baseProfileName", f"{short(spec['baseProfileName'])} is a base profile in the "
                                                       "cluster, which sysgate cannot resolve; merge its rules into "
                                                       "spec.syscalls")
        if spec.get("disabled"):
            self.warn("$.spec.disabled: the profile is disabled (the operator does not install it)")
        return spec, "$.spec", _SPO_SPEC, _SPO_SYSCALL

    # --- settings ----------------------------------------------------------------------------
    def action(self, obj: dict, where: str, key: str, errno_key: str, errno_name_key: str) -> Action:
        name = obj[key]
        kind_ = ACTIONS.get(name)
        if kind_ is None:
            raise self.error(member(where, key), f"unknown action {short(name)}{did_you_mean(name, ACTIONS)}")
        ret, ename = obj.get(errno_key), obj.get(errno_name_key)
        cached = self.action_cache.get((name, ret, ename))
        if cached is not None:
            return cached
        if ename is not None:
            value = constants.errno_by_name(ename)
            if value is None:
                raise self.error(member(where, errno_name_key), f"unknown errno name {short(ename)}"
                                 f"{did_you_mean(ename, [n for n in constants.table() if n.startswith('E')])}")
            if ret is not None and ret != value:
                raise self.error(where, f"{errno_key} {ret} and {errno_name_key} {ename} ({value}) disagree")
            ret = value
        if ret is not None and kind_ not in ("errno", "trace"):
            raise self.error(member(where, errno_key if errno_key in obj else errno_name_key),
                             f"is only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {name}")
        if kind_ in ("errno", "trace"):
            value = errno_mod.EPERM if ret is None else ret
            limit = MAX_ERRNO if kind_ == "errno" else 0xFFFF
            if not 0 <= value <= limit:
                raise self.error(member(where, errno_key), f"must be 0..{limit} for {name}, not {value}")
            action = Action(kind_, value)
        else:
            action = Action(kind_)
        self.action_cache[(name, obj.get(errno_key), ename)] = action
        return action

    def arch(self, name: str, where: str) -> str | None:
        """Our name for an architecture of a profile; None for one libseccomp knows that sysgate
        cannot filter; SourceError for an unknown one."""
        key = name.strip().lower()
        key = key[len("scmp_arch_"):] if key.startswith("scmp_arch_") else key
        if key == "native":
            return self.target
        key = GO_ARCHES.get(key, key)
        if key in FOREIGN_ARCHES or abi.ARCH_ALIASES.get(key, key) in abi.UNSUPPORTED_AUDIT_ARCH:
            return None
        try:
            return abi.canonical_arch(key)
        except ValueError:
            candidates = ([f"SCMP_ARCH_{a}" for a in (*SCMP_ARCHES.values(), *map(str.upper, FOREIGN_ARCHES))]
                          if name.upper().startswith("SCMP_ARCH_") else
                          [*abi.AUDIT_ARCH, *abi.ARCH_ALIASES, *GO_ARCHES, *FOREIGN_ARCHES])
            raise self.error(where, f"unknown architecture {short(name)}{did_you_mean(name, candidates)}") from None

    def filter_arch(self, name: str, where: str) -> str | None:
        """An architecture of a template rule's ``includes``/``excludes``: Docker compares these
        names as strings with the target's, so an unknown one only never matches (moby's own
        default profile names ``mips3l64n32``): a warning, not an error."""
        try:
            return self.arch(name, where)
        except SourceError as exc:
            self.warn(f"{exc.message} (a name Docker compares as a string: it never matches)")
            return None

    def arches(self, profile: dict, where: str) -> list[str]:
        chosen: list[tuple[str | None, str, str]] = []           # (arch, name, path)
        at_map = member(where, "archMap")
        for i, entry in enumerate(profile.get("archMap") or []):
            at = f"{at_map}[{i}]"
            self.check_object(entry, _ARCH_MAP, ("architecture",), at)
            main = self.arch(entry["architecture"], member(at, "architecture"))
            at_subs = member(at, "subArchitectures")
            subs = [(self.arch(s, f"{at_subs}[{j}]"), s, f"{at_subs}[{j}]")
                    for j, s in enumerate(self.strings(entry, "subArchitectures", at))]
            if main == self.target and not chosen:
                chosen = subs
        at_list = member(where, "architectures")
        for i, name in enumerate(self.strings(profile, "architectures", where)):
            chosen.append((self.arch(name, f"{at_list}[{i}]"), name, f"{at_list}[{i}]"))
        for arch, name, at in chosen:
            if arch is None:
                self.warn(f"{at}: architecture {name!r} is not supported by sysgate; its system calls get "
                          f"the bad-architecture action (kill_thread)")
        return list(dict.fromkeys([self.target, *(a for a, _, _ in chosen if a)]))

    def flags(self, profile: dict, where: str) -> list[str]:
        out = []
        known = [f"SECCOMP_FILTER_FLAG_{k}" for k in abi.FILTER_FLAGS]
        for i, flag in enumerate(self.strings(profile, "flags", where)):
            key = flag.removeprefix("SECCOMP_FILTER_FLAG_")
            if key not in abi.FILTER_FLAGS:
                raise self.error(f"{member(where, 'flags')}[{i}]",
                                 f"unknown filter flag {short(flag)}{did_you_mean(flag, known)}")
            out.append(key)
        return list(dict.fromkeys(out))

    # --- rules --------------------------------------------------------------------------------
    def names(self, entry: dict, where: str) -> list[str]:
        names = self.strings(entry, "names", where)
        if entry.get("name") is not None:
            if names:
                raise self.error(where, "use either 'name' or 'names', not both")
            names = [entry["name"]]
        if not names:
            raise self.error(member(where, "names"), "missing or empty: a rule needs at least one syscall name")
        return names

    def applies(self, entry: dict, where: str) -> bool:
        """Whether a template rule's ``includes`` match the target and its ``excludes`` do not."""
        inc, exc = entry.get("includes"), entry.get("excludes")
        if not inc and not exc:
            return True
        verdicts = []
        for key, obj in (("includes", inc or {}), ("excludes", exc or {})):
            at = member(where, key)
            self.check_object(obj, _FILTER, (), at)
            arches = {self.filter_arch(a, f"{member(at, 'arches')}[{i}]")
                      for i, a in enumerate(self.strings(obj, "arches", at))}
            caps = {self.cap(c, f"{member(at, 'caps')}[{i}]") for i, c in enumerate(self.strings(obj, "caps", at))}
            kernel = obj.get("minKernel")
            version = _release(kernel) if kernel else None
            if kernel and version is None:
                raise self.error(member(at, "minKernel"), f"{short(kernel)} is not a kernel version (X.Y or X.Y.Z)")
            verdicts.append((arches, caps, version))
        (inc_arches, inc_caps, inc_kernel), (exc_arches, exc_caps, exc_kernel) = verdicts
        return ((not inc_arches or self.target in inc_arches) and self.target not in exc_arches
                and inc_caps <= self.caps and not exc_caps & self.caps
                and (inc_kernel is None or self.kernel >= inc_kernel)
                and (exc_kernel is None or self.kernel < exc_kernel))

    def cap(self, name: str, where: str) -> str:
        if name not in capability_names():
            raise self.error(where, f"unknown capability {short(name)}{did_you_mean(name, capability_names())}")
        return name

    def rules(self, entries: list, default: Action, where: str, fields: dict) -> list[Rule]:
        """The profile's rules, as libseccomp keeps them: per syscall, the first unconditional
        rule alone, else the conditional ones (identical ones merged)."""
        per_syscall: dict[str, list] = {}            # name -> [(action, position) or None, [(cond, action, position)]]
        unknown: dict[str, None] = {}
        known, template = self.known_syscalls, fields is _SYSCALL
        for i, entry in enumerate(entries):
            at = f"{where}[{i}]"
            self.check_object(entry, fields, ("action",), at)
            names = self.names(entry, at)
            action = self.action(entry, at, "action", "errnoRet", "errno")
            args = entry.get("args")
            conditions = self.conditions(args, at) if args else _ALWAYS
            if (template and not self.applies(entry, at)) or action == default:
                continue
            for name in names:
                if name not in known:
                    unknown[name] = None
                    continue
                slot = per_syscall.get(name)
                if slot is None:
                    slot = per_syscall[name] = [None, []]
                elif slot[0] is not None:
                    continue                         # an unconditional rule already decides
                for cond in conditions:
                    if cond is None:
                        slot[0], slot[1] = (action, i), []
                        break
                    slot[1].append((cond, action, i))
        if unknown:
            names = list(unknown)
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            shown = ", ".join(n if n.isidentifier() else short(n) for n in names[:10])
            self.warn(f"{where}: unknown syscalls ignored: {shown}{more}")
        rules: list[Rule] = []
        for name, (always, conditional) in per_syscall.items():
            if always is not None:
                rules.append(Rule(name, always[0], None, (f"{self.file}:{where}[{always[1]}]", 0)))
            else:
                rules.extend(self.conditional_rules(name, conditional, where))
        return rules

    def conditions(self, args: list, where: str) -> list[Expr | None]:
        """The conditions of one profile rule: one (an AND) or, when an index repeats, one per arg."""
        cmps = []
        for j, arg in enumerate(args):
            self.check_object(arg, _ARG, ("index", "op"), lambda: f"{member(where, 'args')}[{j}]")
            index, op, value, value2 = arg["index"], OPS.get(arg["op"]), arg.get("value") or 0, arg.get("valueTwo") or 0
            if not 0 <= index <= 5 or op is None or not 0 <= value <= U64 or not 0 <= value2 <= U64:
                self.bad_arg(arg, f"{member(where, 'args')}[{j}]")
            cmps.append(Cmp(index, "&==", value2, mask=value) if op == "&==" else Cmp(index, op, value))
        if len({c.arg for c in cmps}) < len(cmps):
            return cmps
        return [cmps[0] if len(cmps) == 1 else And(tuple(cmps))]

    def bad_arg(self, arg: dict, at: str):
        index, op_name = arg["index"], arg["op"]
        if not 0 <= index <= 5:
            raise self.error(member(at, "index"), f"must be 0..5, not {index}")
        if op_name not in OPS:
            raise self.error(member(at, "op"), f"unknown op {short(op_name)}{did_you_mean(op_name, OPS)}")
        for key in ("value", "valueTwo"):
            if not 0 <= (arg.get(key) or 0) <= U64:
                raise self.error(member(at, key), f"must be an unsigned 64-bit number, not {short(arg[key])}")

    def conditional_rules(self, name: str, items: list, where: str) -> list[Rule]:
        seen: dict[Expr, Action] = {}
        rules, literals = [], []
        for cond, action, i in items:
            if cond in seen:
                if seen[cond] != action:
                    raise self.error(f"{where}[{i}]", f"{name}: the same condition already has action "
                                                      f"{seen[cond]} (libseccomp rejects conflicting rules)")
                continue
            seen[cond] = action
            rules.append(Rule(name, action, cond, (f"{self.file}:{where}[{i}]", 0)))
            literals.append((i, {c.arg: c for c in (cond.items if isinstance(cond, And) else (cond,))}, action))
        try:
            pair = overlap.find_overlap(literals)
        except overlap.TooComplex:
            self.warn(f"{where}: {name}: {len(rules)} conditional rules are too many to check for overlaps "
                      f"with different actions (libseccomp may not apply those in profile order)")
            return rules
        if pair:
            self.warn(f"{where}[{pair[0]}] and {where}[{pair[1]}]: {name} rules with different actions overlap; "
                      f"libseccomp may not apply them in profile order, sysgate does")
        return rules


_ALWAYS: list = [None]


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
    arches = table.with_x32([a for a in policy.arches if a in SCMP_ARCHES], policy.allow_x32)
    out["architectures"] = [f"SCMP_ARCH_{SCMP_ARCHES[a]}" for a in arches]
    if policy.flags:
        out["flags"] = [f"SECCOMP_FILTER_FLAG_{f}" for f in policy.flags]
    if policy.listener_path:
        out["listenerPath"] = policy.listener_path
    if policy.listener_metadata:
        out["listenerMetadata"] = policy.listener_metadata
    if policy.bad_arch.kind not in ("kill_thread", "kill_process"):
        say(f"bad_arch {policy.bad_arch} has no OCI equivalent; runc uses kill_thread")
    narrow = [n for n in policy.syscalls() if any(_has_32bit_test(r.condition) for r in policy.rules if r.syscall == n)]
    if narrow:
        shown = ", ".join(narrow[:8]) + (f" and {len(narrow) - 8} more" if len(narrow) > 8 else "")
        say(f"{shown}: 32-bit argument tests become 64-bit comparisons in OCI (libseccomp's width); "
            f"a call with the upper half of such an argument set no longer matches them")
    entries: list[dict] = []
    for name in policy.syscalls():
        rules = [r for r in policy.rules if r.syscall == name]
        found = [(action, frozenset(args)) for action, terms in _disjoint(rules, policy.default) for args in terms]
        for action, args in dict.fromkeys(found):
            if not any(a == action and other < args for a, other in found):   # drop subsumed terms
                entries.append(_entry(name, action, list(args), say))
    out["syscalls"] = _merge_names(entries)
    return out


def _has_32bit_test(expr: Expr | None) -> bool:
    stack = [expr] if expr is not None else []
    while stack:
        e = stack.pop()
        if isinstance(e, Cmp):
            if e.width == 32:
                return True
        elif isinstance(e, Not):
            stack.append(e.item)
        else:
            stack.extend(e.items)
    return False


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
        return [] if _never(lits[0]) else lits
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


def _never(c: Cmp) -> bool:
    """A literal no 64-bit value satisfies (exported as is, it would shadow later rules in OCI's
    eyes: libseccomp rejects two rules with the same condition and different actions)."""
    return (c.op == "&==" and bool(c.value & ~c.mask)) or (c.op == "<" and c.value == 0) \
        or (c.op == ">" and c.value == U64)


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
