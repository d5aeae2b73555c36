"""Compiler benchmark: sysgate vs libseccomp on container default profiles.

For podman's default profile (/usr/share/containers/seccomp.json) and Docker's
default profile (moby's profiles/seccomp/default.json, shipped by Debian's
golang-github-docker-docker-dev; tests/data/docker-default.json, a subset, if absent), compiled for x86_64 with the
i386 and x32 sub-architectures, print: program length, mean and maximum number
of instructions executed for every x86_64 syscall number 0..max+1 (zero
arguments, run on sysgate's emulator), the same mean over the numbers that name a
syscall, and the ratios (mean, max, length) to libseccomp with CTL_OPTIMIZE=2.
libseccomp (the Debian python3-seccomp binding of /usr/bin/python3) gets the same
rules; both programs must return the same action for every number. Exit status 1
if they differ or a target is missed: mean <= 0.6x and length <= 0.5x libseccomp
-O2 on both profiles, and on podman's: mean <= 8.0, max <= 14 and length <= 250.
"""
from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from support import libseccomp_baseline as baseline  # noqa: E402

from sysgate.arch import syscalls  # noqa: E402
from sysgate.bpf.emulator import Emulator  # noqa: E402
from sysgate.compiler import compile_policy  # noqa: E402
from sysgate.kernel import abi  # noqa: E402
from sysgate.policy_loader import load_policy  # noqa: E402

PROFILES = {
    "podman": "/usr/share/containers/seccomp.json",
    "docker": "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json",
}
FALLBACK = {"docker": os.path.join(ROOT, "tests", "data", "docker-default.json")}
ARCHES = ["x86_64", "i386", "x32"]
TARGET_MEAN, TARGET_LENGTH = 0.6, 0.5
#: Absolute targets per profile: mean and max instructions executed, program length.
TARGETS = {"podman": {"mean": 8.0, "max": 14, "length": 250}}


def measure(insns) -> dict:
    """Length and instructions executed over x86_64 numbers 0..max+1 (zero arguments)."""
    emulator = Emulator(insns, "x86_64")
    top = max(syscalls.table("x86_64").values()) + 1
    actions, counts, named = [], [], []
    for nr in range(top + 1):
        ret, count = emulator.run(abi.SeccompData(nr, abi.AUDIT_ARCH["x86_64"]))
        actions.append(ret)
        counts.append(count)
        if syscalls.name("x86_64", nr):
            named.append(count)
    return {"length": len(insns), "mean": sum(counts) / len(counts), "max": max(counts),
            "named_mean": sum(named) / len(named), "actions": actions}


def main() -> int:
    if not baseline.available():
        print("libseccomp baseline unavailable (needs /usr/bin/python3 with python3-seccomp)")
        return 0
    ok = True
    for label, path in PROFILES.items():
        if not os.path.exists(path):
            path = FALLBACK.get(label, PROFILES["podman"])
            label += f" (fallback {os.path.relpath(path, ROOT)}: {PROFILES[label.split()[0]]} not installed)"
        policy = load_policy(path, arch="x86_64")
        start = time.perf_counter()
        ours = compile_policy(policy, ARCHES)
        elapsed = time.perf_counter() - start
        jobs = [baseline.job(policy, ARCHES, level) for level in (1, 2)]
        o1, o2 = baseline.compile_batch(jobs)
        results = {"sysgate": measure(ours.insns), "libseccomp -O1": measure(o1["insns"]),
                   "libseccomp -O2": measure(o2["insns"])}
        print(f"== {label}: {path} ({len(policy.rules)} rules, {', '.join(ARCHES)}); "
              f"sysgate compiles in {elapsed * 1000:.0f} ms")
        print(f"{'compiler':16} {'length':>7} {'mean':>7} {'max':>5} {'named mean':>11}")
        for name, r in results.items():
            print(f"{name:16} {r['length']:7} {r['mean']:7.2f} {r['max']:5} {r['named_mean']:11.2f}")
        ref, mine = results["libseccomp -O2"], results["sysgate"]
        mean_ratio, length_ratio = mine["mean"] / ref["mean"], mine["length"] / ref["length"]
        print(f"ratio to libseccomp -O2: mean {mean_ratio:.3f} (target <= {TARGET_MEAN}), "
              f"max {mine['max'] / ref['max']:.3f}, named mean {mine['named_mean'] / ref['named_mean']:.3f}, "
              f"length {length_ratio:.3f} (target <= {TARGET_LENGTH})")
        targets = TARGETS.get(label.split()[0], {}) if label == label.split()[0] else {}
        if targets:
            missed = [f"{what} {mine[what]:.2f} > {limit}" for what, limit in targets.items()
                      if mine[what] > limit]
            print(f"targets: mean <= {targets['mean']}, max <= {targets['max']}, length <= {targets['length']}: "
                  + ("met" if not missed else "MISSED (" + ", ".join(missed) + ")"))
            ok &= not missed
        differ = [nr for nr, (a, b) in enumerate(zip(mine["actions"], ref["actions"])) if a != b]
        print(f"same action for all {len(ref['actions'])} numbers: {'yes' if not differ else 'NO'}"
              + (f" (differ: {differ[:10]})" if differ else ""))
        if o2["skipped"]:
            print(f"libseccomp skipped {len(o2['skipped'])} rules: {o2['skipped'][:3]}")
        ok &= not differ and mean_ratio <= TARGET_MEAN and length_ratio <= TARGET_LENGTH
        ok &= elapsed < 1.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
