"""Wall time of real workloads under sysgate's fs sandbox, notify alone vs with Landlock (issues 14, 15).

Workloads (each one ``sh -c SCRIPT``, so every configuration runs the same process tree):

* tar     ``tar cf /dev/null`` over a generated tree of 2000 small files. GNU tar does not read
          the files when the archive is /dev/null: this is a walk of lstat/getdents, every one
          a path-taking syscall;
* cat     ``find TREE -type f | xargs cat > /dev/null`` over ~2600 files (an open per file);
* python  ``/usr/bin/python3 -B -c 'import json, email, http.client'`` (the system
          interpreter: ``python3`` on PATH may be a pyenv shim, a shell script).

Scaled so that the work, not process start-up, is measured: each script repeats its workload
N times in one shell loop, N chosen per workload so that bare takes >= WORKLOAD_BARE_SECONDS
(default 1; one pass of tar is 5-20 ms, of cat and python ~60 ms, while sysgate's own start-up
is ~0.4 s). N is printed.

Configurations, each printed as a ratio to bare, measured in the same run:

* bare;
* strace    ``strace -f -o /dev/null`` (a ptrace stop per syscall, for reference);
* notify    ``sysgate run --sandbox --landlock=off --handlers H``: the fs notify handler alone
            decides every path syscall;
* landlock  ``sysgate run --sandbox --landlock=on --handlers H``: H's rules are plain allow rules
            on directories, which Landlock expresses exactly, so plain opens, exec and chdir are
            decided by Landlock and no longer notified (stat, getdents, access... still are:
            Landlock cannot check them);
* landlock-stat  the same with ``--landlock-stat``: stat/access/readlink/statfs/getdents are not
            checked either (metadata of paths outside the rules becomes visible; opening them is
            still refused by Landlock);
* partial   ``sysgate run --policy P --handlers H --force --landlock=off`` with only openat
            routed to notify(fs) (the old partial policy; not a sandbox), for comparison.

H allows reading the tree and the system directories. Every configuration is first run
once with its output counted (tar to a pipe, cat's bytes, the modules' files) and must
exit 0 with the same output as bare; then one pass of each workload runs under sysgate's
configurations with --record, to count the notifications. Then ROUNDS rounds, each timing every
(workload, configuration) once in turn (time.perf_counter around subprocess.run) and sysgate's
start-up (``sysgate run --sandbox -- true``); the median of each is reported, as a ratio to bare
with everything included and, for sysgate's configurations, net of the median start-up. Exit
status 1 when a target is missed (on the ratios with start-up included): notify <= 4x bare
(every workload), landlock and landlock-stat <= 1.5x bare (tar and cat).

The notify target has floors: each notification stops the target for a round trip, so one pass
takes at least ``bare + notifications x round trip`` (in series for tar and python, one process
each; cat's find and cat overlap a little). Four round trips are measured in this run, as
benchmarks/notify.py and benchmarks/fsopen.py do, and printed as ratios beside the target:

* ``C notify`` / ``sysgate notify``: answered without handling (RECV + SEND): the C loop
  (benchmarks/c/loop.c: no supervisor answers faster) and sysgate's Supervisor with a handler
  that only returns a reply (what sysgate costs before any fs work);
* ``C fs`` / ``Python fs``: one handled ``openat`` in fsopen's floor loops (read the path, the
  thread's ids and root, ID_VALID, openat2 in that root, ADDFD|SEND), in C and in minimal Python:
  an estimate of a handled call (a ``stat`` swaps the open and ADDFD for a stat and a write of the
  result, of about the same cost), since every notification here is a path syscall to decide.

Where a floor is above 4x, so is every supervisor of that kind on this machine, however lean.

    python benchmarks/workloads.py          # WORKLOAD_ROUNDS (default 3), WORKLOAD_BARE_SECONDS (default 1.0)
    WORKLOAD_CONFIGS=strace,landlock-stat python benchmarks/workloads.py    # only these (and bare)

At 1 s of bare work, notify and landlock take minutes per run (tar: ~1 s per pass against ~5 ms):
WORKLOAD_CONFIGS lets the fast configurations be measured at a larger scale than the slow ones.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
sys.path.insert(0, SRC)

import fsopen                                                       # noqa: E402  (benchmarks/fsopen.py)
import notify                                                       # noqa: E402  (benchmarks/notify.py)
from sysgate.sandbox.landlock import plan_for_policy, without_open_routes  # noqa: E402
from sysgate.sandbox.base import apply_base, default_policy       # noqa: E402

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
MODULES = "import json, email, http.client"
TARGETS = {("notify", "tar"): 4.0, ("notify", "cat"): 4.0, ("notify", "python"): 4.0,
           ("landlock", "tar"): 1.5, ("landlock", "cat"): 1.5,
           ("landlock-stat", "tar"): 1.5, ("landlock-stat", "cat"): 1.5}
PARTIAL_POLICY = "default: allow\nopenat: notify(fs)\n"
#: Round trips per run of each floor loop (the floors of the notify configuration).
ROUND_TRIPS = 20000


def floor_round_trips(work: str) -> dict[str, list[float]]:
    """µs per call of the four floor loops (see the module docstring), 3 interleaved runs each."""
    bins = notify.compile_c(work, ("target", "loop", "opener", "fsfloor"), static=("opener",))
    data = os.path.join(work, "floor")
    os.mkdir(data)
    path = os.path.join(data, "allowed")
    with open(path, "w") as f:
        f.write("x")
    trips: dict[str, list[float]] = {"C notify": [], "sysgate notify": [], "C fs": [], "Python fs": []}
    for _ in range(3):
        trips["C notify"].append(notify.run_c(bins, ROUND_TRIPS))
        trips["sysgate notify"].append(notify.run_sysgate(bins, ROUND_TRIPS, "reply"))
        trips["C fs"].append(fsopen.run_c(bins, ROUND_TRIPS, path))
        trips["Python fs"].append(fsopen.run_python(bins, ROUND_TRIPS, path))
    return trips


def make_trees(root: str) -> tuple[str, str]:
    """The tar tree (2000 files in 40 directories) and the cat tree (2600 in 52), small files."""
    trees = []
    for name, dirs in (("tar", 40), ("cat", 52)):
        top = os.path.join(root, name)
        for d in range(dirs):
            os.makedirs(os.path.join(top, f"d{d:02d}"))
            for f in range(50):
                with open(os.path.join(top, f"d{d:02d}", f"f{f:02d}.txt"), "w") as out:
                    out.write(f"{name} {d} {f}\n" * (1 + f % 16))
        trees.append(top)
    return trees[0], trees[1]


def workloads(tar_tree: str, cat_tree: str, repeats: dict[str, int] | None = None) -> dict[str, tuple[str, str]]:
    """name -> (timed script, repeating its workload ``repeats[name]`` times (default 1), check
    script printing what must equal bare's output)."""
    tar_dir, tar_name = map(shlex.quote, os.path.split(tar_tree))
    cat_q = shlex.quote(cat_tree)
    py = shlex.quote(PYTHON)
    show = MODULES + "; print(json.__file__, email.__file__, http.client.__file__)"
    once = {"tar": f"tar cf /dev/null -C {tar_dir} {tar_name}",
            "cat": f"find {cat_q} -type f | xargs cat > /dev/null",
            "python": f"{py} -B -c {shlex.quote(MODULES)}"}
    checks = {"tar": f"tar cf - -C {tar_dir} {tar_name} | wc -c; tar cf /dev/null -C {tar_dir} {tar_name} && echo ok",
              "cat": f"find {cat_q} -type f | xargs cat | wc -c",
              "python": f"{py} -B -c {shlex.quote(show)}"}
    return {name: (repeated(script, (repeats or {}).get(name, 1)), checks[name]) for name, script in once.items()}


def repeated(script: str, times: int) -> str:
    """``script`` run ``times`` times in one shell loop, stopping at the first failure."""
    if times == 1:
        return script
    return f"i=0; while [ $i -lt {times} ]; do {{ {script}; }} || exit 1; i=$((i+1)); done"


def handlers_config(root: str) -> dict:
    """Plain allow rules on directories: what Landlock expresses exactly."""
    dirs = ["/usr", "/etc", "/lib", "/lib64", "/bin", "/sbin", root]
    return {"fs": {"rules": [f"allow read {d}/**" for d in dirs if os.path.exists(d)]
                   + ["allow rw /dev/null"]}}


def check_landlock_exact(config: dict) -> str | None:
    """Why the landlock configuration would not take opens off the notify path (None: it does)."""
    policy = apply_base(default_policy(), ["fs"])
    plan = plan_for_policy(policy, config, mode="on")
    if plan is None or plan.layers.get("fs") != "exact" or without_open_routes(policy, plan) is None:
        return f"the fs rules are not exact for Landlock: {plan and plan.layers} {plan and plan.notes}"
    return None


def configurations(handlers: str, policy: str) -> dict[str, list[str]]:
    sysgate = [sys.executable, "-m", "sysgate", "run"]
    return {
        "bare": [],
        "strace": ["strace", "-f", "-o", "/dev/null"],
        "notify": [*sysgate, "--sandbox", "--landlock=off", "--handlers", handlers, "--"],
        "landlock": [*sysgate, "--sandbox", "--landlock=on", "--handlers", handlers, "--"],
        "landlock-stat": [*sysgate, "--sandbox", "--landlock=on", "--landlock-stat", "--handlers", handlers, "--"],
        "partial": [*sysgate, "--policy", policy, "--handlers", handlers, "--force", "--landlock=off", "--"],
    }


def run(argv: list[str], env: dict, cwd: str, capture: bool = False) -> subprocess.CompletedProcess:
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=900)


def check(configs, loads, env, cwd) -> None:
    """Run every check script under every configuration; abort (exit 2, one line) unless each
    exits 0 with bare's (non-empty) output."""
    for wname, (_, script) in loads.items():
        expected = None
        for cname, prefix in configs.items():
            res = run([*prefix, "sh", "-c", script], env, cwd, capture=True)
            out = res.stdout.decode()
            if expected is None:
                expected = out
            if res.returncode or out != expected or not out.strip():
                err = res.stderr.decode().strip().splitlines()[-1:] or [""]
                print(f"workloads: {cname}/{wname} does not run the workload correctly (exit {res.returncode}, "
                      f"output {out.split()!r} vs bare {expected.split()!r}): {err[0]}", file=sys.stderr)
                sys.exit(2)


def count(configs, loads, env, cwd, work) -> dict[tuple[str, str], int]:
    """Notifications of one pass of each timed script under each sysgate configuration (--record)."""
    counts = {}
    for wname, (script, _) in loads.items():
        for cname, prefix in configs.items():
            if prefix[:1] != [sys.executable]:
                continue
            record = os.path.join(work, f"{cname}-{wname}.jsonl")
            run([*prefix[:4], "--record", record, *prefix[4:], "sh", "-c", script], env, cwd)
            with open(record) as f:
                counts[cname, wname] = sum(1 for _ in f) - 1    # the first line is the header
    return counts


def calibrate(tar_tree, cat_tree, env, cwd, seconds: float) -> dict[str, int]:
    """Per workload, how many passes make bare take >= ``seconds``: from one pass (median of 3),
    then corrected (twice at most) by timing the loop itself (a pass in a loop is cheaper)."""
    def bare(script: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run(["sh", "-c", script], env, cwd)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    repeats = {w: max(1, math.ceil(seconds / bare(script))) for w, (script, _) in workloads(tar_tree, cat_tree).items()}
    for _ in range(2):
        for wname, (script, _) in workloads(tar_tree, cat_tree, repeats).items():
            took = bare(script)
            if took < seconds:
                repeats[wname] = math.ceil(repeats[wname] * seconds / took * 1.05)
    return repeats


def main() -> int:
    rounds = int(os.environ.get("WORKLOAD_ROUNDS", "3"))
    bare_seconds = float(os.environ.get("WORKLOAD_BARE_SECONDS", "1.0"))
    chosen = set(filter(None, os.environ.get("WORKLOAD_CONFIGS", "").split(",")))
    if not shutil.which("strace") or not PYTHON:
        print("workloads: strace and python3 are needed", file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONDONTWRITEBYTECODE="1")
    with tempfile.TemporaryDirectory(prefix="sysgate-workloads-") as work:
        tar_tree, cat_tree = make_trees(work)
        config = handlers_config(work)
        why = check_landlock_exact(config)
        if why:
            print(f"workloads: {why}", file=sys.stderr)
            return 2
        handlers = os.path.join(work, "handlers.json")
        with open(handlers, "w") as f:
            json.dump(config, f)
        policy = os.path.join(work, "partial.policy")
        with open(policy, "w") as f:
            f.write(PARTIAL_POLICY)
        configs = configurations(handlers, policy)
        if chosen:
            configs = {name: prefix for name, prefix in configs.items() if name in chosen or name == "bare"}
        single = workloads(tar_tree, cat_tree)
        check(configs, single, env, work)
        counts = count(configs, single, env, work, work)
        repeats = calibrate(tar_tree, cat_tree, env, work, bare_seconds)
        loads = workloads(tar_tree, cat_tree, repeats)

        round_trips = floor_round_trips(work) if "notify" in configs else {}
        times: dict[tuple[str, str], list[float]] = {}
        startup: list[float] = []
        for r in range(rounds):     # interleaved, so drifting machine load hits all alike
            for wname, (script, _) in loads.items():
                names = list(configs)
                for cname in names[r % len(names):] + names[:r % len(names)]:
                    start = time.perf_counter()
                    res = run([*configs[cname], "sh", "-c", script], env, work)
                    times.setdefault((cname, wname), []).append(time.perf_counter() - start)
                    if res.returncode:
                        print(f"workloads: {cname}/{wname} exited {res.returncode} in round {r + 1}", file=sys.stderr)
                        return 2
            start = time.perf_counter()
            run([*configurations(handlers, policy)["landlock"], "true"], env, work)
            startup.append(time.perf_counter() - start)

    med = {k: statistics.median(v) for k, v in times.items()}
    up = statistics.median(startup)
    print(f"workloads: median of {rounds} rounds, interleaved, wall time of subprocess.run "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  each workload repeated in one shell loop so that bare takes >= {bare_seconds} s "
          f"(WORKLOAD_BARE_SECONDS): " + ", ".join(
              f"{w} {n}x ({med['bare', w] / n * 1000:.0f} ms a pass)" for w, n in repeats.items()))
    print(f"  sysgate start-up (sysgate run --sandbox -- true): {up * 1000:.0f} ms, included in every sysgate "
          f"configuration's time and first ratio; the second ratio is net of it")
    ok = True
    print(f"  {'':20s}" + "".join(f" {w:>33s}" for w in loads))
    for cname, prefix in configs.items():
        cells = []
        for wname in loads:
            value, ratio = med[cname, wname], med[cname, wname] / med["bare", wname]
            net = f"{(value - up) / med['bare', wname]:6.2f}x" if prefix[:1] == [sys.executable] else ""
            notes = f"{counts[cname, wname]}n" if (cname, wname) in counts else ""
            cells.append(f"{value * 1000:7.0f} ms {ratio:6.2f}x {net:>7s} {notes:>6s}")
        print(f"  {cname:20s}" + "".join(f" {c:>33s}" for c in cells))
    print("  (ms and the first ratio: everything included; second ratio: net of sysgate's start-up; "
          "Nn: notifications of one pass, counted with sysgate run --record)")
    floors: dict[str, dict[str, float]] = {}
    for name, trips in round_trips.items():
        trip = statistics.median(trips) / 1e6
        floors[name] = {w: 1 + counts["notify", w] * trip * repeats[w] / med["bare", w] for w in loads}
        print(f"  {name + ' floor':20s}" + "".join(f" {'':>10s} {floors[name][w]:6.2f}x {'':>7s} {'':>6s}"
                                                   for w in loads) + f"   ({trip * 1e6:.1f} µs a call)")
    if floors:
        print(f"  (floors: bare + notify's notifications x a round trip, median of 3 runs of {ROUND_TRIPS}: notify, "
              f"answered unhandled (C loop, sysgate with a trivial handler); fs, one handled openat in fsopen's C and "
              f"minimal Python floor loops)")
    for (cname, wname), target in TARGETS.items():
        if cname not in configs:
            continue
        ratio = med[cname, wname] / med["bare", wname]
        met = ratio <= target
        ok &= met
        above = [f"{name} {f[wname]:.2f}x" for name, f in floors.items() if cname == "notify" and f[wname] > target]
        below = f"; floors above the target: {', '.join(above)}" if above else ""
        print(f"{cname:13s} / bare, {wname:6s} = {ratio:6.2f}   (target <= {target}; net of start-up "
              f"{(med[cname, wname] - up) / med['bare', wname]:.2f}{below}){'' if met else '   MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
