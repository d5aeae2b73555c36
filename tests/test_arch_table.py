"""The architecture table against facts found independently on this machine (the kernel's
audit.h, glibc's elf.h, the x86 and cross ``asm/unistd*.h`` headers, the running Python's own
ELF header), and every map derived from it against the table's list of architectures."""
from __future__ import annotations

import ast
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from sysgate.arch import syscalls, table
from sysgate.kernel import abi
from support import import_tool

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "sysgate"
AUDIT_H = Path("/usr/include/linux/audit.h")
ELF_H = Path("/usr/include/elf.h")

#: Plain ``#define __NR_x <number>`` headers: arch -> (path, the expression's free symbols)
UNISTD = {
    "x86_64": ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", {}),
    "i386": ("/usr/include/x86_64-linux-gnu/asm/unistd_32.h", {}),
    "x32": ("/usr/include/x86_64-linux-gnu/asm/unistd_x32.h", {"__X32_SYSCALL_BIT": 0x40000000}),
    "arm": ("/usr/arm-linux-gnueabihf/include/asm/unistd-eabi.h", {"__NR_SYSCALL_BASE": 0}),
    "s390x": ("/usr/s390x-linux-gnu/include/asm/unistd_64.h", {}),
    "ppc64le": ("/usr/powerpc64le-linux-gnu/include/asm/unistd_64.h", {}),
}


def _defines(path: Path) -> dict[str, str]:
    """``#define NAME body`` of a header, continuation lines joined, comments dropped."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text().replace("\\\n", " "), flags=re.S)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^#define[ \t]+(\w+)[ \t]+(.+)$", text, re.M)}


def _value(expr: str, symbols: dict[str, str | int]) -> int:
    """An integer constant expression of literals, | + and symbols (looked up recursively)."""
    expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", expr)
    expr = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: f"({_value(str(symbols[m.group(0)]), symbols)})", expr)
    tree = ast.parse(expr, mode="eval")
    assert all(isinstance(n, (ast.Expression, ast.BinOp, ast.Constant, ast.BitOr, ast.Add)) for n in ast.walk(tree))
    return eval(compile(tree, expr, "eval"))  # noqa: S307 - checked above


@pytest.mark.skipif(not AUDIT_H.exists() or not ELF_H.exists(), reason="linux-libc-dev / libc6-dev headers")
def test_audit_values_and_elf_machines_match_the_headers():
    """Each AUDIT_ARCH_<NAME> of audit.h is the record's value, and its EM_* (from elf.h) the
    record's ELF machine."""
    audit, elf = _defines(AUDIT_H), _defines(ELF_H)
    symbols = {**elf, **audit}
    for arch in table.ARCHES:
        key = "X86_64" if arch.nr_bit else arch.name.upper()    # x32 reports x86_64's value
        assert _value(audit[f"AUDIT_ARCH_{key}"], symbols) == arch.audit, arch.name
        (machine,) = re.findall(r"\bEM_\w+", audit[f"AUDIT_ARCH_{key}"])
        assert int(elf[machine].split()[0]) == arch.elf_machine, arch.name
    assert _value(audit["__AUDIT_ARCH_64BIT"], symbols) == table.AUDIT_ARCH_64BIT
    assert _value(audit["__AUDIT_ARCH_LE"], symbols) == table.AUDIT_ARCH_LE
    assert _value(audit["__AUDIT_ARCH_CONVENTION_MIPS64_N32"], symbols) == table.AUDIT_ARCH_CONVENTION_MIPS64_N32


def test_the_running_interpreter_is_the_native_record():
    """This Python's own ELF header (class, machine, byte order) names the native arch."""
    with open(sys.executable, "rb") as f:
        header = f.read(20)
    big = header[5] == 2
    machine = int.from_bytes(header[18:20], "big" if big else "little")
    native = table.by_elf(header[4], machine, big)
    assert native is not None and native.name == abi.native_arch()
    assert native.byteorder == sys.byteorder
    assert native.long_bits == struct.calcsize("l") * 8


def _c_sizeof(tmp_path, header: str, type_: str, *flags: str) -> int | None:
    """sizeof(``type_``) as gcc compiles it here (with ``flags``: -m32…); None when it cannot."""
    src, out = tmp_path / "sizeof.c", tmp_path / f"sizeof{''.join(flags)}"
    src.write_text(f"#include <stdio.h>\n#include <{header}>\nint main(void){{printf(\"%zu\", sizeof({type_}));}}\n")
    if subprocess.run(["gcc", *flags, "-o", out, src], capture_output=True).returncode:
        return None
    return int(subprocess.run([out], capture_output=True, text=True, check=True).stdout)


def test_native_stat_size_matches_the_c_compiler(tmp_path):
    """sizeof(struct stat) as the C library compiles it on this machine."""
    assert _c_sizeof(tmp_path, "sys/stat.h", "struct stat") == table.get(abi.native_arch()).stat_size


def test_register_set_sizes_match_the_c_compiler(tmp_path):
    """struct user_regs_struct (what PTRACE_GETREGSET NT_PRSTATUS returns) natively and, where
    gcc -m32 works, for i386; attach's x86_64 register layout has the table's size."""
    from sysgate.attach import inject

    native = table.get(abi.native_arch())
    assert _c_sizeof(tmp_path, "sys/user.h", "struct user_regs_struct") == native.regset_size
    if native.name == "x86_64":
        assert inject.X86_64.layout.size == native.regset_size
        m32 = _c_sizeof(tmp_path, "sys/user.h", "struct user_regs_struct", "-m32")
        if m32 is None:
            pytest.skip("no gcc -m32")
        assert m32 == table.get("i386").regset_size


def test_word_widths_follow_the_generator_defines():
    """An arch's compiler defines __LP64__ exactly when its long is 64-bit."""
    for arch in table.ARCHES:
        if arch.headers:
            assert ("__LP64__" in arch.headers.defines) == (arch.long_bits == 64), arch.name


@pytest.mark.parametrize("name", sorted(UNISTD))
def test_syscall_tables_match_the_plain_unistd_headers(name):
    path, symbols = UNISTD[name]
    if not Path(path).exists():
        pytest.skip(f"{path} is not installed")
    numbers = json.loads((SRC / "data" / "syscalls" / table.get(name).table_file).read_text())["syscalls"]
    defines = {k[len("__NR_"):]: v for k, v in _defines(Path(path)).items() if k.startswith("__NR_")
               and k != "__NR_SYSCALL_BASE"}
    assert len(defines) > 300
    for syscall, expr in defines.items():
        assert numbers.get(syscall) == _value(expr, symbols), (name, syscall)


def test_every_derived_map_covers_exactly_the_table():
    from sysgate.attach import inject
    from sysgate.handlers import statlayout
    from sysgate.policy import oci, systemd

    names = {a.name for a in table.ARCHES}
    supported = [a.name for a in table.SUPPORTED]
    assert list(abi.AUDIT_ARCH) == list(abi.SUPPORTED_ARCHES) == syscalls.arches() == supported
    assert sorted(supported) == syscalls.table_files()
    assert set(abi.UNSUPPORTED_AUDIT_ARCH) == names - set(supported)
    assert set(oci.SCMP_ARCHES) == names
    assert set(systemd.SYSTEMD_ARCHES.values()) == set(supported)
    assert set(inject.ARCHES) <= set(supported)
    assert set(statlayout.NATIVE_STAT_SIZE) == {a.name for a in table.ARCHES if a.stat_size}
    for arch in table.ARCHES:
        assert abi.arch_from_audit(arch.audit, arch.nr_bit) == arch.name
        if arch.supported:
            assert all(abi.canonical_arch(alias) == arch.name for alias in (*arch.aliases, arch.name))


def test_generator_reads_the_table():
    gen_syscall_tables = import_tool("gen_syscall_tables")
    assert gen_syscall_tables.ARCHES == {a.name: a.headers for a in table.ARCHES if a.headers}


def _sysgate_imports(path: Path) -> set[str]:
    """The sysgate modules a file imports (relative imports resolved against its package)."""
    package = ["sysgate", *path.parent.relative_to(SRC).parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("sysgate")}


def test_table_imports_only_errors_and_arch_never_imports_kernel():
    """arch/table.py is read by every layer, kernel/abi included: it imports only sysgate.errors (and
    sysgate.records, its record class), and no module of sysgate.arch imports sysgate.kernel (so
    kernel -> arch.table is no cycle)."""
    assert _sysgate_imports(SRC / "arch" / "table.py") == {"sysgate.errors", "sysgate.records"}
    for path in (SRC / "arch").glob("*.py"):
        assert not [m for m in _sysgate_imports(path) if m.startswith("sysgate.kernel")], path.name
