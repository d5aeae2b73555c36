#!/usr/bin/env python3
"""Generate src/sysgate/data/constants.json: the symbolic constants of the policy language.

The macro names come from the C preprocessor (``gcc -E -dM``) run over the
libc and kernel uapi headers listed in ``HEADERS``, filtered by the name
prefixes in ``PREFIXES``.  Their values are not parsed from the text: a
generated C program includes the same headers and prints every macro, so
expressions such as ``_IOR('T', 0x30, int)`` are evaluated by the compiler.
Macros that are not integer constants (strings, function-like helpers,
macros that need other headers) fail to compile; they are dropped and the
program is rebuilt until it compiles.

Values are those of the machine running the script (x86_64 here); most are
the same on every Linux architecture, a few (``O_DIRECTORY``…) differ on
arm/aarch64/ppc/s390.  Needs gcc and linux-libc-dev.
Run:  python3 tools/gen_constants.py
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "sysgate" / "data" / "constants.json"

HEADERS = (
    "errno.h", "fcntl.h", "sys/socket.h", "netinet/in.h", "netinet/tcp.h", "sched.h", "sys/mman.h",
    "sys/ioctl.h", "termios.h", "sys/prctl.h", "signal.h", "sys/wait.h", "linux/futex.h",
    "sys/personality.h", "sys/stat.h", "sys/resource.h", "linux/seccomp.h", "sys/epoll.h",
    "sys/eventfd.h", "sys/mount.h", "linux/netlink.h", "sys/timerfd.h", "sys/inotify.h",
    "linux/openat2.h", "sys/ptrace.h", "linux/keyctl.h", "time.h", "unistd.h", "sys/random.h",
    "linux/capability.h", "sys/signalfd.h", "linux/close_range.h", "sys/xattr.h", "linux/fs.h",
    "linux/limits.h", "sys/quota.h", "sys/reboot.h", "linux/reboot.h",
)

PREFIXES = (
    "E", "O_", "AT_", "F_", "FD_", "AF_", "PF_", "SOCK_", "SOL_", "SO_", "MSG_", "IPPROTO_", "TCP_",
    "CLONE_", "PROT_", "MAP_", "MADV_", "MREMAP_", "MFD_", "MS_", "MNT_", "MCL_", "TIOC", "FIO", "FION",
    "TC", "PR_", "SIG", "SA_", "W", "P_", "FUTEX_", "PER_", "ADDR_", "S_I", "RLIMIT_", "SECCOMP_",
    "EPOLL", "EFD_", "NETLINK_", "TFD_", "IN_", "RESOLVE_", "PTRACE_", "KEYCTL_", "CLOCK_", "TIMER_",
    "SEEK_", "R_OK", "W_OK", "X_OK", "F_OK", "GRND_", "CAP_", "SFD_", "CLOSE_RANGE_", "XATTR_",
    "RENAME_", "FS_IOC_", "SPLICE_F_", "POSIX_FADV_", "FALLOC_FL_", "LOCK_", "RB_", "LINUX_REBOOT_",
    "Q_", "SCHED_", "STATX_",
)

#: Names that match a prefix but are not useful constants (feature-test and libc internals).
EXCLUDE = re.compile(r"^(E[A-Z]*_H|EOF|EXIT_|W[A-Z]*_H|SIG_(DFL|IGN|ERR|HOLD)$|SIGRTMIN|SIGRTMAX|SIGSTKSZ|"
                     r"MINSIGSTKSZ|TC[A-Z]*_H|CLOCKS_PER_SEC|S_I[A-Z]*_H|WCHAR_|WINT_|SIG_ATOMIC_)")


def macro_names() -> list[str]:
    source = "".join(f"#include <{h}>\n" for h in HEADERS)
    out = subprocess.run(["gcc", "-E", "-dM", "-D_GNU_SOURCE", "-"], input=source, text=True,
                         capture_output=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        m = re.match(r"#define ([A-Za-z][A-Za-z0-9_]*)(\(?)", line)
        if m and not m.group(2) and m.group(1).startswith(PREFIXES) and not EXCLUDE.match(m.group(1)):
            names.add(m.group(1))
    return sorted(names)


def program(names: list[str]) -> str:
    lines = ["#define _GNU_SOURCE", *(f"#include <{h}>" for h in HEADERS), "#include <stdio.h>",
             "int main(void) {"]
    for name in names:
        lines.append(f'  printf("%s %lld\\n", "{name}", (long long)_Generic(({name}), char *: 0, '
                     f'const char *: 0, default: ({name})));')
    lines.append("  return 0;\n}")
    return "\n".join(lines) + "\n"


def evaluate(names: list[str]) -> dict[str, int]:
    """Compile and run the printing program, dropping names that fail to compile."""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp, "c.c"), Path(tmp, "c")
        for _ in range(50):
            text = program(names)
            src.write_text(text)
            result = subprocess.run(["gcc", "-w", "-o", str(exe), str(src)], capture_output=True, text=True)
            if result.returncode == 0:
                break
            src_lines = text.splitlines()
            bad = set()
            for m in re.finditer(r"c\.c:(\d+):\d+: error", result.stderr):
                found = re.search(r'"([A-Za-z0-9_]+)", \(long', src_lines[int(m.group(1)) - 1])
                if found:
                    bad.add(found.group(1))
            if not bad:
                sys.exit(result.stderr)
            names = [n for n in names if n not in bad]
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    values = {}
    for line in out.splitlines():
        name, value = line.split()
        values[name] = int(value)
    # errno-style macros that are strings or pointers came out as 0; keep only sensible ones
    return {n: v for n, v in values.items() if not (n.startswith("SIG_") and v == 0 and n != "SIG_BLOCK")}


def main() -> None:
    values = evaluate(macro_names())
    doc = {"generator": "tools/gen_constants.py", "arch": platform.machine(),
           "headers": list(HEADERS), "constants": dict(sorted(values.items()))}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{OUT}: {len(values)} constants")


if __name__ == "__main__":
    main()
