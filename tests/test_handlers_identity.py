"""identity/time/random handlers: what a real target sees through raw syscalls."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess

from sysgate.handlers.identity import IdentityHandler, RandomHandler, TimeHandler
from handlers_support import run, target_c  # noqa: F401 (fixture)


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
