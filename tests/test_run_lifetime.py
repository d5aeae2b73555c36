"""``sysgate run`` serves until every process holding the filter is gone, not only the command.

The command is a real shell that leaves a background job behind and exits 3. The job waits
until the shell is gone (reaped by sysgate: ``kill -0 $$`` fails), then calls uname(2), which
the policy notifies to the ``identity`` handler: only a supervisor still serving after the
command exited answers it with the fake hostname; a closed listener makes it ENOSYS.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

POLICY = "default: allow\nuname: notify(identity)\n"
HANDLERS = '{"identity": {"hostname": "fakehost"}}'
# the daemon: waits for the shell to be gone (then touches ./main-gone) and for ./go, then
# uname -n > out, its status > rc
DAEMON = ("(while kill -0 $$ 2>/dev/null; do sleep 0.02; done; touch main-gone; "
          "while [ ! -e go ]; do sleep 0.02; done; "
          "uname -n > out 2> err; echo $? > rc) </dev/null >/dev/null 2>&1 & exit 3")


def _argv(tmp_path, *options, script=DAEMON):
    (tmp_path / "p.policy").write_text(POLICY)
    return [sys.executable, "-m", "sysgate", "run", "--policy", str(tmp_path / "p.policy"),
            "--handlers", HANDLERS, *options, "--", "sh", "-c", script]


def _wait_for(path, *, line=False, seconds=30.0) -> str:
    """The text of ``path`` once it exists (with ``line``: once a whole line is written)."""
    end = time.monotonic() + seconds
    while not path.exists() or (line and not path.read_text().endswith("\n")):
        if time.monotonic() > end:
            pytest.fail(f"{path.name} was never written")
        time.sleep(0.02)
    return path.read_text()


def test_daemon_notified_after_the_command_exited_is_answered(tmp_path):
    (tmp_path / "go").touch()
    r = subprocess.run(_argv(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr                       # the command's status, not the daemon's
    # run returned only after the daemon was done: its result is already there
    assert (tmp_path / "rc").read_text().strip() == "0", (tmp_path / "err").read_text()
    assert (tmp_path / "out").read_text() == "fakehost\n"


def test_exit_with_main_leaves_the_daemon_to_enosys(tmp_path):
    r = subprocess.run(_argv(tmp_path, "--exit-with-main"), cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3, r.stderr
    assert not (tmp_path / "rc").exists()     # the daemon waits for ./go: run did not wait for it
    (tmp_path / "go").touch()
    assert _wait_for(tmp_path / "rc", line=True).strip() != "0"
    assert (tmp_path / "out").read_text() == ""
    assert "Function not implemented" in (tmp_path / "err").read_text()


def test_signal_after_the_command_exited_stops_waiting(tmp_path):
    """SIGTERM (or Ctrl-C's SIGINT) while only daemons are left: run exits with the command's
    status; the daemon is not killed, and its notified calls fail with ENOSYS from then on."""
    proc = subprocess.Popen(_argv(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(tmp_path / "main-gone")    # the shell was reaped (by run): only the daemon is left
        assert proc.poll() is None           # run still serves it
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 3, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert not (tmp_path / "rc").exists()     # the daemon still waits for ./go: not killed
    (tmp_path / "go").touch()
    assert _wait_for(tmp_path / "rc", line=True).strip() != "0"
    assert "Function not implemented" in (tmp_path / "err").read_text()
