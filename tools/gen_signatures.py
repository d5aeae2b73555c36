#!/usr/bin/env python3
"""Generate src/sysgate/data/signatures.json: argument names, C types and kinds per syscall.

Source: the SYNOPSIS of every page in /usr/share/man/man2 (Debian package
manpages-dev).  The troff markup is flattened to C text, comments and
preprocessor lines are dropped, and each prototype ``type name(params);`` is
parsed.  ``syscall(SYS_xxx, ...)`` prototypes document the raw kernel
interface and win over the glibc wrapper of the same name; among several
wrappers (``open`` with 2 and 3 arguments) the longest one wins.

Where the man pages document the wrapper and the kernel takes different
arguments, or have no page at all, ``OVERRIDES`` (below) holds the raw
kernel argument list, written from the kernel's SYSCALL_DEFINE declarations;
``ARCH_OVERRIDES`` does the same for arguments whose order or meaning
differs per architecture (clone, the old mmap).  ``MAN_NAMES`` maps syscalls
onto the man-page prototype that describes them (``pread64`` -> ``pread``).

Each parameter gets a ``kind`` and a ``width``:

* kind ``fd`` (file descriptor, incl. dirfd), ``string`` (``const char *``),
  ``ptr`` (other pointers and arrays), ``flags`` (an integer named
  ``flags``/``*_flags``/``options``/``prot``), ``int``/``uint32`` (32-bit
  signed/unsigned C types), ``long``/``ulong`` (64-bit on 64-bit arches);
* width 32 for C types the kernel reads as 32 bits (``int``, ``pid_t``,
  ``uid_t``, ``mode_t``, ``clockid_t``...), 64 otherwise (pointers, longs,
  ``size_t``, ``off_t`` and anything unknown).

Needs: manpages-dev and the tables from gen_syscall_tables.py.
Run:   python3 tools/gen_signatures.py   (--check: compare only)
"""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "sysgate" / "data"
MAN2 = Path("/usr/share/man/man2")

# --------------------------------------------------------------------------- type model
#: C types the kernel reads as 32-bit values: name -> kind.
INT32_TYPES = {
    "int": "int", "signed int": "int", "pid_t": "int", "key_serial_t": "int", "clockid_t": "int",
    "timer_t": "int", "mqd_t": "int", "key_t": "int", "rwf_t": "int", "int32_t": "int",
    "__s32": "int", "s32": "int", "idtype_t": "int", "short": "int", "char": "int",
    "unsigned int": "uint32", "unsigned": "uint32", "uid_t": "uint32", "gid_t": "uint32",
    "mode_t": "uint32", "umode_t": "uint32", "id_t": "uint32", "qid_t": "uint32",
    "socklen_t": "uint32", "uint32_t": "uint32", "__u32": "uint32", "u32": "uint32",
    "unsigned short": "uint32", "unsigned char": "uint32", "old_uid_t": "uint32", "old_gid_t": "uint32",
    "dev_t": "uint32",          # the kernel takes "unsigned dev" (mknod, ustat)
    "nfds_t": "uint32",         # poll: the kernel takes "unsigned int nfds"
}
#: Typedefs that are pointers.
POINTER_TYPEDEFS = {"cap_user_header_t", "cap_user_data_t", "caddr_t", "sighandler_t"}
#: Signed 64-bit (on 64-bit arches) integer types; every other integer type is ``ulong``.
LONG_TYPES = {"long", "long int", "ssize_t", "off_t", "loff_t", "off64_t", "time_t", "long long",
              "int64_t", "__s64", "s64", "clock_t", "__kernel_old_time_t"}
FLAG_NAMES = re.compile(r"^(\w*flags|flag|oflag|options|prot)$")
FD_NAMES = re.compile(r"^(fd|dfd|\w*_fd|\w*fd|fd_\w+)$")
#: ``const char *`` parameters that are byte buffers rather than NUL-terminated strings.
NOT_STRINGS = re.compile(r"buf|msg|value|data|argv")
QUALIFIERS = re.compile(r"\b(_Nullable|_Nonnull|restrict|__restrict|__user|volatile)\b")


def classify(ctype: str, name: str) -> tuple[str, int]:
    """(kind, width) of a parameter with C type ``ctype`` called ``name``."""
    if "*" in ctype or "[" in ctype or "(" in ctype:
        base = ctype.replace(" ", "")
        if base == "constchar*" and not NOT_STRINGS.search(name):
            return "string", 64
        return "ptr", 64
    base = "int" if ctype.startswith("enum ") else re.sub(r"\bconst\s+", "", ctype).strip()
    if base in POINTER_TYPEDEFS:
        return "ptr", 64
    if base in INT32_TYPES:
        kind, width = INT32_TYPES[base], 32
    elif base in LONG_TYPES:
        kind, width = "long", 64
    else:
        kind, width = "ulong", 64
    if FD_NAMES.match(name) and not name.startswith("nfd") and width == 32:
        return "fd", 32
    if FLAG_NAMES.match(name):
        return "flags", width
    return kind, width


# --------------------------------------------------------------------------- hand-maintained data
#: Raw kernel argument lists where the man page shows only the glibc wrapper, shows it
#: with different arguments, or has no page (syscalls newer than man-pages 6.03).
OVERRIDES_SRC = {
    # wrappers that hide or reorder kernel arguments
    "rt_sigaction": "int sig, const struct sigaction *act, struct sigaction *oact, size_t sigsetsize",
    "rt_sigprocmask": "int how, const sigset_t *set, sigset_t *oldset, size_t sigsetsize",
    "rt_sigpending": "sigset_t *set, size_t sigsetsize",
    "rt_sigsuspend": "const sigset_t *mask, size_t sigsetsize",
    "rt_sigtimedwait": "const sigset_t *set, siginfo_t *info, const struct timespec *timeout, size_t sigsetsize",
    "rt_sigreturn": "",
    "pselect6": "int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds, "
                "struct timespec *timeout, void *sigmask",
    "ppoll": "struct pollfd *fds, unsigned int nfds, struct timespec *tmo_p, const sigset_t *sigmask, "
             "size_t sigsetsize",
    "epoll_pwait": "int epfd, struct epoll_event *events, int maxevents, int timeout, "
                   "const sigset_t *sigmask, size_t sigsetsize",
    "epoll_pwait2": "int epfd, struct epoll_event *events, int maxevents, const struct timespec *timeout, "
                    "const sigset_t *sigmask, size_t sigsetsize",
    "signalfd": "int fd, const sigset_t *mask, size_t sizemask",
    "signalfd4": "int fd, const sigset_t *mask, size_t sizemask, int flags",
    "faccessat": "int dirfd, const char *pathname, int mode",          # flags exist only in faccessat2
    "fchmodat": "int dirfd, const char *pathname, mode_t mode",        # flags exist only in fchmodat2
    "preadv": "int fd, const struct iovec *iov, int iovcnt, unsigned long pos_l, unsigned long pos_h",
    "pwritev": "int fd, const struct iovec *iov, int iovcnt, unsigned long pos_l, unsigned long pos_h",
    "preadv2": "int fd, const struct iovec *iov, int iovcnt, unsigned long pos_l, unsigned long pos_h, "
               "int flags",
    "pwritev2": "int fd, const struct iovec *iov, int iovcnt, unsigned long pos_l, unsigned long pos_h, "
                "int flags",
    "waitid": "idtype_t idtype, id_t id, siginfo_t *infop, int options, struct rusage *rusage",
    "getcpu": "unsigned int *cpu, unsigned int *node, void *tcache",
    "fcntl": "int fd, unsigned int cmd, unsigned long arg",
    "ioctl": "int fd, unsigned int request, unsigned long arg",
    "prctl": "int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5",
    "mremap": "void *old_address, size_t old_size, size_t new_size, int flags, void *new_address",
    "semctl": "int semid, int semnum, int cmd, unsigned long arg",
    "statfs64": "const char *path, size_t sz, struct statfs64 *buf",
    "fstatfs64": "int fd, size_t sz, struct statfs64 *buf",
    "sync_file_range2": "int fd, unsigned int flags, loff_t offset, loff_t nbytes",
    "arm_sync_file_range": "int fd, unsigned int flags, loff_t offset, loff_t nbytes",
    "arm_fadvise64_64": "int fd, int advice, loff_t offset, loff_t len",
    "getdents": "unsigned int fd, struct linux_dirent *dirp, unsigned int count",
    "exit": "int status",
    "brk": "void *addr",
    "getcwd": "char *buf, size_t size",
    "mq_open": "const char *name, int oflag, mode_t mode, struct mq_attr *attr",
    "clone3": "struct clone_args *cl_args, size_t size",
    "openat2": "int dirfd, const char *pathname, struct open_how *how, size_t size",
    "io_pgetevents": "aio_context_t ctx_id, long min_nr, long nr, struct io_event *events, "
                     "struct timespec *timeout, const struct __aio_sigset *usig",
    # no man page in man-pages 6.03
    "rseq": "struct rseq *rseq, uint32_t rseq_len, int flags, uint32_t sig",
    "io_uring_setup": "uint32_t entries, struct io_uring_params *p",
    "io_uring_enter": "unsigned int fd, uint32_t to_submit, uint32_t min_complete, uint32_t flags, "
                      "const void *argp, size_t argsz",
    "io_uring_register": "unsigned int fd, unsigned int opcode, void *arg, unsigned int nr_args",
    "open_tree": "int dfd, const char *filename, unsigned int flags",
    "move_mount": "int from_dfd, const char *from_pathname, int to_dfd, const char *to_pathname, "
                  "unsigned int flags",
    "fsopen": "const char *fs_name, unsigned int flags",
    "fsconfig": "int fd, unsigned int cmd, const char *key, const void *value, int aux",
    "fsmount": "int fs_fd, unsigned int flags, unsigned int attr_flags",
    "fspick": "int dfd, const char *path, unsigned int flags",
    "process_mrelease": "int pidfd, unsigned int flags",
    "futex_waitv": "struct futex_waitv *waiters, unsigned int nr_futexes, unsigned int flags, "
                   "struct timespec *timeout, clockid_t clockid",
    "set_mempolicy_home_node": "unsigned long start, unsigned long len, unsigned long home_node, "
                               "unsigned long flags",
    "quotactl_fd": "unsigned int fd, unsigned int cmd, qid_t id, void *addr",
    "cachestat": "unsigned int fd, struct cachestat_range *cstat_range, struct cachestat *cstat, "
                 "unsigned int flags",
    "fchmodat2": "int dirfd, const char *pathname, mode_t mode, unsigned int flags",
    "map_shadow_stack": "unsigned long addr, unsigned long size, unsigned int flags",
    "futex_wake": "void *uaddr, unsigned long mask, int nr, unsigned int flags",
    "futex_wait": "void *uaddr, unsigned long val, unsigned long mask, unsigned int flags, "
                  "struct timespec *timeout, clockid_t clockid",
    "futex_requeue": "struct futex_waitv *waiters, unsigned int flags, int nr_wake, int nr_requeue",
    "statmount": "const struct mnt_id_req *req, struct statmount *buf, size_t bufsize, unsigned int flags",
    "listmount": "const struct mnt_id_req *req, uint64_t *mnt_ids, size_t nr_mnt_ids, unsigned int flags",
    "lsm_get_self_attr": "unsigned int attr, struct lsm_ctx *ctx, uint32_t *size, uint32_t flags",
    "lsm_set_self_attr": "unsigned int attr, struct lsm_ctx *ctx, uint32_t size, uint32_t flags",
    "lsm_list_modules": "uint64_t *ids, uint32_t *size, uint32_t flags",
    "mseal": "unsigned long start, size_t len, unsigned long flags",
    "setxattrat": "int dirfd, const char *pathname, unsigned int at_flags, const char *name, "
                  "const struct xattr_args *args, size_t size",
    "getxattrat": "int dirfd, const char *pathname, unsigned int at_flags, const char *name, "
                  "struct xattr_args *args, size_t size",
    "listxattrat": "int dirfd, const char *pathname, unsigned int at_flags, char *list, size_t size",
    "removexattrat": "int dirfd, const char *pathname, unsigned int at_flags, const char *name",
    "open_tree_attr": "int dfd, const char *filename, unsigned int flags, struct mount_attr *uattr, "
                      "size_t usize",
    "file_getattr": "int dfd, const char *filename, struct file_attr *ufattr, size_t usize, "
                    "unsigned int at_flags",
    "file_setattr": "int dfd, const char *filename, struct file_attr *ufattr, size_t usize, "
                    "unsigned int at_flags",
    "listns": "const struct ns_id_req *req, uint64_t *ns_ids, size_t nr_ns_ids, unsigned int flags",
    "uretprobe": "",
    "uprobe": "",
    "riscv_hwprobe": "struct riscv_hwprobe *pairs, size_t pair_count, size_t cpusetsize, "
                     "cpu_set_t *cpus, unsigned int flags",
    "riscv_flush_icache": "void *start, void *end, unsigned long flags",
    "breakpoint": "",
    "usr26": "",
    "usr32": "",
    "set_tls": "unsigned long tls",
    "get_tls": "",
    # the man page shows a different interface than the kernel's
    "getdents64": "unsigned int fd, struct linux_dirent64 *dirp, unsigned int count",
    "getpgrp": "",                                            # the BSD getpgrp(pid) is not Linux's
    "setgroups": "int size, const gid_t *list",               # kernel: int gidsetsize
    "ptrace": "long request, pid_t pid, void *addr, void *data",  # kernel reads request as a long
    "personality": "unsigned int persona",                    # kernel: unsigned int
    "cacheflush": "unsigned long start, unsigned long end, int flags",   # arm; the man page is MIPS's
}

#: Argument lists that differ per architecture.  The default entry (in OVERRIDES_SRC or the
#: man page) is the x86_64 one.
_CLONE_BACKWARDS = "unsigned long flags, void *stack, int *parent_tid, unsigned long tls, int *child_tid"
ARCH_OVERRIDES_SRC = {
    "clone": {
        # CONFIG_CLONE_BACKWARDS: tls before child_tid
        **{arch: _CLONE_BACKWARDS for arch in ("i386", "arm", "aarch64", "riscv64", "ppc64le",
                                               "mipsel64", "loongarch64")},
        # CONFIG_CLONE_BACKWARDS2: stack and flags swapped
        "s390x": "void *stack, unsigned long flags, int *parent_tid, int *child_tid, unsigned long tls",
    },
    # the old mmap takes a pointer to a block of six arguments
    "mmap": {arch: "struct mmap_arg_struct *args" for arch in ("i386", "s390x")},
}
OVERRIDES_SRC["clone"] = "unsigned long flags, void *stack, int *parent_tid, int *child_tid, unsigned long tls"

NOTES = {
    "clone": "raw kernel order; the glibc wrapper takes (fn, stack, flags, arg, ...). "
             "i386/arm/aarch64/riscv64/ppc64le pass tls before child_tid, s390x swaps stack and flags",
    "mmap": "on i386 and s390x the old mmap takes one pointer to the six arguments (mmap2 is the 6-argument call)",
    "faccessat": "the kernel call has no flags argument (glibc emulates it; see faccessat2)",
    "fchmodat": "the kernel call has no flags argument (see fchmodat2)",
    "preadv": "the kernel splits the offset into pos_l/pos_h",
    "pwritev": "the kernel splits the offset into pos_l/pos_h",
    "preadv2": "the kernel splits the offset into pos_l/pos_h, so flags is argument 5",
    "pwritev2": "the kernel splits the offset into pos_l/pos_h, so flags is argument 5",
    "pselect6": "the sixth argument points to {const sigset_t *ss; size_t ss_len}",
}

#: Syscalls described by a man-page prototype of another name.
MAN_NAMES = {
    "pread64": "pread", "pwrite64": "pwrite", "newfstatat": "fstatat", "fstatat64": "fstatat",
    "fadvise64": "posix_fadvise", "fadvise64_64": "posix_fadvise", "prlimit64": "prlimit",
    "ugetrlimit": "getrlimit", "_newselect": "select", "umount": "umount", "sendfile64": "sendfile",
    "oldfstat": "fstat", "oldstat": "stat", "oldlstat": "lstat", "stat64": "stat", "lstat64": "lstat",
    "fstat64": "fstat", "fcntl64": "fcntl", "truncate64": "truncate", "ftruncate64": "ftruncate",
    "readdir": "readdir", "old_mmap": "mmap", "getdents64": "getdents64", "mmap2": "mmap2",
    "sgetmask": "sgetmask", "timerfd": "timerfd_create", "eventfd2": "eventfd", "send": "send", "recv": "recv",
}

# --------------------------------------------------------------------------- troff -> C text
_ESCAPES = [(re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""), (re.compile(r"\\[-]"), "-"),
            (re.compile(r"\\(~| )"), " "), (re.compile(r"\\[&|^]"), ""), (re.compile(r"\\e"), r"\\\\")]
_FONT_MACROS = {".B", ".I", ".BI", ".IB", ".BR", ".RB", ".IR", ".RI", ".SM", ".SB"}


def troff_args(text: str) -> list[str]:
    """Split a macro's argument string, honouring double quotes."""
    args, cur, quoted, i = [], "", False, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            if quoted and text[i + 1:i + 2] == '"':
                cur += '"'
                i += 1
            else:
                quoted = not quoted
        elif c in " \t" and not quoted:
            if cur:
                args.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    if cur or quoted:
        args.append(cur)
    return args


def unescape(text: str) -> str:
    for pattern, repl in _ESCAPES:
        text = pattern.sub(repl, text)
    return text


def synopsis_text(source: str) -> str:
    """The SYNOPSIS section of a man page as plain text (one output line per input line)."""
    lines = source.replace("\\\n", "").splitlines()
    out, inside = [], False
    for line in lines:
        if line.startswith(".SH"):
            if inside:
                break
            inside = "SYNOPSIS" in line
            continue
        if not inside or line.startswith('.\\"'):
            continue
        if "Feature Test Macro" in line:
            break
        if line.startswith("."):
            macro, _, rest = line.partition(" ")
            if macro in _FONT_MACROS:
                args = troff_args(rest)
                joiner = " " if macro in (".B", ".I", ".SM", ".SB") else ""
                out.append(unescape(joiner.join(args)))
            else:
                out.append("")
            continue
        out.append(unescape(line))
    return "\n".join(out)


# --------------------------------------------------------------------------- C prototype parsing
def split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside parentheses/brackets."""
    parts, depth, cur = [], 0, ""
    for c in text:
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def parse_param(decl: str) -> tuple[str, str] | None:
    """``(name, type)`` of one parameter declaration, or None for ``...``/``void``."""
    decl = re.sub(r"\s+", " ", QUALIFIERS.sub("", decl)).strip()
    if decl in ("", "...", "void"):
        return None
    fn = re.match(r"^(.*)\(\s*\*\s*(\w+)\s*\)\s*(\(.*\))$", decl)      # int (*fn)(void *)
    if fn:
        return fn.group(2), f"{fn.group(1).strip()} (*){fn.group(3)}"
    stars = 0
    while decl.endswith("]"):                                          # buf[.count], argv[], fd[2]
        decl = decl[:decl.rindex("[")].rstrip()
        stars += 1
    m = re.match(r"^(.*?)(\w+)$", decl)
    if not m or not m.group(1).strip():
        return None
    ctype = m.group(1).strip() + " *" * stars
    ctype = re.sub(r"\s*\*", " *", ctype).replace("* *", "**").replace("* const", "*const")
    return m.group(2), re.sub(r"\s+", " ", ctype).strip()


def parse_params(text: str) -> list[tuple[str, str]]:
    return [p for p in (parse_param(d) for d in split_top(text)) if p]


_PROTO = re.compile(r"^([A-Za-z_][\w \*]*?)\**\s*\b(\w+)\s*\((.*)\)$", re.S)


def prototypes(text: str) -> list[tuple[str, list[tuple[str, str]], bool]]:
    """``(name, params, raw)`` for each prototype in C text; raw means ``syscall(SYS_x, ...)``."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"\[\[\w+\]\]", " ", text)          # [[noreturn]], [[deprecated]]
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    found = []
    for stmt in text.split(";"):
        stmt = re.sub(r"\s+", " ", stmt).strip().lstrip("{} ")
        m = _PROTO.match(stmt)
        if not m or m.group(1).strip() in ("", "return"):
            continue
        name, body = m.group(2), m.group(3)
        raw = name == "syscall" and body.lstrip().startswith("SYS_")
        if raw:
            first, _, body = body.partition(",")
            name = first.strip()[4:]
        elif name == "syscall":
            continue
        found.append((name, parse_params(body), raw))
    return found


def man_prototypes() -> dict[str, tuple[list[tuple[str, str]], bool, str]]:
    """Best prototype per name over all man2 pages: ``name -> (params, raw, page)``."""
    best: dict[str, tuple[list[tuple[str, str]], bool, str]] = {}
    for page in sorted(MAN2.glob("*.2*")):
        opener = gzip.open if page.suffix == ".gz" else open
        with opener(page, "rt", errors="replace") as fh:
            text = synopsis_text(fh.read())
        for name, params, raw in prototypes(text):
            old = best.get(name)
            page_name = page.name.split(".")[0]
            rank = (raw, len(params), page_name == name)
            if old is None or rank > (old[1], len(old[0]), old[2] == name):
                best[name] = (params, raw, page_name)
    return best


# --------------------------------------------------------------------------- output
def entries(params: list[tuple[str, str]]) -> list[dict]:
    result = []
    for name, ctype in params:
        kind, width = classify(ctype, name)
        result.append({"name": name, "type": ctype, "kind": kind, "width": width})
    return result


def syscall_names() -> set[str]:
    names: set[str] = set()
    for path in (DATA / "syscalls").glob("*.json"):
        names |= set(json.loads(path.read_text())["syscalls"])
    return names


def described_by(syscall: str) -> list[str]:
    """Names whose prototype may describe ``syscall``, best first (``clock_gettime64`` ->
    ``clock_gettime``, ``setuid32`` -> ``setuid``)."""
    candidates = [syscall, MAN_NAMES.get(syscall, "")]
    for suffix in ("_time64", "64", "32"):
        if syscall.endswith(suffix):
            candidates.append(syscall[: -len(suffix)])
    return [c for c in candidates if c]


def build() -> dict:
    man = man_prototypes()
    signatures, sources = {}, {}
    for syscall in sorted(syscall_names()):
        described = next((n for n in described_by(syscall) if n in OVERRIDES_SRC or n in man), None)
        if described is None:
            continue
        via = "" if described == syscall else f" ({described})"
        if described in OVERRIDES_SRC:
            params, origin = parse_params(OVERRIDES_SRC[described]), "override"
        else:
            params, _, page = man[described]
            origin = f"man2/{page}.2"
        signatures[syscall] = entries(params)
        sources[syscall] = origin + via
    arch_specific = {}
    for syscall, per_arch in ARCH_OVERRIDES_SRC.items():
        for arch, decl in per_arch.items():
            arch_specific.setdefault(arch, {})[syscall] = entries(parse_params(decl))
    return {
        "generator": "tools/gen_signatures.py",
        "source": "man-pages SYNOPSIS (" + manpages_version() + ") + overrides in the generator",
        "signatures": signatures,
        "arch_signatures": dict(sorted(arch_specific.items())),
        "sources": sources,
        "notes": NOTES,
    }


def manpages_version() -> str:
    try:
        return "manpages-dev " + subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "manpages-dev"],
                                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "manpages-dev"


def main(argv: list[str]) -> int:
    """Write signatures.json; with ``--check``, only report (exit 1) if the committed one differs."""
    data = build()
    path = DATA / "signatures.json"
    if "--check" in argv:
        same = path.exists() and json.loads(path.read_text())["signatures"] == data["signatures"]
        if not same:
            print("signatures.json differs from what the man pages give", file=sys.stderr)
        return 0 if same else 1
    path.write_text(json.dumps(data, indent=1) + "\n")
    missing = sorted(syscall_names() - set(data["signatures"]))
    print(f"{len(data['signatures'])} signatures, "
          f"{sum(1 for s in data['sources'].values() if s.startswith('override'))} from overrides; "
          f"{len(missing)} syscalls without one: {' '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
