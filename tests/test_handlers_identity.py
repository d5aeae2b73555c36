"""identity/time/random handlers: what a real target sees through raw syscalls."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess

from sysgate.handlers.identity import IdentityHandler, RandomHandler, TimeHandler
from support.handlers import run


def test_uname_fields_and_sethostname(target_c):
    code, out = run([target_c, "names"], IdentityHandler(hostname="sandbox", release="9.9.9-fake"))
    ret, sysname, node, release, machine, s, err = out.split()
    assert (ret, node, release) == ("0", "sandbox", "9.9.9-fake")
    assert sysname == os.uname().sysname and machine == os.uname().machine
    assert (s, int(err)) == ("-1", errno.EPERM)
    assert os.uname().nodename != "sandbox"


def test_shell_hostname_sees_the_fake(target_c):
    code, out = run(["/bin/busybox", "hostname"], IdentityHandler(hostname="box-7"))
    assert out.strip() == "box-7"


def test_deterministic_clocks_bypass_real_time(target_c):
    outs = [run([target_c, "clocks"], TimeHandler(start=1_000_000_000, step=0.25))[1] for _ in range(2)]
    assert outs[0] == outs[1]
    t1, real, t2, mono, t3, tv, t4, tt = outs[0].split()
    assert (t1, t2, t3) == ("0", "0", "0")
    assert real == "1000000000.000000000" and mono == "1000.250000000"
    assert tv == "1000000000.500000" and t4 == tt == "1000000000"


def test_getrandom_is_reproducible_per_seed(target_c):
    a = run([target_c, "random", "32"], RandomHandler(seed=42))[1]
    b = run([target_c, "random", "32"], RandomHandler(seed=42))[1]
    c = run([target_c, "random", "32"], RandomHandler(seed=43))[1]
    assert a == b != c
    count, hexdata = a.split()
    assert count == "32" and bytes.fromhex(hexdata) == hashlib.shake_256(b"42/0").digest(32)
    # and without the handler the bytes differ from run to run
    real = [subprocess.run([target_c, "random", "32"], capture_output=True, text=True).stdout for _ in range(2)]
    assert real[0] != real[1]


UNAME_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
#ifdef __i386__
    char old[5 * 65], oldold[5 * 9];
    memset(old, 'x', sizeof old); memset(oldold, 'x', sizeof oldold);
    long r1 = syscall(SYS_olduname, old), r2 = syscall(SYS_oldolduname, oldold);
    printf("old %ld %s %.65s\n", r1, old + 65, old + 4 * 65);
    printf("oldold %ld %s %d\n", r2, oldold + 9, oldold[9 + 8]);
#else
    struct timespec t;
    for (int id = -2; id < 13; id++) {
        long r = syscall(SYS_clock_gettime, id, &t);
        printf("%d:%ld/%d ", id, r, r < 0 ? errno : 0);
    }
    long r = syscall(SYS_clock_gettime, 12345, &t);
    printf("12345:%ld/%d\n", r, r < 0 ? errno : 0);
#endif
    return 0;
}
"""


def _compat(*handlers):
    from support.handlers import notify_policy

    policy = notify_policy(*handlers)
    policy.arches = ["x86_64", "i386"]
    return policy


def test_i386_olduname_and_oldolduname_see_the_fake_hostname():
    from support.cprog import cprog

    exe = cprog(UNAME_C, m32=True)
    handler = IdentityHandler(hostname="sandbox-long-name", machine="i686")
    code, out = run([exe], handler, policy=_compat(handler))
    assert out.splitlines() == ["old 0 sandbox-long-name i686", "oldold 0 sandbox- 0"], out
    real = subprocess.run([exe], capture_output=True, text=True).stdout
    assert real.split()[2] == os.uname().nodename        # the kernel alone: the host's name


def test_clock_ids_are_validated_like_the_kernel():
    from support.cprog import cprog

    exe = cprog(UNAME_C)
    code, out = run([exe], TimeHandler(start=1_000_000_000))
    real = subprocess.run([exe], capture_output=True, text=True).stdout
    assert out.split() == real.split(), (out, real)      # same result and errno for every id
    assert "12345:-1/22" in out and "0:0/0" in out and "10:-1/22" in out
