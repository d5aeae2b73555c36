"""Start-up and compile wall time of ``sysgate`` commands against references, as a user runs them.

One run, interleaved rounds (one of each command per round), medians of ROUNDS (the machine is shared):

* references: ``python3 -c pass`` and ``python3 -S -c pass`` (this interpreter), and libseccomp's
  Python binding (``/usr/bin/python3``, Debian python3-seccomp) building podman's default profile
  (/usr/share/containers/seccomp.json, for x86_64, i386 and x32) as a ``seccomp.SyscallFilter`` and
  exporting the BPF, CTL_OPTIMIZE=2 (its rules already resolved to a JSON job by sysgate, so it does
  less work than ``sysgate compile``, which reads the OCI file itself);
* ``sysgate --version``, ``sysgate run --policy P -- /bin/true`` (P a two-line text policy) and
  ``sysgate compile PROFILE --arch x86_64,i386,x32 -o FILE``, each twice: without bytecode caching
  (a copy of the sources under PYTHONDONTWRITEBYTECODE=1, as in this environment: every module is
  compiled from source at every start) and with it (PYTHONPYCACHEPREFIX, filled by a warm-up run);
* ``run`` also without sysgate's filter cache (``SYSGATE_NO_CACHE=1``: the policy is parsed and
  compiled at every start). With it (the default; a cache directory of this run's own, filled by the
  warm-up) an unchanged policy's filter is launched without compiling. ``compile`` never uses that
  cache: it always compiles.

Targets, on the cached .pyc runs: ``run`` (filter cache on) <= 3x ``python3 -c pass``; ``compile``
<= 1.0x libseccomp. The other ratios are printed for comparison. Exit status 1 when a target is missed.
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
RUN_TARGET = 3.0        # sysgate run / python3 -c pass
COMPILE_TARGET = 1.0    # sysgate compile / libseccomp
POLICY = "default: allow\nptrace: errno(EPERM)\n"
#: what the ``sysgate`` console script runs
SYSGATE = [sys.executable, "-c", "import sys; from sysgate.cli import command; sys.exit(command())"]


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
        small = os.path.join(tmp, "small.policy")
        with open(small, "w") as f:
            f.write(POLICY)
        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "SYSGATE_NO_CACHE")}
        base_env["XDG_CACHE_HOME"] = os.path.join(tmp, "xdg-cache")     # sysgate's filter cache: this run's own
        cold_src, warm_src = source_copy(os.path.join(tmp, "cold")), source_copy(os.path.join(tmp, "warm"))
        envs = {"no .pyc": {**base_env, "PYTHONPATH": cold_src, "PYTHONDONTWRITEBYTECODE": "1"},
                "cached .pyc": {**base_env, "PYTHONPATH": warm_src,
                                "PYTHONPYCACHEPREFIX": os.path.join(tmp, "pycache")}}
        out = os.path.join(tmp, "out.bpf")
        sysgate_args = {"--version": ["--version"],
                        "run": ["run", "--policy", small, "--", "/bin/true"],
                        "compile": ["compile", PROFILE, "--arch", ",".join(ARCHES), "-o", out]}
        commands = {"python3 -c pass": ([sys.executable, "-c", "pass"], base_env, None),
                    "python3 -S -c pass": ([sys.executable, "-S", "-c", "pass"], base_env, None),
                    "libseccomp (python3-seccomp)": ([baseline.SYSTEM_PYTHON, "-c", baseline._CHILD], base_env, job)}
        for sub, args in sysgate_args.items():
            for cache, env in envs.items():
                commands[f"sysgate {sub}, {cache}"] = (SYSGATE + args, env, None)
                if sub == "run":
                    commands[f"sysgate {sub}, {cache}, no filter cache"] = (SYSGATE + args,
                                                                            {**env, "SYSGATE_NO_CACHE": "1"}, None)
        for argv, env, stdin in commands.values():  # warm-up: page cache, and the cached copy's .pyc
            wall(argv, env, stdin)
        if any(name.endswith(".pyc") for _, _, files in os.walk(cold_src) for name in files):
            raise SystemExit("the uncached copy got bytecode")
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(ROUNDS):
            for name, (argv, env, stdin) in commands.items():
                times[name].append(wall(argv, env, stdin))
    medians = {name: statistics.median(t) for name, t in times.items()}
    python, libseccomp = medians["python3 -c pass"], medians["libseccomp (python3-seccomp)"]
    print(f"== wall time per process, median of {ROUNDS} interleaved rounds; compile: {PROFILE} for "
          f"{', '.join(ARCHES)}")
    print(f"{'command':50} {'median':>8} {'min':>8} {'max':>8} {'/python':>8} {'/libseccomp':>11}")
    for name, t in times.items():
        print(f"{name:50} {medians[name] * 1000:6.1f}ms {min(t) * 1000:6.1f}ms {max(t) * 1000:6.1f}ms "
              f"{medians[name] / python:7.2f}x {medians[name] / libseccomp:10.2f}x")
    missed = []
    for sub, reference, ref_name, target in (("run", python, "python3 -c pass", RUN_TARGET),
                                             ("compile", libseccomp, "libseccomp", COMPILE_TARGET)):
        cached = medians[f"sysgate {sub}, cached .pyc"] / reference
        uncached = medians[f"sysgate {sub}, no .pyc"] / reference
        ok = cached <= target
        extra = ""
        if sub == "run":
            plain = medians["sysgate run, cached .pyc, no filter cache"] / reference
            plain_cold = medians["sysgate run, no .pyc, no filter cache"] / reference
            extra = f"; without the filter cache {plain:.2f}x cached .pyc, {plain_cold:.2f}x without .pyc"
        print(f"sysgate {sub} / {ref_name}: {cached:.2f}x cached (target <= {target}x: {'met' if ok else 'MISSED'}), "
              f"{uncached:.2f}x without .pyc{extra}")
        if not ok:
            missed.append(sub)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
