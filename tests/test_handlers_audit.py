"""decode + audit + registry: strace-style text, JSON-lines records, policy routing with a real target."""
from __future__ import annotations

import io
import json
import os

import pytest
from hypothesis import given, strategies as st

from sysgate.errors import SysgateError
from sysgate.handlers import AuditHandler, AuditLog, FsHandler, build_handlers, build_supervisor, decode
from sysgate.handlers.audit import percentile
from sysgate.policy import constants
from sysgate.policy.parser import parse_policy
from sysgate.process import launch
from support.handlers import notify_policy, run

C = constants.table()


def test_flag_decoders():
    assert decode.open_flags(os.O_RDONLY | os.O_CLOEXEC) == "O_RDONLY|O_CLOEXEC"
    assert decode.open_flags(os.O_WRONLY | os.O_CREAT | os.O_TRUNC) == "O_WRONLY|O_CREAT|O_TRUNC"
    assert decode.open_flags(os.O_RDWR | os.O_TMPFILE) == "O_RDWR|O_TMPFILE"          # not O_DIRECTORY too
    assert decode.open_flags(os.O_SYNC) == "O_RDONLY|O_SYNC" and decode.open_flags(1 << 30) == "O_RDONLY|0x40000000"
    assert decode.mmap_flags(C["MAP_PRIVATE"] | C["MAP_ANONYMOUS"]) == "MAP_PRIVATE|MAP_ANONYMOUS"
    assert decode.flags_text(C["PROT_READ"] | C["PROT_EXEC"], decode._PROT) == "PROT_READ|PROT_EXEC"
    assert decode.flags_text(0, decode._PROT) == "0"
    assert decode.clone_flags(C["CLONE_VM"] | C["CLONE_FS"] | 17) == "SIGCHLD|CLONE_VM|CLONE_FS"
    assert decode.socket_type(C["SOCK_STREAM"] | C["SOCK_CLOEXEC"]) == "SOCK_STREAM|SOCK_CLOEXEC"
    assert decode.family(C["AF_INET6"]) == "AF_INET6" and decode.access_mode(6) == "R_OK|W_OK"
    assert decode.at_flags(C["AT_REMOVEDIR"], "unlinkat") == "AT_REMOVEDIR"
    assert decode.at_flags(C["AT_EACCESS"], "faccessat2") == "AT_EACCESS"


def _value(text: str) -> int:
    import signal

    total = 0
    for term in text.split("|"):
        if term.startswith("0x") or term.isdigit():
            total |= int(term, 0)
        elif term.startswith("SIG"):
            total |= signal.Signals[term].value
        else:
            total |= C[term]
    return total


@given(st.integers(0, 0xFFFFFFFF))
def test_flag_text_is_lossless(value):
    """Every bit shows up: the named terms OR'd with the hex remainder give the value back."""
    assert _value(decode.open_flags(value)) == value
    assert _value(decode.mmap_flags(value)) == value
    assert _value(decode.clone_flags(value & ~0xFF | 17)) == value & ~0xFF | 17
    assert _value(decode.flags_text(value, decode._PROT)) == value


def test_percentile():
    assert percentile([], 50) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and percentile(list(map(float, range(1, 101))), 99) == 99.0


def test_audit_wraps_fs_and_records_its_decisions(tmp_path):
    (tmp_path / "a.txt").write_text("A\n")
    (tmp_path / "b.txt").write_text("B\n")
    sink = io.StringIO()
    log = AuditLog(sink)
    fs = FsHandler(["allow read /usr/**", "allow read /lib/**", "allow read /etc/**", f"allow read {tmp_path}/a.txt"])
    code, out = run(["/bin/cat", f"{tmp_path}/a.txt", f"{tmp_path}/b.txt"], AuditHandler(log, fs),
                    policy=notify_policy(type("P", (), {"name": "fs", "syscalls": ("openat",)})))
    records = [json.loads(line) for line in sink.getvalue().splitlines()]
    by_path = {r["call"].split('"')[1]: r for r in records}
    a, b = by_path[f"{tmp_path}/a.txt"], by_path[f"{tmp_path}/b.txt"]
    assert a["verdict"] == "fd" and a["result"].startswith("= ") and int(a["result"][2:]) >= 3
    assert a["call"] == f'openat(AT_FDCWD, "{tmp_path}/a.txt", O_RDONLY)' and a["handler"] == "fs"
    assert b["verdict"] == "errno" and b["result"] == "= -1 EACCES (Permission denied)"
    assert all(r["latency_us"] > 0 and r["syscall"] == "openat" for r in records)
    assert "A" in out and "Permission denied" in out
    summary = log.summary()
    assert "openat" in summary and "fd " in summary and "errno 1" in summary and "p99" in summary


def test_audit_alone_continues_everything(tmp_path):
    log = AuditLog(None)
    code, out = run(["/bin/sh", "-c", "echo hi > /dev/null; cat /etc/hostname"], AuditHandler(log),
                    policy=parse_policy("default: allow\nopenat, close, read: notify(audit)\n"))
    assert code == 0 and out.strip() == open("/etc/hostname").read().strip()
    assert log.counts["openat"] >= 2 and set(log.verdicts["openat"]) == {"continue"}


POLICY = """
default: allow
openat, newfstatat: notify(fs)
connect: notify(net)
"""


def test_build_supervisor_from_policy_and_json(tmp_path):
    (tmp_path / "ok").write_text("OK\n")
    (tmp_path / "no").write_text("NO\n")
    log = tmp_path / "audit.jsonl"
    config = tmp_path / "handlers.json"
    config.write_text(json.dumps({
        "fs": {"rules": ["allow read /usr/**", "allow read /lib/**", "allow read /etc/**",
                         f"allow read {tmp_path}/ok"]},
        "net": {"rules": []},
        "audit": {"log": str(log), "wrap": ["fs"], "summary": True}}))
    policy = parse_policy(POLICY)
    r, w = os.pipe()
    target = launch.spawn(["/bin/cat", f"{tmp_path}/ok", f"{tmp_path}/no"], policy, stdout=w, stderr=w)
    os.close(w)
    sup = build_supervisor(policy, str(config))
    with sup:
        sup.add_target(target)
        assert sup.run_until_idle(20)
    summary = io.StringIO()
    sup.handler_set.finish(summary)
    out = os.read(r, 4096).decode()
    target.wait(5)
    target.close()
    assert "OK" in out and "NO" not in out and "Permission denied" in out
    calls = [json.loads(line)["call"] for line in log.read_text().splitlines()]
    assert any(f'"{tmp_path}/no"' in c for c in calls)
    assert "openat" in summary.getvalue()


@pytest.mark.parametrize("policy, config, message", [
    (POLICY, {"net": {}}, "policy notifies openat, newfstatat"),      # fs missing: it still builds fs with no rules
    ("default: allow\nmkdir: notify(net)\n", {}, "which answers only connect"),
    ("default: allow\nopenat: notify(nosuch)\n", {}, "unknown handler 'nosuch'"),
    ("default: allow\nopenat: notify(fs)\n", {"fs": {"rulez": []}}, "unknown option(s) rulez"),
    ("default: allow\nopenat: notify(fs)\n", {"fs": {"rules": ["allow sometimes /x"]}}, "unknown mode"),
    ("default: allow\nopenat: notify(fs)\n", "{not json", "invalid JSON"),
    ("default: allow\nopenat: notify(fs)\n", {"audit": {"wrap": 3}}, "handler 'audit': option 'wrap' must be"),
])
def test_config_errors_are_precise(policy, config, message):
    if message.startswith("policy notifies openat, newfstatat"):
        handlers = build_handlers(parse_policy(policy), config)        # fs with defaults: deny everything
        assert handlers.handlers["fs"].rules.default == "deny"
        return
    with pytest.raises(SysgateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_handlers(parse_policy(policy), config)


def test_cli_lists_and_checks(tmp_path):
    import subprocess
    import sys

    sysgate = [sys.executable, "-m", "sysgate", "handlers"]
    rows = json.loads(subprocess.run(sysgate + ["--json"], capture_output=True, text=True, check=True).stdout)
    by_name = {r["name"]: r for r in rows}
    assert {"audit", "fs", "net", "container", "identity", "time", "random"} <= set(by_name)
    assert "openat" in by_name["fs"]["syscalls"] and "rules" in by_name["net"]["options"]
    assert "wrap" in by_name["audit"]["options"]
    policy = tmp_path / "p.policy"
    policy.write_text(POLICY)
    ok = subprocess.run(sysgate + ["--policy", str(policy), "--config",
                                   '{"fs": {"rules": ["allow read /usr/**"]}, "net": {}}'],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("fs: open") and "net: connect" in ok.stdout
    bad = subprocess.run(sysgate + ["--policy", str(policy), "--config", '{"fs": {"rules": ["allow read etc"]}}'],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "paths must be absolute" in bad.stderr


def test_policy_conditions_route_one_syscall_to_two_handlers(tmp_path):
    """Writes go to fs (enforced), read-only opens only to audit (continued): the policy picks per call."""
    (tmp_path / "r.txt").write_text("R\n")
    policy = parse_policy("default: allow\n"
                          "openat: flags & O_ACCMODE == O_RDONLY -> notify(audit)\n"
                          "openat: notify(fs)\n")
    config = {"fs": {"rules": [f"allow rw {tmp_path}/ok*"]}, "audit": {"log": None, "summary": False}}
    r, w = os.pipe()
    target = launch.spawn(["/bin/sh", "-c", f"cat {tmp_path}/r.txt; echo a > {tmp_path}/ok1; echo b > {tmp_path}/no"],
                          policy, stdout=w, stderr=w)
    os.close(w)
    with build_supervisor(policy, config) as sup:
        sup.add_target(target)
        assert sup.run_until_idle(20)
    log = sup.handler_set.audit
    sup.handler_set.finish()
    out = os.read(r, 4096).decode()
    target.wait(5)
    target.close()
    assert "R" in out and (tmp_path / "ok1").read_text() == "a\n" and not (tmp_path / "no").exists()
    assert "Permission denied" in out and set(log.verdicts["openat"]) == {"continue"}
