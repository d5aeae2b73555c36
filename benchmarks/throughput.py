"""Notifications per second with many target threads: the C loop vs sysgate with 1..N worker processes.

One C target (benchmarks/c/target.c) runs T threads (default 64), each calling getppid
--calls times under a filter that notifies getppid, all released together; it reports the
wall time from the release to the last join, so every supervisor is timed the same way:

  c          benchmarks/c/loop.c: one thread, poll + RECV + SEND, synchronous wake-ups
  sysgate/k  Supervisor(processes=k) with a trivial handler returning a Reply
             (k = 1 is the ordinary in-process loop; k > 1 forks k workers)

Runs are interleaved (c, sysgate/1, sysgate/2, ... then again) and repeated; medians are
reported, with each run's value. CPU time is measured too (the target reports its own;
the rest of what this process and its children used is the supervisor's): microseconds of
CPU per notification on each side tell what bounds the rate, since targets and
supervisors share the machine's CPUs. Exit status 1 when sysgate's best median is below
1.0x the C loop's (the goal of issue #15), or a run did not answer every call.

    python benchmarks/throughput.py [--threads 64] [--calls 3000] [--max-processes 4] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from notify import compile_c, notify_getppid       # noqa: E402  (benchmarks/notify.py)
from sysgate.process import launch                  # noqa: E402
from sysgate.supervisor import Reply, Supervisor    # noqa: E402


class Meter:
    """CPU seconds used by this benchmark (this process and its reaped children) and by the
    whole machine (/proc/stat), from start to :meth:`result`: the difference is what other
    processes took while the run went on (a shared machine)."""

    def __init__(self):
        self.wall, self.own, self.machine = time.monotonic(), _own_cpu(), _machine_cpu()

    def result(self, report: str, calls: int) -> "Result":
        wall = time.monotonic() - self.wall
        own = _own_cpu() - self.own
        return Result(report, calls, own, max(0.0, (_machine_cpu() - self.machine - own) / wall))


class Result:
    """One run: notifications/s (from the target's own clock), CPU µs per notification on each
    side, and how many CPUs other processes kept busy meanwhile."""

    def __init__(self, report: str, calls: int, cpu_total_s: float, others: float):
        got, ns_per_call, bad, target_cpu_ns = report.split()
        if int(got) != calls or int(bad):
            raise RuntimeError(f"target reported {report.strip()!r}, wanted {calls} calls all answered 42")
        self.rate = 1e9 / float(ns_per_call)
        self.target_cpu_us = float(target_cpu_ns) / 1000 / calls
        self.supervisor_cpu_us = max(0.0, cpu_total_s * 1e6 / calls - self.target_cpu_us)
        self.others = others


def _own_cpu() -> float:
    """CPU seconds of this process and of its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> float:
    """Busy CPU seconds of the whole machine since boot (every field of /proc/stat's cpu line
    but idle and iowait; guest time is already counted in user)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / _TICK


def run_c(bins, threads: int, calls: int) -> Result:
    sup_end, tgt_end = socket.socketpair()

    def on_fd3(sock):
        return lambda: os.dup2(sock.fileno(), 3)
    meter = Meter()
    loop = subprocess.Popen([bins["loop"]], pass_fds=(3,), preexec_fn=on_fd3(sup_end), stdout=subprocess.PIPE)
    target = subprocess.Popen([bins["target"], str(calls), "install", str(threads)], pass_fds=(3,),
                              preexec_fn=on_fd3(tgt_end), stdout=subprocess.PIPE)
    sup_end.close()
    tgt_end.close()
    out = target.communicate(timeout=600)[0].decode()
    loop.communicate(timeout=60)
    return meter.result(out, threads * calls)


def run_sysgate(bins, threads: int, calls: int, processes: int) -> Result:
    r, w = os.pipe()
    meter = Meter()
    try:
        target = launch.spawn([bins["target"], str(calls), "-", str(threads)], notify_getppid(), stdout=w)
    finally:
        os.close(w)
    answer = Reply.value(42)
    with Supervisor(processes=processes) as sup:
        sup.on("getppid", lambda notification: answer)
        sup.add_target(target)
        if not sup.run_until_idle(600):
            raise RuntimeError("sysgate did not finish within 600 s")
    out = os.read(r, 256).decode()
    os.close(r)
    target.close()
    if sup.stats.received != threads * calls:
        raise RuntimeError(f"sysgate received {sup.stats.received} of {threads * calls} notifications")
    return meter.result(out, threads * calls)


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=64, help="target threads (default 64)")
    ap.add_argument("--calls", type=int, default=3000, help="getppid calls per thread (default 3000)")
    ap.add_argument("--max-processes", type=int, default=4, help="sysgate runs with 1..N processes (default 4)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds; medians reported (default 5)")
    args = ap.parse_args(argv)
    if not shutil.which("gcc"):
        print("gcc is needed to build the C target and loop", file=sys.stderr)
        return 2
    cpus = len(os.sched_getaffinity(0))
    names = ["c"] + [f"sysgate/{k}" for k in range(1, args.max_processes + 1)]
    runs: dict[str, list[Result]] = {name: [] for name in names}
    load_before = loadavg()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        bins = compile_c(work)
        for _ in range(args.repeat):   # interleaved, so drifting machine load hits all alike
            runs["c"].append(run_c(bins, args.threads, args.calls))
            for k in range(1, args.max_processes + 1):
                runs[f"sysgate/{k}"].append(run_sysgate(bins, args.threads, args.calls, k))
    med = {name: statistics.median(r.rate for r in results) for name, results in runs.items()}
    cpu = {name: (statistics.median(r.supervisor_cpu_us for r in results),
                  statistics.median(r.target_cpu_us for r in results)) for name, results in runs.items()}
    others = statistics.median(r.others for results in runs.values() for r in results)
    print(f"throughput: {args.threads} target threads x {args.calls} getppid calls, {cpus} CPUs, "
          f"median of {args.repeat} interleaved rounds ({time.monotonic() - start:.0f} s; "
          f"load average before {load_before}, after {loadavg()}; other processes kept {others:.2f} CPUs busy)")
    print(f"  {'supervisor':12s} {'notif/s':>9s}  {'vs C':>5s}   {'CPU µs/notif: supervisor':>24s} {'target':>7s}"
          f"   runs (k notif/s)")
    for name in names:
        sup_cpu, tgt_cpu = cpu[name]
        print(f"  {name:12s} {med[name]:9.0f}  {med[name] / med['c']:4.2f}x   {sup_cpu:24.2f} {tgt_cpu:7.2f}   "
              + " ".join(f"{r.rate / 1000:.0f}" for r in runs[name]))
    best = max(names[1:], key=med.get)
    ratio = med[best] / med["c"]
    print("scaling: " + ", ".join(f"{k} -> {med[f'sysgate/{k}'] / med['sysgate/1']:.2f}x"
                                   for k in range(1, args.max_processes + 1)) + " of sysgate/1")
    print(f"best sysgate ({best}) / C = {ratio:.2f}   (target >= 1.0)")
    if ratio < 1.0:
        sup_cpu, tgt_cpu = cpu[best]
        c_sup, c_tgt = cpu["c"]
        free = max(0.0, cpus - others)
        k = int(best.split("/")[1])

        def bound(cpus_free: float, sup: float, tgt: float, loops: int) -> float:
            """notif/s the CPU costs allow: the supervisor's processes can each use one CPU at most."""
            return min(loops * 1e6 / sup, cpus_free * 1e6 / (sup + tgt))

        print(f"  missed. Targets and supervisors share the CPUs. Per notification {best} costs {sup_cpu:.2f} µs "
              f"of supervisor CPU and {tgt_cpu:.2f} µs in the target; the C loop {c_sup:.2f} and {c_tgt:.2f} µs.")
        here_s, here_c = bound(free, sup_cpu, tgt_cpu, k), bound(free, c_sup, c_tgt, 1)
        idle_s, idle_c = bound(cpus, sup_cpu, tgt_cpu, k), bound(cpus, c_sup, c_tgt, 1)
        print(f"  With the {free:.2f} CPUs other processes left, those costs allow {here_s:.0f} notif/s for {best} "
              f"and {here_c:.0f} for C (measured: {med[best]:.0f}, {med['c']:.0f}); on {cpus} idle CPUs "
              f"{idle_s:.0f} and {idle_c:.0f} ({idle_s / idle_c:.2f}x). sysgate spends {sup_cpu / c_sup:.1f}x the C "
              f"loop's supervisor CPU per notification (sysgate/1: {cpu['sysgate/1'][0] / c_sup:.1f}x): workers on "
              "several CPUs also make both sides pay for sharing one listener across CPUs.")
    return 0 if ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
