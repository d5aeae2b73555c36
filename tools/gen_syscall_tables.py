#!/usr/bin/env python3
"""Generate src/sysgate/data/syscalls/<arch>.json from the installed kernel headers.

Each architecture's ``asm/unistd.h`` is run through the C preprocessor
(``gcc -E -dM -undef -nostdinc``) with the predefined macros that arch's
compiler would set, so every ``#ifdef`` in the headers (asm-generic's
``__ARCH_WANT_*``, ``__BITS_PER_LONG``, x86's ``__ILP32__``, arm's EABI)
is evaluated the way the kernel build sees it.  The ``__NR_*`` (and arm's
private ``__ARM_NR_*``) macros are then evaluated to the number the kernel
puts in ``seccomp_data.nr`` (x32 numbers keep ``__X32_SYSCALL_BIT``).

Syscalls added to Linux after the installed headers were published are
appended from ``NEWER_SYSCALLS`` below (hand-maintained, one line per
syscall); they are listed under ``"newer"`` in the JSON so it is clear
they did not come from the headers.

Which headers are read for which arch is each record's ``headers`` in
src/sysgate/arch/table.py.  Needs: gcc, linux-libc-dev, and
linux-libc-dev-{arm64,armhf,riscv64,s390x,ppc64el}-cross (mips/loongarch
tables are made too if their cross headers are installed).
Run:  python3 tools/gen_syscall_tables.py   (--check: compare only)
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "sysgate" / "data" / "syscalls"
sys.path.insert(0, str(ROOT / "src"))
from sysgate.arch import table  # noqa: E402 - the source tree's table, not an installed one


#: arch -> how its headers are read: the architecture table's ``headers`` (one record per arch)
ARCHES: dict[str, table.Headers] = {a.name: a.headers for a in table.ARCHES if a.headers}

#: Macros that match the name patterns but are not syscalls.
NOT_SYSCALLS = {"syscalls", "arch_specific_syscall", "SYSCALL_BASE", "OABI_SYSCALL_BASE",
                "SYSCALL_MASK", "BASE", "Linux", "Linux_syscalls"}

#: Syscalls newer than the installed (6.1) headers: name -> (first kernel, number on the
#: common tables, arches that lack it). The number is the same on every arch listed here
#: (Linux has used one shared numbering for new syscalls since 4.x, offset on x32 by
#: __X32_SYSCALL_BIT).  Source: the kernel's syscall.tbl files and
#: include/uapi/asm-generic/unistd.h at each release.
#: 451-456 are also in the libseccomp 2.5.4 tables Debian ships (the tests compare).
NEWER_SYSCALLS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "cachestat": ("6.5", 451, ()),
    "fchmodat2": ("6.6", 452, ()),
    "map_shadow_stack": ("6.6", 453, ("x32",)),   # 64-bit only on x86
    "futex_wake": ("6.7", 454, ()),
    "futex_wait": ("6.7", 455, ()),
    "futex_requeue": ("6.7", 456, ()),
    "statmount": ("6.8", 457, ()),
    "listmount": ("6.8", 458, ()),
    "lsm_get_self_attr": ("6.8", 459, ()),
    "lsm_set_self_attr": ("6.8", 460, ()),
    "lsm_list_modules": ("6.8", 461, ()),
    "mseal": ("6.10", 462, ()),
    "setxattrat": ("6.13", 463, ()),
    "getxattrat": ("6.13", 464, ()),
    "listxattrat": ("6.13", 465, ()),
    "removexattrat": ("6.13", 466, ()),
    "open_tree_attr": ("6.15", 467, ()),
    "file_getattr": ("6.17", 468, ()),
    "file_setattr": ("6.17", 469, ()),
    "listns": ("6.18", 470, ()),
}
#: Arch-specific newer syscalls: arch -> {name: (first kernel, number)}.
NEWER_ARCH_SYSCALLS: dict[str, dict[str, tuple[str, int]]] = {
    "x86_64": {"uretprobe": ("6.11", 335), "uprobe": ("6.18", 336)},
    "x32": {"uretprobe": ("6.11", 335), "uprobe": ("6.18", 336)},
    "riscv64": {"riscv_hwprobe": ("6.4", 258)},
    "s390x": {"memfd_secret": ("6.5", 447)},
}

_DEFINE = re.compile(r"#define (\w+) (.*)")
_NAME = re.compile(r"__(?:ARM_)?NR_(\w+)$")
_TOKEN = re.compile(r"\b[A-Za-z_]\w*\b")


def preprocess(spec: table.Headers) -> dict[str, str]:
    """Object-like macros defined after including <asm/unistd.h> for ``spec``."""
    cmd = ["gcc", "-E", "-dM", "-undef", "-nostdinc", "-x", "c", "-"]
    cmd += [f"-I{d}" for d in spec.include] + [f"-D{d}" for d in spec.defines]
    out = subprocess.run(cmd, input="#include <asm/unistd.h>\n", capture_output=True,
                         text=True, check=True).stdout
    macros = {}
    for line in out.splitlines():
        m = _DEFINE.match(line)
        if m and "(" not in m.group(1):
            macros[m.group(1)] = m.group(2).strip()
    return macros


def evaluate(expr: str, macros: dict[str, str], depth: int = 0) -> int:
    """Value of an integer constant expression made of macros, literals, + - | << and ()."""
    if depth > 20:
        raise ValueError(f"macro recursion too deep in {expr!r}")

    def substitute(m: re.Match) -> str:
        name = m.group(0)
        if name not in macros:
            raise KeyError(name)
        return f"({evaluate(macros[name], macros, depth + 1)})"

    text = _TOKEN.sub(substitute, re.sub(r"(0x[0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", expr))
    tree = ast.parse(text, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Add, ast.Sub,
               ast.BitOr, ast.LShift, ast.USub, ast.Mult)
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise ValueError(f"unsupported expression {expr!r}")
    return int(eval(compile(tree, "<macro>", "eval")))  # noqa: S307 - checked above


def extract(macros: dict[str, str]) -> tuple[dict[str, int], dict[str, str]]:
    """(name -> number, alias -> canonical name) from the preprocessor's macros."""
    numbers: dict[str, int] = {}
    aliases: dict[str, str] = {}
    for macro, body in macros.items():
        m = _NAME.match(macro)
        if not m or m.group(1) in NOT_SYSCALLS:
            continue
        target = _NAME.match(body)
        if target and body in macros:
            aliases[m.group(1)] = target.group(1)
            continue
        numbers[m.group(1)] = evaluate(body, macros)
    for alias, target in list(aliases.items()):
        if target not in numbers:       # alias of a macro that is itself not a syscall
            del aliases[alias]
    return numbers, aliases


def header_version(macros: dict[str, str], spec: table.Headers) -> str:
    """Version of the kernel headers (LINUX_VERSION_CODE) read through ``spec``'s include path."""
    cmd = ["gcc", "-E", "-dM", "-undef", "-nostdinc", "-x", "c", "-"] + [f"-I{d}" for d in spec.include]
    out = subprocess.run(cmd, input="#include <linux/version.h>\n", capture_output=True,
                         text=True, check=True).stdout
    code = int(re.search(r"#define LINUX_VERSION_CODE (\d+)", out).group(1))
    return f"{code >> 16}.{(code >> 8) & 0xFF}.{code & 0xFF}"


def package_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                             capture_output=True, text=True, check=True).stdout
        return f"{package} {out}"
    except (OSError, subprocess.CalledProcessError):
        return package


def newer_syscalls(arch: str, known: dict[str, int]) -> dict[str, int]:
    """The hand-maintained syscalls newer than the headers, as numbers on ``arch``."""
    base = table.get(arch).nr_bit
    found = {name: base + nr for name, (_, nr, missing) in NEWER_SYSCALLS.items()
             if arch not in missing and name not in known}
    found.update({name: base + nr for name, (_, nr) in NEWER_ARCH_SYSCALLS.get(arch, {}).items()
                  if name not in known})
    return found


def build(arch: str, spec: table.Headers) -> dict:
    macros = preprocess(spec)
    numbers, aliases = extract(macros)
    newer = newer_syscalls(arch, numbers)
    clash = set(newer.values()) & set(numbers.values())
    if clash:
        raise SystemExit(f"{arch}: NEWER_SYSCALLS reuse numbers from the headers: {sorted(clash)}")
    numbers.update(newer)
    return {
        "arch": arch,
        "source": f"<asm/unistd.h> with -I{' -I'.join(spec.include)} -D{' -D'.join(spec.defines)}",
        "headers": package_version(spec.package),
        "linux_headers_version": header_version(macros, spec),
        "generator": "tools/gen_syscall_tables.py",
        "newer": sorted(newer),
        "aliases": dict(sorted(aliases.items())),
        "syscalls": dict(sorted(numbers.items(), key=lambda kv: (kv[1], kv[0]))),
    }


def main(argv: list[str]) -> int:
    """Write the tables; with ``--check``, only report (exit 1) if the committed ones differ."""
    check = "--check" in argv
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for arch, spec in ARCHES.items():
        if not all(Path(d).is_dir() for d in spec.include):
            if spec.optional:
                continue
            raise SystemExit(f"{arch}: headers missing, install {spec.package}")
        data = build(arch, spec)
        path, text = OUT / f"{arch}.json", json.dumps(data, indent=1) + "\n"
        if check:
            if not path.exists() or json.loads(path.read_text())["syscalls"] != data["syscalls"]:
                stale.append(arch)
            continue
        path.write_text(text)
        print(f"{arch}: {len(data['syscalls'])} syscalls ({len(data['newer'])} newer than the headers), "
              f"{len(data['aliases'])} aliases, headers {data['linux_headers_version']}")
    if stale:
        print(f"tables differ from the headers for: {' '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
