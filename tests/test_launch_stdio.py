"""spawn() stdio arguments: inherited, fds, file objects, subprocess.DEVNULL, bad values."""
import os
import subprocess

import pytest

from sysgate.bpf.insn import ret
from sysgate.kernel import abi
from sysgate.process.launch import LaunchError, spawn

ALLOW = [ret(abi.SECCOMP_RET_ALLOW)]


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_devnull_stdout_discards_output_and_leaks_nothing(tmp_path):
    before = _fd_count()
    out = tmp_path / "out"
    with open(out, "wb") as f:
        target = spawn(["sh", "-c", "echo visible >&2; echo hidden; exit 3"], ALLOW,
                       stdout=subprocess.DEVNULL, stderr=f)
        assert target.wait() == 3
        target.close()
    assert out.read_bytes() == b"visible\n"
    assert _fd_count() == before


def test_devnull_stdin_reads_eof():
    r, w = os.pipe()
    target = spawn(["sh", "-c", "cat; echo done"], ALLOW, stdin=subprocess.DEVNULL, stdout=w)
    os.close(w)
    assert target.wait() == 0
    target.close()
    assert os.read(r, 100) == b"done\n"
    os.close(r)


@pytest.mark.parametrize("bad", [-7, subprocess.PIPE])
def test_negative_stdio_is_a_clear_error(bad):
    with pytest.raises(LaunchError, match="invalid stdio argument"):
        spawn(["true"], ALLOW, stdout=bad)
