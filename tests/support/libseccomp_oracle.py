"""Test oracle: what libseccomp + the kernel do with an OCI profile, the way runc loads it.

Run with /usr/bin/python3 (it has the libseccomp binding). Reads JSON from stdin:
``{"profile": {...runtime-spec seccomp...}, "probes": [[syscall, [args]], ...]}``
and prints ``{"results": [...]}`` (per probe: the errno the call failed with, or 0)
or ``{"error": "..."}`` when libseccomp refuses the profile. ``"profile": null``
runs the probes without a filter. Each probe runs in a forked child that loads the
filter and makes the raw syscall.
"""
import ctypes
import json
import os
import sys

import seccomp

OPS = {"SCMP_CMP_EQ": seccomp.EQ, "SCMP_CMP_NE": seccomp.NE, "SCMP_CMP_LT": seccomp.LT,
       "SCMP_CMP_LE": seccomp.LE, "SCMP_CMP_GT": seccomp.GT, "SCMP_CMP_GE": seccomp.GE,
       "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ}
# what the child itself needs after the filter is loaded
HARNESS = ("write", "exit_group", "exit", "brk", "mmap", "munmap", "rt_sigprocmask", "rt_sigaction", "futex")


def action(name, errno_ret, default_errno=1):
    ret = 1 if errno_ret is None else errno_ret
    return {"SCMP_ACT_ALLOW": lambda: seccomp.ALLOW, "SCMP_ACT_ERRNO": lambda: seccomp.ERRNO(ret),
            "SCMP_ACT_LOG": lambda: seccomp.LOG, "SCMP_ACT_TRAP": lambda: seccomp.TRAP,
            "SCMP_ACT_TRACE": lambda: seccomp.TRACE(ret), "SCMP_ACT_KILL": lambda: seccomp.KILL,
            "SCMP_ACT_KILL_PROCESS": lambda: seccomp.KILL_PROCESS}[name]()


def build(profile):
    """The filter as runc builds it (libcontainer/seccomp: matchCall)."""
    default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    f = seccomp.SyscallFilter(default)
    named = set()
    for call in profile.get("syscalls") or []:
        act = action(call["action"], call.get("errnoRet"))
        if act == default:
            continue
        for name in call["names"]:
            named.add(name)
            args = call.get("args") or []
            conds = [seccomp.Arg(a["index"], OPS[a["op"]], a.get("value", 0), a.get("valueTwo", 0)) for a in args]
            indexes = [a["index"] for a in args]
            if len(set(indexes)) < len(indexes):
                for c in conds:
                    f.add_rule(act, name, c)
            else:
                f.add_rule(act, name, *conds)
    if default != seccomp.ALLOW:
        for name in HARNESS:
            if name not in named:
                f.add_rule(seccomp.ALLOW, name)
    return f


def probe(filt, name, args):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        nr = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        cargs = [ctypes.c_ulong(a) for a in args]
        if filt is not None:
            filt.load()
        ret = libc.syscall(ctypes.c_long(nr), *cargs)
        err = ctypes.get_errno() if ret == -1 else 0
        os.write(w, str(err).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    return int(data) if data else -1


def main():
    request = json.load(sys.stdin)
    try:
        filt = build(request["profile"]) if request["profile"] is not None else None
    except Exception as exc:  # libseccomp refuses the profile, as runc would fail
        print(json.dumps({"error": str(exc)}))
        return
    print(json.dumps({"results": [probe(filt, name, args) for name, args in request["probes"]]}))


if __name__ == "__main__":
    main()
