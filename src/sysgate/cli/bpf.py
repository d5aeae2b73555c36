"""``sysgate asm``, ``sysgate disasm`` and ``sysgate emulate``: the classic BPF toolkit."""
from __future__ import annotations

import sys

from ..errors import SysgateError
from ..files import read_bytes
from . import write_program

U64 = 0xFFFFFFFFFFFFFFFF


def register(sub) -> None:
    from ..bpf.formats import FORMATS

    p = sub.add_parser("asm", help="assemble classic BPF text into a seccomp filter",
                       description="Assemble BPF text (see `sysgate disasm` output for the syntax). "
                                   "The result is checked like seccomp(2) would unless --no-check.")
    p.add_argument("file", help="assembler source, or a program to convert: raw or C ('-' for stdin)")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    p.add_argument("--format", choices=FORMATS, default="raw",
                   help="raw: struct sock_filter bytes (default); c: a C array; text: canonical assembler")
    p.add_argument("--arch", help="architecture of sources without .arch, and of raw input and output "
                                  "(its byte order; default: this machine's)")
    p.add_argument("--no-check", action="store_true", help="do not apply the kernel's seccomp checks")
    p.set_defaults(func=run_asm)

    p = sub.add_parser("disasm", help="print a BPF filter (raw, C array or text) as assembler text")
    p.add_argument("file", help="program file ('-' for stdin)")
    p.add_argument("--arch", help="architecture for field names, syscall names and the byte order of raw "
                                  "input (default: a text source's .arch, else this machine's)")
    p.add_argument("--from", dest="input_format", choices=FORMATS, help="input format (default: detected)")
    p.add_argument("-n", "--numbers", action="store_true", help="comment each instruction with its index")
    p.add_argument("--no-annotate", action="store_true", help="no syscall/arch name comments")
    p.add_argument("--check", action="store_true", help="also apply the kernel's checks (exit 2 if they fail)")
    p.set_defaults(func=run_disasm)

    p = sub.add_parser("emulate", help="run a BPF filter on one syscall and print the action")
    p.add_argument("file", help="program file: raw, C array or text ('-' for stdin)")
    p.add_argument("--arch", help="architecture of the syscall and byte order of raw input "
                                  "(default: a text source's .arch, else this machine's)")
    p.add_argument("--syscall", required=True, metavar="NAME|NR", help="syscall name or number")
    p.add_argument("--args", default="", metavar="A0,A1,…",
                   help="up to 6 comma-separated arguments (write --args=-1,2 when the first is negative)")
    p.add_argument("--ip", default="0", metavar="N", help="instruction pointer (default 0)")
    p.add_argument("--from", dest="input_format", choices=FORMATS, help="input format (default: detected)")
    p.add_argument("--trace", action="store_true", help="print each executed instruction with A and X")
    p.set_defaults(func=run_emulate)


def _read_bytes(path: str) -> bytes:
    if path == "-":
        try:
            return sys.stdin.buffer.read()
        except OSError as exc:
            raise SysgateError(f"cannot read {path}: {exc.strerror}") from None
    return read_bytes(path)


def _arch(name: str | None) -> str | None:
    from ..kernel import abi

    try:
        return abi.canonical_arch(name) if name else None
    except ValueError as exc:
        raise SysgateError(str(exc)) from None


def _read(args, check: bool = False):
    """The program in ``args.file`` and the architecture it is for (its ``.arch``, --arch or native)."""
    from ..bpf.checker import BPFCheckError
    from ..bpf.formats import read

    name = _name(args.file)
    try:
        return read(_read_bytes(args.file), name, _arch(args.arch), getattr(args, "input_format", None), check)
    except BPFCheckError as exc:
        raise SysgateError(f"{name}: {exc}") from None


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def run_asm(args) -> int:
    from ..bpf.formats import dump

    program, arch = _read(args, check=not args.no_check)
    origin = f"written by sysgate asm from {_name(args.file)} for {arch}"
    write_program(dump(program, args.format, arch, origin=origin), args.output, args.format)
    return 0


def run_disasm(args) -> int:
    from ..bpf.disasm import disassemble

    program, arch = _read(args, check=args.check)
    sys.stdout.write(disassemble(program, arch, annotate=not args.no_annotate, numbers=args.numbers))
    return 0


def run_emulate(args) -> int:
    from ..bpf.emulator import Emulator, format_step
    from ..bpf.syntax import format_action
    from ..kernel import abi

    program, source_arch = _read(args, check=True)
    arch = _arch(args.arch) or source_arch
    data = abi.SeccompData(_syscall_number(arch, args.syscall), abi.AUDIT_ARCH[arch],
                           _integer(args.ip, "--ip", U64, signed=False), _arguments(args.args))
    emulator = Emulator(program, arch)
    if args.trace:
        trace = emulator.trace(data)
        for step in trace.steps:
            print(format_step(step, arch))
        value, count = trace.ret, trace.count
    else:
        value, count = emulator.run(data)
    print(f"{format_action(value) or 'UNKNOWN'} (0x{value:08x}) after {count} instructions")
    return 0


def _syscall_number(arch: str, text: str) -> int:
    try:
        from ..arch import syscalls
    except ImportError:
        return _integer(text, "--syscall", 0x7FFFFFFF)
    return syscalls.resolve(arch, text)


def _integer(text: str, what: str, high: int, *, signed: bool = True) -> int:
    """``text`` as a number in 0..high (``signed``: negatives too, as two's complement)."""
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise SysgateError(f"{what}: {text.strip()!r} is not a number") from None
    if value < 0 and not signed:
        raise SysgateError(f"{what}: {value} is negative: want 0..{high:#x}")
    if not -(high + 1) // 2 <= value <= high:
        raise SysgateError(f"{what}: {value} is out of range")
    return value & high


def _arguments(text: str) -> tuple[int, ...]:
    parts = [p for p in text.split(",")] if text.strip() else []
    if len(parts) > 6:
        raise SysgateError(f"--args: a syscall has at most 6 arguments, got {len(parts)}")
    return tuple(_integer(p, f"--args[{i}]", U64) for i, p in enumerate(parts)) + (0,) * (6 - len(parts))

