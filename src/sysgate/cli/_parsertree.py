"""The command tree of an argparse parser, for what is generated from it (shell completion,
the man page): one walk of argparse's parsers, so both always list the same commands and options."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass
class Command:
    """One (sub)command: ``path`` is its words after ``sysgate`` (() for the top level)."""

    path: tuple[str, ...]
    parser: argparse.ArgumentParser
    help: str = ""
    options: list = field(default_factory=list)       # optional actions (with option strings)
    positionals: list = field(default_factory=list)   # positional actions, subcommands left out
    subcommands: list = field(default_factory=list)   # Commands, in the order they were added
    aliases: dict = field(default_factory=dict)       # subcommand name -> its other names

    def walk(self):
        """This command and every command under it, depth first."""
        yield self
        for sub in self.subcommands:
            yield from sub.walk()


def tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), help: str = "") -> Command:
    cmd = Command(path, parser, help)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            seen: dict = {}
            for name, sub in action.choices.items():
                if id(sub) in seen:                       # an alias of an earlier name
                    cmd.aliases.setdefault(seen[id(sub)], []).append(name)
                    continue
                seen[id(sub)] = name
                cmd.subcommands.append(tree(sub, (*path, name), helps.get(name, "")))
        elif action.option_strings:
            cmd.options.append(action)
        else:
            cmd.positionals.append(action)
    return cmd


def takes_value(action: argparse.Action) -> bool:
    """True when the option is followed by a value (``--policy FILE``, not ``--force``)."""
    return action.nargs != 0


def expand_help(action: argparse.Action, prog: str) -> str:
    """The option's help with ``%(default)s`` and the like filled in, as ``--help`` shows it."""
    return argparse.HelpFormatter(prog)._expand_help(action) if action.help else ""


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage line of ``parser`` without ``usage:`` and not wrapped (independent of $COLUMNS)."""
    fmt = argparse.HelpFormatter(parser.prog, width=1 << 20)
    fmt.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return " ".join(fmt.format_help().split())
