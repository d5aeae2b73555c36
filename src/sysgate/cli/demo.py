"""The main job's demo (``./dev run``): a shell script supervised under a seccomp policy.

``sysgate run --sandbox`` puts the secure base (:mod:`sysgate.sandbox.base`) under a short
policy: every path syscall the ``fs`` handler answers goes to it (it opens allowed paths
itself and injects the fd: no TOCTOU), view changes such as ``chroot`` and io_uring are
refused by the filter, the policy's own ``mkdir`` refusal stays, the ``identity`` handler
answers ``uname`` with a fake host name, and ``audit`` records every decision as a JSON line.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

POLICY = """\
# sysgate demo policy; run with --sandbox: every path syscall goes to notify(fs)
default: allow
mkdir, mkdirat: errno(EPERM)          # refused by the BPF filter, no supervisor involved
uname: notify(identity)               # answered by the supervisor
"""

HANDLERS = {
    "fs": {"rules": ["deny /etc/shadow", "deny /etc/gshadow", "allow read /**", "allow rw /tmp/**"]},
    "identity": {"hostname": "sysgate-sandbox"},
    "audit": {"log": None, "wrap": True, "summary": True},
}

SCRIPT = r"""
echo "1. cat /etc/hostname (allowed by the fs handler):"; cat /etc/hostname
echo "2. cat /etc/shadow (denied by the fs handler):"; cat /etc/shadow 2>&1 | head -1
echo "3. mkdir /tmp/sysgate-demo (denied by the filter):"; mkdir /tmp/sysgate-demo-$$ 2>&1
echo "4. uname -n (answered by the supervisor):"; uname -n
echo "5. chroot / true (refused by the sandbox base):"; chroot / true 2>&1 || true
"""


def main(argv: list[str] | None = None) -> int:
    from . import main as sysgate

    with tempfile.TemporaryDirectory(prefix="sysgate-demo-") as tmp:
        policy = os.path.join(tmp, "demo.policy")
        handlers = os.path.join(tmp, "handlers.json")
        audit = os.path.join(tmp, "audit.jsonl")
        with open(policy, "w") as f:
            f.write(POLICY)
        config = dict(HANDLERS, audit=dict(HANDLERS["audit"], log=audit))
        with open(handlers, "w") as f:
            json.dump(config, f, indent=2)
        print("== policy\n" + POLICY)
        print("== handlers\n" + json.dumps(HANDLERS, indent=2) + "\n")
        print("== sysgate run --sandbox --policy demo.policy --handlers handlers.json -- sh -c '...'", flush=True)
        rc = sysgate(["run", "--sandbox", "--policy", policy, "--handlers", handlers, "--", "sh", "-c", SCRIPT])
        print(f"\n== exit status {rc}; audit records of the interesting calls:")
        with open(audit) as f:
            records = [json.loads(line) for line in f]
        for rec in records:
            shown = any(f'"{path}"' in rec["call"] for path in ("/etc/hostname", "/etc/shadow"))
            if rec["syscall"] == "uname" or shown:
                print(f"  [pid {rec['pid']}] {rec['call']} {rec.get('result', rec['verdict'])}"
                      f"  ({rec['latency_us']:.0f} µs)")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
