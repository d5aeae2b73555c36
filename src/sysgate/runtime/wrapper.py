"""``sysgate-runc``: an OCI runtime that connects every container's seccomp listener to ``sysgate agent``.

Usage (the wrapper's options first, then exactly what runc would be given)::

    sysgate-runc [--agent-socket PATH] [--runtime runc|crun|PATH] [--policy FILE]
                 [--metadata TEXT] [--] RUNC-ARGUMENTS...

On ``create`` and ``run`` the bundle's ``config.json`` is rewritten by
:func:`sysgate.runtime.bundle.connect_bundle`; then, for every subcommand, the real runtime
is exec'd with the remaining arguments untouched. ``exec`` needs nothing: runc and crun
apply the container's stored seccomp profile (with its listenerPath) to exec'd processes,
so ``docker exec`` joins the container's group in the agent.

When it cannot do its job the wrapper exits 2 with one line on stderr, and also writes it
to the runtime's ``--log`` file in its ``--log-format`` (containerd's shim reports the last
error of ``log.json``: that is the line ``docker run`` shows).
"""
from __future__ import annotations

import os
import shutil
import sys
import time

from ..errors import SysgateError
from .argv import DEFAULT_AGENT_SOCKET, RuntimeCall, WrapperOptions, parse_runtime_argv, split_wrapper_options

PROG = "sysgate-runc"
EXIT_ERROR = 2


def default_profile_loader(path: str):
    """A callable returning ``path`` (any sysgate policy format) as an OCI ``linux.seccomp`` object."""
    def load() -> dict:
        from ..policy_loader import load_policy
        from ..policy.oci import export_oci

        def warn(message: str) -> None:
            print(f"{PROG}: warning: {path}: {message}", file=sys.stderr)

        return export_oci(load_policy(path, warn=warn), warn=warn)
    return load


def resolve_runtime(name: str) -> str:
    path = name if "/" in name else shutil.which(name)
    if not path or not os.access(path, os.X_OK) or os.path.isdir(path):
        raise SysgateError(f"runtime {name!r} not found or not executable")
    return path


def prepare(opts: WrapperOptions, call: RuntimeCall) -> None:
    """Everything the wrapper does before the runtime takes over (only create/run change anything)."""
    if not call.creates:
        return
    from .bundle import Platform, connect_bundle      # only here: every other call stays fast

    platform = Platform(agent_socket=opts.agent_socket or DEFAULT_AGENT_SOCKET, metadata=opts.metadata,
                        default_profile=default_profile_loader(opts.policy) if opts.policy else None)
    connect_bundle(call.bundle, platform, call.config_name)


def report(message: str, call: RuntimeCall | None) -> None:
    """One line on stderr, and the same error in the runtime's log file when there is one."""
    line = f"{PROG}: {message}"
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    if call is None or not call.log_file:
        return
    import json

    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
    if call.log_format == "json":
        entry = json.dumps({"level": "error", "msg": line, "time": stamp})
    else:
        entry = f'time="{stamp}" level=error msg={json.dumps(line)}'
    try:
        with open(call.log_file, "a", encoding="utf-8") as fh:
            fh.write(entry + "\n")
    except OSError as exc:
        print(f"{PROG}: error: cannot write log {call.log_file}: {exc.strerror}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    call = None
    try:
        opts, rest = split_wrapper_options(argv)
        call = parse_runtime_argv(rest)
        runtime = resolve_runtime(opts.runtime)
        prepare(opts, call)
    except SysgateError as exc:
        report(str(exc), call)
        return EXIT_ERROR
    except (Exception, RecursionError) as exc:      # a bug must still refuse the container in one line
        report(f"internal error ({type(exc).__name__}: {exc}); not starting the container", call)
        return EXIT_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(runtime, [runtime, *call.argv])
    except OSError as exc:
        report(f"cannot execute {runtime}: {exc.strerror}", call)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
