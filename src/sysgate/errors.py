"""Exceptions shared across sysgate. ``SysgateError`` and subclasses are user-facing:
the CLI prints them as one clear line, never as a traceback."""
from __future__ import annotations


class SysgateError(Exception):
    """Base for errors caused by user input or the environment (printed without traceback)."""

    exit_code = 2


class SourceError(SysgateError):
    """An error at a position in a text source (policy, assembly, JSON profile)."""

    def __init__(self, message: str, file: str = "<input>", line: int = 0, column: int = 0):
        self.message, self.file, self.line, self.column = message, file, line, column
        where = file
        if line:
            where += f":{line}"
            if column:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class UnsupportedError(SysgateError):
    """The running kernel lacks a feature that was asked for."""


class UnknownArchError(SysgateError, ValueError):
    """An architecture name sysgate does not know (also a ValueError for older callers)."""
