"""The architecture table: one record per architecture, the one place for its facts.

Everything else that maps an architecture to something (``kernel.abi.AUDIT_ARCH``, the
OCI/libseccomp and systemd names, ELF machines, struct sizes, the syscall table generator)
derives it from :data:`ARCHES`. Adding an architecture is adding one :class:`Arch` here plus
its generated ``data/syscalls/<name>.json`` (``tools/gen_syscall_tables.py`` reads
:attr:`Arch.headers`). ``tests/test_arch_table.py`` checks the values against the installed
kernel, ELF and glibc headers.

This module imports nothing from sysgate but :mod:`sysgate.errors` and :mod:`sysgate.records`, so
every layer (the kernel ABI included) may read it; nothing else in :mod:`sysgate.arch` imports
:mod:`sysgate.kernel`, so that edge stays one-way.
"""
from __future__ import annotations

import functools

from ..errors import UnknownArchError
from ..records import Record

#: AUDIT_ARCH flag bits (include/uapi/linux/audit.h); the low 16 bits are the ELF e_machine.
AUDIT_ARCH_64BIT = 0x80000000
AUDIT_ARCH_LE = 0x40000000
AUDIT_ARCH_CONVENTION_MIPS64_N32 = 0x20000000
#: __X32_SYSCALL_BIT: x32 syscall numbers carry it under AUDIT_ARCH_X86_64.
X32_SYSCALL_BIT = 0x40000000


class Headers(Record):
    """How ``tools/gen_syscall_tables.py`` reads this arch's ``<asm/unistd.h>``."""

    include: tuple[str, ...]     # -I directories, searched in order
    defines: tuple[str, ...]     # the target compiler's predefined macros
    package: str                 # the Debian package that ships them
    optional: bool = False       # skipped silently when not installed


class Arch(Record):
    """One architecture (an ABI, really: x32 and i386 are their own records).

    ``supported`` arches have a syscall table and can be filtered; the others are known by
    their AUDIT_ARCH value (named when seen, refused when asked for) and foreign names.
    """

    name: str                        # sysgate's canonical name
    audit: int                       # AUDIT_ARCH_* value the kernel puts in seccomp_data.arch
    scmp: str                        # libseccomp's SCMP_ARCH_<scmp> (OCI/Docker profiles)
    supported: bool = True           # has data/syscalls/<name>.json
    nr_bit: int = 0                  # bit every syscall number carries (x32), told apart by it
    aliases: tuple[str, ...] = ()    # other spellings canonical_arch accepts (uname, Debian, Go)
    goarch: str | None = None        # Go's GOARCH (Docker's includes.arches), when Go has one
    systemd: str | None = None       # systemd's SystemCallArchitectures= name
    compat: tuple[str, ...] = ()     # other ABIs a kernel of this arch runs (CONFIG_COMPAT, x32)
    same_flags: tuple[str, ...] = () # those of ``compat`` whose O_*/AT_*/SOCK_* values equal ours
    stat_size: int | None = None     # sizeof(struct stat) that newfstatat fills (64-bit ABIs)
    regset_size: int | None = None   # NT_PRSTATUS register set (struct user_regs_struct) bytes
    headers: Headers | None = None   # where the syscall table generator reads the numbers

    @property
    def big_endian(self) -> bool:
        return not self.audit & AUDIT_ARCH_LE

    @property
    def byteorder(self) -> str:
        """``"big"`` or ``"little"`` (int.from_bytes spelling)."""
        return "big" if self.big_endian else "little"

    @property
    def arg_bits(self) -> int:
        """Width of a syscall argument register (seccomp_data.args): 64 on x32 too."""
        return 64 if self.audit & AUDIT_ARCH_64BIT else 32

    @property
    def long_bits(self) -> int:
        """Width of C ``long`` and pointers (the ELF class): 32 on x32."""
        return 32 if self.nr_bit or self.arg_bits == 32 else 64

    @property
    def elf_machine(self) -> int:
        """ELF ``e_machine`` (EM_*): the low 16 bits of the AUDIT_ARCH value."""
        return self.audit & 0xFFFF

    @property
    def elf_class(self) -> int:
        """ELF ``EI_CLASS``: 1 (ELFCLASS32) or 2 (ELFCLASS64)."""
        return 2 if self.long_bits == 64 else 1

    @property
    def table_file(self) -> str | None:
        """The syscall table's file name under ``data/syscalls``."""
        return f"{self.name}.json" if self.supported else None


_X86 = ("/usr/include/x86_64-linux-gnu", "/usr/include")

#: Every architecture, supported ones first, in listing order.
ARCHES: tuple[Arch, ...] = (
    Arch("x86_64", 0xC000003E, "X86_64", aliases=("amd64", "x86-64"), goarch="amd64", systemd="x86-64",
         compat=("i386", "x32"), same_flags=("i386", "x32"), stat_size=144, regset_size=216,
         headers=Headers(_X86, ("__x86_64__", "__LP64__"), "linux-libc-dev")),
    Arch("i386", 0x40000003, "X86", aliases=("x86", "i686", "i586"), goarch="386", systemd="x86", regset_size=68,
         headers=Headers(_X86, ("__i386__", "__ILP32__"), "linux-libc-dev")),
    Arch("x32", 0xC000003E, "X32", nr_bit=X32_SYSCALL_BIT, systemd="x32", regset_size=216,  # 64-bit mode
         headers=Headers(_X86, ("__x86_64__", "__ILP32__"), "linux-libc-dev")),
    Arch("aarch64", 0xC00000B7, "AARCH64", aliases=("arm64",), goarch="arm64", systemd="arm64",
         compat=("arm",), stat_size=128,
         headers=Headers(("/usr/aarch64-linux-gnu/include",), ("__aarch64__", "__LP64__"),
                         "linux-libc-dev-arm64-cross")),
    Arch("arm", 0x40000028, "ARM", aliases=("armv7l", "armhf"), goarch="arm", systemd="arm",
         headers=Headers(("/usr/arm-linux-gnueabihf/include",), ("__arm__", "__ARM_EABI__", "__ILP32__"),
                         "linux-libc-dev-armhf-cross")),
    Arch("riscv64", 0xC00000F3, "RISCV64", aliases=("riscv",), goarch="riscv64", systemd="riscv64",
         stat_size=128,
         headers=Headers(("/usr/riscv64-linux-gnu/include",),
                         ("__riscv", "__riscv_xlen=64", "__SIZEOF_POINTER__=8", "__LP64__"),
                         "linux-libc-dev-riscv64-cross")),
    Arch("s390x", 0x80000016, "S390X", goarch="s390x", systemd="s390x", stat_size=144,
         headers=Headers(("/usr/s390x-linux-gnu/include",), ("__s390__", "__s390x__", "__LP64__"),
                         "linux-libc-dev-s390x-cross")),
    Arch("ppc64le", 0xC0000015, "PPC64LE", aliases=("ppc64el",), goarch="ppc64le", systemd="ppc64-le",
         stat_size=144,
         headers=Headers(("/usr/powerpc64le-linux-gnu/include",),
                         ("__powerpc__", "__powerpc64__", "__LITTLE_ENDIAN__", "__LP64__"),
                         "linux-libc-dev-ppc64el-cross")),
    # known by their AUDIT_ARCH value and foreign names only
    Arch("s390", 0x00000016, "S390", supported=False, systemd="s390"),
    Arch("ppc64", 0x80000015, "PPC64", supported=False, goarch="ppc64", systemd="ppc64"),
    Arch("mips64", 0x80000008, "MIPS64", supported=False, goarch="mips64", systemd="mips64"),
    Arch("mipsel64", 0xC0000008, "MIPSEL64", supported=False, goarch="mips64le", systemd="mips64-le",
         headers=Headers(("/usr/mips64el-linux-gnuabi64/include",),
                         ("__mips__", "__mips64", "_MIPS_SIM=3", "_MIPS_SIM_ABI64=3", "__LP64__"),
                         "linux-libc-dev-mips64el-cross", optional=True)),
    Arch("mips64n32", 0xA0000008, "MIPS64N32", supported=False, systemd="mips64-n32"),
    Arch("mipsel64n32", 0xE0000008, "MIPSEL64N32", supported=False, systemd="mips64-le-n32"),
    Arch("mips", 0x00000008, "MIPS", supported=False, goarch="mips", systemd="mips"),
    Arch("mipsel", 0x40000008, "MIPSEL", supported=False, goarch="mipsle", systemd="mips-le"),
    Arch("loongarch64", 0xC0000102, "LOONGARCH64", supported=False, aliases=("loong64",), goarch="loong64",
         systemd="loongarch64",
         headers=Headers(("/usr/loongarch64-linux-gnu/include",),
                         ("__loongarch__", "__loongarch64", "__LP64__", "__SIZEOF_POINTER__=8"),
                         "linux-libc-dev-loong64-cross", optional=True)),
)

#: name -> record
BY_NAME: dict[str, Arch] = {a.name: a for a in ARCHES}
#: the supported records, in listing order
SUPPORTED: tuple[Arch, ...] = tuple(a for a in ARCHES if a.supported)


#: other accepted spellings (uname, Debian, Go, systemd) -> canonical name
ALIASES = {alias: a.name for a in ARCHES for alias in a.aliases}


def canonical_arch(name: str) -> str:
    """Normalise an architecture name (``amd64``, ``SCMP_ARCH_X86_64``…) to ours; UnknownArchError
    (naming the supported list) for an unknown one or one without a syscall table."""
    key = name.strip().lower()
    if key.startswith("scmp_arch_"):
        key = key[len("scmp_arch_"):]
    arch = BY_NAME.get(ALIASES.get(key, key))
    if arch is None or not arch.supported:
        supported = ", ".join(a.name for a in SUPPORTED)
        if arch is not None:
            raise UnknownArchError(f"architecture {name!r} is not supported (sysgate has no syscall table for it); "
                                   f"supported: {supported}")
        raise UnknownArchError(f"unknown architecture {name!r}; supported: {supported}")
    return arch.name


@functools.cache
def native_arch() -> str:
    """The architecture of the running kernel/interpreter (``uname -m``: what platform.machine()
    returns on Linux, without importing platform, which costs a start-up several milliseconds).
    Asked once: handlers compare a call's arch with it per call (a uname(2) each, before)."""
    import os

    return canonical_arch(os.uname().machine)


def get(name: str) -> Arch:
    """The record of canonical ``name`` (KeyError if there is none)."""
    return BY_NAME[name]


def by_audit(value: int, nr: int = 0) -> Arch | None:
    """The record for an AUDIT_ARCH value; a number with a record's ``nr_bit`` picks that
    record (x32), except -1 (the "skip this call" number a tracer sets)."""
    candidates = [a for a in ARCHES if a.audit == value]
    for arch in candidates:
        if arch.nr_bit and nr & arch.nr_bit and nr != -1:
            return arch
    return next((a for a in candidates if not a.nr_bit), None)


def sharing(audit: int) -> tuple[Arch, ...]:
    """The supported records reporting AUDIT_ARCH value ``audit``: the one whose numbers carry
    no bit first, then those told apart by their ``nr_bit`` (x86_64, then x32)."""
    return tuple(sorted((a for a in SUPPORTED if a.audit == audit), key=lambda a: a.nr_bit))


def with_x32(arches: list[str], allow_x32: bool) -> list[str]:
    """``arches`` plus x32 when ``allow_x32`` (the policy setting) and the arch whose AUDIT_ARCH
    x32 shares (x86_64) is among them: the ABIs a compiled filter then lets through."""
    x32 = BY_NAME["x32"]
    out = list(arches)
    if allow_x32 and sharing(x32.audit)[0].name in out and x32.name not in out:
        out.append(x32.name)
    return out


def by_elf(elf_class: int, machine: int, big_endian: bool) -> Arch | None:
    """The supported record of an ELF executable (EI_CLASS, e_machine, EI_DATA), or None."""
    return next((a for a in SUPPORTED if (a.elf_class, a.elf_machine, a.big_endian)
                 == (elf_class, machine, big_endian)), None)


def _check() -> None:
    """The invariants the derived maps rely on: unique names and aliases, compat ABIs known."""
    names = [a.name for a in ARCHES] + [alias for a in ARCHES for alias in a.aliases]
    assert len(names) == len(set(names)), "an arch name or alias is used twice"
    for arch in ARCHES:
        assert set(arch.same_flags) <= set(arch.compat) <= set(BY_NAME), arch.name
        assert not arch.nr_bit or any(o.audit == arch.audit and not o.nr_bit for o in ARCHES), arch.name


_check()
