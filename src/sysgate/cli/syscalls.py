"""``sysgate syscalls``: syscall numbers per architecture and argument signatures."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("syscalls", help="look up syscall numbers and signatures",
                       description="With no NAME, list the syscall table of --arch (default: this "
                                   "machine's). With names or numbers, show each one's number on "
                                   "every architecture (or only --arch) and its signature.")
    p.add_argument("--arch", help="architecture (x86_64, aarch64, arm64, amd64, ...)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("names", nargs="*", metavar="NAME|NR", help="syscall names or numbers")
    p.set_defaults(func=run)


def _fmt_nr(nr: int) -> str:
    return f"0x{nr:x}" if nr >= 0x10000 else str(nr)


def run(args) -> int:
    import json

    from ..arch import syscalls

    if not args.names:
        return _list_table(syscalls, args.arch, args.json)
    arch = syscalls.arch_name(args.arch)
    shown = [arch] if args.arch else syscalls.arches()
    result = {}
    for item in args.names:
        nm = _name_of(syscalls, arch, item, strict=bool(args.arch))
        numbers = {a: syscalls.number(a, nm) for a in shown}
        sig = syscalls.signature(nm, arch if args.arch else None)
        result[nm] = (numbers, sig)
    if args.json:
        print(json.dumps({nm: {"numbers": numbers,
                               "signature": None if sig is None else
                               [{"name": p.name, "type": p.type, "kind": p.kind, "width": p.width}
                                for p in sig.params]}
                          for nm, (numbers, sig) in result.items()}, indent=2))
        return 0
    width = max(map(len, result))
    for nm, (numbers, sig) in result.items():
        nums = " ".join(f"{a}={_fmt_nr(n)}" if n is not None else f"{a}=-" for a, n in numbers.items())
        print(f"{nm:<{width}}  {nums}  {sig if sig else '(no signature known)'}")
        if sig and sig.note:
            print(f"{'':<{width}}  note: {sig.note}")
    return 0


def _name_of(syscalls, arch: str, item: str, strict: bool) -> str:
    """Syscall name for a command-line NAME or NR; numbers, and names when ``strict``,
    are looked up on ``arch``."""
    from ..errors import SysgateError

    text = item.strip()
    if not strict and text in syscalls.all_names():
        return text
    nr = syscalls.resolve(arch, text)
    nm = syscalls.name(arch, nr)
    if nm is None:
        raise SysgateError(f"no syscall has number {text} on {arch}")
    return nm


def _list_table(syscalls, arch: str | None, as_json: bool) -> int:
    import json

    key = syscalls.arch_name(arch)
    tbl = syscalls.table(key)
    if as_json:
        print(json.dumps({"arch": key, "syscalls": tbl}, indent=2))
        return 0
    width = max(len(_fmt_nr(n)) for n in tbl.values())
    for nm, nr in sorted(tbl.items(), key=lambda kv: (kv[1], kv[0])):
        sig = syscalls.signature(nm, key)
        print(f"{_fmt_nr(nr):>{width}}  {sig if sig else nm + '(?)'}")
    return 0
