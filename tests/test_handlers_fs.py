"""fs handler with real targets: rules, symlink/.. escapes, creation, metadata calls, the path race."""
from __future__ import annotations

import errno
import os
import time

import pytest

from sysgate.errors import SysgateError
from sysgate.handlers.fs import FsHandler, PathRules, parse_rule
from sysgate.supervisor import Reply
from support.handlers import notify_policy, run

SYSTEM = ["allow read /", "allow read /usr/**", "allow read /lib/**", "allow read /lib64/**", "allow read /etc/**",
          "allow read /dev/null", "allow read /proc/**"]


@pytest.fixture
def tree(tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "allowed.txt").write_text("ALLOWED\n")
    (tmp_path / "denied.txt").write_text("SECRET\n")
    (ok / "link").symlink_to(tmp_path / "denied.txt")
    (ok / "rel").symlink_to("../denied.txt")
    (ok / "inner").symlink_to("allowed.txt")
    return tmp_path


def fs_for(tree, *extra):
    return FsHandler([*SYSTEM, f"allow read {tree}", f"allow rw {tree}/ok/**", *extra])


def sh(script, handler, **kw):
    return run(["/bin/sh", "-c", script], handler, **kw)


def test_rules_parse_and_match():
    rules = PathRules(["allow read /usr/**", "deny /etc/shadow", "allow read /etc/*",
                       {"allow": "rw", "path": "/tmp/**"}])
    assert rules.allows("/usr", {"read"}) and rules.allows("/usr/lib/x.so", {"read"})
    assert not rules.allows("/usr/lib/x.so", {"write"})
    assert not rules.allows("/etc/shadow", {"read"}) and rules.allows("/etc/passwd", {"read"})
    assert not rules.allows("/etc/ssl/certs", {"read"})        # * stays in one component
    assert rules.allows("/tmp/a/b", {"read", "write"}) and not rules.allows("/var/x", {"read"})
    assert str(parse_rule("deny /x")) == "deny rw /x"
    for bad in ("allow", "allow read x", "permit /x", "allow exec /x", 7, {"path": "/x"}):
        with pytest.raises(SysgateError):
            parse_rule(bad)


@pytest.mark.usefixtures("landlock")
def test_allowed_denied_symlink_and_dotdot(tree):
    d = tree
    code, out = sh(f"cat {d}/ok/allowed.txt; cat {d}/ok/inner; cat {d}/denied.txt; cat {d}/ok/link; "
                   f"cat {d}/ok/rel; cat {d}/ok/../denied.txt; cd {d}/ok && cat ../denied.txt; cat allowed.txt",
                   fs_for(tree))
    assert out.count("ALLOWED") == 3 and "SECRET" not in out
    assert out.count("Permission denied") == 5, out


@pytest.mark.usefixtures("landlock")
def test_create_write_truncate_and_denied_create(tree):
    d = tree
    code, out = sh(f"echo one > {d}/ok/new; echo two >> {d}/ok/new; cat {d}/ok/new; echo x > {d}/nope; "
                   f"echo y > {d}/ok/link; echo trunc > {d}/ok/allowed.txt; cat {d}/ok/allowed.txt", fs_for(tree))
    assert "one\ntwo\n" in out and "trunc" in out
    assert not (d / "nope").exists() and (d / "denied.txt").read_text() == "SECRET\n"
    assert out.count("Permission denied") == 2, out
    assert (d / "ok" / "new").stat().st_mode & 0o777 == 0o644


@pytest.mark.usefixtures("landlock")
def test_metadata_calls_are_emulated(tree):
    d = tree
    script = (f"stat -c '%s %F' {d}/ok/allowed.txt; stat -c %s {d}/denied.txt; readlink {d}/ok/inner; "
              f"test -r {d}/ok/allowed.txt && echo readable; test -w {d}/denied.txt || echo not-writable; "
              f"ls {d}/ok | sort | tr '\\n' ' '")
    code, out = sh(script, fs_for(tree))
    assert "8 regular file" in out and "allowed.txt" in out and "readable" in out and "not-writable" in out
    assert "Permission denied" in out and "allowed.txt inner link rel" in out


@pytest.mark.usefixtures("landlock")
def test_python_target_o_cloexec_and_fd_numbers(tree):
    code, out = run(["/usr/bin/python3", "-S", "-c",
                     f"import os,fcntl;fd=os.open('{tree}/ok/allowed.txt', os.O_RDONLY);"
                     f"print(fd, fcntl.fcntl(fd, fcntl.F_GETFD), os.read(fd, 20));"
                     f"fd2=os.open('{tree}/ok/allowed.txt', os.O_RDONLY|os.O_NOINHERIT*0);"
                     f"print(os.get_inheritable(fd2))"], fs_for(tree, "allow read /usr/**"))
    first = out.splitlines()[0].split()
    assert int(first[0]) >= 3 and first[1] == "1" and "ALLOWED" in out, out   # Python opens with O_CLOEXEC


@pytest.mark.usefixtures("landlock")
def test_non_root_target_uses_its_credentials():
    import shutil
    import tempfile

    base = tempfile.mkdtemp(prefix="sysgate-fs-")
    try:
        os.chmod(base, 0o755)
        with open(f"{base}/rootonly", "w") as fh:
            fh.write("ROOT\n")
        os.chmod(f"{base}/rootonly", 0o600)
        with open(f"{base}/public", "w") as fh:
            fh.write("PUBLIC\n")
        script = f"cat {base}/rootonly; cat {base}/public; echo x > {base}/mine; id -u"
        code, out = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c", script],
                        FsHandler([*SYSTEM, f"allow rw {base}/**"]))
        assert "ROOT" not in out and "PUBLIC" in out and "65534" in out, out
        assert out.count("Permission denied") == 2, out      # 0600 root file; root's 0755 directory
        assert not os.path.exists(f"{base}/mine")
    finally:
        shutil.rmtree(base)


@pytest.mark.usefixtures("landlock")
def test_path_buffer_race_never_opens_the_denied_file(tree, target_c):
    allowed, denied = f"{tree}/ok/allowed.txt", f"{tree}/ok/denied.txt"
    (tree / "ok" / "denied.txt").write_text("SECRET\n")
    # the launched binary is readable under the rules: with the Landlock wall the kernel checks its exec
    # (READ_FILE), which the notify handler never sees
    fs = FsHandler([*SYSTEM, f"allow read {allowed}", f"allow read {target_c}", f"deny {denied}"])
    code, out = run([target_c, "race", allowed, denied, "4000"], fs)
    ok, secret, refused, other = map(int, out.split())
    assert code == 0 and ok + secret + refused + other == 4000
    assert secret == 0, "a denied file was opened"
    assert ok > 0 and refused > 0


def test_the_race_is_real_for_check_then_continue(tree, target_c):
    """Control: a naive handler that reads, checks and CONTINUEs lets the denied file through."""
    allowed, denied = f"{tree}/ok/allowed.txt", f"{tree}/ok/denied.txt"
    (tree / "ok" / "denied.txt").write_text("SECRET\n")

    class Naive(FsHandler):
        def handle(self, n):
            path = n.read_string(n.args[1]).decode()
            return Reply.continue_() if path != denied else Reply.errno(errno.EACCES)

    leaked = 0
    end = time.monotonic() + 10
    while not leaked and time.monotonic() < end:
        code, out = run([target_c, "race", allowed, denied, "3000"], Naive([]),
                        policy=notify_policy(_Only("openat")))
        leaked = int(out.split()[1])
    assert leaked > 0


class _Only:
    name = "fs"

    def __init__(self, *syscalls):
        self.syscalls = syscalls


@pytest.mark.usefixtures("landlock")
def test_namespace_changes_are_checked_and_done_by_the_supervisor(tree):
    d = tree
    script = (f"cd {d}/ok && mkdir sub && touch sub/f && mv sub/f sub/g && ln -s /etc/passwd sub/sl && "
              f"ln sub/g sub/h && rm sub/g && ls sub | tr '\\n' ' ' && echo; "
              f"ln {d}/denied.txt {d}/ok/stolen; ln -s x {d}/nolink; mkdir {d}/nodir; rm {d}/denied.txt; "
              f"mv {d}/ok/allowed.txt {d}/moved; rm -r {d}/ok/sub && echo removed")
    code, out = sh(script, fs_for(tree))
    assert "h sl" in out and "removed" in out, out
    assert out.count("Permission denied") + out.count("Operation not permitted") >= 5, out
    assert (d / "denied.txt").exists() and (d / "ok" / "allowed.txt").exists()
    assert not any((d / name).exists() or (d / name).is_symlink() for name in ("nolink", "nodir", "moved"))
    assert not (d / "ok" / "stolen").exists() and not (d / "ok" / "sub").exists()


@pytest.mark.usefixtures("landlock")
def test_own_fds_through_magic_links(tree):
    code, out = sh(f"echo piped | cat /dev/stdin; cat /proc/self/fd/0 < {tree}/ok/allowed.txt; "
                   f"cat /dev/fd/3 3< {tree}/ok/allowed.txt", fs_for(tree))
    assert out.count("ALLOWED") == 2 and "piped" in out, out


@pytest.mark.usefixtures("landlock")
def test_openat2_resolve_flags_and_o_tmpfile(tree):
    script = f"""
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
def openat2(dirfd, path, flags, resolve):
    how = ctypes.create_string_buffer(struct.pack("=QQQ", flags, 0, resolve))
    fd = libc.syscall(437, dirfd, path.encode(), how, 24)
    return fd if fd >= 0 else -ctypes.get_errno()
d = os.open("{tree}/ok", os.O_RDONLY | os.O_DIRECTORY)
fd = openat2(d, "allowed.txt", os.O_RDONLY, 0)
print("plain", os.read(fd, 20).decode().strip() if fd >= 0 else fd)
print("beneath", openat2(d, "../denied.txt", os.O_RDONLY, 0x08))
print("noescape", openat2(d, "../denied.txt", os.O_RDONLY, 0))
for where in ("{tree}/ok", "{tree}"):
    try:
        t = os.open(where, os.O_TMPFILE | os.O_RDWR, 0o600); os.write(t, b"x"); print("tmpfile ok")
    except OSError as e:
        print("tmpfile", e.errno)
"""
    code, out = run(["/usr/bin/python3", "-S", "-c", script], fs_for(tree))
    assert "plain ALLOWED" in out and "beneath -18" in out and "noescape -13" in out, out   # EXDEV, EACCES
    assert "tmpfile ok" in out and "tmpfile 13" in out


def test_deny_rules_literal_prefix_and_what_they_could_contain():
    from sysgate.handlers.fs import literal_prefix

    assert literal_prefix("/T/v/vault/**") == "/T/v/vault" and literal_prefix("/etc/shadow") == "/etc/shadow"
    assert literal_prefix("/home/*/x") == "/home" and literal_prefix("/a/b*c/d") == "/a" and literal_prefix("/*") == "/"
    rules = PathRules(["deny /T/v/vault/**", "deny /T/g/*/secret", "allow rw /**"])
    for path in ("/", "/T", "/T/v", "/T/v/vault", "/T/v/vault/a/b", "/T/g", "/T/g/a", "/T/g/a/secret"):
        assert rules.could_contain(path), path
    for path in ("/U", "/T/v2", "/T/v/vaults", "/T/g/a/b", "/T/g/a/secret/x", "/T/w"):
        assert not rules.could_contain(path), path
    spanning = PathRules(["deny /T/x**y/z"])      # ** inside a component spans directories:
    assert spanning.could_contain("/T/x/deep/y") and spanning.could_contain("/T/anything")
    assert not spanning.could_contain("/U")
    assert not PathRules(["allow rw /**"]).could_contain("/")


@pytest.mark.usefixtures("landlock")
def test_device_opens_do_not_keep_o_nonblock():
    """Devices are opened O_NONBLOCK (never block a worker); the flag is cleared like the target asked."""
    code, out = run(["/usr/bin/python3", "-S", "-c",
                     "import os,fcntl;fd=os.open('/dev/null',os.O_RDONLY);"
                     "print(fcntl.fcntl(fd,fcntl.F_GETFL)&os.O_NONBLOCK);"
                     "fd=os.open('/dev/null',os.O_RDONLY|os.O_NONBLOCK);print(fcntl.fcntl(fd,fcntl.F_GETFL)&os.O_NONBLOCK)"],
                    FsHandler(["allow read /**"]))
    assert out.split() == ["0", str(os.O_NONBLOCK)], out


def _components(draw_from):
    from hypothesis import strategies as st

    return st.lists(st.sampled_from(draw_from), min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


def test_could_contain_covers_every_ancestor_of_every_match():
    """Soundness of the rename guard: whatever a deny pattern matches, that path and all its
    ancestors count as holding something denied (else a rename could carry it out)."""
    from hypothesis import given, settings

    @settings(max_examples=300, deadline=None)
    @given(_components(["a", "b", "*", "?", "**", "a*", "*b", "a**"]), _components(["a", "b", "ab", "ba", "x"]))
    def check(pattern, path):
        rules = PathRules([f"deny {pattern}"])
        if rules.rules[0].regex.match(path):
            parts = path.split("/")
            for i in range(1, len(parts) + 1):
                assert rules.could_contain("/".join(parts[:i]) or "/"), (pattern, path, i)

    check()


@pytest.mark.usefixtures("landlock")
def test_a_literal_directory_deny_does_not_deny_its_contents(tmp_path):
    """Only ``D/**`` denies a tree (also by inode); ``deny D`` denies the directory object alone."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("INSIDE\n")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "y").write_text("TREE\n")
    code, out = sh(f"cat {tmp_path}/d/x; ls {tmp_path}/d; cat {tmp_path}/t/y",
                   FsHandler([*SYSTEM, f"deny {tmp_path}/d", f"deny {tmp_path}/t/**", "allow read /**"]))
    assert "INSIDE" in out and "TREE" not in out and out.count("Permission denied") == 2, out
