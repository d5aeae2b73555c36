"""``sysgate run``: launch a command under a policy and supervise it.

sysgate keeps answering until every process holding the filter is gone: the command and
whatever it started (daemons, background jobs) that outlives it; ``--exit-with-main`` stops
when the command exits (the notified calls of processes left behind then fail with ENOSYS).
A SIGINT/SIGTERM/SIGHUP/SIGQUIT reaching sysgate after the command exited stops it waiting:
processes left behind are not killed (Ctrl-C reaches them itself when they are in the
terminal's foreground process group), their notified calls fail with ENOSYS from then on.

Exit status, stdio and signals pass through like env(1)/timeout(1): sysgate exits
with the command's code (128+N if signal N killed it; 127 if it cannot be found, 126 if
it cannot be run, 125 for sysgate's own errors) and forwards SIGINT/SIGTERM/SIGHUP/
SIGQUIT sent to it by another process. Signals the terminal generates already reach the
command (it stays in sysgate's process group), so those are not sent twice.

Without a policy the command runs in audit mode: every syscall is notified, allowed
(CONTINUE) and counted, and a per-syscall summary is printed to stderr at exit.
``--log`` instead allows everything with SECCOMP_RET_LOG (the kernel's audit log gets
the record, nothing is notified). ``--notify-all`` prints each syscall strace-style.

A policy's ``notify(NAME)`` rules are answered by the built-in handler NAME (``sysgate
handlers`` lists them), configured by ``--handlers``: a JSON file or inline JSON text with one
section per handler (``{"fs": {"rules": ["allow read /usr/**"]}, "audit": {"log": "a.jsonl"}}``).
A handler without a section gets its defaults (``fs``/``net`` then deny everything).
``--handlers FILE.py[:NAME]`` or ``--handlers MODULE:NAME`` (repeatable) adds custom Python
handlers, answering ``notify(THEIR_NAME)`` (see sysgate.handlers.loading for the contract). Plain
``notify`` rules are printed and allowed. A bad config or a handler that cannot answer a
syscall the policy sends it stops sysgate before the command starts. A stored ``--filter``
compiled from such a policy keeps its routes and is served the same way.

A policy that needs only its filter (a text policy without notify rules, ``include``, ``sandbox:``
or warnings, and no Landlock layer) is compiled once: the filter is kept in a cache
(``$XDG_CACHE_HOME/sysgate``, default ``~/.cache/sysgate``, private to the user) under the SHA-256
of the policy text, and an unchanged policy is launched from there. ``--no-cache`` or
``SYSGATE_NO_CACHE=1`` compiles every time.

``--record FILE`` writes every notification and the reply it got to FILE (JSON lines) for
``sysgate replay``.

``--processes N`` (1 to 64, default 1) answers the notifications from N worker processes, one CPU
each (Python answers on one CPU at a time): for handlers that answer from the call alone, since
each process has its own copy of them. Refused in one line before the command starts: the audit
mode (no policy), ``--record``, the audit handler and handlers that keep their results in memory
(``process_safe = False``). Without notifications it changes nothing. If a worker dies, every
notified call fails with ENOSYS from then on, as if sysgate had died; the workers end with the run.

``--sandbox`` puts the secure base under the policy (default: allow everything else): every
path syscall the fs handler answers goes to it, view changes (chroot, mount, namespaces),
io_uring and file handles are refused, and with a ``net`` section in ``--handlers`` every
peer-naming syscall goes to the net handler. Without it, a policy that routes some path or
peer syscalls to fs/net but leaves others to the kernel is refused (one line naming them)
unless ``--force`` is given.
"""
from __future__ import annotations

import os

from ..errors import SysgateError
from . import command_args, processes_option

PODMAN_PROFILE = "/usr/share/containers/seccomp.json"
DOCKER_PROFILES = ("/etc/docker/seccomp.json", "/usr/share/docker/seccomp.json",
                   "/usr/share/docker.io/seccomp.json",
                   # Debian's golang-github-docker-docker-dev ships moby's default profile
                   "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json")


def register(sub) -> None:
    import argparse

    p = sub.add_parser("run", help="run a command under a seccomp policy (audit-only without one)",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--policy", metavar="FILE", help="policy file (sysgate language or OCI/Docker JSON)")
    src.add_argument("--profile", metavar="NAME", help="podman, docker, or the path of an OCI/Docker JSON profile")
    src.add_argument("--filter", metavar="FILE",
                     help="a stored filter (JSON written by sysgate.process.filter.Filter.save)")
    src.add_argument("--notify-all", action="store_true", help="notify every syscall and print it decoded")
    p.add_argument("--log", action="store_true",
                   help="with a policy: log its non-allow actions to the kernel audit log (FLAG_LOG); "
                        "without: allow every syscall with RET_LOG instead of the notified audit")
    p.add_argument("--handlers", metavar="CONFIG|FILE.py[:NAME]|MODULE:NAME", action="append",
                   help="the handlers a --policy or --filter names (notify(NAME)): the config of the built-in "
                        "ones (a JSON file or inline JSON), or custom Python handlers (repeatable)")
    p.add_argument("--record", metavar="FILE", help="record every notification and its reply for sysgate replay")
    p.add_argument("--sandbox", action="store_true",
                   help="put the secure base under the policy: all path syscalls to fs, no view changes "
                        "or io_uring; with a net section in --handlers, all peer-naming syscalls to net")
    p.add_argument("--force", action="store_true",
                   help="run a policy whose fs/net routes can be walked around (see policy check)")
    add_landlock_options(p)
    p.add_argument("--no-cache", action="store_true",
                   help="compile the policy even when the filter cache has it (also SYSGATE_NO_CACHE=1)")
    p.add_argument("--processes", metavar="N", default="1",
                   help="answer the notifications from N worker processes, one CPU each (1-64, default 1: "
                        "sysgate's own process); handlers keeping results in memory (audit, --record) are refused")
    p.add_argument("--exit-with-main", action="store_true",
                   help="stop serving when the command exits, not when every process it started is gone "
                        "(notified calls of daemons left behind then fail with ENOSYS)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")
    p.set_defaults(func=run)


#: the options :func:`simple_command_line` reads (the flags among them take no value)
SIMPLE_FLAGS = {"--log": "log", "--exit-with-main": "exit_with_main", "--force": "force", "--no-cache": "no_cache"}


def simple_command_line(words: list[str]) -> dict | None:
    """``sysgate run`` arguments ``words`` parsed as argparse would, when they are only ``--policy FILE``
    (or ``--policy=FILE``) and the flags of :data:`SIMPLE_FLAGS`, each at most once, then the command
    (after ``--`` or from the first word not starting with ``-``). None for anything else (other
    options, abbreviations, help, usage errors): argparse parses those. tests/test_filter_cache.py
    checks the two agree."""
    found: dict = {"policy": None, "log": False, "exit_with_main": False, "force": False, "no_cache": False}
    seen, i = set(), 0
    while i < len(words):
        word = words[i]
        if word == "--" or not word.startswith("-") or word == "-":
            command = words[i + 1:] if word == "--" else words[i:]
            break
        name, value = word.partition("=")[0], None
        if name in seen:
            return None
        seen.add(name)
        if word in SIMPLE_FLAGS:
            found[SIMPLE_FLAGS[word]] = True
        elif word.startswith("--policy="):
            value = word[len("--policy="):]
        elif word == "--policy" and i + 1 < len(words) and not words[i + 1].startswith("-"):
            i += 1
            value = words[i]
        else:
            return None
        if value is not None:
            found["policy"] = value
        i += 1
    else:
        return None
    if not command or not found["policy"] or found["policy"] == "-":
        return None
    found["command"] = command
    return found


def run_from_cache(words: list[str]) -> int | None:
    """``sysgate run`` with the arguments ``words`` when argparse is not needed to parse them and the
    policy's filter is in the cache (see the module's doc): launch it, without argparse, the policy
    parser or the compiler; the command's status. None otherwise (then :func:`run` does it all)."""
    from ..process import filtercache

    line = simple_command_line(words)
    if line is None or line["no_cache"] or filtercache.disabled():
        return None
    try:
        from .. import __version__
        from ..files import read_text

        text = read_text(line["policy"], "policy")
        cached = filtercache.lookup(filtercache.key(text, __version__, log=line["log"]), name=line["policy"])
        if cached is None:
            return None
        from ..process.run import run_command

        return run_command(cached, line["command"], None, exit_with_main=line["exit_with_main"])[0]
    except SysgateError as exc:
        exc.exit_code = 125
        raise


def run(args) -> int:
    try:
        args.processes = processes_option(args.processes)
        argv = command_args(args, "sysgate run [options] -- CMD [ARG...]")
        args.policy_text = args.cache_key = None
        if cacheable(args):
            from .. import __version__
            from ..files import read_text
            from ..process import filtercache

            args.policy_text = read_text(args.policy, "policy")
            args.cache_key = filtercache.key(args.policy_text, __version__, log=args.log)
            cached = filtercache.lookup(args.cache_key, name=args.policy)
            if cached is not None:
                from ..process.run import run_command

                return run_command(cached, argv, None, exit_with_main=args.exit_with_main)[0]
        from ..handlers.loading import handler_options
        from ..process.run import run_command, run_supervised

        args.handler_config, args.custom_handlers = handler_options(args.handlers)
        filt, reporter, policy = build(args)
        wall = landlock_plan(args, policy)
        filt, policy = unroute_landlocked(args, filt, policy, wall)
        if args.cache_key is not None and only_a_filter(args, filt, policy, wall):
            from ..process import filtercache

            filtercache.store(args.cache_key, filt)
        if reporter is None and not filt.notifies and not (args.record or args.handlers):
            code, target = run_command(filt, argv, None, landlock=wall, exit_with_main=args.exit_with_main)
        else:
            code, target = run_supervised(filt, argv, reporter, policy, args.handler_config, record=args.record,
                                          landlock=wall, exit_with_main=args.exit_with_main,
                                          custom=args.custom_handlers, processes=args.processes)
    except SysgateError as exc:
        exc.exit_code = 125
        raise
    if target is not None and reporter is not None:
        reporter.finish(target)
    return code


def cacheable(args) -> bool:
    """May this run take its filter from the cache (or store it there)? With ``--policy`` FILE and
    options that do not change or add to the filter (no handlers, record, sandbox, Landlock
    options), unless turned off."""
    from ..process.filtercache import disabled

    return bool(args.policy and args.policy != "-" and not (
        args.no_cache or args.handlers or args.record or args.sandbox or args.landlock == "on"
        or args.no_exec_after_start or args.allow_exec or args.landlock_stat or args.landlock_scope)) \
        and not disabled()


def only_a_filter(args, filt, policy, wall) -> bool:
    """Is launching ``filt`` all this run does, whatever the machine's state? (A text policy of its own,
    without include, sandbox base, warnings, routes or notifications; no Landlock layer.) Then the
    filter goes to the cache: a later run of the same text launches it without compiling."""
    from ..policy_loader import detect_format
    from ..sandbox import coverage

    return (wall is None and policy is not None and not filt.notifies and not policy.sandbox
            and not policy.warnings and not policy.handler_routes() and not policy.listener_path
            and "include" not in args.policy_text and detect_format(args.policy_text) == "text"
            and not coverage.warnings_line(policy))


#: ``--landlock`` modes (sandbox.landlock.MODES; not imported from there for start-up time)
LANDLOCK_MODES = ("off", "auto", "on")


def add_landlock_options(p) -> None:
    """``--landlock``, ``--no-exec-after-start``, ``--allow-exec`` (see the README's "Landlock layer")."""
    p.add_argument("--landlock", choices=LANDLOCK_MODES, default="auto",
                   help="a kernel-enforced Landlock ruleset derived from the fs/net rules and exec limits: "
                        "auto (default: when the kernel has it), on (fail without it), off (notify alone)")
    p.add_argument("--no-exec-after-start", action="store_true",
                   help="Landlock: the command may exec only its own binary (and its interpreter) again")
    p.add_argument("--allow-exec", metavar="PATH", action="append", default=[],
                   help="Landlock: also allow exec of PATH (a file, or every file beneath a directory); repeatable")
    p.add_argument("--landlock-stat", action="store_true",
                   help="with exact fs rules under Landlock: do not check stat/access/readlink/statfs/getdents "
                        "(metadata and names of paths outside the rules become visible; opening them stays "
                        "refused by Landlock); faster metadata-heavy workloads (tar, find, imports)")
    p.add_argument("--landlock-scope", metavar="SCOPES",
                   help="Landlock (ABI 6): signal,abstract-unix: signals and abstract unix connects reach only "
                        "processes inside the sandbox")


def landlock_plan(args, policy):
    """The LandlockPlan for ``args`` under ``policy`` (None: no Landlock layer)."""
    from ..process.run import warn
    from ..sandbox.landlock import parse_scopes, plan_for_policy

    limits = args.no_exec_after_start or args.allow_exec
    return plan_for_policy(policy, args.handler_config, mode=args.landlock, scoped=parse_scopes(args.landlock_scope),
                           exec_paths=list(args.allow_exec) if limits else None, warn=warn)


def unroute_landlocked(args, filt, policy, wall):
    """(filter, policy) with the routes Landlock decides exactly (and, with --landlock-stat, the metadata
    calls it cannot check) no longer notified; --landlock-stat says once what it gives up."""
    from ..process.filter import Filter
    from ..sandbox.landlock import without_open_routes

    lighter = without_open_routes(policy, wall, visible_metadata=args.landlock_stat) \
        if policy is not None and not args.filter else None
    if args.landlock_stat:
        from ..process.run import warn
        from ..sandbox.landlock import METADATA_WARNING

        warn(METADATA_WARNING if lighter is not None else
             "sysgate: --landlock-stat has no effect: Landlock does not enforce the fs rules exactly here "
             "(see sysgate policy check --handlers)")
    if lighter is None:
        return filt, policy
    return Filter.from_policy(lighter, log=args.log), lighter


def build(args):
    """(stored filter to launch with, reporter answering its plain notifications, its policy or None)."""
    from ..bpf.insn import ret
    from ..kernel import abi
    from ..process.filter import Filter
    from ..process.run import AuditReporter, PolicyReporter, TraceReporter

    if args.sandbox and (args.filter or args.notify_all):
        raise SysgateError("--sandbox needs --policy or --profile (or neither): a stored filter is already compiled")
    if args.filter:
        filt = Filter.load(args.filter)
        if args.log:
            filt.flags["log"] = True
        return filt, (PolicyReporter() if filt.notifies else None), secure_policy(filt.handler_policy(), args)
    if args.handlers and not (args.policy or args.profile or args.sandbox):
        raise SysgateError("--handlers needs --policy or --filter (their notify(NAME) rules choose the handlers)")
    path = args.policy or (profile_path(args.profile) if args.profile else None)
    if path or args.sandbox:
        from ..policy_loader import load_policy, load_text
        from ..sandbox.base import default_policy

        if getattr(args, "policy_text", None) is not None:      # read once: the cache key is of this text
            loaded = load_text(args.policy_text, path)
        else:
            loaded = load_policy(path) if path else default_policy()
        pol = secure_policy(loaded, args)
        filt = Filter.from_policy(pol, log=args.log)
        return filt, (PolicyReporter() if filt.notifies else None), pol
    if args.notify_all:
        return Filter.from_program([ret(abi.SECCOMP_RET_USER_NOTIF)], name="notify-all"), TraceReporter(), None
    if args.log:
        return Filter.from_program([ret(abi.SECCOMP_RET_LOG)], name="log-all"), None, None
    return Filter.from_program([ret(abi.SECCOMP_RET_USER_NOTIF)], name="audit"), AuditReporter(), None


def secure_policy(policy, args):
    """``policy`` with the secure base under it (``--sandbox``: the fs part, and the net part
    when ``--handlers`` configures net), or as it is when its fs/net routes cannot be walked
    around; else SysgateError naming what is unsafe in one line (``--force``: a warning)."""
    from ..process.run import warn
    from ..sandbox import base, coverage

    if policy is None:
        return None
    if args.sandbox:
        from ..handlers import registry

        parts = ["fs", *(["net"] if "net" in registry.load_config(args.handler_config) else [])]
        policy = base.apply_base(policy, parts)
    if policy.sandbox:
        note = base.notice(policy)
        if note:
            warn(f"sysgate: {note}")
        return policy
    warnings = coverage.warnings_line(policy)
    if warnings and not args.force:
        raise SysgateError(f"policy {policy.name!r} is not a sandbox: it {warnings} "
                           f"(--sandbox adds the secure base, --force runs it as it is)")
    if warnings:
        warn(f"sysgate: warning: policy {policy.name!r} is not a sandbox: it {warnings}")
    return policy


def profile_path(name: str) -> str:
    """The JSON file for ``--profile``: podman's, a Docker default profile, or a path."""
    if name == "podman":
        candidates = (PODMAN_PROFILE,)
    elif name == "docker":
        from importlib import resources

        shipped = [str(p) for p in resources.files("sysgate.data").iterdir()
                   if p.name.startswith("docker") and p.name.endswith(".json")]
        candidates = (*shipped, *DOCKER_PROFILES)
    else:
        candidates = (name,)
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = ", ".join(candidates)
    raise SysgateError(f"profile {name!r} not found (looked for {where})")
