"""``sysgate-runc``: command-line parsing, the config.json rewrite, and real runc/crun runs through it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from support import oci
from support.oci import RUNTIMES
from sysgate.runtime import argv as rargv
from sysgate.runtime.bundle import BundleError, Platform, connect_bundle, connect_config

WRAPPER = [sys.executable, "-m", "sysgate.runtime"]
RUN = os.getpid()
NOTIFY_RULE = {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}


# --- argv ------------------------------------------------------------------------------------
def test_wrapper_options_then_the_runtimes_argv_untouched():
    opts, rest = rargv.split_wrapper_options(
        ["--agent-socket", "/a.sock", "--runtime=crun", "--metadata", "handlers=x\ndefault=deny",
         "--policy", "p.json", "--root", "/r", "create", "--bundle", "b", "--runtime", "id"])
    assert (opts.agent_socket, opts.runtime, opts.metadata, opts.policy) == (
        "/a.sock", "crun", "handlers=x\ndefault=deny", "p.json")
    assert rest == ["--root", "/r", "create", "--bundle", "b", "--runtime", "id"]
    assert rargv.split_wrapper_options(["--", "--runtime", "x"])[1] == ["--runtime", "x"]


GLOBALS = st.lists(st.sampled_from([
    ["--root", "/run/r"], ["--root=/run/r"], ["-root", "/run/r"], ["--log", "/l.json"], ["--log-format", "json"],
    ["--log-format=json"], ["--systemd-cgroup"], ["--debug"], ["--rootless", "false"], ["--criu", "/c"],
    ["--cgroup-manager=cgroupfs"], ["--log-level", "debug"]]), max_size=5)
CREATE_FLAGS = st.lists(st.sampled_from([
    ["--pid-file", "/p"], ["--console-socket", "/c.sock"], ["--no-pivot"], ["--preserve-fds", "2"],
    ["--no-new-keyring"], ["-d"], ["--detach"], ["--keep"]]), max_size=4)
PATHS = st.text(st.sampled_from("ab/-_.=x"), min_size=1, max_size=12).filter(lambda p: not p.startswith("-"))


@settings(max_examples=300, deadline=None)
@given(GLOBALS, st.sampled_from(["create", "run"]), CREATE_FLAGS,
       st.sampled_from(["--bundle", "-b", "--bundle=", "-b="]), PATHS, CREATE_FLAGS, PATHS)
def test_bundle_found_behind_any_global_flags(globals_, command, before, form, bundle, after, cid):
    bundle_args = [form + bundle] if form.endswith("=") else [form, bundle]
    argv = [*sum(globals_, []), command, *sum(before, []), *bundle_args, *sum(after, []), cid]
    call = rargv.parse_runtime_argv(argv)
    assert call.argv == argv and call.command == command and call.creates
    assert call.bundle == bundle
    assert call.log_file == ("/l.json" if ["--log", "/l.json"] in globals_ else None)
    assert call.log_format == ("json" if ["--log-format", "json"] in globals_ or ["--log-format=json"] in globals_
                               else "text")


@given(GLOBALS, st.sampled_from(["start", "state", "kill", "delete", "exec", "features", "ps", "events"]),
       st.lists(PATHS, max_size=3))
def test_other_subcommands_are_not_creates(globals_, command, rest):
    call = rargv.parse_runtime_argv([*sum(globals_, []), command, *rest])
    assert call.command == command and not call.creates


def test_create_without_bundle_flag_uses_the_working_directory():
    assert rargv.parse_runtime_argv(["create", "id"]).bundle == "."
    assert rargv.parse_runtime_argv(["run", "-f", "other.json", "id"]).config_name == "other.json"


# --- the config rewrite ----------------------------------------------------------------------
def seccomp_config(seccomp=None, annotations=None) -> dict:
    config = {"ociVersion": "1.0.2", "process": {"args": ["true"]}, "linux": {"namespaces": []}}
    if seccomp is not None:
        config["linux"]["seccomp"] = seccomp
    if annotations is not None:
        config["annotations"] = annotations
    return config


@pytest.fixture
def agent_socket(tmp_path):
    """A listening AF_UNIX socket where the wrapper expects the agent."""
    import socket
    path = str(tmp_path / "agent.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen()
    yield path
    sock.close()


def test_notify_profile_gets_listener_and_metadata_in_order(agent_socket):
    config = seccomp_config({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [NOTIFY_RULE],
                             "listenerMetadata": "default=deny"},
                            {"io.sysgate.metadata": "MKDIR_TMPL=-{{.Pid}}", "io.sysgate.handlers": "mkdir-deny",
                             "other": "kept"})
    assert connect_config(config, Platform(agent_socket, "handlers=mount-deny"))
    seccomp = config["linux"]["seccomp"]
    assert seccomp["listenerPath"] == agent_socket
    assert seccomp["listenerMetadata"].split("\n") == [
        "handlers=mount-deny", "default=deny", "MKDIR_TMPL=-{{.Pid}}", "handlers=mkdir-deny"]
    assert list(config) == ["ociVersion", "process", "linux", "annotations"]


def test_default_action_notify_counts_and_an_own_listener_path_is_kept(agent_socket):
    config = seccomp_config({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": agent_socket})
    assert not connect_config(config, Platform("/elsewhere.sock"))     # nothing to add
    assert config["linux"]["seccomp"]["listenerPath"] == agent_socket


def test_profile_without_notify_is_left_alone():
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    config = seccomp_config(json.loads(json.dumps(seccomp)), {"io.sysgate.handlers": "mkdir-deny"})
    def never():
        raise AssertionError("the platform default must not replace a container's profile")
    assert not connect_config(config, Platform("/missing.sock", "handlers=x", never))
    assert config["linux"]["seccomp"] == seccomp


def test_platform_default_only_without_a_profile(agent_socket):
    default = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [NOTIFY_RULE]}
    config = seccomp_config()
    assert connect_config(config, Platform(agent_socket, "", lambda: dict(default)))
    assert config["linux"]["seccomp"]["listenerPath"] == agent_socket
    bare = {"ociVersion": "1.0.2"}                                      # no "linux" at all
    assert connect_config(bare, Platform(agent_socket, "", lambda: dict(default)))
    assert bare["linux"]["seccomp"]["syscalls"] == [NOTIFY_RULE]


ACTIONS = st.sampled_from(["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_LOG", "SCMP_ACT_TRACE",
                           "SCMP_ACT_NOTIFY"])
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=3), max_leaves=8)
SECCOMPS = st.fixed_dictionaries(
    {"defaultAction": ACTIONS,
     "syscalls": st.lists(st.fixed_dictionaries({"names": st.lists(st.sampled_from(["mkdir", "read", "x"]), max_size=2),
                                                 "action": ACTIONS},
                                                optional={"args": JSON_VALUES, "errnoRet": st.integers(0, 200)}),
                          max_size=4)},
    optional={"architectures": st.lists(st.sampled_from(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]), max_size=2),
              "flags": st.lists(st.text(max_size=6), max_size=2), "listenerMetadata": st.text(max_size=8),
              "extra": JSON_VALUES})


@settings(max_examples=300, deadline=None)
@given(SECCOMPS, st.dictionaries(st.sampled_from(["a", "io.sysgate.metadata", "io.sysgate.handlers"]),
                                 st.text(st.characters(exclude_characters="\r\n"), max_size=6), max_size=2),
       st.text(max_size=6))
def test_rewrite_changes_nothing_but_the_listener(seccomp, annotations, platform_metadata):
    """Whatever the profile, only listenerPath/listenerMetadata may change, and only for NOTIFY profiles."""
    import socket
    with socket.socket(socket.AF_UNIX) as sock:
        path = f"/tmp/sysgate-test-{os.getpid()}.sock"
        if os.path.exists(path):
            os.unlink(path)
        sock.bind(path)
        try:
            config = seccomp_config(json.loads(json.dumps(seccomp)), dict(annotations))
            changed = connect_config(config, Platform(path, platform_metadata))
        finally:
            os.unlink(path)
    after = config["linux"]["seccomp"]
    notify = seccomp["defaultAction"] == "SCMP_ACT_NOTIFY" or any(r["action"] == "SCMP_ACT_NOTIFY"
                                                                   for r in seccomp["syscalls"])
    if not notify:
        assert not changed and after == seccomp
        return
    assert after["listenerPath"] == path
    assert {k: v for k, v in after.items() if k not in ("listenerPath", "listenerMetadata")} == \
        {k: v for k, v in seccomp.items() if k != "listenerMetadata"}
    assert config["annotations"] == annotations
    own = seccomp.get("listenerMetadata", "")
    assert after.get("listenerMetadata", "").startswith(platform_metadata) and own in after.get("listenerMetadata", "")


@pytest.mark.parametrize("config, message", [
    (seccomp_config({"syscalls": [NOTIFY_RULE]}, {"io.sysgate.handler": "typo"}),
     "unknown annotation io.sysgate.handler"),
    (seccomp_config({"syscalls": [NOTIFY_RULE]}, {"io.sysgate.handlers": "a\ndefault=continue"}), "must be one line"),
    (seccomp_config([]), '"linux.seccomp" must be an object'),
    (seccomp_config({"syscalls": {}}), '"linux.seccomp.syscalls" must be a list'),
    ({"linux": []}, '"linux" must be an object'),
    (seccomp_config({"syscalls": [NOTIFY_RULE]}), "agent socket /missing.sock: No such file or directory"),
    (seccomp_config({"syscalls": [NOTIFY_RULE], "listenerMetadata": 3}), "listenerMetadata\" must be a string"),
])
def test_what_the_wrapper_refuses(config, message):
    with pytest.raises(BundleError, match=re.escape(message)):
        connect_config(config, Platform("/missing.sock"))


def test_rewrite_is_atomic_and_keeps_mode(tmp_path, agent_socket):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(seccomp_config({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [NOTIFY_RULE]})))
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    assert connect_bundle(str(tmp_path), Platform(agent_socket))
    assert path.stat().st_mode & 0o777 == 0o640 and path.stat().st_ino != inode     # replaced, not rewritten
    assert json.loads(path.read_text())["linux"]["seccomp"]["listenerPath"] == agent_socket
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.sock", "config.json"]


def test_unreadable_or_invalid_bundle(tmp_path):
    with pytest.raises(BundleError, match=r"cannot read .*/config.json: No such file or directory"):
        connect_bundle(str(tmp_path), Platform("/a.sock"))
    (tmp_path / "config.json").write_bytes(b"{\"linux\": \xff")
    with pytest.raises(BundleError, match="not a valid JSON config"):
        connect_bundle(str(tmp_path), Platform("/a.sock"))
    (tmp_path / "config.json").write_text('{"linux": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(BundleError, match=r"not a valid JSON config \(nested too deeply\)"):
        connect_bundle(str(tmp_path), Platform("/a.sock"))


# --- the wrapper with real runc and crun -----------------------------------------------------
def through_wrapper(runtime: str, state_dir, options: list[str], *args: str) -> list[str]:
    """``oci.Runtime(runtime).command(ARGS)`` with sysgate-runc (and ``options``) in front of the runtime."""
    cmd = oci.Runtime(runtime, state_dir).command(*args)
    i = cmd.index(runtime)
    return [*cmd[:i], *WRAPPER, *options, "--runtime", runtime, *cmd[i + 1:]]


def run(cmd, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wrapper_connects_a_bundle_without_listener(runtime, agent, tmp_path):
    cid = f"wrap-{runtime}-{RUN}"
    bundle = oci.make_bundle(tmp_path / cid, ["sh", "-c", "mkdir /tmp/x; echo mkdir=$?"], None,
                             annotations={"io.sysgate.handlers": "mkdir-deny:ENOTDIR"})
    rt = oci.Runtime(runtime, tmp_path / "state")
    try:
        out = run(through_wrapper(runtime, tmp_path / "state", ["--agent-socket", agent.socket],
                                  "run", "--bundle", str(bundle), cid))
    finally:
        rt.delete(cid)
    assert out.stdout.split() == ["mkdir=1"] and "Not a directory" in out.stderr, out.stdout + out.stderr
    agent.wait_log(rf"container {cid}: creating process \d+ joined group {cid} [^\n]*handlers: mkdir-deny:ENOTDIR\)")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bundle_without_notify_is_byte_for_byte_untouched(runtime, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("running OCI containers needs root")
    cid = f"plain-{runtime}-{RUN}"
    bundle = oci.make_bundle(tmp_path / cid, ["sh", "-c", "mkdir /tmp/x && echo made; mknod /tmp/n p"], None)
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["seccomp"]["syscalls"] = [{"names": ["mknodat", "mknod"], "action": "SCMP_ACT_ERRNO",
                                               "errnoRet": 18}]
    (bundle / "config.json").write_text(json.dumps(config, indent=3))
    before = (bundle / "config.json").read_bytes()
    stat_before = os.stat(bundle / "config.json")
    try:
        out = run(through_wrapper(runtime, tmp_path / "state", ["--agent-socket", str(tmp_path / "none.sock")],
                                  "run", "--bundle", str(bundle), cid))
    finally:
        oci.Runtime(runtime, tmp_path / "state").delete(cid)
    assert out.stdout.split() == ["made"] and "Invalid cross-device link" in out.stderr, out.stdout + out.stderr
    assert (bundle / "config.json").read_bytes() == before
    after = os.stat(bundle / "config.json")
    assert (after.st_ino, after.st_mtime_ns) == (stat_before.st_ino, stat_before.st_mtime_ns)


def test_missing_agent_fails_with_one_line_and_a_json_log_entry(tmp_path):
    if "runc" in oci.missing_runtimes():
        pytest.skip(oci.missing_runtimes()["runc"])
    cid = f"down-{RUN}"
    bundle = oci.make_bundle(tmp_path / cid, ["sh", "-c", "echo started"], None)
    log = tmp_path / "log.json"
    missing = str(tmp_path / "no-agent.sock")
    out = run([*WRAPPER, "--agent-socket", missing, "--root", str(tmp_path / "state"), "--log", str(log),
               "--log-format", "json", "create", "--bundle", str(bundle), cid])
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"sysgate-runc: error: agent socket {missing}: No such file or directory " \
                         "(is sysgate agent running?)\n"
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and entry["msg"].startswith(f"sysgate-runc: agent socket {missing}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", entry["time"])
    assert oci.Runtime("runc", tmp_path / "state").state(cid) is None     # runc never ran


def test_other_subcommands_pass_through(tmp_path):
    if "runc" in oci.missing_runtimes():
        pytest.skip(oci.missing_runtimes()["runc"])
    for args in (["--version"], ["--root", str(tmp_path), "state", "no-such-container"], ["features"]):
        direct = run(["runc", *args])
        wrapped = run([*WRAPPER, "--runtime", "/usr/sbin/runc", *args])
        assert (wrapped.returncode, wrapped.stdout) == (direct.returncode, direct.stdout), args


@pytest.mark.parametrize("argv, message", [
    (["--agent-socket"], "option --agent-socket needs a value"),
    (["--runtime", "", "state", "x"], "option --runtime needs a non-empty value"),
    (["--runtime", "/no/such/runc", "state", "x"], "runtime '/no/such/runc' not found or not executable"),
])
def test_bad_wrapper_options(argv, message):
    out = run([*WRAPPER, *argv])
    assert out.returncode == 2 and out.stderr == f"sysgate-runc: error: {message}\n"


def test_bad_platform_policy_refuses_unconfined_containers(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(seccomp_config()))
    (tmp_path / "bad.policy").write_text("this is not a policy\n")
    out = run([*WRAPPER, "--policy", str(tmp_path / "bad.policy"), "--runtime", "/bin/true",
               "create", "--bundle", str(tmp_path), "x"])
    assert out.returncode == 2 and out.stderr.startswith("sysgate-runc: error: ") and out.stderr.count("\n") == 1, \
        out.stderr
    assert json.loads((tmp_path / "config.json").read_text()) == seccomp_config()
