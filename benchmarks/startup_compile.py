"""Wall time of ``sysgate compile`` vs libseccomp's Python binding, as a user runs them.

Both compile podman's default profile (/usr/share/containers/seccomp.json) for
x86_64, i386 and x32 in a fresh process:

* libseccomp: ``/usr/bin/python3 -c ...`` (the Debian python3-seccomp binding)
  builds a ``seccomp.SyscallFilter`` from the profile's rules (already resolved
  to a JSON job by sysgate, so it does less work than ``sysgate compile``, which
  reads the OCI file itself) and exports the BPF, CTL_OPTIMIZE=2;
* ``sysgate compile PROFILE --arch x86_64,i386,x32 -o FILE`` from a copy of the
  sources, twice: without bytecode caching (no ``__pycache__``, as under this
  environment's PYTHONDONTWRITEBYTECODE=1: every module is compiled from source)
  and with it (a warm-up run wrote the ``.pyc`` files).

The runs are interleaved (one of each per round) and the median of ROUNDS is
reported, since the machine is shared. Exit status 1 when the cached ``sysgate
compile`` is slower than libseccomp (target: <= 1.0x); the uncached ratio is
printed only.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "src"))

from support import libseccomp_baseline as baseline  # noqa: E402

from sysgate.policy_loader import load_policy  # noqa: E402

PROFILE = "/usr/share/containers/seccomp.json"
ARCHES = ["x86_64", "i386", "x32"]
ROUNDS = int(os.environ.get("ROUNDS", "11"))
TARGET = 1.0


def wall(argv: list[str], env: dict, stdin_path: str | None = None) -> float:
    with open(stdin_path or os.devnull, "rb") as stdin:
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.decode(errors='replace').strip()}")
    return elapsed


def source_copy(into: str) -> str:
    """A copy of ``src`` without bytecode; returns the directory for PYTHONPATH."""
    dest = os.path.join(into, "src")
    shutil.copytree(os.path.join(ROOT, "src"), dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def main() -> int:
    if not baseline.available() or not os.path.exists(PROFILE):
        print(f"libseccomp baseline or {PROFILE} unavailable")
        return 0
    policy = load_policy(PROFILE, arch=ARCHES[0])
    with tempfile.TemporaryDirectory(prefix="sysgate-bench-") as tmp:
        job = os.path.join(tmp, "job.json")
        with open(job, "w") as f:
            json.dump([baseline.job(policy, ARCHES, 2)], f)
        base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
        cold_src, warm_src = source_copy(os.path.join(tmp, "cold")), source_copy(os.path.join(tmp, "warm"))
        cold_env = {**base_env, "PYTHONPATH": cold_src, "PYTHONDONTWRITEBYTECODE": "1"}
        warm_env = {**base_env, "PYTHONPATH": warm_src}
        out = os.path.join(tmp, "out.bpf")

        sysgate = [sys.executable, "-m", "sysgate", "compile", PROFILE, "--arch", ",".join(ARCHES), "-o", out]
        commands = {
            "libseccomp (python3-seccomp)": ([baseline.SYSTEM_PYTHON, "-c", baseline._CHILD], base_env, job),
            "sysgate compile, no .pyc": (sysgate, cold_env, None),
            "sysgate compile, cached .pyc": (sysgate, warm_env, None),
        }
        for argv, env, stdin in commands.values():  # warm-up: page cache, and the .pyc of the warm copy
            wall(argv, env, stdin)
        if any(name.endswith(".pyc") for _, _, files in os.walk(cold_src) for name in files):
            raise SystemExit("the uncached copy got bytecode")
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(ROUNDS):
            for name, (argv, env, stdin) in commands.items():
                times[name].append(wall(argv, env, stdin))
    medians = {name: statistics.median(t) for name, t in times.items()}
    reference = medians["libseccomp (python3-seccomp)"]
    print(f"== {PROFILE} for {', '.join(ARCHES)}: wall time per process, median of {ROUNDS} interleaved rounds")
    print(f"{'command':30} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7}")
    for name, t in times.items():
        print(f"{name:30} {medians[name] * 1000:6.1f}ms {min(t) * 1000:6.1f}ms {max(t) * 1000:6.1f}ms "
              f"{medians[name] / reference:6.2f}x")
    ratio = medians["sysgate compile, cached .pyc"] / reference
    print(f"cached sysgate compile / libseccomp: {ratio:.2f}x (target <= {TARGET}x); "
          f"uncached: {medians['sysgate compile, no .pyc'] / reference:.2f}x (informational)")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
