"""``sysgate check``: report the seccomp features (and the Landlock ABI) of the running kernel."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("check", help="show which seccomp actions, flags and ioctls this kernel supports")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..process.features import detect
    from ..kernel.landlock import abi_version

    f = detect()
    landlock = abi_version()
    if args.json:
        print(json.dumps({"kernel": f.kernel, "arch": f.arch, "seccomp": f.seccomp_available,
                          "actions": f.actions, "flags": f.flags, "ioctls": f.ioctls,
                          "notif_sizes": f.notif_sizes, "landlock_abi": landlock}, indent=2))
        return 0 if f.seccomp_available else 1
    print(f"kernel {f.kernel} ({f.arch}); seccomp {'available' if f.seccomp_available else 'NOT available'}")
    print(f"landlock: ABI {landlock}" if landlock else "landlock: NOT available (the notify layer works alone)")
    if not f.seccomp_available:
        return 1
    mark = lambda ok: "yes" if ok else "no "  # noqa: E731
    for title, table in (("actions", f.actions), ("filter flags", f.flags), ("listener ioctls", f.ioctls)):
        print(f"{title}:")
        for name, ok in table.items():
            print(f"  {mark(ok)}  {name}")
    if f.notif_sizes:
        print("notif sizes: seccomp_notif=%d seccomp_notif_resp=%d seccomp_data=%d" % f.notif_sizes)
    return 0
