"""The sysgate policy language.

A policy is a text file, one statement per line; ``#`` starts a comment; a
statement continues over newlines inside ``( )`` / ``{ }`` or after a ``\\``::

    # settings (each at most once per file; an including file may override)
    default: errno(EPERM)          # action when no rule decides (if omitted: kill_process)
    arch: x86_64, i386             # architectures to filter (if omitted: the native one)
    bad_arch: kill_process         # action for any other architecture (the default)
    allow_x32: false               # x32 syscall numbers on x86_64 (implied by arch: x32)
    flags: log, spec_allow         # seccomp filter flags to install with
    sandbox: fs, net               # the secure base under the rules (sysgate.sandbox.base)
    listener_path: "/run/agent.sock"   # OCI listenerPath: where a runtime sends the notify fd
    listener_metadata: "opaque"    # OCI listenerMetadata, sent along (strings have JSON escapes)
    include "common.policy"        # relative to this file; cycles are an error

    # rules: SYSCALLS: ACTION | CONDITION [-> ACTION]
    read, write, close: allow
    @file-system: allow                          # a named group (sysgate policy groups)
    openat: flags & O_ACCMODE == O_RDONLY        # bare condition = allow when it holds
    write: fd in {1, 2} -> allow
    socket: domain == AF_UNIX || domain == AF_INET -> allow
    ioctl: !(request == TIOCSTI)
    mmap: (prot & PROT_EXEC) == 0
    kill: arg1 <= 15
    @mount: errno(EPERM)

Semantics: for a syscall, rules are tried in file order and the first whose
condition holds decides; when none holds, ``default`` decides. A rule whose
condition is false therefore *falls through* to later rules for the same
syscall and finally to the default. A rule naming a syscall that an earlier
unconditional rule already decides can never apply: that is reported as a
warning. Groups are exempt: ``ptrace: notify`` followed by ``@debug: errno(EPERM)``
is the usual way to make an exception to a group.

Conditions compare syscall arguments, named as in the syscall's signature
(``fd``, ``flags``) or by position (``arg0``…``arg5``), with ``== != < <= > >=``
or ``in {a, b, …}``; ``arg & MASK == VALUE`` is a masked comparison (``!=`` and
``in`` work too). Conditions combine with ``!``, ``&&``, ``||`` (tightest first)
and parentheses. Unlike C, ``&`` binds tighter than ``==``: ``flags & O_ACCMODE
== O_RDONLY`` means ``(flags & O_ACCMODE) == O_RDONLY``. Comparisons are
unsigned. Arguments declared ``int`` are compared on their low 32 bits (the
kernel ignores the upper half); ``u64(fd)`` / ``u32(arg1)`` choose the width
explicitly. Values are decimal, ``0x`` hex, ``0o`` or leading-``0`` octal,
``0b`` binary, negative numbers (two's complement at the argument's width),
symbolic constants (``O_WRONLY``, ``AF_INET``, ``TIOCSTI``, ``EPERM``…), and
``|`` / ``~`` of those: ``flags & (O_WRONLY | O_RDWR) != 0``.

Actions: ``allow``, ``errno(N|ENAME)``, ``kill`` (= ``kill_thread``),
``kill_thread``, ``kill_process``, ``trap``, ``trap(N)``, ``log``, ``notify``,
``notify(handler)``, ``trace(N)``.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache

from ..arch import syscalls
from ..errors import SourceError, SysgateError
from ..kernel import abi
from . import constants, groups
from .lexer import Token, iter_tokens
from .model import Action, And, Cmp, Not, Or, Policy, Rule

ACTION_WORDS = ("allow", "errno", "kill", "kill_thread", "kill_process", "trap", "log", "notify", "trace")
ACTION_HELP = "allow, errno(N), kill, kill_thread, kill_process, trap, trap(N), log, notify, notify(NAME), trace(N)"
SETTINGS = ("default", "arch", "bad_arch", "allow_x32", "flags", "sandbox", "listener_path", "listener_metadata")
SANDBOX_PARTS = ("fs", "net")
#: Deepest nesting of ``( )``, ``!`` and ``-``/``~`` in one expression (deeper input is an error,
#: not a RecursionError in the parser or in whatever walks the condition afterwards).
MAX_NESTING = 100
#: Deepest chain of ``include`` (each level is a parser on the stack).
MAX_INCLUDES = 32
RELATIONS = ("==", "!=", "<", "<=", ">", ">=")
WIDTH_CASTS = {"u32": 32, "u64": 64}


# --- condition syntax tree (before argument names are resolved per syscall) ---------
@dataclass
class ArgRef:
    tok: Token
    width: int | None = None          # forced by u32()/u64()
    mask: int | None = None
    mask_tok: Token | None = None


@dataclass
class Compare:
    arg: ArgRef
    op: Token                          # a relation or the word "in"
    values: list[tuple[int, Token]]


@dataclass
class BoolOp:
    kind: str                          # "and" | "or"
    items: list["Node"]


@dataclass
class Negate:
    item: "Node"


Node = ArgRef | Compare | BoolOp | Negate


@dataclass
class _State:
    """Everything collected while reading a policy and the files it includes."""

    settings: dict[str, tuple[object, str, int]] = field(default_factory=dict)  # name -> (value, file, line)
    rules: list[Rule] = field(default_factory=list)
    decided: dict[str, tuple[str, int]] = field(default_factory=dict)   # syscall -> unconditional rule
    named: list[tuple[str, int, int, str]] = field(default_factory=list)  # syscall, line, column, file
    warnings: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)                      # files being included
    done: set[str] = field(default_factory=set)


def parse_policy(text: str, filename: str = "<policy>", *, base_dir=None,
                 warn: Callable[[str], None] | None = None) -> Policy:
    """Parse policy ``text``; ``filename`` is used in messages, ``base_dir`` resolves
    ``include`` paths (default: the file's directory, else the current directory).
    Raises SourceError; warnings go to ``policy.warnings`` and to ``warn``."""
    state = _State()
    if not filename.startswith("<"):
        state.stack.append(os.path.realpath(filename))
    if base_dir is None:
        base_dir = os.path.dirname(filename) if not filename.startswith("<") else os.getcwd()
    _Parser(text, filename, str(base_dir), state).parse()
    policy = _build(state, filename)
    if warn:
        for message in policy.warnings:
            warn(message)
    return policy


def _build(state: _State, filename: str) -> Policy:
    def setting(name, default):
        return state.settings[name][0] if name in state.settings else default

    policy = Policy(default=setting("default", Action("kill_process")),
                    arches=setting("arch", None) or [abi.native_arch()],
                    rules=state.rules, bad_arch=setting("bad_arch", Action("kill_process")),
                    allow_x32=setting("allow_x32", False), flags=setting("flags", []),
                    sandbox=setting("sandbox", []),
                    listener_path=setting("listener_path", None), listener_metadata=setting("listener_metadata", None),
                    name=os.path.splitext(os.path.basename(filename))[0] if not filename.startswith("<") else "policy")
    known = [a for a in policy.arches if a in syscalls.arches()]
    for name, line, column, file in state.named:
        if known and all(syscalls.number(a, name) is None for a in known):
            state.warnings.append(f"{file}:{line}:{column}: syscall {name!r} does not exist on "
                                  f"{', '.join(policy.arches)}; its rules have no effect")
    policy.warnings = state.warnings
    return policy


class _Parser:
    def __init__(self, text: str, filename: str, base_dir: str, state: _State):
        self.file, self.base_dir, self.state = filename, base_dir, state
        self.stream = iter_tokens(text, filename)
        self.buffer: deque[Token] = deque()
        self.local_settings: dict[str, int] = {}
        self.nesting = 0

    # --- token helpers ---------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token:
        while len(self.buffer) <= ahead:
            if self.buffer and self.buffer[-1].kind == "EOF":
                return self.buffer[-1]
            self.buffer.append(next(self.stream))
        return self.buffer[ahead]

    def next(self) -> Token:
        tok = self.peek()
        if tok.kind != "EOF":
            self.buffer.popleft()
        return tok

    def at(self, text: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.text == text and tok.kind in ("OP", "NAME")

    def accept(self, text: str) -> Token | None:
        return self.next() if self.at(text) else None

    def error(self, message: str, tok: Token | None = None) -> SourceError:
        """A SourceError at ``tok``; an error of the tokenizer later in the file comes first (as
        if the file had been tokenized before parsing: an unclosed '(' explains the rest)."""
        tok = tok or self.peek()
        for _ in self.stream:
            pass
        return SourceError(message, self.file, tok.line, tok.column)

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.at(text):
            raise self.error(f"expected {what or repr(text)}, found {_describe(self.peek())}")
        return self.next()

    def end_of_statement(self) -> None:
        if self.peek().kind != "NEWLINE":
            raise self.error(f"expected the end of the line, found {_describe(self.peek())}")
        self.next()

    # --- statements --------------------------------------------------------------------
    def parse(self) -> None:
        while self.peek().kind != "EOF":
            tok = self.peek()
            if tok.kind == "NEWLINE":
                self.next()
            elif tok.kind == "NAME" and tok.text == "include" and self.peek(1).kind == "STRING":
                self.include()
            elif tok.kind == "NAME" and tok.text in SETTINGS and self.at(":", 1):
                self.setting()
            else:
                self.rule()

    def include(self) -> None:
        self.next()
        target = self.next()
        self.end_of_statement()
        path = os.path.join(self.base_dir, target.value)
        try:
            real = os.path.realpath(path)
        except ValueError as exc:                   # a NUL or a lone surrogate in the name
            raise self.error(f"cannot include {target.text}: {exc}", target) from None
        if real in self.state.stack:
            chain = " -> ".join(os.path.basename(p) for p in [*self.state.stack, real])
            raise self.error(f"include cycle: {chain}", target)
        if real in self.state.done:
            return
        if len(self.state.stack) >= MAX_INCLUDES:
            raise self.error(f"includes nested deeper than {MAX_INCLUDES} files", target)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, ValueError) as exc:       # ValueError: not UTF-8, a NUL or a lone surrogate in the name
            raise self.error(f"cannot include {target.text}: {getattr(exc, 'strerror', None) or exc}",
                             target) from None
        self.state.stack.append(real)
        try:
            _Parser(text, path, os.path.dirname(path), self.state).parse()
        finally:
            self.state.stack.pop()
        self.state.done.add(real)

    def setting(self) -> None:
        name_tok = self.next()
        name = name_tok.text
        self.next()  # ':'
        if name in self.local_settings:
            raise self.error(f"{name!r} is already set at line {self.local_settings[name]}", name_tok)
        self.local_settings[name] = name_tok.line
        if name in ("default", "bad_arch"):
            value = self.action()
        elif name == "arch":
            value = [self.arch_name(tok) for tok in self.name_list("an architecture name")]
        elif name in ("listener_path", "listener_metadata"):
            tok = self.next()
            if tok.kind != "STRING":
                raise self.error(f"{name} takes a double-quoted string, not {_describe(tok)}", tok)
            if not tok.value:
                raise self.error(f"{name} must not be empty", tok)
            value = tok.value
        elif name == "allow_x32":
            tok = self.next()
            if tok.text not in ("true", "false", "yes", "no"):
                raise self.error(f"allow_x32 takes true or false, not {_describe(tok)}", tok)
            value = tok.text in ("true", "yes")
        elif name == "sandbox":
            value = [self.sandbox_part(tok) for tok in self.name_list("fs or net")]
        else:
            value = [self.flag_name(tok) for tok in self.name_list("a filter flag")]
        self.end_of_statement()
        self.state.settings[name] = (value, self.file, name_tok.line)

    def name_list(self, what: str) -> list[Token]:
        names = []
        while True:
            tok = self.next()
            if tok.kind != "NAME":
                raise self.error(f"expected {what}, found {_describe(tok)}", tok)
            names.append(tok)
            if not self.accept(","):
                return names

    def arch_name(self, tok: Token) -> str:
        if tok.text == "native":
            return abi.native_arch()
        try:
            return abi.canonical_arch(tok.text)
        except ValueError:
            known = "; known: " + ", ".join(sorted(abi.AUDIT_ARCH))
            raise self.error(f"unknown architecture {tok.text!r}" + (_hint(tok.text, abi.AUDIT_ARCH) or known),
                             tok) from None

    def flag_name(self, tok: Token) -> str:
        key = tok.text.upper().removeprefix("SECCOMP_FILTER_FLAG_")
        if key not in abi.FILTER_FLAGS:
            known = ", ".join(k.lower() for k in abi.FILTER_FLAGS)
            raise self.error(f"unknown filter flag {tok.text!r}; known: {known}", tok)
        return key

    def sandbox_part(self, tok: Token) -> str:
        if tok.text not in SANDBOX_PARTS:
            raise self.error(f"unknown sandbox part {tok.text!r}; known: {', '.join(SANDBOX_PARTS)}", tok)
        return tok.text

    def rule(self) -> None:
        first = self.peek()
        targets, explicit = self.targets()
        self.expect(":", "':' after the syscall names")
        if self.at_action(targets):
            action, condition = self.action(), None
        else:
            condition = self.condition()
            action = self.action() if self.accept("->") else _action("allow")
        self.end_of_statement()
        shadowed = []
        for syscall in targets:
            rule = Rule(syscall, action, self.lower(condition, syscall) if condition else None,
                        (self.file, first.line))
            if syscall in self.state.decided:
                if syscall in explicit:         # group members decided earlier are the usual override idiom
                    shadowed.append(syscall)
            elif condition is None:
                self.state.decided[syscall] = (self.file, first.line)
            self.state.rules.append(rule)
        if shadowed:
            file, line = self.state.decided[shadowed[0]]
            where = f"line {line}" if file == self.file else f"{file}:{line}"
            names = ", ".join(shadowed[:3]) + (f" and {len(shadowed) - 3} more" if len(shadowed) > 3 else "")
            self.state.warnings.append(
                f"{self.file}:{first.line}:{first.column}: this rule never applies to {names}: "
                f"an unconditional rule at {where} already decides every call")

    def targets(self) -> tuple[list[str], set[str]]:
        """The syscalls a rule is for (groups expanded) and those named explicitly."""
        names: list[str] = []
        explicit: set[str] = set()
        while True:
            tok = self.next()
            if tok.kind == "GROUP":
                try:
                    names.extend(groups.expand_group(tok.text))
                except SysgateError as exc:
                    raise self.error(str(exc), tok) from None
            elif tok.kind == "NAME":
                if tok.text not in syscalls.all_names():
                    raise self.error(f"unknown syscall {tok.text!r}{_hint(tok.text, syscalls.all_names())}", tok)
                names.append(tok.text)
                explicit.add(tok.text)
                if tok.text in _partial_names():           # on some architecture only: checked when arch: is known
                    self.state.named.append((tok.text, tok.line, tok.column, self.file))
            else:
                raise self.error(f"expected a syscall name or @group, found {_describe(tok)}", tok)
            if not self.accept(","):
                return list(dict.fromkeys(names)), explicit

    # --- actions ---------------------------------------------------------------------
    def at_action(self, targets: list[str]) -> bool:
        """Whether the rule body starts with an action rather than a condition: an action
        word always does; another name does when it is alone on the rest of the line (or
        followed by '(') and is not an argument of the rule's syscalls."""
        tok = self.peek()
        if tok.kind != "NAME":
            return False
        if tok.text in ACTION_WORDS:
            return True
        if not (self.peek(1).kind in ("NEWLINE", "EOF") or (self.at("(", 1) and tok.text not in WIDTH_CASTS)):
            return False
        return not any(_has_arg(s, tok.text) for s in targets[:50])

    def action(self) -> Action:
        tok = self.next()
        if tok.kind != "NAME" or tok.text not in ACTION_WORDS:
            hint = _hint(tok.text, ACTION_WORDS)
            raise self.error(f"unknown action {_describe(tok)}" + (hint or f"; expected one of: {ACTION_HELP}"),
                             tok)
        word = tok.text
        if word in ("allow", "log", "kill_thread", "kill_process", "kill"):
            return _action("kill_thread" if word == "kill" else word)
        if word == "notify":
            if not self.accept("("):
                return _action("notify")
            handler = self.next()
            if handler.kind != "NAME":
                raise self.error(f"notify(...) takes a handler name, found {_describe(handler)}", handler)
            self.expect(")")
            return _action("notify", handler=handler.text)
        if not self.at("("):
            if word == "trap":
                return _action("trap")
            raise self.error(f"{word} needs a value, e.g. {word}(EPERM)" if word == "errno"
                             else f"{word} needs a value, e.g. {word}(1)")
        self.next()
        value_tok = self.peek()
        if word == "errno" and value_tok.kind == "NAME":
            self.next()
            value = constants.errno_by_name(value_tok.text)
            if value is None:
                raise self.error(f"unknown errno name {value_tok.text!r}"
                                 f"{_hint(value_tok.text, [n for n in constants.table() if n.startswith('E')])}",
                                 value_tok)
        else:
            value = self.value()
        limit = 4095 if word == "errno" else 0xFFFF
        if not 0 <= value <= limit:
            raise self.error(f"{word} value must be 0..{limit}, not {value}", value_tok)
        self.expect(")")
        return _action(word, value)

    # --- conditions --------------------------------------------------------------------
    def condition(self) -> Node:
        return self.need_condition(self.or_())

    def need_condition(self, node: Node) -> Node:
        """``node`` as a condition: a masked argument alone means "any of the mask's bits
        is set" (``flags & O_WRONLY``); a bare unmasked argument is an error."""
        if not isinstance(node, ArgRef):
            return node
        if node.mask is None:
            raise self.error(f"expected a comparison (==, !=, <, <=, >, >=, in) after argument "
                             f"{node.tok.text!r}, found {_describe(self.peek())}")
        op = Token("OP", "!=", node.mask_tok.line, node.mask_tok.column)
        return Compare(node, op, [(0, node.mask_tok)])

    def or_(self) -> Node:
        return self.chain("||", "or", self.and_)

    def and_(self) -> Node:
        return self.chain("&&", "and", self.unary)

    def chain(self, operator: str, kind: str, operand) -> Node:
        """``operand {operator operand}``; a single operand is returned as it is."""
        items = [operand()]
        while self.accept(operator):
            items[-1] = self.need_condition(items[-1])
            items.append(self.need_condition(operand()))
        return items[0] if len(items) == 1 else BoolOp(kind, items)

    def nested(self, parse):
        """``parse()`` one level deeper, refusing more than MAX_NESTING levels."""
        if self.nesting >= MAX_NESTING:
            raise self.error(f"expression nested deeper than {MAX_NESTING} levels")
        self.nesting += 1
        try:
            return parse()
        finally:
            self.nesting -= 1

    def unary(self) -> Node:
        if self.accept("!"):
            return Negate(self.need_condition(self.nested(self.unary)))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.primary()
        if not isinstance(left, ArgRef):
            return left
        while self.at("&"):
            amp = self.next()
            if left.mask is not None:
                raise self.error("an argument can be masked only once", amp)
            left.mask_tok, left.mask = self.peek(), self.value()
        op = self.peek()
        if op.kind == "OP" and op.text in RELATIONS:
            self.next()
            value_tok = self.peek()
            return Compare(left, op, [(self.value(), value_tok)])
        if op.kind == "NAME" and op.text == "in":
            self.next()
            return Compare(left, op, self.value_set())
        return left                            # a bare (possibly masked) argument, e.g. "(prot & X)"

    def primary(self) -> Node:
        tok = self.peek()
        if self.accept("("):
            node = self.nested(self.or_)
            self.expect(")")
            return node
        if tok.kind == "NAME" and tok.text in WIDTH_CASTS and self.at("(", 1):
            self.next(), self.next()
            arg = self.next()
            if arg.kind != "NAME":
                raise self.error(f"{tok.text}(...) takes an argument name, found {_describe(arg)}", arg)
            self.expect(")")
            return ArgRef(arg, width=WIDTH_CASTS[tok.text])
        if tok.kind == "NAME" and tok.text not in ("in",):
            self.next()
            return ArgRef(tok)
        raise self.error(f"expected an argument name, '!' or '(', found {_describe(tok)}")

    def value_set(self) -> list[tuple[int, Token]]:
        self.expect("{", "'{' after 'in'")
        items = []
        while not self.at("}"):
            tok = self.peek()
            items.append((self.value(), tok))
            if not self.accept(","):
                break
        close = self.expect("}", "',' or '}'")
        if not items:
            raise self.error("empty set: 'in {}' can never hold", close)
        return items

    # --- values ------------------------------------------------------------------------
    def value(self) -> int:
        result = self.value_term()
        while self.accept("|"):
            result |= self.value_term()
        return result

    def value_term(self) -> int:
        tok = self.next()
        if tok.text == "-" and tok.kind == "OP":
            return -self.nested(self.value_term)
        if tok.text == "~" and tok.kind == "OP":
            return ~self.nested(self.value_term)
        if tok.text == "(" and tok.kind == "OP":
            result = self.nested(self.value)
            self.expect(")")
            return result
        if tok.kind == "NUMBER":
            return tok.value
        if tok.kind == "NAME":
            value = constants.lookup(tok.text)
            if value is None:
                raise self.error(f"unknown constant {tok.text!r}{_hint(tok.text, constants.table())}", tok)
            return value
        raise self.error(f"expected a number or a constant, found {_describe(tok)}", tok)

    # --- resolving a condition for one syscall --------------------------------------------
    def lower(self, node: Node, syscall: str):
        if isinstance(node, BoolOp):
            items = tuple(self.lower(i, syscall) for i in node.items)
            return And(items) if node.kind == "and" else Or(items)
        if isinstance(node, Negate):
            return Not(self.lower(node.item, syscall))
        assert isinstance(node, Compare)
        arg = node.arg
        try:
            index = syscalls.arg_index(syscall, arg.tok.text)
        except SysgateError as exc:
            raise self.error(str(exc), arg.tok) from None
        width = arg.width or syscalls.arg_width(syscall, index)
        values = [self.fit(v, width, tok, syscall, arg) for v, tok in node.values]
        op = node.op.text
        if arg.mask is None:
            if op == "in":
                cmps = tuple(Cmp(index, "==", v, width=width) for v in values)
                return cmps[0] if len(cmps) == 1 else Or(cmps)
            return Cmp(index, op, values[0], width=width)
        mask = self.fit(arg.mask, width, arg.mask_tok, syscall, arg)
        if op not in ("==", "!=", "in"):
            raise self.error(f"a masked argument can only be compared with ==, != or in, not {op!r}", node.op)
        for v, (_, tok) in zip(values, node.values):
            if v & ~mask:
                self.state.warnings.append(
                    f"{self.file}:{tok.line}:{tok.column}: ({arg.tok.text} & {mask:#x}) can never equal {v:#x}: "
                    f"the value has bits outside the mask")
        cmps = tuple(Cmp(index, "&==", v, mask=mask, width=width) for v in values)
        if op == "!=":
            return Not(cmps[0])
        return cmps[0] if len(cmps) == 1 else Or(cmps)

    def fit(self, value: int, width: int, tok: Token, syscall: str, arg: ArgRef) -> int:
        """``value`` as an unsigned ``width``-bit number (negative = two's complement)."""
        if not -(1 << (width - 1)) <= value < (1 << width):
            raise self.error(f"{value:#x} does not fit the {width}-bit argument {arg.tok.text!r} of {syscall}", tok)
        return value & ((1 << width) - 1)


#: One Action object per distinct action: a policy of a million rules has a handful of actions.
_action = lru_cache(maxsize=1024)(Action)


@cache
def _partial_names() -> frozenset[str]:
    """Syscalls missing on some architecture: only a rule naming one of these can name a
    syscall that does not exist on the policy's architectures."""
    arches = syscalls.arches()
    return frozenset(n for n in syscalls.all_names() if any(syscalls.number(a, n) is None for a in arches))


def _has_arg(syscall: str, name: str) -> bool:
    try:
        syscalls.arg_index(syscall, name)
    except SysgateError:
        return False
    return True


def _describe(tok: Token) -> str:
    if tok.kind in ("NEWLINE", "EOF"):
        return "the end of the line"
    return repr(tok.text)


def _hint(word: str, candidates) -> str:
    import difflib

    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.7)
    return f"; did you mean {match[0]!r}?" if match else ""
