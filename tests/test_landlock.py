"""The Landlock layer: real rulesets on this kernel, attacked by a real C program.

Every attack is first run without Landlock (the kernel alone lets it through, so the test
can fail) and then with the ruleset derived from the rules, with a filter that allows
everything: the kernel itself must refuse, no notification involved.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sysgate.process import launch
from sysgate.sandbox import landlock
from sysgate.bpf.insn import ret
from sysgate.handlers.fs import PathRules
from sysgate.handlers.net import NetRules
from sysgate.kernel import abi
from sysgate.kernel import landlock as ll
from support.cprog import cprog
from support import cli as support_cli

HERE = os.path.dirname(os.path.abspath(__file__))
ALLOW = [ret(abi.SECCOMP_RET_ALLOW)]
EACCES = f"errno {errno.EACCES}"

pytestmark = pytest.mark.skipif(ll.abi_version() < 4, reason="needs Landlock ABI 4 or later")


@pytest.fixture(scope="module")
def probe() -> str:
    with open(os.path.join(HERE, "landlock_probe.c")) as f:
        return cprog(f.read())


def system_rules(probe: str) -> list[str]:
    """What the probe needs to start: its loader, libc and its own file."""
    return ["allow read /usr/**", "allow read /etc/**", f"allow read {os.path.dirname(probe)}/**"]


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a").write_text("hi\n")
    (tmp_path / "no").mkdir()
    (tmp_path / "no" / "s").write_text("secret\n")
    (tmp_path / "v" / "vault").mkdir(parents=True)
    (tmp_path / "v" / "vault" / "s").write_text("vaulted\n")
    (tmp_path / "v" / "pub").write_text("public\n")
    return tmp_path


def run_probe(probe: str, *args, plan=None) -> str:
    r, w = os.pipe()
    try:
        target = launch.spawn([probe, *map(str, args)], ALLOW, stdout=w, landlock=plan)
    finally:
        os.close(w)
    with os.fdopen(r) as out:
        text = out.read().strip()
    assert target.wait(10) == 0, text
    return text


def fs_plan(probe, *rules, default="deny"):
    plan = landlock.derive(PathRules([*rules, *system_rules(probe)], default))
    assert plan is not None and plan.handled_fs & ll.FS_READ_FILE
    return plan


# --- (1) reads outside the allowed tree ---------------------------------------------------
def test_read_outside_the_allowed_tree_is_refused_by_the_kernel(probe, tree):
    plan = fs_plan(probe, f"allow read {tree}/ok/**")
    assert plan.layers == {"fs": "exact"}, plan.notes
    assert run_probe(probe, "read", tree / "no/s") == "ok secret"            # no Landlock: readable
    assert run_probe(probe, "read", tree / "no/s", plan=plan) == EACCES
    assert run_probe(probe, "read", tree / "ok/a", plan=plan) == "ok hi"


def test_deny_inside_an_allowed_tree_is_expressed_by_siblings(probe, tree):
    plan = fs_plan(probe, f"deny {tree}/no/s", f"allow read {tree}/**")
    assert plan.layers == {"fs": "stricter"}
    assert any(f"{tree}/no itself" in n for n in plan.notes)
    assert run_probe(probe, "read", tree / "no/s", plan=plan) == EACCES
    assert run_probe(probe, "read", tree / "ok/a", plan=plan) == "ok hi"
    (tree / "no" / "later").write_text("later\n")       # allowed by the rules, but made after the ruleset
    # the plan is a snapshot: stricter than the rules for entries made after it, never looser
    assert run_probe(probe, "read", tree / "no/later", plan=plan) == EACCES
    fresh = fs_plan(probe, f"deny {tree}/no/s", f"allow read {tree}/**")
    assert run_probe(probe, "read", tree / "no/later", plan=fresh) == "ok later"
    assert run_probe(probe, "read", tree / "no/s", plan=fresh) == EACCES


# --- (2) renaming an ancestor of a denied tree --------------------------------------------
def test_renaming_an_ancestor_cannot_reach_the_denied_tree(probe, tree):
    rules = (f"deny {tree}/v/vault/**", f"allow rw {tree}/**")
    moved = tree / "v2/vault/s"
    assert run_probe(probe, "rename", tree / "v", tree / "v2", moved) == "rename ok\nok vaulted"   # the attack
    os.rename(tree / "v2", tree / "v")
    plan = fs_plan(probe, *rules)
    out = run_probe(probe, "rename", tree / "v", tree / "v2", moved, plan=plan)
    assert "vaulted" not in out
    assert run_probe(probe, "read", tree / "v/vault/s", plan=plan) == EACCES
    assert run_probe(probe, "read", tree / "v/pub", plan=plan) == "ok public"


def test_moving_the_denied_file_into_an_allowed_directory_is_refused(probe, tree):
    """REFER: a rename across directories may not give the file rights it lacked."""
    plan = fs_plan(probe, f"deny {tree}/v/vault/**", f"allow rw {tree}/ok/**", f"allow read {tree}/**")
    out = run_probe(probe, "rename", tree / "v/vault/s", tree / "ok/s", tree / "ok/s", plan=plan)
    assert out.splitlines()[0] in (f"rename errno {errno.EXDEV}", f"rename errno {errno.EACCES}")
    assert "vaulted" not in out


# --- (3) mount ----------------------------------------------------------------------------
def test_bind_mount_in_a_user_namespace_is_refused(probe, tree):
    args = ("bindmount", tree / "no", tree / "ok", tree / "ok/s")
    assert run_probe(probe, *args) == "mount ok\nok secret"              # the attack works without Landlock
    plan = fs_plan(probe, f"allow read {tree}/ok/**")
    out = run_probe(probe, *args, plan=plan)
    assert out.splitlines()[0] in ("mount errno 1", f"unshare errno {errno.EPERM}"), out
    assert "secret" not in out


# --- (4) io_uring --------------------------------------------------------------------------
def test_io_uring_openat_of_a_denied_file_is_refused(probe, tree):
    assert run_probe(probe, "uring", tree / "no/s") == "ok secret"
    plan = fs_plan(probe, f"allow read {tree}/ok/**")
    assert run_probe(probe, "uring", tree / "no/s", plan=plan) == EACCES
    assert run_probe(probe, "uring", tree / "ok/a", plan=plan) == "ok hi"


def sysgate(*args, check_rc=None, **kw) -> subprocess.CompletedProcess:
    proc = support_cli.sysgate(*args, **kw)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


def test_run_derives_the_wall_from_the_fs_handler_config(probe, tree):
    """Under ``sysgate run`` the notify fs handler guards open*, but io_uring does not go through
    seccomp: only the Landlock layer (on by default) stops it."""
    policy = tree / "p.policy"
    policy.write_text("default: allow\nopen, openat, openat2, creat: notify(fs)\n")
    config = '{"fs": {"rules": %s}}' % str([f"allow read {tree}/ok/**", *system_rules(probe)]).replace("'", '"')
    off = sysgate("run", "--force", "--landlock=off", "--policy", policy, "--handlers", config, "--", probe, "uring",
                  tree / "no/s", check_rc=0)
    assert off.stdout.strip() == "ok secret"
    on = sysgate("run", "--force", "--policy", policy, "--handlers", config, "--", probe, "uring", tree / "no/s",
                 check_rc=0)
    assert on.stdout.strip() == EACCES
    notified = sysgate("run", "--force", "--policy", policy, "--handlers", config, "--", probe, "read", tree / "no/s",
                       check_rc=0)
    assert notified.stdout.strip() == EACCES


def test_rights_the_policy_does_not_route_to_fs_stay_unhandled(probe, tree):
    """Rules applied by the policy only to mkdir must not deny reads to the whole process."""
    policy = tree / "p.policy"
    policy.write_text("default: allow\nmkdir, mkdirat: notify(fs)\n")
    from sysgate.policy.parser import parse_policy

    plan = landlock.plan_for_policy(parse_policy(policy.read_text(), "p"), {"fs": {"rules": []}})
    assert plan is None or not plan.handled_fs & ll.FS_READ_FILE
    out = sysgate("run", "--force", "--policy", policy, "--handlers", '{"fs": {"rules": []}}', "--", probe, "read",
                  tree / "ok/a", check_rc=0)
    assert out.stdout.strip() == "ok hi"


# --- (5) exec limits -------------------------------------------------------------------------
def test_no_exec_after_start(tmp_path):
    script = "/bin/ls / >/dev/null; echo ls=$?; exec /bin/sh -c 'echo again'"
    free = sysgate("run", "--log", "--", "/bin/sh", "-c", script, check_rc=0)
    assert free.stdout.split() == ["ls=0", "again"]
    limited = sysgate("run", "--log", "--no-exec-after-start", "--", "/bin/sh", "-c", script, check_rc=0)
    assert limited.stdout.split() == ["ls=126", "again"]        # the launch's own binary may run again


def test_allow_exec_list():
    script = "/bin/ls / >/dev/null; echo ls=$?; /bin/cat /dev/null; echo cat=$?"
    out = sysgate("run", "--log", "--allow-exec", shutil.which("ls"), "--", "/bin/sh", "-c", script, check_rc=0)
    assert out.stdout.split() == ["ls=0", "cat=126"]


def test_exec_limits_need_landlock_on():
    out = sysgate("run", "--landlock=off", "--no-exec-after-start", "--", "true")
    assert out.returncode == 125 and "need Landlock" in out.stderr


# --- (6) TCP ports ---------------------------------------------------------------------------
def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


def test_tcp_connect_and_bind_ports(probe):
    with listener() as good, listener() as bad:
        gp, bp = good.getsockname()[1], bad.getsockname()[1]
        free = socket.socket()
        free.bind(("127.0.0.1", 0))
        fp = free.getsockname()[1]
        free.close()
        assert run_probe(probe, "connect", bp) == "ok"                  # reachable without Landlock
        rules = NetRules([f"allow connect *:{gp}", f"allow bind 127.0.0.1:{fp}"])
        plan = landlock.derive(None, rules)
        assert plan.handled_net == ll.NET_CONNECT_TCP | ll.NET_BIND_TCP
        assert run_probe(probe, "connect", gp, plan=plan) == "ok"
        assert run_probe(probe, "connect", bp, plan=plan) == EACCES
        assert run_probe(probe, "bind", fp, plan=plan) == "ok"
        assert run_probe(probe, "bind", bp + 1 if bp + 1 != fp else bp + 2, plan=plan) == EACCES
        assert plan.layers == {"net": "superset"}       # bind names an address: Landlock only knows the port
        assert any(f"bind port(s) {fp}" in n for n in plan.notes)


def test_port_rules_without_address_are_exact():
    plan = landlock.derive(None, NetRules(["allow connect *:443", "deny connect 10.0.0.0/8:80",
                                           "allow connect *:80"]))
    assert plan.layers == {"net": "superset"}       # port 80: allowed for some addresses only
    plan = landlock.derive(None, NetRules(["allow connect *:443", "allow bind *:8000-8002"]))
    assert plan.layers == {"net": "exact"}
    assert sorted(plan.ports) == [(ll.NET_BIND_TCP, 8000), (ll.NET_BIND_TCP, 8001), (ll.NET_BIND_TCP, 8002),
                                  (ll.NET_CONNECT_TCP, 443)]


# --- without privileges ------------------------------------------------------------------------
def test_unprivileged_user_gets_the_same_wall(probe):
    """Landlock needs only no_new_privs: a plain user (nobody) runs the same ruleset."""
    top = tempfile.mkdtemp()
    try:
        os.chmod(top, 0o755)
        for name, text in (("ok", "hi\n"), ("no", "secret\n")):
            os.mkdir(os.path.join(top, name), 0o755)
            with open(os.path.join(top, name, "f"), "w") as f:
                f.write(text)
            os.chmod(os.path.join(top, name, "f"), 0o644)
        code = f"""
import os, sys
from sysgate.process import launch
from sysgate.sandbox import landlock
from sysgate.bpf.insn import ret
from sysgate.handlers.fs import PathRules
from sysgate.kernel import abi
rules = PathRules({[f"allow read {top}/ok/**", *system_rules(probe)]!r})
plan = landlock.derive(rules)
for path in ("{top}/ok/f", "{top}/no/f"):
    for mode in ("read", "uring"):
        t = launch.spawn([{probe!r}, mode, path], [ret(abi.SECCOMP_RET_ALLOW)], landlock=plan)
        t.wait()
"""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                               "-c", code], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n")[:4] == ["ok hi", "ok hi", EACCES, EACCES]
    finally:
        shutil.rmtree(top)


# --- visible layering -----------------------------------------------------------------------------
def test_check_reports_the_abi():
    out = sysgate("check", check_rc=0)
    assert f"landlock: ABI {ll.abi_version()}" in out.stdout
    import json

    assert json.loads(sysgate("check", "--json", check_rc=0).stdout)["landlock_abi"] == ll.abi_version()


def test_bad_landlock_mode_is_one_line():
    out = sysgate("run", "--landlock=maybe", "--", "true")
    assert out.returncode == 125 and "invalid choice" in out.stderr and "Traceback" not in out.stderr


# --- the derivation never grants what the rules deny ---------------------------------------------
_TREE = ("a/x", "a/y", "a/sub/z", "b/x", "b/c/y", "c/w")


@pytest.fixture(scope="module")
def fixed_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("derive")
    for rel in _TREE:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
    return str(root)


def _paths(root: str) -> list[tuple[str, bool]]:
    out = [(root, True)]
    for dirpath, dirs, files in os.walk(root):
        out += [(os.path.join(dirpath, d), True) for d in dirs]
        out += [(os.path.join(dirpath, f), False) for f in files]
    return out


_PATTERNS = ("{r}/**", "{r}/a/**", "{r}/a/x", "{r}/b/**", "{r}/b/c/**", "{r}/b/c/y", "{r}/*/x", "{r}/a/*",
             "{r}/c", "{r}/a/sub/z", "{r}/**/y")
_RULE = st.tuples(st.sampled_from(("allow", "deny")), st.sampled_from(("read", "write", "rw")),
                  st.sampled_from(_PATTERNS))


@settings(max_examples=150, deadline=None)
@given(st.lists(_RULE, max_size=6), st.sampled_from(("allow", "deny")))
def test_derived_grants_never_exceed_the_rules(fixed_tree, rules, default):
    """For every existing path and every name created later in an existing directory: when a
    grant that is not marked superset covers it, the rules allow it."""
    texts = [f"{v} {m} {p.format(r=fixed_tree)}" for v, m, p in rules]
    path_rules = PathRules(texts, default)
    plan = landlock.derive(path_rules, abi=ll.abi_version())
    loose = set(plan.loose)
    for mode, bit in (("read", ll.FS_READ_FILE), ("write", ll.FS_WRITE_FILE)):
        grants = [(p, a) for p, a in plan.paths if a & bit and p not in loose]
        probes = [p for p, _ in _paths(fixed_tree)]
        probes += [os.path.join(p, "new") for p, is_dir in _paths(fixed_tree) if is_dir]
        for path in probes:
            exact_grant = any(path == g or (os.path.isdir(g) and path.startswith(g.rstrip("/") + "/"))
                              for g, _ in grants)
            under_loose = any(path == g or path.startswith(g.rstrip("/") + "/") for g in loose)
            if exact_grant and not under_loose:
                assert path_rules.allows(path, {mode}), (texts, default, mode, path, plan.paths)


# --- exact rules take plain opens off the notify path ------------------------------------------
def _policy(text: str):
    from sysgate.policy.parser import parse_policy

    return parse_policy(text, "p")


def test_exact_rules_take_plain_opens_off_the_notify_path(probe, tree):
    text = "default: allow\nchroot: errno(EPERM)\nopen, openat, openat2, creat: notify(fs)\n"
    rules = [f"allow read {tree}/ok/**", *system_rules(probe)]
    plan = landlock.plan_for_policy(_policy(text), {"fs": {"rules": rules}})
    lighter = landlock.without_open_routes(_policy(text), plan)
    assert lighter is not None and plan.layers["fs"] == "exact"
    at_fdcwd = (1 << 64) - 100
    for flags, kind in ((os.O_RDONLY, "allow"), (os.O_WRONLY | os.O_CLOEXEC, "allow"), (os.O_PATH, "notify"),
                        (os.O_WRONLY | os.O_CREAT, "notify"), (os.O_RDONLY | os.O_TRUNC, "notify"),
                        (os.O_WRONLY | os.O_APPEND, "notify"), (os.O_TMPFILE | os.O_RDWR, "notify")):
        assert lighter.decide("openat", (at_fdcwd, 0, flags, 0, 0, 0))[0].kind == kind, hex(flags)
        assert lighter.decide("open", (0, flags, 0, 0, 0, 0))[0].kind == kind, hex(flags)
    assert lighter.decide("creat")[0].kind == "notify" and lighter.decide("openat2")[0].kind == "notify"

    policy = tree / "p.policy"
    policy.write_text(text)
    config = '{"fs": {"rules": %s}}' % str(rules).replace("'", '"')
    for mode, notified in (("auto", False), ("off", True)):
        record = tree / f"{mode}.jsonl"
        out = sysgate("run", "--force", f"--landlock={mode}", "--record", record, "--policy", policy,
                      "--handlers", config, "--", probe, "read", tree / "no/s", check_rc=0)
        assert out.stdout.strip() == EACCES                         # the kernel, or the fs handler
        opens = [line for line in record.read_text().splitlines()[1:] if '"syscall":"openat"' in line]
        assert bool(opens) == notified, (mode, len(opens))


def test_open_routes_stay_when_the_rules_are_not_exact_or_chroot_is_allowed(probe, tree):
    routes = "open, openat, openat2, creat: notify(fs)\n"
    exact = [f"allow read {tree}/ok/**"]
    plan = landlock.plan_for_policy(_policy("default: allow\n" + routes), {"fs": {"rules": exact}})
    assert landlock.without_open_routes(_policy("default: allow\n" + routes), plan) is None
    assert any("chroot" in n for n in plan.notes)
    guarded = "default: allow\nchroot: errno(EPERM)\n" + routes
    for rules in ([f"deny {tree}/no/s", f"allow read {tree}/**"],     # stricter: a snapshot of siblings
                  [f"allow read {tree}/*/a"]):                         # superset: a glob in the middle
        plan = landlock.plan_for_policy(_policy(guarded), {"fs": {"rules": rules}})
        assert plan.layers["fs"] != "exact"
        assert landlock.without_open_routes(_policy(guarded), plan) is None


def test_exec_limits_leave_cross_directory_renames_alone(tmp_path):
    """Any fs ruleset refuses reparenting unless REFER is handled and granted: exec limits alone
    must not turn ``mv a/x b/x`` into EXDEV."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("x")
    code = f"import os; os.rename('{tmp_path}/a/x', '{tmp_path}/b/x'); print('renamed')"
    plan = landlock.derive(exec_paths=[])
    assert plan.handled_fs & ll.FS_EXECUTE
    r, w = os.pipe()
    target = launch.spawn([sys.executable, "-c", code], ALLOW, stdout=w, stderr=w, landlock=plan)
    os.close(w)
    with os.fdopen(r) as out:
        text = out.read()
    assert target.wait(10) == 0, text
    assert (tmp_path / "b" / "x").exists()


def test_policy_check_and_explain_name_the_layer(probe, tree):
    policy = tree / "p.policy"
    policy.write_text("default: allow\nchroot: errno(EPERM)\nopen, openat, openat2, creat: notify(fs)\n"
                      "connect: notify(net)\n")
    config = ('{"fs": {"rules": ["allow read %s/ok/**", "allow read %s/*/a"]}, '
              '"net": {"rules": ["allow connect 127.0.0.1:80", "allow connect *:443"]}}' % (tree, tree))
    out = sysgate("policy", "check", policy, "--handlers", config, check_rc=0).stdout
    assert f"fs  allow read {tree}/ok/**: Landlock and notify" in out
    assert f"fs  allow read {tree}/*/a: notify; Landlock only a superset (beneath {tree})" in out
    assert "net allow connect 127.0.0.1:80: Landlock by port only (superset); notify checks the address" in out
    assert "net allow connect *:443: Landlock (TCP connect/bind) and notify" in out
    exact = '{"fs": {"rules": ["allow read %s/ok/**"]}}' % tree
    out = sysgate("explain", policy, "openat", "AT_FDCWD", "0", "O_RDONLY", "--handlers", exact, check_rc=0).stdout
    assert "layer: Landlock alone" in out
    out = sysgate("explain", policy, "openat", "AT_FDCWD", "0", "O_PATH", "--handlers", exact, check_rc=0).stdout
    assert "layer: notify(fs), with the Landlock wall under it" in out


# --- ABI masks, scopes, missing Landlock ------------------------------------------------------------
def test_rights_per_abi_are_what_the_kernel_accepts():
    assert [ll.fs_rights(v) for v in range(1, 8)] == [0x1FFF, 0x3FFF, 0x7FFF, 0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]
    version = ll.abi_version()
    os.close(ll.create_ruleset(ll.fs_rights(version), ll.net_rights(version), ll.scopes(version)))
    top = ll.fs_rights(version)
    with pytest.raises(OSError) as exc:
        ll.create_ruleset(top | (top + 1))          # the next, unknown, right
    assert exc.value.errno == errno.EINVAL


@pytest.mark.skipif(ll.abi_version() < 6, reason="scopes need Landlock ABI 6")
def test_signal_scope_keeps_signals_inside_the_sandbox():
    script = "import os; os.kill(os.getppid(), 0); print('reached')"
    free = sysgate("run", "--log", "--", sys.executable, "-c", script, check_rc=0)
    assert free.stdout.strip() == "reached"
    scoped = sysgate("run", "--log", "--landlock-scope", "signal", "--", sys.executable, "-c", script)
    assert scoped.returncode == 1 and "PermissionError" in scoped.stderr
    bad = sysgate("run", "--landlock-scope", "everything", "--", "true")
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1


def test_without_landlock_auto_says_so_once_and_on_fails(monkeypatch):
    """The kernel answer is replaced (this kernel has Landlock): only the choice logic is tested."""
    monkeypatch.setattr(ll, "_version", 0)
    policy = _policy("default: allow\nopenat: notify(fs)\n")
    said = []
    assert landlock.plan_for_policy(policy, {"fs": {"rules": ["allow read /usr/**"]}}, warn=said.append) is None
    assert len(said) == 1 and "not available" in said[0]
    with pytest.raises(landlock.LandlockUnavailable):
        landlock.plan_for_policy(policy, {}, mode="on")
    with pytest.raises(landlock.LandlockUnavailable):
        landlock.plan_for_policy(None, None, exec_paths=[])
    assert landlock.plan_for_policy(policy, {}, mode="off") is None


_NET_RULE = st.tuples(st.sampled_from(("allow", "deny")), st.sampled_from(("connect", "bind", "any")),
                      st.sampled_from(("*", "*:80", "*:80-90", "127.0.0.0/8:85", "10.0.0.0/8", "[::1]:80",
                                       "127.0.0.1:1-100", "unix:/run/**")))


@settings(max_examples=150, deadline=None)
@given(st.lists(_NET_RULE, max_size=5), st.sampled_from(("allow", "deny")))
def test_port_grants_cover_every_allowed_address_and_exact_means_exact(rules, default):
    """Landlock must grant a port some address may use (else it refuses what the rules allow),
    and an "exact" layer grants only ports every address may use."""
    import ipaddress

    from sysgate.handlers.sockaddr import SockAddr

    net = NetRules([f"{v} {o} {w}" for v, o, w in rules], default)
    plan = landlock.derive(None, net, abi=ll.abi_version())
    addrs = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "10.1.2.3"), (socket.AF_INET6, "::1"),
             (socket.AF_INET, "192.0.2.1")]
    for op, right in (("connect", ll.NET_CONNECT_TCP), ("bind", ll.NET_BIND_TCP)):
        handled = plan is not None and plan.handled_net & right
        granted = {p for r, p in plan.ports if r == right} if handled else set(range(65536))
        for port in (0, 1, 79, 80, 85, 90, 91, 100, 101, 443, 65535):
            allowed = [net.allows(op, SockAddr(f, ipaddress.ip_address(a), port)) for f, a in addrs]
            if any(allowed):
                assert port in granted, (op, port)
            if handled and plan.layers.get("net") == "exact" and port in granted:
                assert all(allowed), (op, port)


def test_allow_exec_of_a_missing_file_is_an_error():
    out = sysgate("run", "--log", "--allow-exec", "/nonexistent/sysgate-bin", "--", "true")
    assert out.returncode == 125 and "does not exist" in out.stderr and out.stderr.count("\n") == 1


def test_a_permitted_ancestor_rename_keeps_the_denied_tree_denied(probe, tree):
    """Writes allowed everywhere, reads denied under the vault: renaming v succeeds, and the
    vault, now at v2/vault, is still unreadable (rights stick to inodes, not to path strings)."""
    rules = (f"deny read {tree}/v/vault/**", f"allow rw {tree}/**")
    plan = fs_plan(probe, *rules)
    out = run_probe(probe, "rename", tree / "v", tree / "v2", tree / "v2/vault/s", plan=plan)
    assert out == f"rename ok\n{EACCES}"
    os.rename(tree / "v2", tree / "v")
    out = run_probe(probe, "rename", tree / "v", tree / "v2", tree / "v2/pub", plan=plan)
    assert out == "rename ok\nok public"               # what was allowed moves along, still allowed


# --- what sysgate run takes off the notify path, attacked by real processes ---------------------
META_PROBE = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>
static void say(const char *what, long r) { printf("%s %s\n", what, r < 0 ? strerrorname_np(errno) : "ok"); }
int main(int argc, char **argv) {           /* argv[1]: a denied directory holding s (a file) and l (a symlink) */
    char s[4096], l[4096], buf[4096];
    struct stat st;
    struct statfs sf;
    snprintf(s, sizeof s, "%s/s", argv[1]);
    snprintf(l, sizeof l, "%s/l", argv[1]);
    say("stat", stat(s, &st));
    say("lstat", lstat(l, &st));
    say("statx", syscall(SYS_statx, AT_FDCWD, s, 0, 0x7ff, buf));
    say("access", access(s, R_OK));
    say("readlink", readlink(l, buf, sizeof buf));
    say("statfs", statfs(s, &sf));
    say("open", open(s, O_RDONLY));
    say("open dir", open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    say("open nofollow", open(s, O_RDONLY | O_NOFOLLOW));
    int dfd = open(argv[1], O_PATH | O_DIRECTORY);
    say("getdents of O_PATH", syscall(SYS_getdents64, dfd, buf, sizeof buf));
    say("openat O_PATH dir", openat(dfd, "s", O_RDONLY));
    say("chdir", chdir(argv[1]));
    say("open relative", open("s", O_RDONLY));
    say("fstatat empty", fstatat(AT_FDCWD, "", &st, AT_EMPTY_PATH));
    say("fchdir", fchdir(dfd));
    say("open dot", open(".", O_RDONLY | O_DIRECTORY));
    char *args[] = { s, NULL };
    say("execve", syscall(SYS_execve, s, args, NULL));
    return 0;
}
"""
#: what stays refused whatever the mode: reading content, listing, exec (Landlock or notify)
CONTENT = ("open", "open dir", "open nofollow", "getdents of O_PATH", "openat O_PATH dir", "open relative",
           "open dot", "execve")
METADATA = ("stat", "lstat", "statx", "access", "readlink", "statfs", "fstatat empty")
MOVES = ("chdir", "fchdir")     # decided by no one: what the cwd reaches is checked (see fsmeta)


def test_unrouted_calls_refuse_what_notify_refuses_and_landlock_stat_shows_only_metadata(tmp_path):
    """Under ``sysgate run --sandbox`` with exact rules, Landlock alone decides plain opens, exec and
    chdir/fchdir: every attack on a denied directory gets what the notify handler alone answers. With
    ``--landlock-stat`` the metadata calls succeed (the documented opt-in, with a warning) and
    nothing else does."""
    prog = cprog(META_PROBE)
    denied = tmp_path / "denied"
    denied.mkdir()
    (denied / "s").write_text("#!/bin/sh\necho ran\n")
    (denied / "s").chmod(0o755)
    (denied / "l").symlink_to("s")
    rules = ["allow read /usr/**", "allow read /etc/**", "allow read /lib/**", "allow read /lib64/**",
             f"allow read {os.path.dirname(prog)}/**"]
    config = json.dumps({"fs": {"rules": [r for r in rules if os.path.exists(r.split()[2][:-3])]}})
    results = {}
    for name, opts in (("notify", ["--landlock=off"]), ("landlock", ["--landlock=on"]),
                       ("landlock-stat", ["--landlock=on", "--landlock-stat"])):
        proc = sysgate("run", "--sandbox", *opts, "--handlers", config, "--", prog, denied, check_rc=0)
        results[name] = dict(line.rsplit(" ", 1) for line in proc.stdout.splitlines())
        assert ("metadata and names of paths outside the fs rules are visible" in proc.stderr) == \
            (name == "landlock-stat"), proc.stderr
    assert set(results["notify"]) == set(CONTENT + METADATA + MOVES)
    assert all(r["chdir"] == "ok" and r["fchdir"] == results["notify"]["fchdir"] for r in results.values())
    assert results["landlock"] == results["notify"]
    assert all(results["notify"][k] in ("EACCES", "EBADF") for k in CONTENT + METADATA if k != "fstatat empty")
    assert results["notify"]["fstatat empty"] == "EACCES"       # the cwd is the denied directory
    assert {k: results["landlock-stat"][k] for k in CONTENT} == {k: results["notify"][k] for k in CONTENT}
    assert all(results["landlock-stat"][k] == "ok" for k in METADATA), results["landlock-stat"]


def test_landlock_stat_only_with_exact_rules_and_policy_check_says_what_it_gives_up(probe, tree):
    policy = tree / "p.policy"
    policy.write_text("default: allow\nchroot: errno(EPERM)\nopen, openat, openat2, creat, newfstatat, execve, "
                      "chdir: notify(fs)\n")
    exact = json.dumps({"fs": {"rules": [f"allow read {tree}/ok/**", *system_rules(probe)]}})
    lighter = landlock.without_open_routes(_policy(policy.read_text()),
                                           landlock.plan_for_policy(_policy(policy.read_text()), json.loads(exact)),
                                           visible_metadata=True)
    assert {c: lighter.decide(c)[0].kind for c in ("newfstatat", "execve", "chdir", "creat")} == \
        {"newfstatat": "allow", "execve": "allow", "chdir": "allow", "creat": "notify"}
    out = sysgate("policy", "check", policy, "--handlers", exact, check_rc=0).stdout
    assert "with sysgate run --landlock-stat: stat, lstat, newfstatat" in out
    out = sysgate("explain", policy, "newfstatat", "AT_FDCWD", "0", "0", "0", "--handlers", exact, check_rc=0).stdout
    assert "with sysgate run --landlock-stat: not checked" in out
    out = sysgate("explain", policy, "execve", "0", "0", "0", "--handlers", exact, check_rc=0).stdout
    assert "layer: Landlock alone" in out
    glob = json.dumps({"fs": {"rules": [f"allow read {tree}/*/a", *system_rules(probe)]}})
    proc = sysgate("run", "--force", "--landlock-stat", "--policy", policy, "--handlers", glob, "--", probe, "read",
                   tree / "no/s", check_rc=0)
    assert proc.stdout.strip() == EACCES and "--landlock-stat has no effect" in proc.stderr
