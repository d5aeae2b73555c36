"""``sysgate manpage``: the sysgate(1) manual page in roff, generated from the parser.

Every command, its usage, description and options come from the argparse parser, so the
page says what ``--help`` says. ``man/sysgate.1`` in the source tree is this output
(a test keeps it up to date); view it with ``man -l man/sysgate.1`` or
``sysgate manpage | man -l -``.
"""
from __future__ import annotations

import argparse
import re

from ._parsertree import Command, expand_help, tree, usage


def register(sub) -> None:
    p = sub.add_parser("manpage", help="print the sysgate(1) manual page (roff)",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    p.set_defaults(func=run)


def run(args) -> int:
    from . import build_parser
    from .. import __version__

    text = manpage(tree(build_parser()), __version__)
    if args.output:
        from ..files import write_file

        write_file(args.output, text)
    else:
        print(text, end="")
    return 0


def escape(text: str) -> str:
    """``text`` safe in a roff text line: backslashes and hyphens escaped, no control lines."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _paragraphs(text: str) -> list[str]:
    """``text`` (a description, as ``--help`` prints it) as roff: paragraphs refilled, indented
    blocks (examples, tables) kept as they are."""
    out = []
    for para in re.split(r"\n\s*\n", text.strip("\n")):
        lines = para.split("\n")
        if len(lines) > 1 and any(line.startswith((" ", "\t")) for line in lines[1:]):
            out += [".PP", ".nf", escape(para), ".fi"]
        else:
            out += [".PP", escape(" ".join(line.strip() for line in lines))]
    return out


def _option(action: argparse.Action, prog: str) -> list[str]:
    names = ", ".join(f"\\fB{escape(s)}\\fR" for s in action.option_strings)
    if action.nargs != 0:
        metavar = action.metavar or (("{" + ",".join(map(str, action.choices)) + "}") if action.choices
                                     else action.dest.upper())
        if isinstance(metavar, tuple):
            metavar = " ".join(metavar)
        names += f" \\fI{escape(str(metavar))}\\fR"
    return [".TP", names, escape(expand_help(action, prog))]


def _positional(action: argparse.Action, prog: str) -> list[str]:
    metavar = action.metavar or action.dest
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    return [".TP", f"\\fI{escape(str(metavar))}\\fR", escape(expand_help(action, prog))]


def _command(cmd: Command) -> list[str]:
    prog = cmd.parser.prog
    out = [f'.SS "{escape(" ".join(cmd.path))}"', ".PP", f"\\fB{escape(usage(cmd.parser))}\\fR"]
    if cmd.help:
        out += [".PP", escape(cmd.help[:1].upper() + cmd.help[1:] + ("" if cmd.help.endswith(".") else "."))]
    if cmd.parser.description:
        out += _paragraphs(cmd.parser.description)
    for action in cmd.positionals:
        out += _positional(action, prog)
    for action in cmd.options:
        if action.dest != "help":
            out += _option(action, prog)
    return out


def manpage(root: Command, version: str) -> str:
    """The roff text of sysgate(1) for the command tree ``root``."""
    out = [f'.TH SYSGATE 1 "" "sysgate {escape(version)}" "User Commands"',
           ".SH NAME", "sysgate \\- " + escape(root.parser.description or ""),
           ".SH SYNOPSIS", f"\\fB{escape(usage(root.parser))}\\fR",
           ".SH DESCRIPTION",
           ".PP", "Each command prints its own help with \\fB\\-\\-help\\fR; this page collects them all.",
           ".SH OPTIONS"]
    for action in root.options:
        out += _option(action, root.parser.prog)
    out += [".SH COMMANDS"]
    for cmd in list(root.walk())[1:]:
        out += _command(cmd)
    out += [".SH SEE ALSO", "\\fBseccomp\\fR(2), \\fBseccomp_unotify\\fR(2), \\fBsysgate policy docs\\fR "
            "(the policy language reference)"]
    return "\n".join(out) + "\n"
