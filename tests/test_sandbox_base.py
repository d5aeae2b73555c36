"""The secure base (``sysgate run --sandbox``, ``sandbox: fs, net``) and the coverage warnings.

Every attack in ``sandbox_attacks.c`` reads a file the fs rules deny, around the fs handler:
the legacy ``open``, ``openat2``, ``chroot``, a bind mount in a new mount namespace (by
``unshare``, by an unprivileged user namespace, by ``clone`` and ``clone3``), file handles,
and io_uring. Each is run three times: without sysgate (the kernel lets it read the file),
under a weaker sysgate policy whose fs routes it walks around (the view change goes through;
the file is read, or the fs handler's inode guard on ``D/**`` denies still refuses it), and
under ``--sandbox`` (refused, with the errno the base gives, and the file is not read).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from support.cprog import cprog
from sysgate.arch import syscalls
from sysgate.errors import SysgateError
from sysgate.policy_loader import load_text
from sysgate.policy.model import Action, Cmp, Policy, Rule
from sysgate.sandbox import surface
from sysgate.sandbox.base import apply_base, build_base, is_refusal
from sysgate.sandbox.coverage import coverage_warnings
from support.cli import sysgate

HERE = os.path.dirname(__file__)
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
#: The README's demo policy before the sandbox: openat to fs, everything else to the kernel.
OLD_DEMO = """\
default: allow
mkdir, mkdirat: errno(EPERM)
openat: notify(fs)
uname: notify(identity)
"""


def attack(m32: bool = False) -> str:
    with open(os.path.join(HERE, "sandbox_attacks.c")) as f:
        source = f.read()
    # static: the i386 loader's fstat of libc would need the i386 stat layout from the fs handler
    return cprog(source, m32=m32, flags=("-static",) if m32 else ())


@pytest.fixture
def box():
    """/tmp/X/private/secret (denied by a wildcard rule, so no inode rule saves the day) and
    /tmp/X/public/hello, readable by everyone (the user-namespace attack runs as nobody)."""
    top = tempfile.mkdtemp(prefix="sysgate-sandbox-", dir="/tmp")
    os.chmod(top, 0o755)
    for name in ("private", "public"):
        os.mkdir(os.path.join(top, name), 0o755)
    with open(os.path.join(top, "private", "secret"), "w") as f:
        f.write("TOPSECRET\n")
    with open(os.path.join(top, "public", "hello"), "w") as f:
        f.write("hello\n")
    for path in ("private/secret", "public/hello"):
        os.chmod(os.path.join(top, path), 0o644)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def handlers(box, **extra) -> str:
    return json.dumps({"fs": {"rules": [f"deny {box}/private/**", "allow read /**"]}, **extra})


def routes_only(tmp_path) -> str:
    """Every syscall the fs handler answers routed to it except the view changes (which the
    handler refuses too), nothing refused: the base minus its refusals, to show that the
    refusals are what stop the view and io_uring attacks."""
    routed = [name for name in surface.handler_syscalls("fs") if name not in surface.VIEW_CHANGES]
    text = "default: allow\narch: x86_64, i386\n" + ", ".join(routed) + ": notify(fs)\n"
    (tmp_path / "routes.policy").write_text(text)
    return str(tmp_path / "routes.policy")


def openat_only(tmp_path) -> str:
    (tmp_path / "old.policy").write_text(OLD_DEMO.replace("default: allow", "default: allow\narch: x86_64, i386"))
    return str(tmp_path / "old.policy")


# mode, i386, the refusal under --sandbox, the weaker policy it walks around, run as nobody
ATTACKS = [
    ("open", False, "open: errno 13", openat_only, False),
    ("openat2", False, "open: errno 13", openat_only, False),
    ("chroot", False, "chroot: errno 1", routes_only, False),
    ("unshare", False, "unshare: errno 1", routes_only, False),
    ("userns", False, "unshare: errno 1", routes_only, True),
    ("clone", False, "clone: errno 1", routes_only, False),
    ("clone3", False, "clone3: errno 38", routes_only, False),
    ("handle", False, "name_to_handle_at: errno 1", routes_only, False),
    ("uring", False, "io_uring_setup: errno 1", routes_only, False),
    ("open", True, "open: errno 13", openat_only, False),
    ("openat2", True, "open: errno 13", openat_only, False),
    ("chroot", True, "chroot: errno 1", routes_only, False),
    ("unshare", True, "unshare: errno 1", routes_only, False),
    ("clone", True, "clone: errno 1", routes_only, False),
    ("uring", True, "io_uring_setup: errno 1", routes_only, False),
    ("fstatat64", True, "fstatat64: errno 13", openat_only, False),
]


@pytest.mark.parametrize("mode, m32, refusal, weaker, as_nobody", ATTACKS,
                         ids=[f"{a[0]}-{'i386' if a[1] else 'x86_64'}" for a in ATTACKS])
def test_attack_reads_the_file_without_the_base_and_is_refused_with_it(tmp_path, box, mode, m32, refusal,
                                                                        weaker, as_nobody):
    argv = [*(NOBODY if as_nobody else []), attack(m32), mode, f"{box}/private", f"{box}/public"]
    native = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert native.stdout.startswith(f"SECRET via {mode}"), native.stdout + native.stderr
    walked = sysgate("run", "--force", "--landlock=off", "--policy", weaker(tmp_path), "--handlers", handlers(box),
                     "--", *argv)
    # Without the refusals (and without the Landlock layer, which refuses mounts on its own) the view
    # change itself goes through; the secret is then read, or (chroot and bind mounts of a D/** deny)
    # the fs handler's inode guard still refuses the open: defence in depth. Under --sandbox the refusal
    # is the view change itself, which only the base gives.
    assert walked.stdout.startswith(f"SECRET via {mode}") or walked.stdout == "refused: open: errno 13\n", \
        walked.stdout + walked.stderr
    assert not refusal.startswith("open") or walked.stdout.startswith("SECRET"), walked.stdout
    for landlock in ("off", "on"):          # the base holds alone, and with the Landlock wall under it
        boxed = sysgate("run", "--sandbox", f"--landlock={landlock}", "--handlers", handlers(box), "--", *argv)
        assert boxed.stdout == f"refused: {refusal}\n", (landlock, boxed.stdout + boxed.stderr)
        assert boxed.returncode == 1 and "TOPSECRET" not in boxed.stdout + boxed.stderr


def test_sandbox_still_reads_what_the_rules_allow_and_denies_the_rest(box, landlock):
    res = sysgate("run", "--sandbox", f"--landlock={landlock}", "--handlers", handlers(box), "--",
                  "sh", "-c", f"cat {box}/public/hello; cat {box}/private/secret; echo rc=$?")
    assert res.stdout == "hello\nrc=1\n", res.stderr
    assert "Permission denied" in res.stderr and "TOPSECRET" not in res.stderr


def test_policy_cannot_re_allow_what_the_base_refuses(tmp_path, box):
    (tmp_path / "p.policy").write_text("default: allow\narch: x86_64, i386\nchroot: allow\nunshare: allow\n")
    for mode, refusal in (("chroot", "chroot: errno 1"), ("unshare", "unshare: errno 1")):
        res = sysgate("run", "--sandbox", "--policy", str(tmp_path / "p.policy"), "--handlers", handlers(box),
                      "--", attack(), mode, f"{box}/private", f"{box}/public")
        assert res.stdout == f"refused: {refusal}\n", res.stdout + res.stderr


def test_sandbox_setting_in_the_policy_is_the_same_base(tmp_path, box):
    (tmp_path / "p.policy").write_text("sandbox: fs\ndefault: allow\narch: x86_64, i386\nchroot: allow\n")
    for mode, refusal in (("chroot", "chroot: errno 1"), ("open", "open: errno 13")):
        res = sysgate("run", "--policy", str(tmp_path / "p.policy"), "--handlers", handlers(box),
                      "--", attack(), mode, f"{box}/private", f"{box}/public")
        assert res.stdout == f"refused: {refusal}\n", res.stdout + res.stderr


def test_policy_refusals_stay_and_its_allows_become_routes(tmp_path, box):
    (tmp_path / "p.policy").write_text("default: allow\narch: x86_64, i386\n"
                                       "open: errno(EROFS)\nopenat2: allow\n")
    run = [attack(), None, f"{box}/private", f"{box}/public"]
    for mode, refusal in (("open", "open: errno 30"), ("openat2", "open: errno 13")):
        run[1] = mode
        res = sysgate("run", "--sandbox", "--policy", str(tmp_path / "p.policy"), "--handlers", handlers(box),
                      "--", *run)
        assert res.stdout == f"refused: {refusal}\n", res.stdout + res.stderr


def test_net_part_refuses_packet_sockets_only_with_net_rules(box, landlock):
    argv = [attack(), "packet", f"{box}/private", f"{box}/public"]
    assert subprocess.run(argv, capture_output=True, text=True).stdout.startswith("SECRET via packet")
    fs_only = sysgate("run", "--sandbox", f"--landlock={landlock}", "--handlers", handlers(box), "--", *argv)
    assert fs_only.stdout.startswith("SECRET via packet"), fs_only.stderr       # no net rules: no net promise
    net = sysgate("run", "--sandbox", f"--landlock={landlock}", "--handlers", handlers(box, net={"rules": []}),
                  "--", *argv)
    assert net.stdout == "refused: socket: errno 1\n", net.stdout + net.stderr


@pytest.fixture
def peers():
    """A UDP and a TCP listener on 127.0.0.1, which the net rules (none: deny all) forbid."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket()
    for sock in (udp, tcp):
        sock.bind(("127.0.0.1", 0))
    tcp.listen()
    udp.setblocking(False)
    yield udp, tcp
    udp.close()
    tcp.close()


def peer_only(tmp_path) -> str:
    """connect, bind, sendto and sendmsg routed to net on x86_64 and i386; the rest left."""
    (tmp_path / "net.policy").write_text("default: allow\narch: x86_64, i386\n"
                                         "connect, bind, sendto, sendmsg: notify(net)\n")
    return str(tmp_path / "net.policy")


@pytest.mark.parametrize("mode, m32", [("sendmmsg", False), ("socketcall", True)])
def test_peer_calls_beside_connect_reach_a_denied_peer_only_without_the_base(tmp_path, box, peers, mode, m32,
                                                                           landlock):
    udp, tcp = peers
    port = (udp if mode == "sendmmsg" else tcp).getsockname()[1]
    argv = [attack(m32), mode, str(port), "-"]
    config = handlers(box, net={"rules": []})
    assert subprocess.run(argv, capture_output=True, text=True).stdout.startswith(f"SECRET via {mode}")
    walked = sysgate("run", "--force", "--landlock=off", "--policy", peer_only(tmp_path), "--handlers", config,
                     "--", *argv)
    assert walked.stdout.startswith(f"SECRET via {mode}"), walked.stdout + walked.stderr
    if mode == "sendmmsg":
        assert udp.recv(100) == b"datagram" and udp.recv(100) == b"datagram"   # native, then walked around
    boxed = sysgate("run", "--sandbox", f"--landlock={landlock}", "--handlers", config, "--", *argv)
    # refused by the filter (EPERM) while the net handler does not answer the call, else denied by it
    assert boxed.stdout.startswith("refused: ") and "SECRET" not in boxed.stdout, boxed.stdout + boxed.stderr
    if mode == "sendmmsg":
        with pytest.raises(BlockingIOError):
            udp.recv(100)


# --- warnings: policy check and run -------------------------------------------------------------
def test_policy_check_warns_about_the_old_demo_policy_and_strict_fails(tmp_path):
    (tmp_path / "old.policy").write_text(OLD_DEMO)
    res = sysgate("policy", "check", str(tmp_path / "old.policy"))
    assert res.returncode == 0 and "3 warning(s)" in res.stdout
    lines = res.stderr.splitlines()
    assert any("routes openat to notify(fs) but leaves open, openat2, creat" in line for line in lines), lines
    assert any("lets io_uring_setup, io_uring_enter, io_uring_register run" in line for line in lines), lines
    assert any("lets chroot, pivot_root, mount" in line for line in lines), lines
    assert sysgate("policy", "check", "--strict", str(tmp_path / "old.policy")).returncode == 1
    (tmp_path / "boxed.policy").write_text("sandbox: fs\n" + OLD_DEMO)
    res = sysgate("policy", "check", "--strict", str(tmp_path / "boxed.policy"))
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_run_refuses_the_old_demo_policy_in_one_line_unless_forced(tmp_path, box):
    (tmp_path / "old.policy").write_text(OLD_DEMO)
    marker = tmp_path / "ran"
    res = sysgate("run", "--policy", str(tmp_path / "old.policy"), "--handlers", handlers(box),
                  "--", "touch", str(marker))
    assert res.returncode == 125 and not marker.exists()
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("sysgate: error: policy 'old' is not a sandbox")
    assert "open, openat2, creat" in res.stderr and "io_uring_setup" in res.stderr and "chroot" in res.stderr
    res = sysgate("run", "--force", "--policy", str(tmp_path / "old.policy"), "--handlers", handlers(box),
                  "--", "cat", f"{box}/public/hello")
    assert res.returncode == 0 and res.stdout == "hello\n", res.stderr
    assert "sysgate: warning: policy 'old' is not a sandbox" in res.stderr


def test_run_sandbox_needs_a_policy_not_a_stored_filter(tmp_path):
    res = sysgate("run", "--sandbox", "--notify-all", "--", "true")
    assert res.returncode == 125 and res.stderr.count("\n") == 1 and "--sandbox needs --policy" in res.stderr


def test_net_warnings_name_the_other_peer_calls():
    policy = load_text("default: allow\narch: x86_64, i386\nconnect: notify(net)\n", "n.policy")
    (first, *_) = coverage_warnings(policy)
    assert first.startswith("routes connect to notify(net) but leaves bind, sendto, sendmsg, sendmmsg, socketcall")
    x86_only = load_text("default: allow\nconnect, bind, listen, sendto, sendmsg, sendmmsg: notify(net)\n"
                         "@mount, io_uring_setup, io_uring_enter, io_uring_register, setns: errno(EPERM)\n"
                         "name_to_handle_at, open_by_handle_at, clone3: errno(EPERM)\n"
                         "unshare: errno(EPERM)\nclone: flags & (CLONE_NEWNS | CLONE_NEWUSER) -> errno(EPERM)\n",
                         "n.policy")
    assert coverage_warnings(x86_only) == []          # socketcall exists on i386 only, not enabled here


@pytest.mark.parametrize("text", [OLD_DEMO, "default: allow\n", "default: errno(EPERM)\nread: allow\n",
                                  "default: allow\narch: x86_64, i386\nconnect: notify(net)\nchroot: allow\n"])
def test_nothing_to_warn_about_under_the_base(text):
    policy = load_text(text, "p.policy")
    assert coverage_warnings(apply_base(policy, ["fs", "net"])) == []


# --- what the base is made of -------------------------------------------------------------------
def test_base_routes_what_the_handlers_answer_and_refuses_the_rest_on_each_arch():
    arches = ["x86_64", "i386"]
    base = build_base(arches, ["fs", "net"])
    refused = {r.syscall for r in base.refusals if r.condition is None}
    for handler, families in (("fs", surface.PATH_FAMILIES + surface.FD_FAMILIES), ("net", surface.PEER_FAMILIES)):
        answered = set(surface.handler_syscalls(handler))
        for family in families:
            for name in family:
                if not any(syscalls.number(a, name) is not None for a in arches):
                    assert name not in base.routes and name not in refused
                elif name in answered:
                    assert base.routes[name] == handler
                elif answered.intersection(family) or not (family in surface.FD_FAMILIES
                                                           or name in surface.ESSENTIAL):
                    assert name in refused and name in base.unanswered[handler], name
    for name in [*surface.VIEW_CHANGES, *surface.IO_URING, *surface.OTHER_PROCESS]:
        assert name in refused or all(syscalls.number(a, name) is None for a in arches), name
    clone = next(r for r in base.refusals if r.syscall == "clone")
    assert clone.condition.item.arg == 0 and clone.condition.item.mask == surface.NAMESPACE_FLAGS
    assert clone.condition.item.width == 32


def test_base_refuses_when_clone_flags_move_between_arches():
    with pytest.raises(SysgateError, match="different positions"):
        build_base(["x86_64", "s390x"], ["fs"])


def test_sandbox_setting_parses_and_applies_once():
    policy = load_text("default: allow\nsandbox: fs\nopenat: allow\n", "p.policy")
    assert policy.sandbox == ["fs"] and policy.decide("openat")[0] == Action("notify", handler="fs")
    again = apply_base(policy)
    assert again.rules == policy.rules
    both = apply_base(policy, ["net"])
    assert both.sandbox == ["fs", "net"] and both.decide("connect")[0] == Action("notify", handler="net")
    with pytest.raises(SysgateError, match="unknown sandbox part 'nope'"):
        load_text("sandbox: nope\n", "p.policy")


# --- the precedence rule, on the model's reference semantics --------------------------------
SAMPLE = ["openat", "open", "chroot", "clone", "unshare", "connect", "read", "io_uring_setup", "fstatat64"]
ACTIONS = [Action("allow"), Action("errno", 30), Action("kill_process"), Action("log"), Action("notify"),
           Action("notify", handler="fs"), Action("notify", handler="audit"), Action("trap")]
rules = st.lists(st.builds(lambda s, a, cond: Rule(s, a, Cmp(0, "&==", cond, mask=cond) if cond else None),
                           st.sampled_from(SAMPLE), st.sampled_from(ACTIONS),
                           st.sampled_from([0, 0x20000, 0x10000000, 1])), max_size=8)
args = st.tuples(*[st.sampled_from([0, 1, 0x20000, 0x10000000, 0x10020000, 17])] * 6)


@settings(max_examples=300, deadline=None)
@given(rules, st.sampled_from(ACTIONS), st.sampled_from(SAMPLE), args)
def test_base_only_narrows_the_policy(rule_list, default, syscall, call_args):
    """Base refusal > the policy's refusals > the base's route (replacing whatever the policy
    lets run) > the policy's decision for calls the base does not touch."""
    policy = Policy(default=default, arches=["x86_64", "i386"], rules=rule_list)
    base = build_base(["x86_64", "i386"], ["fs", "net"])
    boxed = apply_base(policy, ["fs", "net"])
    mine, _ = policy.decide(syscall, call_args)
    got, _ = boxed.decide(syscall, call_args)
    refusal = next((r.action for r in base.refusals if r.syscall == syscall
                    and (r.condition is None or r.condition.evaluate(call_args))), None)
    if refusal is not None:
        assert got == refusal
    elif syscall in base.routes:
        assert got == (mine if is_refusal(mine) else Action("notify", handler=base.routes[syscall]))
    else:
        assert got == mine


def test_demo_runs_under_the_sandbox():
    res = subprocess.run([sys.executable, "-m", "sysgate.cli.demo"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sysgate run --sandbox" in res.stdout and "sysgate-sandbox" in res.stdout
    assert "/etc/shadow: Permission denied" in res.stdout
    assert "chroot: cannot change root directory to '/': Operation not permitted" in res.stdout


@settings(max_examples=200, deadline=None)
@given(rules, st.sampled_from(ACTIONS))
def test_nothing_to_warn_about_under_any_base(rule_list, default):
    policy = Policy(default=default, arches=["x86_64", "i386"], rules=rule_list)
    assert coverage_warnings(apply_base(policy, ["fs", "net"])) == []
