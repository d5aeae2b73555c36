"""Shared by the handler tests: running a command under handlers (the C target is conftest's ``target_c``)."""
from __future__ import annotations

import os

from sysgate.process import launch
from sysgate.sandbox.landlock import plan_for_policy, without_open_routes
from sysgate.policy.model import ALLOW, Action, Policy, Rule
from sysgate.supervisor import Supervisor


def notify_policy(*handlers, extra_rules=()) -> Policy:
    """Allow everything except the handlers' syscalls, which are notified to them by name."""
    rules = list(extra_rules)
    for h in handlers:
        rules += [Rule(s, Action("notify", handler=h.name)) for s in h.syscalls]
    return Policy(default=ALLOW, rules=rules)


#: the Landlock mode :func:`run` launches with: "off", or "on" (the ``landlock`` fixture of conftest.py sets it
#: for the tests that use it, so each runs with the Landlock wall under the handlers and without it)
LANDLOCK = {"mode": "off"}


def landlock_launch(policy: Policy, handlers, mode: str):
    """(plan, policy) that ``sysgate run --landlock=MODE --handlers CONFIG`` launches with, CONFIG being the
    rules of ``handlers`` (their fs/net sections): the CLI's derivation (:func:`plan_for_policy`) and its
    unrouting of the plain opens Landlock decides alone (:func:`without_open_routes`)."""
    config = {h.name: {"rules": h.rules.rules, "default": h.rules.default}
              for h in handlers if h.name in ("fs", "net")}
    plan = plan_for_policy(policy, config, mode=mode)
    if mode == "on":
        assert config and plan is not None, "landlock=on: no fs/net rules to derive a Landlock plan from"
    return plan, (without_open_routes(policy, plan) or policy)


def run(argv, *handlers, policy=None, timeout: float = 30, sup=None, **spawn) -> tuple[int, str]:
    """Run ``argv`` with ``handlers`` answering their syscalls; (exit code, stdout+stderr)."""
    code, out = run_bytes(argv, *handlers, policy=policy, timeout=timeout, sup=sup, **spawn)
    return code, out.decode(errors="replace")


def run_bytes(argv, *handlers, policy=None, timeout: float = 30, sup=None, **spawn) -> tuple[int, bytes]:
    """:func:`run` with the output as bytes."""
    policy = policy or notify_policy(*handlers)
    if LANDLOCK["mode"] != "off" and "landlock" not in spawn:
        spawn["landlock"], policy = landlock_launch(policy, handlers, LANDLOCK["mode"])
    r, w = os.pipe()
    try:
        target = launch.spawn(argv, policy, stdout=w, stderr=w, **spawn)
    finally:
        os.close(w)
    own = sup is None
    sup = sup or Supervisor()
    try:
        for h in handlers:
            h.install(sup)
        sup.add_target(target)
        assert sup.run_until_idle(timeout), "target still running"
    finally:
        if own:
            sup.close()
        for h in handlers:
            h.close()
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    code = target.wait(5)
    target.close()
    return code, out
