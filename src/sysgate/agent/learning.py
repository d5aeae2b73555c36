"""Learning a container's profile through the agent (``sysgate agent --learn DIR``).

The runtime installs the container's filter just before it executes the container's
command, so the listener sees the container's syscalls and only the runtime's last few
(the fd hand-over: read, close, futex…; namespaces, mounts, pivot_root, sethostname,
keyctl, seccomp all come before). Those few are exactly what the runtime will make again
under the learned profile, so they are learned too: the profile then starts the same
container, where a profile learned on the host command is too small and one learned on
``runc run`` itself allows the runtime's whole set-up.

Every notification is recorded and CONTINUEd (:class:`~sysgate.learn.Observer`): learning
watches, it decides nothing. When the container's last listener hangs up, the profile is
written as ``DIR/<id><ext>`` for every extension of :data:`sysgate.learn.EXTENSIONS`.
"""
from __future__ import annotations

import os
import re

from ..arch import syscalls
from ..errors import SysgateError
from ..files import write_file
from ..kernel import abi
from ..learn import EXTENSIONS, Observer, header_text, render
from ..policy.oci import SCMP_ARCHES

#: Syscalls runtimes refuse to notify: runc (and youki) reject SCMP_ACT_NOTIFY on write,
#: which runc init needs to pass the listener to its parent. They cannot be watched, so a
#: learned profile always allows them.
UNNOTIFIABLE = ("write",)
#: Syscalls runc's init (Go) makes *by chance* between installing the filter and exec: a
#: signal handler's return (a Go preemption signal may land there; refused, the process dies
#: of SIGSEGV) and the Go scheduler's lock hand-off. In 120 runs of ``sh -c 'echo hi'`` under
#: runc 1.1.5, futex was seen 78 times, rt_sigreturn 68, nothing else varied: a profile
#: learned from one run would fail the next, so a learned profile always allows them.
#: Neither reaches anything outside the calling process.
RUNTIME_BY_CHANCE = ("futex", "rt_sigreturn")
#: Allowed by every learned container profile, seen or not.
ALWAYS = UNNOTIFIABLE + RUNTIME_BY_CHANCE
#: The learned profile's verdict for everything not seen.
DEFAULT = "errno(EPERM)"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,254}")


def learning_profile(listener_path: str, arch: str | None = None) -> dict:
    """The ``linux.seccomp`` object that sends every syscall of ``arch`` (default native) to
    the agent at ``listener_path``. Runtimes refuse NOTIFY as the default action, so the
    syscalls are listed one by one; the default (names the runtime's libseccomp does not know)
    and :data:`UNNOTIFIABLE` are allowed."""
    arch = abi.canonical_arch(arch or abi.native_arch())
    if arch not in SCMP_ARCHES:
        raise SysgateError(f"no OCI name for architecture {arch}")
    names = sorted(set(syscalls.table(arch)) - set(UNNOTIFIABLE))
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [f"SCMP_ARCH_{SCMP_ARCHES[arch]}"],
        "listenerPath": listener_path,
        "syscalls": [{"names": names, "action": "SCMP_ACT_NOTIFY"}],
    }


def check_directory(path: str) -> str:
    """``path`` if the agent can write profiles there (checked at start, not at the first exit)."""
    if not os.path.isdir(path):
        raise SysgateError(f"--learn: no such directory {path}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise SysgateError(f"--learn: cannot write to {path}: permission denied")
    return path


def profile_stem(container_id: str) -> str:
    """The file name (without extension) for a container: its id when that is a plain name,
    else a refusal (an id such as ``../x`` must not choose where the agent writes)."""
    if not _SAFE_ID.fullmatch(container_id):
        raise SysgateError(f"container id {container_id!r} is not usable as a file name")
    return container_id


class ContainerLearner:
    """The fallback handler of one learning container: records every call and CONTINUEs it
    (clone3 gets ENOSYS, as with ``sysgate learn``, so that clone's flags are pinned)."""

    process_safe = False      # the observations are collected in this process's memory

    def __init__(self, container_id: str, bundle: str = ""):
        self.container_id, self.bundle = container_id, bundle
        self.observer = Observer()
        self.processes = 0
        self.unfinished = False      #: the agent stopped before the container did

    def __call__(self, n):
        return self.observer(n)

    @property
    def observations(self):
        return self.observer.observations

    def header(self) -> str:
        obs = self.observations
        subject = f"Container: {self.container_id}" + (f" (bundle {self.bundle})" if self.bundle else "")
        text = header_text([], obs, None, DEFAULT, tool="sysgate agent --learn", subject=subject,
                           status=f"{self.processes} listener(s), "
                           + ("the agent stopped while the container ran" if self.unfinished else "all gone"))
        return text + (f"\nAlways allowed: {', '.join(UNNOTIFIABLE)} (runtimes refuse to notify it), "
                       f"{', '.join(RUNTIME_BY_CHANCE)} (runc's init makes them by chance before exec).")

    def write(self, directory: str, warn=None) -> list[str]:
        """Write the profile in every format of :data:`~sysgate.learn.EXTENSIONS`; returns the paths."""
        stem = os.path.join(directory, profile_stem(self.container_id))
        header = self.header()
        paths = []
        for ext, fmt in EXTENSIONS.items():
            text = render(self.observations, fmt, warn=warn, output=stem + ext, default=DEFAULT, header=header,
                          unobserved=ALWAYS)
            write_file(stem + ext, text)
            paths.append(stem + ext)
        return paths
