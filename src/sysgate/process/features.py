"""Detect which seccomp features the running kernel supports (no filter is installed here).

Above :mod:`sysgate.kernel` because the listener probe needs a BPF program and a forked
child (which installs it); the ioctls themselves are :func:`sysgate.kernel.notify.probe_ioctls`.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from ..bpf.insn import pack, ret
from ..kernel import abi, calls, notify
from .forked import call_in_child


@dataclass
class Features:
    """What this kernel offers; built by :func:`detect`."""

    kernel: str
    arch: str
    seccomp_available: bool
    actions: dict[str, bool] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)
    ioctls: dict[str, bool] = field(default_factory=dict)
    notif_sizes: tuple[int, int, int] | None = None

    def has_flag(self, name: str) -> bool:
        return self.flags.get(name, False)


def _flag_supported(flag: int) -> bool:
    """Probe a filter flag: a NULL program gives EFAULT when the flag is known, EINVAL if not."""
    try:
        calls.seccomp(abi.SECCOMP_SET_MODE_FILTER, flag, None)
    except OSError as exc:
        return exc.errno == errno.EFAULT
    return True  # cannot happen: a NULL program never installs


def _listener_ioctls() -> dict[str, bool]:
    """Create a throw-away listener in a forked child and probe its ioctls."""
    def probe() -> dict[str, bool]:
        calls.set_no_new_privs()
        return notify.probe_ioctls(
            calls.seccomp_set_filter(pack([ret(abi.SECCOMP_RET_ALLOW)]), abi.SECCOMP_FILTER_FLAG_NEW_LISTENER))

    return call_in_child(probe)[1] or {}


def detect(probe_listener: bool = True) -> Features:
    """Probe the running kernel. ``probe_listener`` forks a child to test the notify ioctls."""
    uname = os.uname()
    try:
        mode = calls.seccomp_mode()
        available = mode is not None
    except OSError:
        available = False
    feats = Features(kernel=uname.release, arch=abi.native_arch(), seccomp_available=available)
    if not available:
        return feats
    for name, value in abi.ACTIONS.items():
        try:
            feats.actions[name] = calls.seccomp_action_available(value)
        except OSError:
            feats.actions[name] = False
    for name, value in abi.FILTER_FLAGS.items():
        if value == abi.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:  # only valid with NEW_LISTENER
            value |= abi.SECCOMP_FILTER_FLAG_NEW_LISTENER
        feats.flags[name] = _flag_supported(value)
    try:
        feats.notif_sizes = calls.seccomp_notif_sizes()
    except OSError:
        feats.notif_sizes = None
    if probe_listener and feats.flags.get("NEW_LISTENER"):
        try:
            feats.ioctls = _listener_ioctls()
        except OSError:
            feats.ioctls = {}
    return feats


_cached: Features | None = None


def features() -> Features:
    """Cached :func:`detect` result for this process."""
    global _cached
    if _cached is None:
        _cached = detect()
    return _cached
