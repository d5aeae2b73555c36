"""Bad input to every `sysgate` subcommand: one `sysgate: error: ...` line naming the
problem, a documented exit status, never a traceback (real processes, real files)."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import SYSGATE

RAW_ALLOW = bytes.fromhex("20000000000000000600000000" "00ff7f")  # ld nr; ret ALLOW

FILES = {
    "empty": b"",
    "garbage.bin": b"\xff\xfe\x00garbage\x80",
    "nonutf.txt": b"default: allow\nread: \xff\xfe\n",
    "list.json": b"[1, 2]",
    "bad.json": b"{bad",
    "ok.raw": RAW_ALLOW,
    "ok.bpf": b"ld [0]\nret #0x7fff0000\n",
    "pol.txt": b"default: allow\nmkdir: errno(EPERM)\n",
    "notify.txt": b"default: allow\nmkdir: notify(fs)\n",
    "guard.txt": b"default: allow\nopenat: notify(fs)\nuname: notify(guard)\n",
    "typo.txt": b"default: allow\nuname: notify(identiy)\n",
    "p.json": b'{"defaultAction": "SCMP_ACT_ALLOW"}',
}


def stored_filter(**changes) -> bytes:
    doc = {"format": "sysgate-filter", "version": 1, "name": "f", "group": "g", "arches": ["x86_64"],
           "flags": {}, "metadata": {}, "program": base64.b64encode(RAW_ALLOW).decode()}
    doc.update(changes)
    return json.dumps(doc).encode()


def recording(**changes) -> bytes:
    head = {"format": "sysgate-record", "version": 1, "native_arch": "x86_64",
            "default": {"kind": "errno", "errno": 1}, "on_error_errno": 1}
    rec = {"id": 1, "pid": 10, "arch": "x86_64", "nr": 12, "syscall": "brk", "args": [0] * 6,
           "ip": 0, "io": [], "reply": {"kind": "continue"}}
    rec.update(changes)
    return (json.dumps(head) + "\n" + json.dumps(rec) + "\n").encode()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    for name, data in FILES.items():
        (d / name).write_bytes(data)
    (d / "dir").mkdir()
    for name, changes in {"f_arches": {"arches": ["nosuch"]}, "f_arches_str": {"arches": "x86_64"},
                          "f_mips": {"arches": ["mips64"]},
                          "f_routes": {"metadata": {"handlers": {"openat": [5]}}},
                          "f_routes_list": {"metadata": {"handlers": [1]}}}.items():
        (d / f"{name}.json").write_bytes(stored_filter(**changes))
    for name, changes in {"r_args": {"args": "x"}, "r_id": {"id": -1}, "r_ip": {"ip": "x"},
                          "r_nr": {"nr": 2**40}, "r_pid": {"pid": "x"}, "r_io": {"io": [5]},
                          "r_reply": {"reply": None}, "r_arch": {"arch": "nosuch"}}.items():
        (d / f"{name}.jsonl").write_bytes(recording(**changes))
    (d / "head.jsonl").write_bytes(recording().splitlines(True)[0])     # a recording of no calls
    return d


def sysgate(args, cwd, **kw):
    return subprocess.run(SYSGATE + list(args), cwd=cwd, capture_output=True, timeout=20, **kw)


def assert_one_line_error(proc, codes=(2,), *words):
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert proc.returncode in codes, (proc.returncode, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("sysgate: error: ")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])


# (argv, accepted exit codes, words the message must contain)
CASES = [
    # files: missing, directory, binary, non-UTF-8, wrong format
    (["asm", "nope"], (2,), ["nope", "No such file"]),
    (["asm", "dir"], (2,), ["Is a directory"]),
    (["asm", "empty"], (2,), ["0 instructions"]),
    (["disasm", "garbage.bin"], (2,), ["multiple of 8"]),
    (["disasm", "nonutf.txt"], (2,), ["UTF-8"]),
    (["emulate", "--syscall", "read", "list.json"], (2,), ["list.json:1:1"]),
    (["policy", "check", "nope"], (2,), ["no such policy file"]),
    (["policy", "check", "dir"], (2,), ["Is a directory"]),
    (["policy", "check", "garbage.bin"], (2,), ["garbage.bin"]),
    (["policy", "check", "bad.json"], (2,), ["invalid JSON"]),
    (["policy", "convert", "--to", "oci", "nonutf.txt"], (2,), ["nonutf.txt"]),
    # unknown architectures, syscalls, groups
    (["policy", "check", "--arch", "nosuch", "p.json"], (2,), ["unknown architecture 'nosuch'"]),
    (["policy", "convert", "--to", "oci", "--arch", "nosuch", "p.json"], (2,), ["unknown architecture"]),
    (["asm", "--arch", "nosuch", "ok.bpf"], (2,), ["unknown architecture"]),
    (["disasm", "--arch", "nosuch", "ok.raw"], (2,), ["unknown architecture"]),
    (["syscalls", "--arch", "nosuch"], (2,), ["unknown architecture"]),
    (["syscalls", "nosuch"], (2,), ["unknown syscall 'nosuch'"]),
    (["syscalls", "99999999999999999999999"], (2,), ["out of range"]),
    (["syscalls", "1e5"], (2,), ["invalid syscall number"]),
    (["syscalls", b"\xff".decode("utf-8", "surrogateescape")], (2,), ["unknown syscall"]),
    (["policy", "groups", "nosuch"], (2,), ["unknown syscall group"]),
    # emulate numbers
    (["emulate", "--syscall", "read", "--args=1,2,3,4,5,6,7", "ok.raw"], (2,), ["at most 6"]),
    (["emulate", "--syscall", "read", "--args=x", "ok.raw"], (2,), ["not a number"]),
    (["emulate", "--syscall", "read", "--args=,,", "ok.raw"], (2,), ["not a number"]),
    (["emulate", "--syscall", "read", "--args=99999999999999999999999", "ok.raw"], (2,), ["out of range"]),
    (["emulate", "--syscall", "read", "--args=-99999999999999999999999", "ok.raw"], (2,), ["out of range"]),
    (["emulate", "--syscall", "read", "--ip=x", "ok.raw"], (2,), ["--ip"]),
    (["emulate", "--syscall", "4294967296", "ok.raw"], (2,), ["out of range"]),
    (["emulate", "--syscall=", "ok.raw"], (2,), ["empty syscall name"]),
    (["emulate", "--syscall", "read", "--ip=-1", "ok.raw"], (2,), ["--ip", "negative"]),
    (["emulate", "--syscall", "read", f"--ip={2**64}", "ok.raw"], (2,), ["--ip", "out of range"]),
    (["emulate", "--syscall=-1", "ok.raw"], (2,), ["syscall numbers are not negative: '-1'"]),
    (["syscalls", "-1"], (2,), ["syscall numbers are not negative"]),
    (["syscalls", "--", "-0x10"], (2,), ["syscall numbers are not negative"]),
    # output paths
    (["asm", "-o", "/nonexistent/x", "ok.bpf"], (2,), ["cannot write"]),
    (["asm", "-o", "dir", "ok.bpf"], (2,), ["Is a directory"]),
    (["policy", "convert", "--to", "oci", "-o", "/nonexistent/x", "pol.txt"], (2,), ["cannot write"]),
    (["learn", "-o", "/nonexistent/x", "--", "true"], (2,), ["cannot write"]),
    (["record", "-o", "dir", "--", "true"], (2,), ["cannot write"]),
    (["record", "-o", "-", "--", "true"], (2,), ["record -o -", "give a file name"]),
    # run: its own errors are 125, the command's 126/127
    (["run", "--"], (125,), ["no command given"]),
    (["run"], (125,), ["no command given"]),
    (["run", "--policy", "nope", "--", "true"], (125,), ["no such policy file"]),
    (["run", "--profile", "nosuch", "--", "true"], (125,), ["not found"]),
    (["run", "--filter", "garbage.bin", "--", "true"], (125,), ["not UTF-8"]),
    (["run", "--filter", "list.json", "--", "true"], (125,), ["not a stored sysgate filter"]),
    (["run", "--filter", "f_arches.json", "--", "true"], (125,), ["unknown architecture"]),
    (["run", "--filter", "f_arches_str.json", "--", "true"], (125,), ["arches"]),
    (["run", "--filter", "f_routes.json", "--", "true"], (125,), ["handlers"]),
    (["run", "--filter", "f_routes_list.json", "--", "true"], (125,), ["handlers"]),
    (["run", "--record", "/nonexistent/x", "--", "true"], (125,), ["cannot write"]),
    (["run", "--handlers", "{bad", "--policy", "pol.txt", "--", "true"], (125,), ["invalid JSON"]),
    # attach: PIDs
    (["attach", "--bpf", "ok.raw", "0"], (2,), ["invalid PID 0"]),
    (["attach", "--bpf", "ok.raw", "--", "-1"], (2,), ["invalid PID -1"]),
    (["attach", "--bpf", "ok.raw", "99999999999999999999"], (2,), ["no process"]),
    (["attach", "--bpf", "garbage.bin", "1"], (2,), ["8 bytes"]),
    (["attach", "--filter", "garbage.bin", "1"], (2,), ["not UTF-8"]),
    (["attach", "--bpf", "ok.raw", "2"], (2,), ["kernel thread"]),
    # learn/record
    (["learn", "-o", "x.txt", "--"], (2,), ["no command given"]),
    (["learn", "-o", "x.txt", "--top", "-5", "--", "true"], (2,), ["--top", "0 or more, not -5"]),
    (["learn", "-o", "x.txt", "--arch", "nosuch", "--", "true"], (2,), ["unknown architecture"]),
    (["learn", "-o", "x.txt", "--default", "errno(NOSUCH)", "--", "true"], (2,), ["NOSUCH"]),
    (["record", "-o", "r.jsonl", "--policy", "garbage.bin", "--", "true"], (2,), ["garbage.bin"]),
    # replay: malformed recordings name file:line
    (["replay", "--show", "garbage.bin"], (2,), ["not UTF-8"]),
    (["replay", "--show", "bad.json"], (2,), ["not JSON"]),
    *[(["replay", "--show", f"r_{k}.jsonl"], (2,), [f"r_{k}.jsonl:2", key])
      for k, key in (("args", "args"), ("id", "id"), ("ip", "ip"), ("nr", "nr"), ("pid", "pid"),
                     ("io", "io"), ("reply", "reply"), ("arch", "arch"))],
    (["replay", "--handlers", "audit", "--default", "value(x)", "r_args.jsonl"], (2,), ["r_args.jsonl:2"]),
    (["replay", "--handlers", "fs", "--config", "garbage.bin", "head.jsonl"], (2,), ["not UTF-8"]),
    (["replay", "--handlers", "fs", "--config", '{"fss": {}}', "head.jsonl"], (2,),
     ["unknown section(s) fss", "did you mean 'fs'?"]),
    (["replay", "--handlers", "fs", "--config", '{"fs": {"rules": 5}}', "head.jsonl"], (2,),
     ["'rules' must be a list of strings"]),
    # handlers / agent
    (["handlers", "--config", "{bad"], (2,), ["invalid JSON"]),
    (["handlers", "--config", '{"nosuch": {}}'], (2,), ["unknown handler"]),
    (["handlers", "--config", "garbage.bin"], (2,), ["garbage.bin", "not UTF-8"]),
    *[(["handlers", "--config", text], (2,), ["JSON object with one section per handler", f"not {text}"])
      for text in ("[1]", '"x"', "5")],
    (["handlers", "--config", "list.json"], (2,), ["list.json", "one section per handler"]),
    (["run", "--force", "--handlers", "garbage.bin", "--policy", "notify.txt", "--", "true"], (125,), ["not UTF-8"]),
    (["run", "--force", "--handlers", "[1]", "--policy", "notify.txt", "--", "true"], (125,),
     ["one section per handler"]),
    (["attach", "--supervise", "--handlers", "garbage.bin", "--policy", "notify.txt", "1"], (2,), ["not UTF-8"]),
    # handler option shapes: (section, the message's words)
    *[(["handlers", "--config", json.dumps(config)], (2,), words) for config, words in (
        ({"identity": {"hostname": 5}}, ["'hostname' must be a string"]),
        ({"identity": {"release": ["x"]}}, ["'release' must be a string"]),
        ({"fs": {"rules": 5}}, ["'rules' must be a list of strings, not 5"]),
        ({"fs": {"rules": ["allow read /x", 5]}}, ["'rules' must be a list of strings"]),
        ({"fs": {"as_target": "yes"}}, ["'as_target' must be true or false"]),
        ({"fs": {"deadline": "x"}}, ["'deadline' must be a number"]),
        ({"net": {"rules": "allow connect unix:/x"}}, ["'rules' must be a list of strings"]),
        ({"net": {"default": 1}}, ["'default' must be a string"]),
        ({"net": {"errno_denied": [13]}}, ["'errno_denied' must be an errno"]),
        ({"container": {"mkdir": 5}}, ["'mkdir' must be a list of strings"]),
        ({"container": {"devices": [[1, 2, 3]]}}, ["'devices' must be"]),
        ({"container": {"mounts": 5}}, ["'mounts' must be a list"]),
        ({"container": {"mounts": [{"fstype": "tmpfs", "flags": "MS_RDONLY"}]}}, ["flags a list of strings"]),
        ({"container": {"mkdir_otherwise": 1.5}}, ["'mkdir_otherwise'"]),
        ({"time": {"start": "now"}}, ["'start' must be a number"]),
        ({"time": {"step": 1e300}}, ["'step' must be a number"]),
        ({"random": {"seed": [1]}}, ["'seed' must be a string or an integer"]),
        ({"audit": {"log": 5}}, ["'log' must be a file name"]),
        ({"audit": {"summary": "no"}}, ["'summary' must be true or false"]),
        ({"audit": {"wrap": "fs"}}, ["'wrap' must be true or false or a list of strings"]),
        ({"audit": {"max_string": -1}}, ["'max_string' must be an integer >= 0"]),
        ({"audit": 5}, ["handler 'audit': its config must be an object"]),
    )],
    (["agent", "--socket", "dir"], (2,), ["not a socket"]),
    (["agent", "--socket", ""], (2,), ["empty"]),
    (["agent", "--socket", "s", "--config", "garbage.bin"], (2,), ["not UTF-8"]),
    (["agent", "--socket", "s", "--timeout", "nan"], (2,), ["timeout"]),
    (["agent", "--socket", "s", "--timeout", "-1"], (2,), ["timeout"]),
    (["agent", "--socket", "/nonexistent/s"], (2,), ["cannot listen"]),
]


SUPPORTED = "supported: x86_64, i386, x32, aarch64, arm, riscv64, s390x, ppc64le"
CASES += [
    # unknown handler names: policy check refuses what run refuses, with the same lookup and message
    (["policy", "check", "guard.txt"], (2,), ["guard.txt:3", "unknown handler 'guard'",
                                              "(known: audit, container, fs, identity, net, random, time)"]),
    (["policy", "check", "typo.txt"], (2,), ["typo.txt:2", "unknown handler 'identiy'", "did you mean 'identity'?"]),
    (["run", "--policy", "typo.txt", "--", "true"], (125,), ["unknown handler 'identiy'", "did you mean 'identity'?"]),
    # architectures without syscall tables: refused everywhere, with the one supported list
    *[(argv, codes, ["not supported", SUPPORTED]) for argv, codes in (
        (["policy", "convert", "--to", "text", "--arch", "mips64", "p.json"], (2,)),
        (["policy", "check", "--arch", "mips64", "p.json"], (2,)),
        (["compile", "--arch", "mips64", "pol.txt"], (2,)),
        (["syscalls", "--arch", "loongarch64"], (2,)),
        (["asm", "--arch", "ppc64", "ok.bpf"], (2,)),
        (["disasm", "--arch", "s390", "ok.raw"], (2,)),
        (["emulate", "--arch", "mipsel", "--syscall", "1", "ok.raw"], (2,)),
        (["learn", "-o", "x.txt", "--arch", "mips", "--", "true"], (2,)),
        (["run", "--filter", "f_mips.json", "--", "true"], (125,)),
    )],
    (["syscalls", "--arch", "vax"], (2,), ["unknown architecture 'vax'", SUPPORTED]),
]


@pytest.mark.parametrize("argv,codes,words", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_line(work, argv, codes, words):
    assert_one_line_error(sysgate(argv, work), codes, *words)


def test_replay_default_value_out_of_range(work):
    (work / "ok.jsonl").write_bytes(recording())
    proc = sysgate(["replay", "--handlers", "audit", "--default", "value(99999999999999999999999)", "ok.jsonl"], work)
    assert_one_line_error(proc, (2,), "out of the 64-bit")


def test_unreadable_file_as_nobody(work):
    path = work / "secret.txt"
    path.write_bytes(b"default: allow\n")
    path.chmod(0)
    os.chmod(work, 0o755)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *SYSGATE,
                           "policy", "check", str(path)], capture_output=True, timeout=20,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert_one_line_error(proc, (2,), "Permission denied")


@pytest.mark.parametrize("argv", [["disasm", "-"], ["policy", "check", "-"]])
def test_closed_stdin(work, argv):
    proc = sysgate(argv, work, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0))
    assert_one_line_error(proc, (2,), "standard input is closed")


@pytest.mark.parametrize("argv", [["asm", "ok.bpf"], ["syscalls"], ["policy", "convert", "--to", "oci", "pol.txt"]])
def test_closed_stdout(work, argv):
    proc = subprocess.run(SYSGATE + argv, cwd=work, stderr=subprocess.PIPE, timeout=20,
                          preexec_fn=lambda: os.close(1))
    assert_one_line_error(proc, (2,), "standard output is closed")


def test_broken_pipe_is_quiet(work):
    reader, writer = os.pipe()
    proc = subprocess.Popen(SYSGATE + ["syscalls", "--json"], cwd=work, stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    os.read(reader, 1)
    os.close(reader)
    _, err = proc.communicate(timeout=20)
    assert b"Traceback" not in err and b"Exception ignored" not in err, err
    assert proc.returncode in (0, 141, -signal.SIGPIPE)


@pytest.mark.parametrize("argv", [["run", "--", "sleep", "5"], ["agent", "--socket", "int.sock"]])
def test_sigint_midway(work, argv):
    proc = subprocess.Popen(SYSGATE + argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(0.8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert b"Traceback" not in err, err
    assert proc.returncode in (0, 130, 128 + signal.SIGINT, -signal.SIGINT), (proc.returncode, err)


def test_version(work):
    from sysgate import __version__
    proc = sysgate(["--version"], work)
    assert proc.returncode == 0 and proc.stdout.decode() == f"sysgate {__version__}\n", proc
    assert proc.stderr == b""


def test_policy_check_accepts_every_builtin_handler(work):
    from sysgate.handlers import registry
    text = "default: allow\n" + "".join(f"{nr}: notify({name})\n" for nr, name in
                                       zip(("uname", "openat", "connect", "mkdir", "clock_gettime", "getrandom",
                                            "read"), registry.names()))
    (work / "builtins.txt").write_text(text)
    proc = sysgate(["policy", "check", "builtins.txt"], work)
    assert proc.returncode == 0 and b": ok: " in proc.stdout, proc


@pytest.mark.parametrize("argv, word", [(["run", "--bogus", "--", "true"], "unrecognized arguments: --bogus"),
                                        (["run", "--landlock=maybe", "--", "true"], "invalid choice")])
def test_run_usage_errors_exit_125_like_its_own(work, argv, word):
    """argparse's usage errors of `run` exit 125, not 2 (2 may be the command's own status)."""
    proc = sysgate(argv, work, text=True)
    assert proc.returncode == 125 and word in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_other_commands_keep_exit_2_for_usage_errors(work):
    assert sysgate(["compile", "--bogus", "x"], work).returncode == 2
