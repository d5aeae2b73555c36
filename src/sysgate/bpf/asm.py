"""Assembler: text -> classic BPF program.

One instruction per line, in the syntax :mod:`sysgate.bpf.disasm` prints
(close to the kernel's bpf_asm)::

    .arch x86_64                  # optional; picks the byte order for .lo/.hi
            ld arch               ; comments start with '#␠' or ';'
            jne #AUDIT_ARCH_X86_64, kill
            ld nr
            jeq #SYS_openat, deny  # fall through when false
            ret #ALLOW
    deny:   ret #ERRNO(13)
    kill:   ret #KILL_PROCESS

Jump targets are labels or numeric offsets (``jeq #1, 0, 3``). ``jne``, ``jlt``
and ``jle`` are ``jeq``, ``jge`` and ``jgt`` with the targets swapped. A
conditional jump reaches at most 255 instructions ahead: a farther label is an
error (jump to an intermediate ``ja label`` instead); labels are never moved
or rewritten, so the output matches the source line for line. ``.insn code,
jt, jf, k`` spells any raw instruction. Every error is a :class:`SourceError`
with file, line and column; by default the result is also checked like the
kernel would (:func:`sysgate.bpf.checker.check`), errors pointing at the line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..arch import syscalls
from ..errors import SourceError, SysgateError
from ..kernel import abi
from .insn import (BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_IMM, BPF_IND, BPF_JA, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
                   BPF_LEN, BPF_MEM, BPF_MISC, BPF_MSH, BPF_NEG, BPF_RET, BPF_ST, BPF_STX, BPF_TAX, BPF_TXA,
                   BPF_W, BPF_X, Insn)
from .syntax import (ALIASES, ALU_OPS, ARCH_SYMBOLS, JUMP_OPS, LOAD_SIZES, NEGATED_JUMPS, U32, action_value,
                     field_offset)

_TOKEN = re.compile(r"(?P<ws>\s+)|(?P<num>-?\d[0-9A-Za-z_]*)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<punct>[#,\[\]().+*&:])")
_LEN = object()  # the ``#len`` immediate
MAX_COND_JUMP = 255


@dataclass(frozen=True)
class Token:
    kind: str   # "num", "name", "punct" or "end"
    text: str
    column: int
    value: int = 0


class _Line:
    """Tokens of one source line with a cursor; errors carry file/line/column."""

    def __init__(self, text: str, file: str, lineno: int):
        self.file, self.lineno = file, lineno
        self.tokens: list[Token] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise SourceError(f"unexpected character {text[pos]!r}", file, lineno, pos + 1)
            if m.lastgroup != "ws":
                self.tokens.append(self._token(m.lastgroup, m.group(), pos + 1))
            pos = m.end()
        self.tokens.append(Token("end", "end of line", len(text.rstrip()) + 1))
        self.pos = 0

    def _token(self, kind: str, text: str, column: int) -> Token:
        if kind != "num":
            return Token(kind, text, column)
        try:
            return Token(kind, text, column, int(text, 0))
        except ValueError:
            raise SourceError(f"bad number {text!r}", self.file, self.lineno, column) from None

    def error(self, message: str, token: Token | None = None) -> SourceError:
        return SourceError(message, self.file, self.lineno, (token or self.peek()).column)

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != "end":
            self.pos += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind != "end":
            self.pos += 1
            return True
        return False

    def expect(self, text: str, what: str | None = None) -> Token:
        tok = self.next()
        if tok.text != text or tok.kind == "end":
            raise self.error(f"expected {what or repr(text)}, found {_shown(tok)}", tok)
        return tok

    def number(self, what: str, low: int = 0, high: int = U32) -> int:
        tok = self.next()
        if tok.kind != "num":
            raise self.error(f"expected {what}, found {_shown(tok)}", tok)
        if not low <= tok.value <= high:
            raise self.error(f"{what} {tok.value} out of range {low}..{high}", tok)
        return tok.value

    def name(self, what: str) -> Token:
        tok = self.next()
        if tok.kind != "name":
            raise self.error(f"expected {what}, found {_shown(tok)}", tok)
        return tok

    def end(self) -> None:
        tok = self.peek()
        if tok.kind != "end":
            hint = " (a comment needs a space after '#', or use ';')" if tok.text == "#" else ""
            raise self.error(f"unexpected {_shown(tok)} after the instruction{hint}", tok)


def _shown(tok: Token) -> str:
    return tok.text if tok.kind == "end" else repr(tok.text)


def strip_comment(line: str) -> str:
    """The code part of a line: ``;`` starts a comment anywhere; ``#`` does at the start of
    the line or when followed by a space (otherwise it is an immediate, ``#5``)."""
    cut = line.find(";")
    code = line if cut < 0 else line[:cut]
    for m in re.finditer("#", code):
        at = m.start()
        if not code[:at].strip() or at + 1 == len(code) or code[at + 1].isspace():
            return code[:at]
    return code


@dataclass
class _Pending:
    """An instruction whose jump targets may still be labels."""

    code: int
    jt: "int | LabelJump"
    jf: "int | LabelJump"
    k: "int | LabelJump"
    line: int
    column: int


@dataclass(frozen=True)
class LabelJump:
    """A jump to a label, resolved once every label is known."""

    label: str
    token: Token


class Assembler:
    """Parses a whole source; :meth:`program` resolves labels."""

    def __init__(self, file: str = "<input>", arch: str | None = None):
        self.file = file
        self.arch = _arch(arch, file) if arch else abi.native_arch()
        self.arch_directive: int | None = None
        self.pending: list[_Pending] = []
        self.labels: dict[str, tuple[int, int, int]] = {}  # name -> (index, line, column)

    # ----------------------------------------------------------------- lines
    def feed(self, text: str) -> None:
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = _Line(strip_comment(raw), self.file, lineno)
            if line.peek().kind != "end":
                self._statement(line)

    def _statement(self, line: _Line) -> None:
        first = line.peek()
        if first.kind == "name" and line.tokens[1].text == ":":
            self._label(line)
            if line.peek().kind == "end":
                return
        if line.peek().text == ".":
            return self._directive(line)
        mnemonic = line.name("an instruction")
        op = ALIASES.get(mnemonic.text.lower(), mnemonic.text.lower())
        code, jt, jf, k = self._instruction(op, mnemonic, line)
        line.end()
        self.pending.append(_Pending(code, jt, jf, k, line.lineno, mnemonic.column))

    def _label(self, line: _Line) -> None:
        tok = line.next()
        line.next()
        if tok.text in self.labels:
            first = self.labels[tok.text][1]
            raise line.error(f"label '{tok.text}' already defined on line {first}", tok)
        self.labels[tok.text] = (len(self.pending), line.lineno, tok.column)

    def _directive(self, line: _Line) -> None:
        dot = line.next()
        word = line.name("a directive (.arch or .insn)")
        if word.text == "arch":
            if self.arch_directive is not None:
                raise line.error(f".arch given twice (first on line {self.arch_directive})", dot)
            if self.pending:
                raise line.error(".arch must come before the first instruction", dot)
            tok = line.name("an architecture name")
            self.arch = _arch(tok.text, self.file, line.lineno, tok.column)
            self.arch_directive = line.lineno
            line.end()
        elif word.text == "insn":
            code = line.number("opcode", 0, 0xFFFF)
            values = []
            for what, high in (("jt", 255), ("jf", 255)):
                line.expect(",")
                values.append(line.number(what, 0, high))
            line.expect(",")
            k = self._signed32(line, "k")
            line.end()
            self.pending.append(_Pending(code, values[0], values[1], k, line.lineno, dot.column))
        else:
            raise line.error(f"unknown directive '.{word.text}' (known: .arch, .insn)", word)

    # ----------------------------------------------------------------- operands
    def _instruction(self, op: str, mnemonic: Token, line: _Line) -> tuple:
        if op in LOAD_SIZES:
            return self._load(op, line)
        if op == "ldx":
            return self._load_x(line)
        if op == "ldxb":
            return self._msh(line)
        if op in ("st", "stx"):
            return (BPF_ST if op == "st" else BPF_STX), 0, 0, self._memory(line)
        if op in ALU_OPS:
            return self._alu(ALU_OPS[op], line)
        if op == "neg":
            return BPF_ALU | BPF_NEG, 0, 0, 0
        if op == "ja":
            return BPF_JMP | BPF_JA, 0, 0, self._target(line, U32)
        if op in JUMP_OPS or op in NEGATED_JUMPS:
            return self._jump(op, line)
        if op == "ret":
            return self._ret(line)
        if op in ("tax", "txa"):
            return BPF_MISC | (BPF_TAX if op == "tax" else BPF_TXA), 0, 0, 0
        raise line.error(f"unknown instruction '{mnemonic.text}'", mnemonic)

    def _load(self, op: str, line: _Line) -> tuple:
        size = LOAD_SIZES[op]
        tok = line.peek()
        if tok.text == "[":
            mode, k = self._bracket(line)
            return BPF_LD | size | mode, 0, 0, k
        if size != BPF_W:
            raise line.error(f"{op} takes [k] or [x + k], found {_shown(tok)}", tok)
        register = self._register_load(BPF_LD, line)
        if register:
            return register
        if tok.kind == "name":
            return BPF_LD | BPF_W | BPF_ABS, 0, 0, self._field(line)
        raise line.error(f"ld takes #k, [k], [x + k], M[k], len or a seccomp_data field, found {_shown(tok)}",
                         tok)

    def _bracket(self, line: _Line) -> tuple[int, int]:
        """``[k]`` -> (ABS, k); ``[x + k]`` / ``[x]`` -> (IND, k)."""
        line.expect("[")
        if line.peek().text in ("x", "X"):
            line.next()
            k = self._signed32(line, "offset") if line.accept("+") else 0
            line.expect("]")
            return BPF_IND, k
        k = line.number("offset")
        line.expect("]")
        return BPF_ABS, k

    def _field(self, line: _Line) -> int:
        tok = line.name("a seccomp_data field")
        index = half = None
        if line.accept("["):
            index = line.number("argument index", 0, 5)
            line.expect("]")
        if line.accept("."):
            half = line.name("lo or hi").text
        try:
            return field_offset(tok.text, index, half, self.arch)
        except ValueError as exc:
            raise line.error(str(exc), tok) from None

    def _register_load(self, cls: int, line: _Line) -> tuple | None:
        """``#k``, ``#len``, ``len`` or ``M[k]`` into A (``cls`` BPF_LD) or X (BPF_LDX); None otherwise."""
        tok = line.peek()
        if tok.text == "#":
            k = self._immediate(line, allow_len=True)
            return (cls | BPF_W | BPF_LEN, 0, 0, 0) if k is _LEN else (cls | BPF_W | BPF_IMM, 0, 0, k)
        if tok.text in ("M", "m"):
            return cls | BPF_W | BPF_MEM, 0, 0, self._memory(line)
        if tok.text == "len":
            line.next()
            return cls | BPF_W | BPF_LEN, 0, 0, 0
        return None

    def _load_x(self, line: _Line) -> tuple:
        register = self._register_load(BPF_LDX, line)
        if register:
            return register
        tok = line.peek()
        if tok.kind == "num":
            return self._msh(line)
        raise line.error(f"ldx takes #k, M[k], #len or 4*([k]&0xf) (to load seccomp_data use ld, then tax), "
                         f"found {_shown(tok)}", tok)

    def _msh(self, line: _Line) -> tuple:
        """``4*([k]&0xf)``: the IP-header-length load."""
        tok = line.peek()
        if line.number("4") != 4:
            raise line.error("expected 4*([k]&0xf)", tok)
        for text in ("*", "(", "["):
            line.expect(text)
        k = line.number("offset")
        line.expect("]")
        line.expect("&")
        tok = line.peek()
        if line.number("0xf") != 0xF:
            raise line.error("expected 4*([k]&0xf)", tok)
        line.expect(")")
        return BPF_LDX | BPF_B | BPF_MSH, 0, 0, k

    def _memory(self, line: _Line) -> int:
        tok = line.next()
        if tok.text not in ("M", "m"):
            raise line.error(f"expected a scratch memory slot M[k], found {_shown(tok)}", tok)
        line.expect("[")
        k = line.number("memory slot")
        line.expect("]")
        return k

    def _alu(self, op: int, line: _Line) -> tuple:
        if line.peek().text in ("x", "X"):
            line.next()
            return BPF_ALU | op | BPF_X, 0, 0, 0
        return BPF_ALU | op | BPF_K, 0, 0, self._immediate(line)

    def _jump(self, op: str, line: _Line) -> tuple:
        if line.peek().text in ("x", "X"):
            line.next()
            src, k = BPF_X, 0
        else:
            src, k = BPF_K, self._immediate(line)
        line.expect(",", "',' and a jump target")
        first = self._target(line, MAX_COND_JUMP)
        second = self._target(line, MAX_COND_JUMP) if line.accept(",") else 0
        if op in NEGATED_JUMPS:
            return BPF_JMP | NEGATED_JUMPS[op] | src, second, first, k
        return BPF_JMP | JUMP_OPS[op] | src, first, second, k

    def _target(self, line: _Line, high: int):
        tok = line.peek()
        if tok.kind == "name":
            line.next()
            return LabelJump(tok.text, tok)
        if tok.kind == "num":
            return line.number("jump offset", 0, high)
        raise line.error(f"expected a label or a jump offset, found {_shown(tok)}", tok)

    def _ret(self, line: _Line) -> tuple:
        tok = line.peek()
        if tok.text in ("a", "A"):
            line.next()
            return BPF_RET | BPF_A, 0, 0, 0
        if tok.text != "#":
            raise line.error(f"ret takes #k, #ACTION, #ACTION(data) or a, found {_shown(tok)}", tok)
        return BPF_RET | BPF_K, 0, 0, self._immediate(line)

    def _signed32(self, line: _Line, what: str) -> int:
        return line.number(what, -(1 << 31), U32) & U32

    def _immediate(self, line: _Line, allow_len: bool = False):
        line.expect("#", "an immediate '#k'")
        tok = line.peek()
        if tok.kind == "num":
            return self._signed32(line, "constant")
        if tok.kind != "name":
            raise line.error(f"expected a constant after '#', found {_shown(tok)}", tok)
        line.next()
        word = tok.text
        if word.lower() == "len" and allow_len:
            return _LEN
        if word.upper() in ARCH_SYMBOLS:
            return ARCH_SYMBOLS[word.upper()]
        if word.startswith(("SYS_", "__NR_")):
            return self._syscall(word, line, tok)
        data = None
        if line.accept("("):
            data = line.number("action data", 0, abi.SECCOMP_RET_DATA)
            line.expect(")")
        value = action_value(word.upper(), data)
        if value is None:
            raise line.error(f"unknown constant '{word}' (expected a number, an action such as ALLOW or "
                             f"ERRNO(1), AUDIT_ARCH_*, SYS_<syscall>{' or len' if allow_len else ''})", tok)
        return value

    def _syscall(self, word: str, line: _Line, tok: Token) -> int:
        try:
            return syscalls.resolve(self.arch, word)
        except SysgateError as exc:
            raise line.error(str(exc), tok) from None

    # ----------------------------------------------------------------- result
    def program(self) -> list[Insn]:
        """Resolve labels: every target must lie ahead, within the program and in jump range."""
        result = []
        for pc, p in enumerate(self.pending):
            jt, jf, k = (self._resolve(pc, v, p.code) for v in (p.jt, p.jf, p.k))
            result.append(Insn(p.code, jt, jf, k))
        return result

    def _resolve(self, pc: int, value, code: int) -> int:
        if not isinstance(value, LabelJump):
            return value
        tok = value.token
        if value.label not in self.labels:
            raise SourceError(f"undefined label '{value.label}'", self.file, self._line_of(pc), tok.column)
        index, line, _ = self.labels[value.label]
        where = (self.file, self._line_of(pc), tok.column)
        if index >= len(self.pending):
            raise SourceError(f"label '{value.label}' (line {line}) is not followed by an instruction", *where)
        offset = index - pc - 1
        if offset < 0:
            raise SourceError(f"backward jump to '{value.label}' (line {line}): classic BPF jumps only go "
                              "forward", *where)
        if offset > MAX_COND_JUMP and code != BPF_JMP | BPF_JA:
            raise SourceError(f"'{value.label}' is {offset} instructions ahead; a conditional jump reaches at "
                              f"most {MAX_COND_JUMP} (jump to an intermediate 'ja {value.label}')", *where)
        return offset

    def _line_of(self, pc: int) -> int:
        return self.pending[pc].line

    def position(self, index: int) -> tuple[int, int]:
        """(line, column) of instruction ``index``."""
        p = self.pending[index]
        return p.line, p.column


def _arch(name: str, file: str, line: int = 0, column: int = 0) -> str:
    try:
        return abi.canonical_arch(name)
    except ValueError as exc:
        raise SourceError(str(exc), file, line, column) from None


def assemble(text: str, file: str = "<input>", arch: str | None = None, check: bool = True) -> list[Insn]:
    """Assemble ``text``. ``arch`` is the default for sources without ``.arch`` (native if None).

    With ``check`` the program must also pass the kernel's seccomp checks; a failure
    is reported at the offending instruction's line."""
    return assemble_for(text, file, arch, check)[0]


def assemble_for(text: str, file: str = "<input>", arch: str | None = None,
                 check: bool = True) -> tuple[list[Insn], str]:
    """Like :func:`assemble`, also returning the architecture the source is for (its ``.arch``,
    else ``arch``, else this machine's): it decides the byte order of the raw output."""
    asm = Assembler(file, arch)
    asm.feed(text)
    program = asm.program()
    if check:
        from .checker import BPFCheckError, check as check_program

        try:
            check_program(program)
        except BPFCheckError as exc:
            line, column = asm.position(exc.index) if exc.index is not None else (0, 0)
            raise SourceError(exc.detail, file, line, column) from None
    return program, asm.arch
