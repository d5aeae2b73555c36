"""``sysgate completion bash|zsh``: a shell completion script generated from the parser.

Every subcommand and option comes from the argparse parser itself, so the script cannot
miss one; options with fixed choices complete them, other option values and arguments
complete file names. Install with ``sysgate completion bash > /etc/bash_completion.d/sysgate``
(or ``source <(sysgate completion bash)``), and for zsh
``sysgate completion zsh > "${fpath[1]}/_sysgate"`` (or ``source <(sysgate completion zsh)``).
"""
from __future__ import annotations

import argparse

from ._parsertree import Command, takes_value, tree

SHELLS = ("bash", "zsh")


def register(sub) -> None:
    p = sub.add_parser("completion", help="print a bash or zsh completion script",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(func=run)


def run(args) -> int:
    from . import build_parser

    print(script(args.shell, tree(build_parser())), end="")
    return 0


def _quote(text: str) -> str:
    """``text`` in single quotes, for bash and zsh alike."""
    return "'" + text.replace("'", "'\\''") + "'"


def _tables(root: Command) -> str:
    """Shell functions mapping a command path to its subcommands, the choices of its positional
    arguments, its options, and ``PATH|OPTION`` to the option's values (its choices, or ``@file``:
    a file name), shared by the bash and zsh scripts."""
    subs, opts, values, args = [], [], [], []
    for cmd in root.walk():
        key = _quote(" ".join(cmd.path))
        names = [n for c in cmd.subcommands for n in (c.path[-1], *cmd.aliases.get(c.path[-1], ()))]
        if names:
            subs.append(f"        {key}) echo {_quote(' '.join(names))} ;;")
        choices = [str(c) for action in cmd.positionals if action.choices for c in action.choices]
        if choices:
            args.append(f"        {key}) echo {_quote(' '.join(choices))} ;;")
        words = [s for action in cmd.options for s in action.option_strings]
        opts.append(f"        {key}) echo {_quote(' '.join(words))} ;;")
        for action in cmd.options:
            if not takes_value(action):
                continue
            choice = " ".join(map(str, action.choices)) if action.choices else "@file"
            for opt in action.option_strings:
                values.append(f"        {_quote(' '.join(cmd.path) + '|' + opt)}) echo {_quote(choice)} ;;")

    def fn(name, rows):
        return "\n".join([f"_sysgate_{name}() {{", '    case "$1" in', *rows, "    esac", "}"])

    return "\n".join([fn("subcommands", subs), fn("arguments", args), fn("options", opts),
                      fn("values", values)]) + "\n"


# Walks the words before the cursor: subcommand names extend the path, options taking a
# value skip it, and after "--" everything is the supervised command (files/commands).
_WALK = r'''
_sysgate_path() {
    # $1: index of the word under the cursor; then the words. Prints "PATH|STATE"
    local n=$1 cmdpath="" w i subs off=0
    shift
    local -a args
    args=("$@")
    [[ -n ${ZSH_VERSION-} ]] && off=1     # zsh arrays count from 1
    for ((i=1; i<n; i++)); do
        w=${args[i+off]-}
        if [[ $w == -- ]]; then      # the command follows: its name, then its own arguments
            ((i == n - 1)) && echo "$cmdpath|command" || echo "$cmdpath|after"
            return
        fi
        if [[ $w == -* ]]; then
            [[ $w != *=* && -n $(_sysgate_values "$cmdpath|$w") ]] && ((i++))
            continue
        fi
        subs=" $(_sysgate_subcommands "$cmdpath") "
        if [[ $subs == *" $w "* ]]; then
            cmdpath=${cmdpath:+$cmdpath }$w
        fi
    done
    echo "$cmdpath|"
}
'''

_BASH = r'''
_sysgate() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} state cmdpath values
    state=$(_sysgate_path "$COMP_CWORD" "${COMP_WORDS[@]}")
    cmdpath=${state%|*}
    COMPREPLY=()
    case ${state##*|} in
        command) COMPREPLY=($(compgen -c -- "$cur")); return ;;
        after) return ;;
    esac
    values=$(_sysgate_values "$cmdpath|$prev")
    if [[ -n $values ]]; then
        [[ $values != @file ]] && COMPREPLY=($(compgen -W "$values" -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_sysgate_options "$cmdpath")" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_sysgate_subcommands "$cmdpath") $(_sysgate_arguments "$cmdpath")" -- "$cur"))
    fi
}
complete -o bashdefault -o default -F _sysgate sysgate
'''

_ZSH = r'''
_sysgate() {
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]} state cmdpath values subs
    state=$(_sysgate_path "$((CURRENT-1))" "${(@)words}")
    cmdpath=${state%|*}
    case ${state##*|} in
        command) _command_names -e; return ;;
        after) _files; return ;;
    esac
    values=$(_sysgate_values "$cmdpath|$prev")
    if [[ -n $values ]]; then
        if [[ $values == @file ]]; then _files; else compadd -- ${=values}; fi
        return
    fi
    if [[ $cur == -* ]]; then
        compadd -- ${=$(_sysgate_options "$cmdpath")}
        return
    fi
    subs="$(_sysgate_subcommands "$cmdpath") $(_sysgate_arguments "$cmdpath")"
    if [[ -n ${subs// /} ]]; then compadd -- ${=subs}; else _files; fi
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _sysgate "$@"
else
    compdef _sysgate sysgate
fi
'''


def script(shell: str, root: Command) -> str:
    """The completion script for ``shell`` (bash or zsh) completing the commands of ``root``."""
    head = f"# {shell} completion for sysgate, generated by `sysgate completion {shell}`\n"
    if shell == "zsh":
        head = "#compdef sysgate\n" + head
    body = _BASH if shell == "bash" else _ZSH
    return head + _tables(root) + _WALK + body
