"""Reading and writing user-named files: one clear SysgateError line instead of an OSError or a codec traceback."""
from __future__ import annotations

from .errors import SysgateError


def read_text(path, what: str) -> str:
    """The UTF-8 text of ``path``; ``what`` names the kind of file in errors (e.g. "policy")."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise SysgateError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise SysgateError(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SysgateError(f"{path}: not a {what} (not UTF-8 text, byte {exc.start})") from None


def read_bytes(path) -> bytes:
    """The contents of ``path`` (a program, any bytes)."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise SysgateError(f"cannot read {path}: {exc.strerror}") from None


def write_file(path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path``, replacing it."""
    try:
        with open(path, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as exc:
        raise SysgateError(f"cannot write {path}: {exc.strerror}") from None
