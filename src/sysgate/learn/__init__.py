"""Learn a policy from what a command does.

>>> obs, code = observe(["sh", "-c", "echo hi"])               # doctest: +SKIP
>>> print(policy_text(obs, header=header_text(argv, obs, code)))  # doctest: +SKIP

:func:`observe` runs the command with every syscall notified and CONTINUEd (children
and threads included), :mod:`~sysgate.learn.pins` says which argument values are
pinned, :func:`policy_text` writes the minimal policy (``sysgate learn`` on the
command line).
"""
from __future__ import annotations

from .observer import Observations, Observer, Progress, notify_all_filter, observe
from .pins import PINS, Pin, pins_for
from .writer import (EXTENSIONS, LAUNCH_SYSCALLS, WRITERS, arch_warnings, format_for, header_text, learned_policy,
                     oci_json, parse_action, policy_arches, policy_text, render, summary_text)

__all__ = ["Observations", "Observer", "Progress", "observe", "notify_all_filter", "PINS", "Pin", "pins_for",
           "LAUNCH_SYSCALLS", "policy_text", "oci_json", "render", "format_for", "WRITERS", "EXTENSIONS",
           "learned_policy", "header_text", "summary_text", "parse_action",
           "policy_arches", "arch_warnings"]
