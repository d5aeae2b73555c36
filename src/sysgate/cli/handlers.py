"""``sysgate handlers``: the built-in notification handlers, and checking a handler config."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("handlers", help="list the built-in notify(NAME) handlers, or check a handler config",
                       description="Without options, list each handler usable as notify(NAME) in a policy: the "
                                   "syscalls it answers and its config options. With --config (and --policy), "
                                   "build the handlers as `sysgate run --handlers` would and report problems.")
    p.add_argument("--config", metavar="JSON", help="handler config: a JSON file or inline JSON object")
    p.add_argument("--policy", metavar="FILE", help="policy whose notify(NAME) rules the config must serve")
    p.add_argument("--json", action="store_true", help="machine-readable listing")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..handlers import registry

    if args.config or args.policy:
        policy = None
        if args.policy:
            from ..policy_loader import load_policy

            policy = load_policy(args.policy)
        built = registry.build_handlers(policy, args.config)
        for name, handler in built.handlers.items():
            audited = " (audited)" if getattr(handler, "inner", None) is not None else ""
            print(f"{name}{audited}: {', '.join(handler.syscalls) or 'every notified syscall'}")
            notified = set(_notified(policy, name)) if policy is not None else set(handler.syscalls)
            for syscall, why in getattr(handler, "weak_guarantees", {}).items():
                if syscall in notified:
                    print(f"sysgate: warning: {name} lets the kernel finish {syscall} after its check: {why}",
                          file=sys.stderr)
        built.summary = False
        built.finish()
        return 0
    rows = registry.describe()
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']:<10} {row['summary']}")
        print(f"{'':<10} syscalls: {', '.join(row['syscalls']) or 'any (audits what it is given)'}")
        print(f"{'':<10} options:  {', '.join(row['options']) or 'none'}")
        if row["weaker"]:
            print(f"{'':<10} weaker:   {', '.join(row['weaker'])} (checked, then CONTINUE)")
    return 0


def _notified(policy, handler: str) -> list[str]:
    """The syscalls ``policy`` notifies to ``handler``."""
    return [s for s, names in policy.handler_routes().items() if handler in names]
