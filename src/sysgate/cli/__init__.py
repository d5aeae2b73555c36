"""The ``sysgate`` command line. Each module in this package adds one or more
subcommands through a ``register(subparsers)`` function; discovery is automatic."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..errors import SysgateError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sysgate", description="Seccomp policies, BPF and supervision.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register:
            register(sub)
    return parser


class _ClosedStream:
    """Stands in for a standard stream whose fd was closed when sysgate started
    (``sysgate disasm - <&-``, ``sysgate asm ... >&-``): using it is a user-facing error."""

    def __init__(self, name: str):
        self.name = name

    def _closed(self, *_args):
        raise SysgateError(f"standard {self.name} is closed")

    read = write = _closed
    buffer = property(lambda self: self)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def main(argv: list[str] | None = None) -> int:
    if sys.stdin is None:
        sys.stdin = _ClosedStream("input")
    if sys.stdout is None:
        sys.stdout = _ClosedStream("output")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SysgateError as exc:
        print(f"sysgate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
