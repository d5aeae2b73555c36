"""Policy loading benchmark: time to import large OCI profiles and peak memory.

Prints, for generated runtime-spec profiles written to a temporary file and loaded
with ``load_policy`` (each in a fresh subprocess so the numbers do not mix):

* load time (wall clock, and CPU time, which does not depend on other load) for 5,000 /
  20,000 / 200,000 conditional entries (``--sizes`` to change),
  spread over a few syscalls with alternating actions, each ``arg1 == i`` — the shape
  that made the overlap check quadratic;
* peak memory (ru_maxrss of the subprocess, and the file size) for 1,000,000
  unconditional entries (``--rules`` to change) of a JSON profile and of a text policy,
  against the same process only reading the file.

Not a test: it prints numbers. ``python benchmarks/policy_load.py [--sizes 5000,20000]``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSCALLS = ["ioctl", "fcntl", "prctl", "setsockopt", "getsockopt", "socket", "mmap", "mprotect"]
ACTIONS = [{"action": "SCMP_ACT_ALLOW"}, {"action": "SCMP_ACT_ERRNO", "errnoRet": 13}, {"action": "SCMP_ACT_LOG"}]
UNCONDITIONAL = ["read", "write", "close", "openat", "fstat", "mmap", "brk", "futex", "getpid", "exit_group"]

CHILD = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
from sysgate.policy_loader import load_policy
mode, path = sys.argv[2], sys.argv[3]
start, cpu = time.perf_counter(), time.process_time()
if mode == "read":
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    count = len(text)
else:
    policy = load_policy(path, arch="x86_64")
    count = len(policy.rules)
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
print(elapsed, cpu, count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_conditional(path: str, n: int) -> None:
    head = {"defaultAction": "SCMP_ACT_KILL_PROCESS", "architectures": ["SCMP_ARCH_X86_64"]}
    entries = (json.dumps({"names": [SYSCALLS[i % len(SYSCALLS)]], **ACTIONS[i % len(ACTIONS)],
                           "args": [{"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]}) for i in range(n))
    _write(path, head, entries)


def write_unconditional(path: str, n: int) -> None:
    entries = (json.dumps({"names": [UNCONDITIONAL[i % len(UNCONDITIONAL)]], "action": "SCMP_ACT_ALLOW"})
               for i in range(n))
    _write(path, {"defaultAction": "SCMP_ACT_ERRNO"}, entries)


def _write(path: str, head: dict, entries) -> None:
    """Written entry by entry: this process stays small, so its children's ru_maxrss (which
    counts the parent's memory at fork time) measures only them."""
    with open(path, "w") as fh:
        fh.write(json.dumps(head)[:-1] + ', "syscalls": [\n')
        for i, entry in enumerate(entries):
            fh.write(("" if i == 0 else ",\n") + entry)
        fh.write("\n]}\n")


def run_child(mode: str, path: str, src: str) -> tuple[float, float, int, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, src, mode, path],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr}")
    elapsed, cpu, count, maxrss = out.stdout.split()
    return float(elapsed), float(cpu), int(count), int(maxrss)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="5000,20000,200000", help="conditional entry counts to time")
    ap.add_argument("--rules", type=int, default=1_000_000, help="unconditional entries for the memory test (0: skip)")
    ap.add_argument("--src", default=os.path.join(ROOT, "src"), help="the sysgate sources to measure (to compare)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",") if s]:
            path = os.path.join(tmp, f"cond{n}.json")
            write_conditional(path, n)
            elapsed, cpu, rules, maxrss = run_child("load", path, args.src)
            print(f"{n:>9,} conditional entries: load {elapsed:7.2f} s ({cpu:.2f} s CPU), {rules:,} rules, "
                  f"peak RSS {maxrss / 1024:4.0f} MiB")
        if args.rules:
            path = os.path.join(tmp, "uncond.json")
            write_unconditional(path, args.rules)
            size = os.path.getsize(path)
            _, _, _, base = run_child("read", path, args.src)
            elapsed, cpu, rules, maxrss = run_child("load", path, args.src)
            print(f"{args.rules:>9,} unconditional entries ({size / 2**20:.0f} MiB of JSON): load {elapsed:.2f} s "
                  f"({cpu:.2f} s CPU), "
                  f"{rules} rules, peak RSS {maxrss / 1024:.0f} MiB (reading the file alone: {base / 1024:.0f} MiB)")
            path = os.path.join(tmp, "uncond.policy")
            with open(path, "w") as fh:
                fh.write("default: errno(EPERM)\n")
                fh.writelines(f"{UNCONDITIONAL[i % len(UNCONDITIONAL)]}: allow\n" for i in range(args.rules))
            size = os.path.getsize(path)
            _, _, _, base = run_child("read", path, args.src)
            elapsed, cpu, rules, maxrss = run_child("load", path, args.src)
            print(f"{args.rules:>9,} unconditional text rules ({size / 2**20:.0f} MiB of text): load {elapsed:.2f} s "
                  f"({cpu:.2f} s CPU), {rules:,} rules, peak RSS {maxrss / 1024:.0f} MiB (reading the file alone: "
                  f"{base / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
