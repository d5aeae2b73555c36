"""A Landlock wall under the notify rules: derive a kernel-enforced ruleset from fs/net rules.

The ``fs`` and ``net`` handlers decide path and address rules in the supervisor; Landlock
lets the kernel itself refuse what those rules deny, for every way in (io_uring opens,
renamed ancestors, calls the filter never routes). A :class:`LandlockPlan` is built in
the launching process from the rules (:func:`derive`), turned into a ruleset fd just
before the fork (:meth:`LandlockPlan.ruleset`) and enforced in the child after
no_new_privs and *before* the seccomp filter, so the filter never sees Landlock's own
syscalls.

What a ruleset can say, and what each grant means (``notes`` says it per decision):

* **exact** -- a subtree (``allow read /usr/**``) or a file the rules allow entirely
  becomes a ``path_beneath`` grant with the mode's rights (read: READ_FILE, READ_DIR;
  write: WRITE_FILE, MAKE_*, REMOVE_*, REFER, TRUNCATE; both: IOCTL_DEV). Exact for
  opening files; creating, removing or renaming a granted root itself (``rmdir /tmp``
  under ``allow rw /tmp/**``) needs rights on its parent and is refused by Landlock.
* **stricter** -- a literal deny inside an allowed tree (``allow read /**`` + ``deny
  /etc/shadow``) is expressed by granting the siblings along the way, as they exist when
  the ruleset is made: the ancestors themselves (listing ``/etc``, creating in it) and
  entries created there later are refused by Landlock although the rules allow them.
  This never allows more than the rules: rights stick to inodes, so a denied file moved
  or renamed by anyone keeps no grant unless it lands under a granted directory (where
  the path rules allow it too), and the sandbox itself cannot reparent it (REFER).
* **superset** -- what Landlock cannot express (a glob in the middle, ``/home/*/.ssh``;
  a deny glob inside an allowed tree; other hard links of a denied file; a net rule
  naming an address, since Landlock knows only ports) is granted more widely and the
  notify handler keeps deciding those calls.

Landlock never sees chroot, chmod/chown, xattrs, stat/access, chdir or O_PATH opens: the
notify fs handler stays in charge of them, so this layer is a floor, not a replacement
(unless ``--landlock-stat`` gives up checking stat/access/readlink/statfs/getdents:
:func:`without_open_routes`).
Exec limits (``exec_paths``) grant EXECUTE only on the launched binary (and its ELF or
``#!`` interpreter) plus the listed paths: a notified execve decided by CONTINUE is racy,
this is not. The same binary can be exec'd again.
"""
from __future__ import annotations

import os
import stat as _stat
import struct
from dataclasses import dataclass, field

from ..errors import SysgateError
from ..kernel import landlock as ll

MODES = ("off", "auto", "on")
SCOPE_NAMES = {"signal": ll.SCOPE_SIGNAL, "abstract-unix": ll.SCOPE_ABSTRACT_UNIX_SOCKET}
_READ = ll.FS_READ_FILE | ll.FS_READ_DIR | ll.FS_IOCTL_DEV
_WRITE = (ll.FS_WRITE_FILE | ll.FS_REMOVE_DIR | ll.FS_REMOVE_FILE | ll.FS_MAKE_CHAR | ll.FS_MAKE_DIR
          | ll.FS_MAKE_REG | ll.FS_MAKE_SOCK | ll.FS_MAKE_FIFO | ll.FS_MAKE_BLOCK | ll.FS_MAKE_SYM
          | ll.FS_REFER | ll.FS_TRUNCATE | ll.FS_IOCTL_DEV)
MODE_RIGHTS = {"read": _READ, "write": _WRITE}
_MAX_ENTRIES = 20000        # directory entries looked at when expanding denies; past it: superset


class LandlockUnavailable(SysgateError):
    """``landlock=on`` on a kernel without Landlock (or without a right the plan needs)."""


@dataclass
class LandlockPlan:
    """What to enforce: handled rights, ``path_beneath`` grants, TCP port grants, exec limits.

    ``layers`` maps "fs"/"net"/"exec" to "exact", "stricter" or "superset" (see the module
    docstring); ``notes`` explains every non-exact decision.
    """

    abi: int
    handled_fs: int = 0
    handled_net: int = 0
    scoped: int = 0
    paths: list[tuple[str, int]] = field(default_factory=list)
    ports: list[tuple[int, int]] = field(default_factory=list)      # (rights, port)
    exec_paths: list[str] | None = None     # None: EXECUTE not handled
    loose: list[str] = field(default_factory=list)      # paths granted as a superset of the rules
    layers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ruleset(self, exe: str | None = None) -> int:
        """A ruleset fd for this plan; ``exe`` (the file about to be exec'd) and its
        interpreters get EXECUTE when exec is limited."""
        fd = ll.create_ruleset(self.handled_fs, self.handled_net, self.scoped)
        try:
            grants = list(self.paths)
            if self.exec_paths is not None:
                for path in ([exe] if exe else []) + self.exec_paths:
                    grants += [(p, ll.FS_EXECUTE) for p in with_interpreters(path)]
            for path, access in grants:
                self._grant(fd, path, access & self.handled_fs)
            for access, port in self.ports:
                ll.add_port_rule(fd, access & self.handled_net, port)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _grant(ruleset: int, path: str, access: int) -> None:
        try:
            pfd = ll.open_path(path)
        except OSError:
            return              # gone since the plan was made: no grant is the stricter outcome
        try:
            if not _stat.S_ISDIR(os.fstat(pfd).st_mode):
                access &= ll.FS_FILE_RIGHTS
            if access:
                ll.add_path_rule(ruleset, access, pfd)
        finally:
            os.close(pfd)

    def summary(self) -> list[str]:
        """One line per layer and note (``policy check --handlers``)."""
        lines = [f"landlock ABI {self.abi}: " + ", ".join(f"{k} {v}" for k, v in sorted(self.layers.items()))]
        return lines + [f"  {n}" for n in self.notes]


def derive(fs=None, net=None, *, exec_paths=None, abi: int | None = None, scoped: int = 0,
           policy=None) -> LandlockPlan | None:
    """A plan enforcing no more than ``fs`` (PathRules) and ``net`` (NetRules) allow, plus exec
    limits when ``exec_paths`` is a list (empty: only the launched binary). None when there is
    nothing to enforce or the kernel has no Landlock (``abi`` 0).

    With ``policy``, a right is handled only when every syscall needing it reaches the rules'
    handler (:func:`governed`): rules the policy does not apply to a call must not deny it."""
    abi = ll.abi_version() if abi is None else abi
    if abi < 1 or (fs is None and net is None and exec_paths is None and not scoped):
        return None
    if scoped & ~ll.scopes(abi):
        raise LandlockUnavailable(f"Landlock ABI {abi} has no scopes (ABI 6 has)")
    plan = LandlockPlan(abi, scoped=scoped)
    if fs is not None:
        _derive_fs(plan, fs, governed(policy, FS_CALLS, "fs", plan))
    if net is not None:
        _derive_net(plan, net, governed(policy, NET_CALLS, "net", plan))
    if exec_paths is not None:
        missing = [p for p in exec_paths if not os.path.exists(p)]
        if missing:
            raise SysgateError(f"exec allow-list: {', '.join(map(repr, missing))} does not exist")
        plan.handled_fs |= ll.FS_EXECUTE
        plan.exec_paths = [os.path.abspath(p) for p in exec_paths]
        plan.layers["exec"] = "exact"
    if plan.handled_fs and abi >= 2 and not plan.handled_fs & ll.FS_REFER:
        # Any fs ruleset refuses reparenting (EXDEV) unless REFER is handled and granted: rules that
        # do not govern renames must not stop them. A move still may not gain Landlock rights.
        plan.handled_fs |= ll.FS_REFER
        plan.paths.append(("/", ll.FS_REFER))
        plan.notes.append("REFER granted everywhere (renames are not the rules' business here); a move across "
                          "directories that would gain Landlock rights still fails with EXDEV")
    if not (plan.handled_fs or plan.handled_net or plan.scoped):
        return None
    return plan


# --- which rights the rules govern ----------------------------------------------------------
_OPENS = ("open", "openat", "openat2", "creat")
_RENAMES = ("rename", "renameat", "renameat2")
#: right -> the syscalls that need it; a right is handled only when all of them reach the handler
FS_CALLS = {
    ll.FS_READ_FILE | ll.FS_READ_DIR | ll.FS_WRITE_FILE | ll.FS_IOCTL_DEV: _OPENS,
    ll.FS_TRUNCATE: _OPENS + ("truncate",),
    ll.FS_MAKE_REG: _OPENS + ("mknod", "mknodat") + _RENAMES + ("link", "linkat"),
    ll.FS_MAKE_DIR: ("mkdir", "mkdirat") + _RENAMES,
    ll.FS_MAKE_SYM: ("symlink", "symlinkat") + _RENAMES,
    ll.FS_MAKE_CHAR | ll.FS_MAKE_BLOCK | ll.FS_MAKE_FIFO: ("mknod", "mknodat") + _RENAMES,
    ll.FS_MAKE_SOCK: ("mknod", "mknodat", "bind") + _RENAMES,
    ll.FS_REMOVE_FILE: ("unlink", "unlinkat") + _RENAMES,
    ll.FS_REMOVE_DIR: ("rmdir", "unlinkat") + _RENAMES,
    ll.FS_REFER: _RENAMES + ("link", "linkat"),
}
NET_CALLS = {ll.NET_CONNECT_TCP: ("connect",), ll.NET_BIND_TCP: ("bind",)}


def governed(policy, table: dict, handler: str, plan: LandlockPlan | None = None) -> int:
    """The rights of ``table`` whose syscalls all reach ``handler`` (or its peers) first and
    unconditionally in ``policy`` (every right when ``policy`` is None)."""
    if policy is None:
        return sum(table)
    from ..arch.syscalls import number

    first: dict[str, object] = {}
    for rule in policy.rules:
        first.setdefault(rule.syscall, rule)
    arch = policy.arches[0] if policy.arches else None
    rights = 0
    for right, calls in table.items():
        missing = [c for c in calls if number(arch, c) is not None and not _routed(first.get(c), handler, c)]
        if missing:
            if plan is not None:
                plan.notes.append(f"not handled: {_right_names(right, handler)} ({', '.join(missing)} "
                                  f"do not go to notify({handler}) unconditionally)")
        else:
            rights |= right
    return rights


def _routed(rule, handler: str, syscall: str) -> bool:
    """Does ``rule`` (the first for ``syscall``) send every call to ``handler``? A bind to a unix
    path (MAKE_SOCK) is checked by ``net`` just as well."""
    names = {handler, "net"} if syscall == "bind" else {handler}
    return rule is not None and rule.condition is None and rule.action.kind == "notify" \
        and rule.action.handler in names


def _right_names(mask: int, handler: str) -> str:
    prefix = "FS_" if handler == "fs" else "NET_"
    names = [n[len(prefix):] for n in dir(ll) if n.startswith(prefix) and n not in ("FS_ABI1", "FS_FILE_RIGHTS")
             and getattr(ll, n) & mask and bin(getattr(ll, n)).count("1") == 1]
    return "|".join(sorted(names))


# --- filesystem ---------------------------------------------------------------------------
def _shape(pattern: str) -> tuple[str, str]:
    """("tree", base) for ``base/**``, ("exact", path) without globs, else ("glob", literal head)."""
    globbed = lambda s: "*" in s or "?" in s  # noqa: E731
    if pattern.endswith("/**") and not globbed(pattern[:-3]):
        return "tree", pattern[:-3] or "/"
    if not globbed(pattern):
        return "exact", pattern
    head = []
    for part in pattern.split("/")[1:]:
        if globbed(part):
            break
        head.append(part)
    return "glob", "/" + "/".join(head)


def _under(path: str, base: str) -> bool:
    return base == "/" or path == base or path.startswith(base + "/")


class _FsDeriver:
    def __init__(self, plan: LandlockPlan, rules):
        self.plan, self.rules = plan, rules
        self.shapes = [(r, *_shape(r.pattern)) for r in rules.rules]
        self.budget = _MAX_ENTRIES
        self.grades: set[str] = set()

    def status(self, path: str, mode: str) -> tuple[str, str, list[str]]:
        """("all"|"none"|"mixed", the verdict for paths no partial rule names, glob bases involved)
        for every path in the subtree of the directory ``path``."""
        partial, fuzzy = set(), []
        final = self.rules.default
        for rule, kind, base in self.shapes:
            if mode not in rule.modes:
                continue
            if kind == "tree" and _under(path, base):
                final = rule.verdict
                break
            if kind in ("tree", "exact") and _under(base, path):
                partial.add(rule.verdict)
            elif kind == "glob" and (_under(base, path) or _under(path, base)):
                partial.add(rule.verdict)
                fuzzy.append(base)
        if not partial or partial == {final}:
            return ("all" if final == "allow" else "none"), final, []
        return "mixed", final, fuzzy

    def cover(self, path: str, mode: str, is_dir: bool) -> None:
        rights = MODE_RIGHTS[mode]
        if not is_dir:
            if self.rules.allows(path, {mode}):
                self.plan.paths.append((path, rights))
            return
        state, final, fuzzy = self.status(path, mode)
        if state == "all":
            self.plan.paths.append((path, rights))
            return
        if state == "none":
            return
        stop = [b for b in fuzzy if _under(path, b)]
        if stop or self.budget <= 0:
            why = f"glob rule under {stop[0]}" if stop else "too many entries to expand"
            self.superset(path, mode, f"{mode} beneath {path}: {why}; the notify handler decides")
            return
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            self.superset(path, mode, f"{mode} beneath {path}: cannot list it ({exc.strerror})")
            return
        self.budget -= len(entries)
        if final == "allow" or self.rules.allows(path, {mode}):
            self.grades.add("stricter")
            self.plan.notes.append(f"stricter: {mode} of {path} itself and of entries created in it later "
                                   f"is refused by Landlock (a deny inside an allowed tree)")
        for entry in entries:
            try:
                if entry.is_symlink():
                    continue    # an access through it resolves to (and is decided at) its target
                self.cover(entry.path, mode, entry.is_dir(follow_symlinks=False))
            except OSError:
                continue

    def superset(self, path: str, mode: str, note: str) -> None:
        self.plan.paths.append((path, MODE_RIGHTS[mode]))
        self.plan.loose.append(path)
        self.grades.add("superset")
        self.plan.notes.append("superset: " + note)


def _derive_fs(plan: LandlockPlan, rules, rights: int) -> None:
    plan.handled_fs |= (_READ | _WRITE) & ll.fs_rights(plan.abi) & rights
    if not plan.handled_fs:
        return
    deriver = _FsDeriver(plan, rules)
    for mode in ("read", "write"):
        deriver.cover("/", mode, True)
    for rule in rules.rules:
        kind, base = _shape(rule.pattern)
        if rule.verdict == "allow" and kind != "glob" and not os.path.lexists(base):
            deriver.grades.add("stricter")
            plan.notes.append(f"stricter: {base} does not exist yet: Landlock grants nothing there (made later, "
                              f"it stays refused)")
        if rule.verdict == "deny" and kind == "exact":
            try:
                st = os.stat(rule.pattern)
            except OSError:
                continue
            if _stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                deriver.grades.add("superset")
                plan.notes.append(f"superset: {rule.pattern} has other hard links; Landlock sees paths, "
                                  f"the notify handler denies the inode")
    plan.paths = [(p, a & plan.handled_fs) for p, a in plan.paths]
    plan.layers["fs"] = "superset" if "superset" in deriver.grades else \
        "stricter" if "stricter" in deriver.grades else "exact"


# --- network --------------------------------------------------------------------------------
def _derive_net(plan: LandlockPlan, rules, rights: int) -> None:
    """Per TCP operation, the ports some address may use; exact when no rule names an address."""
    if plan.abi < 4:
        plan.notes.append("net: Landlock ABI < 4 has no TCP rights; the notify handler alone decides")
        return
    grade = "exact"
    for op, right in (("connect", ll.NET_CONNECT_TCP), ("bind", ll.NET_BIND_TCP)):
        if not right & rights:
            continue
        cuts = {0, 65536}
        for rule in rules.rules:
            for lo, hi in rule.ports:
                cuts.update((lo, hi + 1))
        edges = sorted(cuts)
        allowed, some = [], []
        for lo, hi in zip(edges, edges[1:]):
            state = _port_state(rules, op, lo)
            if state != "none":
                allowed.append((lo, hi))
            if state == "some":
                some.append((lo, hi - 1))
        if allowed == [(0, 65536)] and not some:
            continue            # every port from every address: nothing to handle
        plan.handled_net |= right
        plan.ports += [(right, p) for lo, hi in allowed for p in range(lo, hi)]
        if some:
            grade = "superset"
            shown = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in some[:5])
            plan.notes.append(f"superset: tcp {op} port(s) {shown}: allowed for any address by Landlock, "
                              f"the notify handler checks the address")
    plan.layers["net"] = grade
    plan.notes.append("net: Landlock covers TCP connect/bind only; UDP, unix sockets and sends stay with notify")


def _port_state(rules, op: str, port: int) -> str:
    """"all"/"none"/"some" addresses allowed for TCP ``op`` to ``port`` under the first-match rules."""
    partial = set()
    final = rules.default
    for rule in rules.rules:
        if op not in rule.ops or rule.unix is not None:
            continue
        if rule.ports and not any(lo <= port <= hi for lo, hi in rule.ports):
            continue
        if rule.any_family or rule.network is None:
            final = rule.verdict
            break
        partial.add(rule.verdict)
    if not partial or partial == {final}:
        return "all" if final == "allow" else "none"
    return "some"


# --- exec -----------------------------------------------------------------------------------
_ELF_HEAD = struct.Struct("=4sBB")
_PT_INTERP = 3


def with_interpreters(path: str, depth: int = 4) -> list[str]:
    """``path`` and what the kernel also opens for EXECUTE to run it: the ``#!`` interpreter
    (recursively) or the ELF PT_INTERP (the dynamic loader)."""
    out = [path]
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            interp = None
            if head.startswith(b"#!"):
                words = head[2:].split(b"\n", 1)[0].split()
                interp = os.fsdecode(words[0]) if words else None
            elif head[:4] == b"\x7fELF":
                interp = _elf_interp(f, head)
    except OSError:
        return out
    if interp and depth > 0:
        out += with_interpreters(interp, depth - 1)
    return out


def _elf_interp(f, head: bytes) -> str | None:
    _, klass, data = _ELF_HEAD.unpack_from(head)
    end = "<" if data == 1 else ">"
    if klass == 2:
        phoff, = struct.unpack_from(end + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
        entry = struct.Struct(end + "IIQQ")     # p_type, p_flags, p_offset, p_vaddr
        size_at, size_fmt = 0x20, "Q"           # p_filesz
    else:
        phoff, = struct.unpack_from(end + "I", head, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 0x2A)
        entry = struct.Struct(end + "II")       # p_type, p_offset
        size_at, size_fmt = 0x10, "I"
    for i in range(min(phnum, 64)):
        f.seek(phoff + i * phentsize)
        ph = f.read(phentsize)
        if len(ph) < phentsize:
            return None
        fields = entry.unpack_from(ph)
        if fields[0] == _PT_INTERP:
            offset = fields[2] if klass == 2 else fields[1]
            size, = struct.unpack_from(end + size_fmt, ph, size_at)
            f.seek(offset)
            return os.fsdecode(f.read(min(size, 4096)).split(b"\0", 1)[0]) or None
    return None


# --- notify routes Landlock makes unnecessary --------------------------------------------------
#: what a plain open needs from Landlock to decide it alone; the flags argument of each open call
_OPEN_RIGHTS = ll.FS_READ_FILE | ll.FS_READ_DIR | ll.FS_WRITE_FILE
_OPEN_FLAGS_ARG = {"open": 1, "openat": 2}
#: flags whose meaning for the rules (write, or no check at all) Landlock does not match: still notified.
#: O_PATH is not checked by Landlock; O_CREAT/O_TRUNC/O_APPEND count as write for the rules even
#: on a read-only open; O_TMPFILE (its __O_TMPFILE bit) is checked on the directory by the rules.
#: O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC, O_NONBLOCK... change nothing: Landlock checks the object
#: opened (READ_DIR for a directory) as the rules do.
_NOTIFIED_FLAGS = os.O_PATH | os.O_CREAT | os.O_TRUNC | os.O_APPEND | (os.O_TMPFILE & ~os.O_DIRECTORY)
_REFUSING = ("errno", "kill_process", "kill_thread", "trap")
#: allowed outright beside plain opens. exec: the fs handler checks read on the binary (then CONTINUEs,
#: racily), the kernel opens it for reading (READ_FILE, checked by Landlock on the file it execs, an
#: fexecve'd fd included); chdir/fchdir: the handler decides nothing (CONTINUE without reading memory)
_DECIDED_ALONE = ("execve", "execveat", "chdir", "fchdir")
#: what ``visible_metadata`` (``sysgate run --landlock-stat``) also allows: calls Landlock never checks,
#: which read metadata or names (stat, access, readlink, statfs of any path; getdents of a directory fd
#: not opened under Landlock, i.e. inherited or received over a socket). Opening stays Landlock's.
METADATA_CALLS = ("stat", "lstat", "newfstatat", "statx", "stat64", "lstat64", "fstatat64", "oldstat", "oldlstat",
                  "access", "faccessat", "faccessat2", "readlink", "readlinkat", "statfs", "statfs64",
                  "getdents", "getdents64")
METADATA_WARNING = ("sysgate: --landlock-stat: stat/access/readlink/statfs/getdents are not checked: metadata and "
                    "names of paths outside the fs rules are visible (opening them is still refused by Landlock)")


def without_open_routes(policy, plan: LandlockPlan | None, *, visible_metadata: bool = False):
    """A copy of ``policy`` in which what Landlock decides exactly is allowed outright (not
    notified) -- plain opens (open/openat without O_PATH, O_CREAT, O_TRUNC, O_APPEND,
    O_TMPFILE), execve/execveat, chdir/fchdir (:data:`_DECIDED_ALONE`) -- or None when that
    could change a decision. ``visible_metadata`` also allows :data:`METADATA_CALLS`, which
    Landlock does not check: an opt-in that shows more than the rules (metadata, never content).

    Only when the plan expresses the fs rules exactly (no superset, no snapshot of siblings),
    handles every right an open needs, and the target cannot chroot unchecked (Landlock
    sees real paths, the rules paths inside the target's root). The other opens, creat and
    openat2 (its flags live in memory) stay notified."""
    if plan is None or plan.layers.get("fs") != "exact":
        return None
    need = _OPEN_RIGHTS & ll.fs_rights(plan.abi)
    if plan.handled_fs & need != need:
        return None
    if not _refused_or_fs(policy, "chroot"):
        plan.notes.append("open routes kept: the policy lets chroot through, after which the rules (paths in the "
                          "target's root) and Landlock (real paths) differ; refuse chroot or send it to notify(fs)")
        return None
    from ..policy.model import ALLOW, Cmp, Rule
    from ..records import replace

    whole = _DECIDED_ALONE + (METADATA_CALLS if visible_metadata else ())
    seen, rules, dropped = set(), [], []
    for rule in policy.rules:
        first = rule.syscall not in seen
        seen.add(rule.syscall)
        if first and _routed(rule, "fs", rule.syscall):
            if rule.syscall in _OPEN_FLAGS_ARG:
                cond = Cmp(_OPEN_FLAGS_ARG[rule.syscall], "&==", 0, mask=_NOTIFIED_FLAGS, width=32)
                rules.append(Rule(rule.syscall, ALLOW, cond, rule.source))
                dropped.append(rule.syscall)
            elif rule.syscall in whole:
                rules.append(Rule(rule.syscall, ALLOW, None, rule.source))
                dropped.append(rule.syscall)
                continue
        rules.append(rule)
    if not set(dropped) & set(_OPEN_FLAGS_ARG):
        return None
    opens = [c for c in dropped if c in _OPEN_FLAGS_ARG]
    alone = [c for c in dropped if c in _DECIDED_ALONE]
    meta = [c for c in dropped if c in METADATA_CALLS]
    also = f", and {', '.join(alone)}" if alone else ""
    plan.notes.append(f"exact: {', '.join(opens)} without O_PATH|O_CREAT|O_TRUNC|O_APPEND|O_TMPFILE{also} "
                      f"are decided by Landlock alone (not notified)")
    if meta:
        plan.notes.append(f"visible metadata (--landlock-stat): {', '.join(meta)} are not checked (not notified)")
    return replace(policy, rules=rules)


def _refused_or_fs(policy, syscall: str) -> bool:
    rule = next((r for r in policy.rules if r.syscall == syscall), None)
    action = rule.action if rule is not None else policy.default
    if rule is not None and rule.condition is not None:
        return False
    return action.kind in _REFUSING or (action.kind == "notify" and action.handler == "fs")


# --- choosing ---------------------------------------------------------------------------------
def parse_scopes(text: str | None) -> int:
    """``"signal,abstract-unix"`` -> LANDLOCK_SCOPE_* bits (ABI 6: the sandbox may signal, or
    connect to abstract unix sockets of, only processes inside its own Landlock domain)."""
    bits = 0
    for word in filter(None, (text or "").split(",")):
        if word not in SCOPE_NAMES:
            raise SysgateError(f"--landlock-scope: unknown scope {word!r} (known: {', '.join(SCOPE_NAMES)})")
        bits |= SCOPE_NAMES[word]
    return bits


def plan_for_policy(policy, config=None, *, mode: str = "auto", exec_paths=None, scoped: int = 0,
                    warn=None) -> LandlockPlan | None:
    """What ``sysgate run --landlock=MODE`` enforces under ``policy``: the rules of the ``fs`` and
    ``net`` handler sections of ``config`` that the policy routes calls to, and exec limits.

    ``off``: nothing. ``on``: raises :class:`LandlockUnavailable` on a kernel without Landlock.
    ``auto``: there, ``warn`` (a callable taking one line) is told once and None returned."""
    if mode not in MODES:
        raise SysgateError(f"--landlock must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        if exec_paths is not None or scoped:
            raise SysgateError("exec limits (--no-exec-after-start, --allow-exec) and scopes need Landlock: "
                               "not with --landlock=off")
        return None
    fs = net = None
    if policy is not None:
        from ..handlers.registry import load_config

        config = load_config(config)
        routed = {n for names in policy.handler_routes().values() for n in names}
        if "fs" in routed:
            from ..handlers.fs import PathRules

            section = config.get("fs") or {}
            fs = PathRules(section.get("rules", ()), section.get("default", "deny"))
        if "net" in routed:
            from ..handlers.net import NetRules

            section = config.get("net") or {}
            net = NetRules(section.get("rules", ()), section.get("default", "deny"))
    abi = ll.abi_version()
    if abi < 1:
        if mode == "on" or exec_paths is not None or scoped:
            raise LandlockUnavailable(f"{'--landlock=on' if mode == 'on' else 'exec limits and scopes'}: "
                                      f"this kernel has no Landlock")
        if (fs or net) and warn is not None:
            warn("sysgate: Landlock is not available on this kernel: the notify layer alone enforces the rules")
        return None
    if scoped & ~ll.scopes(abi):
        raise LandlockUnavailable(f"--landlock-scope: Landlock ABI {abi} has no scopes (ABI 6 has)")
    return derive(fs, net, exec_paths=exec_paths, policy=policy, scoped=scoped)


# --- which layer enforces what ------------------------------------------------------------------
def rule_layers(policy, config=None) -> list[str]:
    """One line per fs/net rule of ``config`` that ``policy`` uses: which layer enforces it under
    ``sysgate run`` (for ``policy check --handlers`` and ``explain --handlers``)."""
    plan = plan_for_policy(policy, config)
    if plan is None:
        why = "this kernel has no Landlock" if ll.abi_version() < 1 else "no fs/net rules or rights to derive from"
        return [f"layers: notify only ({why})"]
    plain = without_open_routes(policy, plan) is not None
    lines = plan.summary()
    if plain:
        lines.append(f"  with sysgate run --landlock-stat: {', '.join(METADATA_CALLS)} are not checked either "
                     f"(metadata of paths outside the rules is visible; opening them is still refused)")
    from ..handlers.registry import load_config

    config = load_config(config)
    for text in (config.get("fs") or {}).get("rules", ()):
        lines.append(f"  fs  {text}: {_fs_layer(plan, text, plain)}")
    for text in (config.get("net") or {}).get("rules", ()):
        lines.append(f"  net {text}: {_net_layer(plan, text)}")
    return lines


def _fs_layer(plan: LandlockPlan, text, plain: bool) -> str:
    from ..handlers.fs import parse_rule

    if not plan.handled_fs & _OPEN_RIGHTS:
        return "notify (Landlock does not handle file access under this policy)"
    rule = parse_rule(text)
    kind, base = _shape(rule.pattern)
    if kind == "glob":
        return f"notify; Landlock only a superset (beneath {base})"
    if rule.verdict == "allow" and not os.path.lexists(base):
        return "notify; Landlock stricter (the path does not exist yet)"
    if plain:
        return "Landlock alone for plain opens and exec; notify for the rest"
    return "Landlock and notify"


def _net_layer(plan: LandlockPlan, text) -> str:
    from ..handlers.net import parse_rule

    rule = parse_rule(text)
    if rule.unix is not None or not plan.handled_net or not rule.ops & {"connect", "bind"}:
        return "notify"
    if rule.network is not None and not rule.any_family:
        return "Landlock by port only (superset); notify checks the address"
    return "Landlock (TCP connect/bind) and notify (UDP, unix, sends)"


def call_layer(policy, config, syscall: str, args: tuple) -> str:
    """Which layer decides ``syscall(args)`` under ``sysgate run`` with handler ``config``."""
    action, _ = policy.decide(syscall, args)
    plan = plan_for_policy(policy, config)
    lighter = without_open_routes(policy, plan)
    if lighter is not None and action.kind == "notify" and lighter.decide(syscall, args)[0].kind == "allow":
        return "layer: Landlock alone (exact fs rules: not notified under sysgate run)"
    if lighter is not None and action.kind == "notify" and syscall in METADATA_CALLS:
        return "layer: notify(fs), with the Landlock wall under it (with sysgate run --landlock-stat: not checked)"
    if action.kind != "notify" or action.handler not in ("fs", "net"):
        return "layer: the seccomp filter"
    handled = plan is not None and (plan.handled_fs if action.handler == "fs" else plan.handled_net)
    return f"layer: notify({action.handler})" + (", with the Landlock wall under it" if handled else " alone")
