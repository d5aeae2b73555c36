"""The filter cache of ``sysgate run`` (sysgate.process.filtercache): a run launched from it
enforces the same filter as a fresh compile, and an entry that is corrupt, tampered with, not
private or not the user's is ignored (and rebuilt), never launched. Real ``sysgate run`` processes,
each with a cache directory of its own."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from sysgate import __version__
from sysgate.bpf.insn import ret
from sysgate.compiler import compile_policy
from sysgate.kernel import abi
from sysgate.policy_loader import load_text
from sysgate.process import filtercache
from sysgate.process.filter import Filter
from sysgate.process.install import notifies

POLICY = "default: allow\nuname: errno(EPERM)\nmkdir: errno(EACCES)\n"
#: prints the verdicts of the two refused calls and of an allowed one
SCRIPT = "uname >/dev/null 2>&1; echo uname=$?; mkdir d 2>/dev/null; echo mkdir=$?; true; echo true=$?"
REFUSED = "uname=1\nmkdir=1\ntrue=0\n"
ALLOWED = "uname=0\nmkdir=0\ntrue=0\n"


def _run(tmp_path, *options, policy=POLICY, env=None, importtime=False, timeout=60):
    path = tmp_path / "p.policy"
    path.write_text(policy)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    if (work / "d").exists():
        (work / "d").rmdir()
    environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **(env or {})}
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c",
            "import sys; from sysgate.cli import main; sys.exit(main())",
            "run", *options, "--policy", str(path), "--", "sh", "-c", SCRIPT]
    return subprocess.run(argv, cwd=work, env=environ, capture_output=True, text=True, timeout=timeout)


def _entry(tmp_path, policy=POLICY, log=False):
    return tmp_path / "cache" / "sysgate" / "filters" / filtercache.key(policy, __version__, log=log)


def _entry_file(program: bytes, key: str) -> str:
    return (f"sysgate-filter-cache 1\nkey {key}\narches {abi.native_arch()}\nflags \n"
            f"sha256 {filtercache.sha256(program).hexdigest()}\nprogram {program.hex()}\n")


def _imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_a_cached_run_enforces_the_same_filter(tmp_path):
    first = _run(tmp_path)
    assert (first.returncode, first.stdout) == (0, REFUSED), first.stderr
    entry = _entry(tmp_path)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
    # the stored program is byte for byte what compiling the policy gives
    cached = filtercache.lookup(entry.name, str(entry.parent))
    assert cached is not None
    assert cached.program == Filter.from_policy(load_text(POLICY, "p.policy")).program
    assert cached.program == compile_policy(load_text(POLICY, "p.policy")).pack()
    again = _run(tmp_path, importtime=True)
    assert (again.returncode, again.stdout) == (0, REFUSED), again.stderr
    loaded = _imported(again.stderr)
    assert "sysgate.process.filtercache" in loaded                   # launched from the cache:
    assert not {"sysgate.compiler", "sysgate.policy.parser", "argparse"} & loaded   # no compile, no argparse


def test_the_cache_is_not_used_when_turned_off(tmp_path):
    r = _run(tmp_path, "--no-cache")
    assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr
    r = _run(tmp_path, env={"SYSGATE_NO_CACHE": "1"})
    assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr
    assert not (tmp_path / "cache").exists()
    _run(tmp_path)
    # an entry that would let everything through is not read either when turned off
    entry = _entry(tmp_path)
    allow = Filter.from_program([ret(abi.SECCOMP_RET_ALLOW)]).program
    entry.write_text(_entry_file(allow, entry.name))
    assert _run(tmp_path).stdout == ALLOWED           # (the cache is used: the test's tampering shows)
    assert _run(tmp_path, "--no-cache").stdout == REFUSED
    assert _run(tmp_path, env={"SYSGATE_NO_CACHE": "1"}).stdout == REFUSED


def _tamper_program(entry):
    lines = entry.read_text().split("\n")
    program = bytearray(bytes.fromhex(lines[5].split(" ")[1]))
    program[-4:] = abi.SECCOMP_RET_ALLOW.to_bytes(4, sys.byteorder)
    lines[5] = f"program {program.hex()}"             # the recorded sha256 no longer matches
    entry.write_text("\n".join(lines))


def _garbage(entry):
    entry.write_bytes(os.urandom(300))


def _truncated(entry):
    entry.write_text(entry.read_text()[:150])


def _another_key(entry):
    text = entry.read_text()
    entry.write_text(text.replace(f"key {entry.name}", f"key {'0' * 64}"))


def _writable_by_others(entry):
    allow = Filter.from_program([ret(abi.SECCOMP_RET_ALLOW)]).program
    entry.write_text(_entry_file(allow, entry.name))  # well-formed, but anyone could have written it
    os.chmod(entry, 0o666)


def _symlink(entry):
    allow = Filter.from_program([ret(abi.SECCOMP_RET_ALLOW)]).program
    target = entry.parent.parent / "elsewhere"
    target.write_text(_entry_file(allow, entry.name))
    os.chmod(target, 0o600)
    entry.unlink()
    entry.symlink_to(target)


def _foreign_owner(entry):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the entry away")
    allow = Filter.from_program([ret(abi.SECCOMP_RET_ALLOW)]).program
    entry.write_text(_entry_file(allow, entry.name))
    os.chown(entry, 65534, 65534)


def _notifying(entry):
    notify = Filter.from_program([ret(abi.SECCOMP_RET_USER_NOTIF)]).program
    entry.write_text(_entry_file(notify, entry.name))  # a filter needing a listener is never launched without


@pytest.mark.parametrize("tamper", [_tamper_program, _garbage, _truncated, _another_key, _writable_by_others,
                                    _symlink, _foreign_owner, _notifying])
def test_a_bad_entry_is_ignored_and_rebuilt(tmp_path, tamper):
    assert _run(tmp_path).stdout == REFUSED
    entry = _entry(tmp_path)
    good = entry.read_bytes()
    tamper(entry)
    assert filtercache.lookup(entry.name, str(entry.parent)) is None
    r = _run(tmp_path)
    assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr     # compiled again: the policy holds
    assert not entry.is_symlink() and entry.read_bytes() == good   # and the entry is whole again
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600 and entry.stat().st_uid == os.geteuid()


def test_a_cache_directory_others_may_write_is_not_used(tmp_path):
    directory = tmp_path / "cache" / "sysgate" / "filters"
    directory.mkdir(parents=True)
    os.chmod(directory, 0o777)
    r = _run(tmp_path)
    assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr
    assert list(directory.iterdir()) == []
    allow = Filter.from_program([ret(abi.SECCOMP_RET_ALLOW)]).program
    entry = _entry(tmp_path)
    entry.write_text(_entry_file(allow, entry.name))
    os.chmod(entry, 0o600)
    assert _run(tmp_path).stdout == REFUSED


def test_a_fifo_in_place_of_an_entry_does_not_hang_the_run(tmp_path):
    assert _run(tmp_path).stdout == REFUSED
    entry = _entry(tmp_path)
    good = entry.read_bytes()
    entry.unlink()
    os.mkfifo(entry, 0o600)                  # opening it to read would wait for a writer
    r = _run(tmp_path, timeout=30)
    assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr
    assert stat.S_ISREG(entry.lstat().st_mode) and entry.read_bytes() == good   # replaced by the entry


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand directories to another user")
NOBODY = 65534


def _tree(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _victim(tmp_path):
    """root's directory that an attacker would have root write its cache into."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (victim / "secret").write_text("root's\n")
    return victim


@needs_root
@pytest.mark.parametrize("where", ["sticky", "foreign"])
def test_a_symlinked_ancestor_of_another_user_is_not_followed(tmp_path, where):
    victim = _victim(tmp_path)
    if where == "sticky":                    # another user's symlink in a directory like /tmp
        parent = tmp_path / "shared"
        parent.mkdir()
        os.chmod(parent, 0o1777)
    else:                                    # a symlink in a directory of another user
        parent = tmp_path / "alice"
        parent.mkdir()
        os.chown(parent, NOBODY, NOBODY)
    link = parent / "link"
    link.symlink_to(victim)
    os.lchown(link, NOBODY, NOBODY)
    for _ in range(2):
        r = _run(tmp_path, env={"XDG_CACHE_HOME": str(link / ".cache")})
        assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr
    assert _tree(victim) == ["secret"]


def test_a_symlinked_ancestor_of_the_user_is_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "mine").symlink_to(tmp_path / "real")       # as a home reached through /home -> /var/home
    env = {"XDG_CACHE_HOME": str(tmp_path / "mine" / ".cache")}
    assert _run(tmp_path, env=env).stdout == REFUSED
    entry = tmp_path / "real" / ".cache" / "sysgate" / "filters" / _entry(tmp_path).name
    assert entry.is_file() and not entry.is_symlink()
    again = _run(tmp_path, env=env, importtime=True)
    assert (again.returncode, again.stdout) == (0, REFUSED), again.stderr
    assert "sysgate.compiler" not in _imported(again.stderr)   # launched from the cache


@needs_root
@pytest.mark.parametrize("variable", ["HOME", "XDG_CACHE_HOME"])
def test_root_does_not_cache_in_a_home_of_another_user(tmp_path, variable):
    home = tmp_path / "alice"                # sudo keeping HOME=/home/alice
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    if variable == "HOME":
        env = {"HOME": str(home), "XDG_CACHE_HOME": ""}
    else:                                    # (a .cache of root's own in it does not help)
        (home / ".cache").mkdir(mode=0o700)
        env = {"XDG_CACHE_HOME": str(home / ".cache")}
    before = _tree(home)
    for _ in range(2):
        r = _run(tmp_path, env=env)
        assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr
    assert _tree(home) == before


def _exchanger(a: str, b: str):
    """renameat2(a, b, RENAME_EXCHANGE), as the owner of their directory may."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, exchange = -100, 2
    if hasattr(libc, "renameat2"):
        return lambda: libc.renameat2(at_fdcwd, a.encode(), at_fdcwd, b.encode(), exchange)
    if os.uname().machine != "x86_64":
        pytest.skip("renameat2 not in libc and its syscall number not known here")
    return lambda: libc.syscall(316, at_fdcwd, a.encode(), at_fdcwd, b.encode(), exchange)


@needs_root
def test_a_rename_exchange_race_never_makes_root_write_elsewhere(tmp_path):
    victim = _victim(tmp_path)
    alice = tmp_path / "alice"               # the attacker's directory, on the way to the cache
    alice.mkdir()
    os.chown(alice, NOBODY, NOBODY)
    cache, elsewhere = alice / "cache", alice / "elsewhere"
    cache.mkdir()
    os.chown(cache, NOBODY, NOBODY)
    elsewhere.symlink_to(victim)
    os.lchown(elsewhere, NOBODY, NOBODY)
    swap = _exchanger(str(cache), str(elsewhere))
    assert swap() == 0 and swap() == 0
    stop = threading.Event()

    def race():
        while not stop.is_set():
            swap()

    thread = threading.Thread(target=race)
    thread.start()
    try:
        for i in range(20):                  # a new policy each time: each run stores an entry
            r = _run(tmp_path, policy=f"{POLICY}# {i}\n", env={"XDG_CACHE_HOME": str(cache)})
            assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert _tree(victim) == ["secret"]


def test_a_crashed_stores_temporary_files_are_removed(tmp_path):
    directory = tmp_path / "cache" / "sysgate" / "filters"
    directory.mkdir(parents=True, mode=0o700)
    filt = Filter.from_policy(load_text(POLICY, "p.policy"))
    entry_key = filtercache.key(POLICY, __version__)
    mine = directory / f".{entry_key}.{os.getpid()}.tmp"      # a crashed store of a process with our pid
    mine.write_text("sysgate-filter-cache 1\nkey")
    old, fresh = directory / f".{'1' * 64}.99999.tmp", directory / f".{'2' * 64}.99998.tmp"
    old.write_text("")
    fresh.write_text("")                     # (another store, still writing)
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    assert filtercache.store(entry_key, filt, str(directory))
    assert sorted(p.name for p in directory.iterdir()) == sorted([entry_key, fresh.name])
    assert filtercache.lookup(entry_key, str(directory)).program == filt.program


@pytest.mark.parametrize("policy", [
    "default: allow\nuname: notify\nmkdir: errno(EACCES)\n",            # notifications: a supervisor
    "default: allow\nuname: errno(EPERM)\nsocketcall: errno(EPERM)\n",   # a warning (not on x86_64)
    "sandbox: fs\ndefault: allow\n",                                     # the secure base
])
def test_only_a_plain_filter_is_stored(tmp_path, policy):
    r = _run(tmp_path, "--force", policy=policy)
    assert "Traceback" not in r.stderr       # (the sandbox without fs rules denies running sh: 126)
    assert not _entry(tmp_path, policy).exists()


def test_include_is_not_cached(tmp_path):
    (tmp_path / "common.policy").write_text("uname: errno(EPERM)\n")
    policy = 'include "common.policy"\ndefault: allow\n'
    r = _run(tmp_path, policy=policy)
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "uname=1"), r.stderr
    assert not _entry(tmp_path, policy).exists()


def test_log_is_part_of_the_key(tmp_path):
    assert _run(tmp_path).stdout == REFUSED
    r = _run(tmp_path, "--log")
    assert (r.returncode, r.stdout) == (0, REFUSED), r.stderr
    logged = filtercache.lookup(_entry(tmp_path, log=True).name, str(_entry(tmp_path).parent))
    assert logged is not None and logged.flags == {"log": True}
    assert filtercache.lookup(_entry(tmp_path).name, str(_entry(tmp_path).parent)).flags == {}


# --- the command line read without argparse ----------------------------------------------------
@pytest.mark.parametrize("words", [
    ["--policy", "p", "--", "true"], ["--policy=p", "true", "--log"], ["--log", "--policy", "p", "ls", "-l"],
    ["--exit-with-main", "--force", "--no-cache", "--policy", "p", "--", "--weird"],
    ["--policy", "p", "--"], ["--policy", "p"], ["--policy", "-", "true"], ["--policy", "--", "true"],
    ["--pol", "p", "true"], ["--policy", "p", "--policy", "q", "true"], ["-h"],
    ["--log", "--log", "--policy", "p", "x"],
    ["--policy", "p", "--sandbox", "true"], ["true", "--policy", "p"], ["--policy="], ["--policy=", "true"],
    ["--policy", "", "true"], ["--log=1", "--policy", "p", "true"], ["--policy", "p", "-", "x"],
])
def test_the_simple_command_line_reads_as_argparse_does(words):
    from sysgate.cli import build_parser, command_args
    from sysgate.cli.run import simple_command_line

    fast = simple_command_line(words)
    if fast is None:
        return      # argparse reads it
    args = build_parser(["run", *words]).parse_args(["run", *words])
    assert fast == {"policy": args.policy, "log": args.log, "exit_with_main": args.exit_with_main,
                    "force": args.force, "no_cache": args.no_cache,
                    "command": command_args(args, "")}


def test_may_notify_agrees_with_the_bpf_model():
    from sysgate.bpf.insn import BPF_A, BPF_RET, Insn

    programs = [[ret(abi.SECCOMP_RET_ALLOW)], [ret(abi.SECCOMP_RET_USER_NOTIF)], [ret(abi.SECCOMP_RET_USER_NOTIF | 7)],
                [ret(abi.SECCOMP_RET_ERRNO | 1), ret(abi.SECCOMP_RET_LOG)], [Insn(BPF_RET | BPF_A)]]
    programs += [compile_policy(load_text(text)).insns for text in (
        POLICY, "default: allow\nuname: notify\n", "default: notify\nread: allow\n")]
    for insns in programs:
        raw = Filter.from_program(insns).program
        assert filtercache.may_notify(raw) == notifies(raw), insns


def test_landlock_modes_are_sandbox_landlocks():
    from sysgate.cli.run import LANDLOCK_MODES
    from sysgate.sandbox.landlock import MODES

    assert LANDLOCK_MODES == MODES
