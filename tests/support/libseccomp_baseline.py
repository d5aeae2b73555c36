"""libseccomp as a comparison baseline for the compiler's tests and benchmark.

The Debian ``python3-seccomp`` binding lives in the system interpreter, so
policies are sent as JSON to ONE ``/usr/bin/python3`` subprocess per batch, which
builds a ``seccomp.SyscallFilter`` per policy and returns the exported BPF.
Only policies libseccomp can express are accepted: rules whose condition is a
comparison or a conjunction of 64-bit comparisons.
"""
from __future__ import annotations

import json
import os
import subprocess

from sysgate.bpf import insn as bpf
from sysgate.policy.model import And, Cmp, Policy

SYSTEM_PYTHON = "/usr/bin/python3"

OPS = {"==": "EQ", "!=": "NE", "<": "LT", "<=": "LE", ">": "GT", ">=": "GE", "&==": "MASKED_EQ"}
ARCHES = {"x86_64": "X86_64", "i386": "X86", "x32": "X32", "aarch64": "AARCH64", "arm": "ARM",
          "riscv64": "RISCV64", "s390x": "S390X", "s390": "S390", "ppc64le": "PPC64LE", "ppc64": "PPC64"}

_CHILD = r"""
import json, os, sys, tempfile
import seccomp

def signed(v):  # the binding takes actions as C ints
    return v - (1 << 32) if v >= 1 << 31 else v

out = []
for job in json.load(sys.stdin):
    try:
        f = seccomp.SyscallFilter(signed(job["default"]))
        native = seccomp.system_arch() & 0xFFFFFFFF
        wanted = [getattr(seccomp.Arch, a) for a in job["arches"]]
        if native not in [a & 0xFFFFFFFF for a in wanted]:
            f.remove_arch(seccomp.Arch.NATIVE)  # first: libseccomp refuses to mix byte orders (EDOM)
        for arch in wanted:
            if arch & 0xFFFFFFFF != native:
                f.add_arch(arch)
        f.set_attr(seccomp.Attr.ACT_BADARCH, signed(job["bad_arch"]))
        f.set_attr(seccomp.Attr.CTL_OPTIMIZE, job["optimize"])
        skipped = []
        for rule in job["rules"]:
            args = [seccomp.Arg(i, getattr(seccomp, op), a, b) for i, op, a, b in rule["args"]]
            try:
                f.add_rule(signed(rule["action"]), rule["syscall"], *args)
            except (RuntimeError, ValueError, OSError) as exc:
                skipped.append([rule["syscall"], str(exc)])
        with tempfile.TemporaryFile() as tmp:
            f.export_bpf(tmp)
            tmp.seek(0)
            out.append({"bpf": tmp.read().hex(), "skipped": skipped, "error": None})
    except Exception as exc:
        out.append({"bpf": "", "skipped": [], "error": f"{type(exc).__name__}: {exc}"})
json.dump(out, sys.stdout)
"""


class NotExpressible(ValueError):
    """The policy uses something libseccomp has no equivalent for."""


def available() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True).returncode == 0


def _args(condition) -> list:
    if condition is None:
        return []
    items = condition.items if isinstance(condition, And) else (condition,)
    out = []
    for cmp in items:
        if not isinstance(cmp, Cmp) or cmp.width != 64:
            raise NotExpressible(f"condition {condition!r}")
        if cmp.op == "&==":
            out.append([cmp.arg, OPS[cmp.op], cmp.mask, cmp.value])
        else:
            out.append([cmp.arg, OPS[cmp.op], cmp.value, 0])
    return out


def job(policy: Policy, arches: list[str] | None = None, optimize: int = 2) -> dict:
    """The JSON job for one policy (raises NotExpressible)."""
    return {
        "arches": [ARCHES[a] for a in (arches or policy.arches)],
        "default": policy.default.ret(), "bad_arch": policy.bad_arch.ret(), "optimize": optimize,
        "rules": [{"syscall": r.syscall, "action": r.action.ret(), "args": _args(r.condition)}
                  for r in policy.rules],
    }


def compile_batch(jobs: list[dict]) -> list[dict]:
    """Run libseccomp on every job; each result has ``raw`` (the exported bytes, in the target's
    byte order), ``insns`` (list[Insn], decoded in that order), ``skipped`` and ``error``."""
    proc = subprocess.run([SYSTEM_PYTHON, "-c", _CHILD], input=json.dumps(jobs), capture_output=True,
                          text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"libseccomp helper failed: {proc.stderr.strip()}")
    results = json.loads(proc.stdout)
    ours = {name: arch for arch, name in ARCHES.items()}
    for job, result in zip(jobs, results):
        result["raw"] = bytes.fromhex(result["bpf"])
        order = bpf.byte_order(ours[job["arches"][0]])
        result["insns"] = bpf.unpack(result["raw"], order) if result["raw"] else []
    return results
