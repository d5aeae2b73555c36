"""Turn :class:`~sysgate.learn.observer.Observations` into a minimal, readable policy.

Every syscall seen is allowed, grouped under the named group it belongs to
(``sysgate policy groups``) and sorted; the pinned arguments (see
:mod:`sysgate.learn.pins`) allow only the values seen; anything else gets the
default action. ``execve`` is always allowed: the filter is installed before the
command is executed, so its own execve passes through the filter (the launcher's
other calls before execve are not part of the command and are not learned).
"""
from __future__ import annotations

import datetime
import shlex

from ..errors import SourceError, SysgateError
from ..kernel import abi
from ..policy import groups
from ..policy.model import Action, Policy
from ..policy.parser import parse_policy
from ..policy.printer import action_text
from .observer import Observations, kernel_description
from .pins import Pin, pins_for

#: Calls the launch itself needs once the filter is installed.
LAUNCH_SYSCALLS = ("execve",)
LINE_WIDTH = 96


def parse_action(text: str, what: str = "--default") -> Action:
    """An action written in the policy language (``errno(EPERM)``, ``kill_process``, ``log``…)."""
    try:
        return parse_policy(f"default: {text}\n", f"<{what}>").default
    except SourceError as exc:
        raise SysgateError(f"{what}: {exc.message}") from None


def _as_action(default: str | Action) -> Action:
    return default if isinstance(default, Action) else parse_action(default)


def policy_arches(obs: Observations, arches: list[str] | None = None) -> list[str]:
    """The architectures a learned policy filters: ``arches`` when given, else the native one
    (the launcher's execve runs there) plus every architecture seen."""
    if arches:
        try:
            return list(dict.fromkeys(abi.canonical_arch(a) for a in arches))
        except ValueError as exc:
            raise SysgateError(f"--arch: {exc}") from None
    return list(dict.fromkeys([abi.native_arch(), *obs.arches()]))


def arch_warnings(obs: Observations, arches: list[str] | None) -> list[str]:
    """What an explicit ``--arch`` list leaves out: the launcher's arch, or arches that were seen."""
    if not arches:
        return []
    chosen = policy_arches(obs, arches)
    out = []
    native = abi.native_arch()
    if native not in chosen:
        out.append(f"the policy leaves out {native}: the launcher's execve runs there and will be killed (bad_arch)")
    missing = [a for a in obs.arches() if a not in chosen]
    if missing:
        out.append(f"syscalls of {', '.join(missing)} were seen but the policy leaves that out: "
                   f"they will be killed (bad_arch)")
    return out


def policy_text(obs: Observations, *, default: str | Action = "errno(EPERM)", arches: list[str] | None = None,
                unpinned=(), header: str = "", clone3_enosys: bool = True, unobserved=()) -> str:
    """The learned policy in the sysgate language. ``unpinned`` lists syscalls whose arguments
    are not pinned (``all`` for none); ``header`` becomes the leading comment; ``clone3_enosys``
    (as learned with it, see :class:`~sysgate.learn.observer.Observer`) answers clone3 ENOSYS;
    ``unobserved`` are allowed although they could not be watched (e.g. ``write``, which
    container runtimes refuse to notify)."""
    action = _as_action(default)
    unpinned = frozenset(unpinned)
    names = set(obs.by_syscall()) | set(LAUNCH_SYSCALLS) | set(unobserved)
    if clone3_enosys:
        names.discard("clone3")
    pinned = sorted(n for n in names if pins_for(n, unpinned) and n in obs.values)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [f"default: {action_text(action)}", f"arch: {', '.join(policy_arches(obs, arches))}", ""]
    for title, members in _sections(names - set(pinned)):
        lines.append(f"# {title}")
        lines += _allow_lines(members)
        lines.append("")
    if pinned or clone3_enosys:
        lines.append("# arguments pinned to the values seen (other values get the default action)")
        for name in pinned:
            lines += _pinned_lines(name, pins_for(name, unpinned), obs.values[name])
        if clone3_enosys:
            lines.append("clone3: errno(ENOSYS)   # its flags are out of a filter's reach: libc falls back to clone")
        lines.append("")
    if obs.unknown:
        lines.append("# seen but not in sysgate's syscall tables (not allowed):")
        lines += [f"#   {arch} syscall {nr}: {calls} calls" for (arch, nr), calls in sorted(obs.unknown.items())]
    return "\n".join(lines).rstrip("\n") + "\n"


def oci_json(obs: Observations, warn=None, output: str = "-", **options) -> str:
    """The learned policy as an OCI ``linux.seccomp`` JSON object (converted from
    :func:`policy_text`, so both agree); conversion warnings go to ``warn(message)``."""
    return oci_text(policy_text(obs, **options), warn=warn)


def spo_yaml(obs: Observations, warn=None, output: str = "-", **options) -> str:
    """The learned policy as a Kubernetes ``SeccompProfile`` named after ``output`` (:func:`spo_text`)."""
    return spo_text(policy_text(obs, **options), output, warn=warn)


def _text(obs: Observations, warn=None, output: str = "-", **options) -> str:
    return policy_text(obs, **options)


#: Output format -> writer ``fn(obs, warn=None, **policy_text options) -> str``. Extend both
#: tables to add a format (e.g. a Kubernetes SeccompProfile); the agent writes one file per
#: entry of :data:`EXTENSIONS`.
WRITERS = {"text": _text, "oci": oci_json, "spo": spo_yaml}
#: File extension -> format, for choosing the format from an output file name.
EXTENSIONS = {".policy": "text", ".json": "oci", ".yaml": "spo"}


def render(obs: Observations, fmt: str, warn=None, output: str = "-", **options) -> str:
    """The learned policy in format ``fmt`` (a key of :data:`WRITERS`) for the file ``output``
    (a SeccompProfile is named after it)."""
    return WRITERS[fmt](obs, warn=warn, output=output, **options)


def format_for(path: str, default: str = "text") -> str:
    """The format an output file name asks for (by its extension)."""
    for ext, fmt in EXTENSIONS.items():
        if path.endswith(ext):
            return fmt
    return "spo" if path.endswith(".yml") else default


def learned_policy(obs: Observations, **options) -> Policy:
    """The learned policy as a model (the parsed :func:`policy_text`, so both always agree)."""
    return parse_policy(policy_text(obs, **options), "<learned policy>")


def header_text(argv, obs: Observations, returncode: int | None, default: str | Action = "errno(EPERM)", *,
                tool: str = "sysgate learn", subject: str | None = None, status: str | None = None) -> str:
    """The comment a learned policy starts with: how, when and from what it was learned.
    ``subject`` (default ``Command: ARGV``) and ``status`` (default from ``returncode``) let
    other learners (the agent's, per container) say what they watched."""
    action = _as_action(default)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if status is None:
        status = "killed by timeout" if returncode is None else (
            f"exit status {returncode}" if returncode >= 0 else f"killed by signal {-returncode}")
    return (f"Learned by `{tool}` on {when}, {kernel_description()}.\n"
            f"{subject if subject is not None else f'Command: {shlex.join(argv)}'}\n"
            f"Seen: {obs.total} syscalls ({len(obs.by_syscall())} distinct) from {len(obs.tids)} "
            f"thread(s) on {', '.join(obs.arches()) or 'no architecture'}; {status}.\n"
            f"Any other syscall gets {action_text(action)}. A run only sees the code paths it took:\n"
            f"review before use.")


def summary_text(obs: Observations, returncode: int | None, top: int = 10, clone3_enosys: bool = True) -> str:
    """The end-of-run report: totals, per-architecture counts, the most frequent syscalls."""
    counts = obs.by_syscall()
    lines = [f"sysgate learn: {obs.total} syscalls, {len(counts)} distinct, {len(obs.tids)} thread(s)"
             + ("" if returncode is None else f"; exit status {returncode}")]
    arches = obs.arches()
    if len(arches) > 1:
        per = {a: sum(c for (arch, _), c in obs.counts.items() if arch == a) for a in arches}
        lines.append("  per architecture: " + ", ".join(f"{a} {n}" for a, n in per.items()))
    lines.append("     calls  syscall")
    lines += [f"  {calls:8d}  {name}" for name, calls in counts.most_common(top)]
    if len(counts) > top:
        lines.append(f"  ({len(counts) - top} more)")
    namespaces = sorted({f for f in obs.clone3_flags if f & _NAMESPACE_FLAGS})
    if namespaces and not clone3_enosys:
        lines.append("  note: clone3 created namespaces (flags " + ", ".join(hex(f) for f in namespaces)
                     + "); seccomp cannot check clone3's flags, so the policy allows clone3 whatever they are")
    return "\n".join(lines)


_NAMESPACE_FLAGS = 0x7E020080   # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME


def _sections(names: set[str]):
    """(title, sorted members) per named group, each syscall under the first group it is in."""
    left = set(names)
    for group in groups.GROUPS:
        members = sorted(left & set(groups.expand_group(group)))
        if members:
            left -= set(members)
            yield group, members
    if left:
        yield "other", sorted(left)


def _allow_lines(names: list[str]) -> list[str]:
    lines, current = [], []
    for name in names:
        if current and len(", ".join([*current, name])) + len(": allow") > LINE_WIDTH:
            lines.append(f"{', '.join(current)}: allow")
            current = []
        current.append(name)
    if current:
        lines.append(f"{', '.join(current)}: allow")
    return lines


def _pinned_lines(name: str, pins: tuple[Pin, ...], values: set[tuple[int, ...]]) -> list[str]:
    """``name: a == X && b in {Y, Z}`` per combination of all pinned arguments but the last."""
    by_prefix: dict[tuple[int, ...], set[int]] = {}
    for combo in values:
        by_prefix.setdefault(combo[:-1], set()).add(combo[-1])
    lines = []
    for prefix in sorted(by_prefix):
        terms = [f"{pin.arg} == {pin.namer.text(v)}" for pin, v in zip(pins, prefix)]
        last, seen = pins[-1], sorted(by_prefix[prefix])
        if len(seen) == 1:
            terms.append(f"{last.arg} == {last.namer.text(seen[0])}")
        else:
            terms.append(f"{last.arg} in {{{', '.join(last.namer.text(v) for v in seen)}}}")
        lines.append(f"{name}: {' && '.join(terms)}")
    return lines


def oci_text(text: str, warn=None) -> str:
    """A learned policy (text) as OCI seccomp JSON."""
    import json

    from ..policy.oci import export_oci

    return json.dumps(export_oci(parse_policy(text, "<learned policy>"), warn=warn), indent=2) + "\n"


def spo_text(text: str, output: str, warn=None) -> str:
    """A learned policy (text) as a Security Profiles Operator ``SeccompProfile`` (YAML) named
    after the ``output`` file (``sysgate-learned`` for standard output)."""
    import os

    from ..policy.spo import export_spo, resource_name

    name = resource_name(os.path.splitext(os.path.basename(output))[0]) if output != "-" else "sysgate-learned"
    return export_spo(parse_policy(text, "<learned policy>"), name=name, warn=warn)
