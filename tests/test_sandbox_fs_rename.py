"""Issue 11, attack 1: deny rules follow objects, not names. Renaming, linking or replacing an
ancestor of a denied path (or something a deny rule could match) is refused; other names of
denied objects (hard links, bind mounts made before the run) are denied by inode."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest

from support.cprog import cprog
from support.handlers import run
from sysgate.handlers.fs import FsHandler

ATTACK = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
static char buf[4096];
static const char *T;
static const char *p(const char *rel) { static char b[8][4096]; static int i; i = (i + 1) % 8;
    snprintf(b[i], 4096, "%s/%s", T, rel); return b[i]; }
static void say(const char *what, int r) { printf("%s %d\n", what, r < 0 ? errno : 0); }
static void cat(const char *what, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("%s %d\n", what, errno); return; }
    int n = read(fd, buf, sizeof buf - 1); buf[n > 0 ? n : 0] = 0; close(fd);
    printf("%s read:%s\n", what, strchr(buf, '\n') ? strtok(buf, "\n") : buf);
}
int main(int argc, char **argv) {
    T = argv[1];
    say("rename-vault", rename(p("v/vault"), p("v/vault2")));
    say("rename-ancestor", rename(p("v"), p("v2")));
    cat("after-rename", p("v2/vault/s"));
    cat("direct", p("v/vault/s"));
    mkdir(p("other"), 0755);
    say("exchange-ancestor", syscall(SYS_renameat2, AT_FDCWD, p("other"), AT_FDCWD, p("v"), 2 /* RENAME_EXCHANGE */));
    say("link-denied", link(p("v/vault/s"), p("stolen")));
    say("link-literal", link(p("shadow"), p("stolen2")));
    cat("prelinked", p("hl"));
    cat("bind", p("bm/s"));
    mkdir(p("x"), 0755); mkdir(p("x/secret"), 0755);
    say("move-into-future", rename(p("x"), p("future")));
    say("symlink-future", symlink(p("x"), p("future")));
    say("glob-move", rename(p("g/a"), p("g/deeper")));
    mkdir(p("g/b"), 0755);
    say("glob-deeper", rename(p("g/a"), p("g/b/c")));
    say("plain-rename", rename(p("x/secret"), p("x/public")));
    say("mkdir-future", mkdir(p("future"), 0755));
    return 0;
}
"""


@pytest.fixture
def scene(tmp_path, needs_root):
    t = tmp_path / "T"
    (t / "v" / "vault").mkdir(parents=True)
    (t / "v" / "vault" / "s").write_text("VAULT\n")
    (t / "shadow").write_text("SHADOW\n")
    os.link(t / "shadow", t / "hl")                     # a second name made before the run
    (t / "g" / "a").mkdir(parents=True)
    (t / "g" / "a" / "secret").write_text("GLOB\n")
    (t / "bm").mkdir()
    subprocess.run(["mount", "--bind", str(t / "v" / "vault"), str(t / "bm")], check=True)
    try:
        yield t
    finally:
        subprocess.run(["umount", str(t / "bm")], check=False)


def rules(t):
    return FsHandler([f"deny {t}/shadow", f"deny {t}/v/vault/**", f"deny {t}/future/secret/**",
                      f"deny {t}/g/*/secret", "allow read /**", f"allow rw {t}/**"])


def results(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.usefixtures("landlock")
def test_renaming_an_ancestor_of_a_denied_path_is_refused(scene):
    exe = cprog(ATTACK)
    code, out = run([exe, str(scene)], rules(scene))
    r = results(out)
    eacces = str(errno.EACCES)
    assert code == 0, out
    assert r["rename-vault"] == eacces and r["rename-ancestor"] == eacces, out
    assert r["after-rename"] == str(errno.ENOENT) and r["direct"] == eacces, out
    assert r["exchange-ancestor"] == eacces, out
    assert r["link-denied"] == eacces and r["link-literal"] == eacces, out
    assert (scene / "v" / "vault" / "s").read_text() == "VAULT\n" and not (scene / "v2").exists()
    assert not (scene / "stolen").exists() and not (scene / "stolen2").exists()


@pytest.mark.usefixtures("landlock")
def test_other_names_of_denied_objects_are_denied_by_inode(scene):
    code, out = run([cprog(ATTACK), str(scene)], rules(scene))
    r = results(out)
    assert r["prelinked"] == str(errno.EACCES), out            # hard link to a literal deny
    assert r["bind"] == str(errno.EACCES), out                 # bind mount of a D/** directory


@pytest.mark.usefixtures("landlock")
def test_nothing_moves_into_or_above_what_a_deny_rule_could_match(scene):
    code, out = run([cprog(ATTACK), str(scene)], rules(scene))
    r = results(out)
    eacces = str(errno.EACCES)
    assert r["move-into-future"] == eacces and r["symlink-future"] == eacces, out
    assert r["glob-move"] == eacces and r["glob-deeper"] == eacces, out   # /T/g/*/secret would escape
    assert r["plain-rename"] == "0" and r["mkdir-future"] == "0", out     # unrelated changes still work
    assert (scene / "g" / "a" / "secret").exists()


def test_without_sysgate_the_same_program_moves_everything(scene):
    """Control: the kernel alone lets this program rename the vault and its ancestor, and read
    the denied files through their other names."""
    out = subprocess.run([cprog(ATTACK), str(scene)], capture_output=True, text=True).stdout
    r = results(out)
    assert r["rename-vault"] == r["rename-ancestor"] == r["link-literal"] == r["move-into-future"] == "0", out
    assert r["prelinked"] == "read:SHADOW" and r["bind"] == "read:VAULT", out
