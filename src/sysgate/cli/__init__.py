"""The ``sysgate`` command line. Each module in this package adds one or more
subcommands through a ``register(subparsers)`` function; discovery is automatic."""
from __future__ import annotations

import os
import sys

from ..errors import SysgateError


def _command_modules() -> list[str]:
    """This package's module names, sorted. (A directory listing: pkgutil.iter_modules
    imports inspect, which costs `sysgate --help` about a quarter of its start-up.)"""
    return sorted(name[:-3] for name in os.listdir(os.path.dirname(__file__))
                  if name.endswith(".py") and name != "__init__.py")


def _columns() -> int:
    """shutil.get_terminal_size().columns (argparse's help width), without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return columns


def _parser_class():
    """argparse's parser with the help width found without importing shutil: argparse imports it
    in every formatter it makes, also when ``add_argument`` only checks an argument (shutil costs
    `sysgate run` about a tenth of its start-up). Subparsers are of the same class. (Made on first
    use: argparse is imported only when a command line needs it, see :func:`main`.)"""
    import argparse

    class Parser(argparse.ArgumentParser):
        def _get_formatter(self):
            return self.formatter_class(prog=self.prog, width=_columns() - 2)

    return Parser


def build_parser(argv: list[str] | None = None):
    """The ``sysgate`` argparse.ArgumentParser. Given the command line ``argv``, only what parsing it needs is built
    (start-up time: each subcommand module imports its own helpers): nothing for ``--version``, and
    for ``sysgate NAME ...`` only the module ``NAME`` when it registers that subcommand. Anything
    else (``--help``, no command, an unknown one, a subcommand of another module) builds them all."""
    return _build_parser(_parser_class(), argv)


def _build_parser(parser_class, argv: list[str] | None = None):
    from .. import __version__

    parser = parser_class(prog="sysgate", description="Seccomp policies, BPF and supervision.")
    parser.add_argument("--version", action="version", version=f"sysgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    first = argv[0] if argv else None
    if first == "--version":
        return parser
    if first and first.isidentifier() and first in _command_modules():
        _register(sub, first)
        if first in sub.choices:
            return parser
        return _build_parser(parser_class)
    for name in _command_modules():
        _register(sub, name)
    return parser


def _command_module(name: str):
    """``sysgate.cli.NAME``, imported. (``__import__``, not importlib.import_module: importing
    importlib costs every command its import of warnings.)"""
    __import__(f"{__name__}.{name}")
    return sys.modules[f"{__name__}.{name}"]


def _register(sub, module_name: str) -> None:
    register = getattr(_command_module(module_name), "register", None)
    if register:
        register(sub)


def command_args(args, usage: str) -> list[str]:
    """The command of a ``nargs=REMAINDER`` argument, without a leading ``--``."""
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise SysgateError(f"no command given: {usage}")
    return argv


#: the most worker processes ``--processes`` starts
MAX_PROCESSES = 64


def processes_option(value: str) -> int:
    """The number of ``--processes``: 1 to :data:`MAX_PROCESSES`, else a one-line SysgateError."""
    number = int(value) if value.isascii() and value.isdigit() else 0
    if not 1 <= number <= MAX_PROCESSES:
        raise SysgateError(f"--processes wants a number of worker processes from 1 to {MAX_PROCESSES}, not {value!r}")
    return number


def write_program(data: bytes, output: str | None, fmt: str) -> None:
    """Write a dumped program to the file ``output``, or to stdout (never raw BPF to a terminal)."""
    if output:
        from ..files import write_file

        write_file(output, data)
        return
    if fmt == "raw" and sys.stdout.isatty():
        raise SysgateError("refusing to write binary BPF to a terminal; use -o FILE or --format c/text")
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


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


#: Exit status of a usage error, for commands whose other codes belong to the command they run
#: (like env(1) and timeout(1): 125 is sysgate's own failure, 126/127 the command's).
USAGE_ERROR_EXIT = {"run": 125}


def main(argv: list[str] | None = None) -> int:
    if sys.stdin is None:
        sys.stdin = _ClosedStream("input")
    if sys.stdout is None:
        sys.stdout = _ClosedStream("output")
    words = sys.argv[1:] if argv is None else argv
    try:
        if words[:1] == ["run"]:    # launched from the filter cache without argparse (see cli/run.py);
            code = _command_module("run").run_from_cache(words[1:])
            if code is not None:
                return code
    except SysgateError as exc:
        print(f"sysgate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    parser = build_parser(words)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:       # argparse's usage errors exit 2; run keeps 125 for its own
        command = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
        if exc.code == 2 and command in USAGE_ERROR_EXIT:
            raise SystemExit(USAGE_ERROR_EXIT[command]) from None
        raise
    try:
        return int(args.func(args) or 0)
    except SysgateError as exc:
        print(f"sysgate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


_exit_frozen = False


def exit_frozen() -> None:
    """Called by a command whose outputs are all written and closed when it returns (no file
    left for a collection at exit to flush): :func:`command` then freezes the collector."""
    global _exit_frozen
    _exit_frozen = True


def command() -> int:
    """The ``sysgate`` program (console script, ``python -m sysgate``): :func:`main`, then, after
    a command that asked for it (:func:`exit_frozen`), ``gc.freeze()``: the interpreter's last
    collection at exit would walk every object the command made (a compile's DAG and tables:
    ~3 ms, a tenth of ``sysgate compile``); frozen, they are left to the exit. Called
    in-process, main() leaves the collector alone."""
    code = main()
    if _exit_frozen:
        import gc

        gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(command())
