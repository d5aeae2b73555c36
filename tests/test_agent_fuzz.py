"""``sysgate agent`` (a real subprocess) against random and adversarial clients: it must drop each
bad client with one logged line and keep serving the others."""
from __future__ import annotations

import array
import json
import os
import re
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.agent import hand_over, spawn_mkdir

STATE = {"ociVersion": "1.0.2-dev", "fds": ["seccompFd"], "pid": 1, "metadata": "",
         "state": {"ociVersion": "1.0.2-dev", "id": "fuzz", "status": "creating", "pid": 1,
                   "bundle": "/b", "annotations": {}}}
DROPPED = r"(rejected|refusing) connection from "

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@st.composite
def wrong_types(draw) -> bytes:
    """The runtime's state with one field replaced by any JSON value (wrong types, huge ints)."""
    doc = json.loads(json.dumps(STATE))
    where = draw(st.sampled_from([doc, doc["state"]]))
    where[draw(st.sampled_from(sorted(where)))] = draw(json_values)
    return json.dumps(doc).encode()


@st.composite
def mutated(draw) -> bytes:
    """The runtime's state truncated, with bytes overwritten (invalid UTF-8) or inserted."""
    data = bytearray(json.dumps(STATE).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.binary(min_size=1, max_size=4))
        data[at:at + draw(st.integers(0, 4))] = junk
    return bytes(data[:draw(st.integers(0, len(data)))])


nested = st.builds(lambda level, depth, closed: b'{"a":' + level[0] * depth + b"1" + level[1] * depth * closed,
                   st.sampled_from([(b'{"a":', b"}"), (b"[", b"]")]), st.integers(1, 300000), st.booleans())
huge = st.builds(lambda size, byte: b'{"metadata":"' + bytes([byte]) * size, st.integers(200000, 1 << 20),
                 st.integers(32, 126))
messages = st.one_of(st.binary(max_size=2000), wrong_types(), mutated(), nested, huge,
                     st.just(b""), st.just(b"{" * 40), st.just(b'{"a":"\\'))


AGENT_CONFIG = {"default": {"handlers": ["mkdir-deny:EROFS"]}}   # for conftest's ``agent``


def attack(path: str, data: bytes, chunks: int, fd_count: int, fd_chunk: int, ending: str) -> None:
    """One client: ``data`` in ``chunks`` pieces, ``fd_count`` fds on piece ``fd_chunk``, then hang up."""
    fds = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(min(fd_count, 1))] * fd_count
    size = max(1, -(-len(data) // chunks))
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        try:
            for i, piece in enumerate(pieces):
                anc = []
                if fds and i == min(fd_chunk, len(pieces) - 1):
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
                client.sendmsg([piece or b" "], anc) if anc else client.sendall(piece)
            if ending == "shutdown":
                client.shutdown(socket.SHUT_WR)
        except OSError:      # the agent already dropped us (too big, too deep, ...): fine
            pass
        finally:
            for fd in set(fds):
                os.close(fd)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=messages, chunks=st.integers(1, 8), fd_count=st.sampled_from([0, 0, 1, 2, 16, 17, 200]),
       fd_chunk=st.integers(0, 3), ending=st.sampled_from(["close", "shutdown"]))
def fuzz_once(agent, counter, data, chunks, fd_count, fd_chunk, ending):
    attack(agent.socket, data, chunks, fd_count, fd_chunk, ending)
    counter.append(1)
    assert agent.proc.poll() is None, agent.text()


def test_agent_survives_any_client_and_still_serves(agent, tmp_path):
    since = agent.mark()
    sent: list = []
    fuzz_once(agent, sent)
    # every bad client is dropped with exactly one log line, none silently
    deadline = time.monotonic() + 30
    while len(re.findall(DROPPED, agent.text()[since:])) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    log = agent.text()[since:]
    assert len(re.findall(DROPPED, log)) == len(sent), log
    assert "Traceback" not in log and agent.proc.poll() is None
    # a well-formed client is still served, while a client that never finishes holds its connection
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(agent.socket)
    silent.send(b'{"ociVersion": "1.0.2", "fds": ["seccompFd"], "st')
    target, out = spawn_mkdir(tmp_path, "after-fuzz", delay=0.1)
    with target:
        hand_over(agent.socket, target, "after-fuzz", "creating")
        assert target.wait(10) == 0
    silent.close()
    out.seek(0)
    assert "Read-only file system" in out.read() and not (tmp_path / "after-fuzz").exists()


@pytest.mark.parametrize("data", [b'{"a":' * 20000 + b"1" + b"}" * 20000, b"[" * 100000],
                         ids=["deep object", "deep array"])
def test_deep_nesting_is_dropped_with_one_line(agent, tmp_path, data):
    """The reported crash: RecursionError on a deeply nested message killed the agent."""
    since = agent.mark()
    attack(agent.socket, data, 1, 0, 0, "close")
    line = agent.wait_log(rf"{DROPPED}pid {os.getpid()} uid 0: ([^\n]*)\n", since=since).group(2)
    assert "nested deeper than 32 levels" in line or "not valid JSON" in line
    assert "Traceback" not in agent.text()[since:] and agent.proc.poll() is None


def test_agent_raises_its_fd_limit(tmp_path):
    """Pending clients hold fds (up to 16 each): the agent lifts its soft RLIMIT_NOFILE to the hard one."""
    import resource
    import subprocess
    import sys
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    sock = str(tmp_path / "limits.sock")
    proc = subprocess.Popen([sys.executable, "-m", "sysgate", "agent", "--socket", sock], stderr=subprocess.PIPE,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    try:
        assert b"ready on" in proc.stderr.readline() + proc.stderr.readline()
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(ln for ln in f if ln.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        proc.terminate()
        proc.wait(10)


def test_sigterm_right_after_ready_stops_the_agent(tmp_path):
    """A SIGTERM between "ready" and the serving loop used to be forgotten (run() reset the flag)."""
    import subprocess
    import sys
    for i in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "sysgate", "agent", "--socket", str(tmp_path / f"{i}.sock")],
                                stderr=subprocess.PIPE)
        try:
            while b"ready on" not in proc.stderr.readline():
                pass
            proc.terminate()
            assert proc.wait(20) == 0
        finally:
            proc.kill()
            proc.wait()
