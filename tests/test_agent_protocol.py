"""The seccomp-notify socket protocol: real AF_UNIX sockets, real SCM_RIGHTS, real listener fds."""
from __future__ import annotations

import array
import json
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysgate.process import launch
from sysgate.agent.protocol import (ContainerProcessState, _ObjectEnd, ProtocolError, StateReader, encode_state,
                                    is_listener, parse_state)
from sysgate.bpf.insn import BPF_JEQ, BPF_JMP, BPF_K, jump, ld_abs, ret
from sysgate.kernel import abi
from sysgate.arch.syscalls import number

RUNC_STATE = ('{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":16569,"metadata":"handlers=mkdir-deny\\nX=1",'
              '"state":{"ociVersion":"1.0.2-dev","id":"c1","status":"creating","pid":16569,'
              '"bundle":"/b","annotations":{"a":"b"}}}').encode()
CRUN_STATE = json.dumps(json.loads(RUNC_STATE) | {"ociVersion": "0.2.0"}, indent=4).encode() + b"\n"


@pytest.fixture(scope="module")
def listener_source():
    """A sleeping process whose filter notifies mknodat (never called): its listener fd."""
    program = [ld_abs(abi.OFFSET_NR), jump(BPF_JMP | BPF_JEQ | BPF_K, number(abi.native_arch(), "mknodat"), 0, 1),
               ret(abi.SECCOMP_RET_USER_NOTIF), ret(abi.SECCOMP_RET_ALLOW)]
    target = launch.spawn(["sleep", "120"], program)
    yield target.listener
    target.kill()
    target.close()


def open_fds() -> set[int]:
    return set(int(fd) for fd in os.listdir("/proc/self/fd"))


def send(data: bytes, fds=(), chunks=1, close=True):
    """A connected pair; ``data`` sent in ``chunks`` pieces by the client, fds with the first."""
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    size = max(1, -(-len(data) // chunks))
    pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    for i, piece in enumerate(pieces):
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if i == 0 and fds else []
        client.sendmsg([piece], anc)
    for fd in fds:      # given away: the receiver has its own copies now
        os.close(fd)
    if close:
        client.close()
    return server, client


def receive(data: bytes, fds=(), chunks=1, **limits) -> ContainerProcessState:
    server, client = send(data, fds, chunks)
    try:
        return StateReader(server, **limits).read_all(timeout=2)
    finally:
        server.close()


@pytest.mark.parametrize("doc", [RUNC_STATE, CRUN_STATE], ids=["runc", "crun"])
def test_runc_and_crun_states_parse(doc, listener_source):
    before = open_fds()
    state = receive(doc, [os.dup(listener_source)])
    assert (state.id, state.status, state.pid, state.container_pid) == ("c1", "creating", 16569, 16569)
    assert state.metadata == "handlers=mkdir-deny\nX=1" and state.annotations == {"a": "b"}
    assert state.oci_version in ("1.0.2-dev", "0.2.0") and state.bundle == "/b"
    assert is_listener(state.seccomp_fd)
    state.close()
    assert open_fds() == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.integers(1, 40), pretty=st.booleans(), metadata=st.text(max_size=200),
       annotations=st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=5))
def test_state_split_over_messages_round_trips(listener_source, chunks, pretty, metadata, annotations):
    original = ContainerProcessState("1.0.2", 7, metadata, "id-x", "running", 3, "/bundle", annotations,
                                     {"seccompFd": -1})
    state = receive(encode_state(original, pretty), [os.dup(listener_source)], chunks)
    assert (state.metadata, state.annotations, state.status, state.pid) == (metadata, annotations, "running", 7)
    state.close()


def test_state_is_complete_before_eof(listener_source):
    """runc/crun keep their end open while the container runs: a whole object is enough."""
    server, client = send(RUNC_STATE, [os.dup(listener_source)], chunks=3, close=False)
    reader = StateReader(server)
    server.settimeout(2)
    while not reader.read():
        pass
    state = reader.result()
    assert state.id == "c1"
    state.close()
    client.close()
    server.close()


def test_unnamed_extra_fds_are_closed(listener_source):
    doc = json.loads(RUNC_STATE)
    doc["fds"] = ["other", "seccompFd"]
    before = open_fds()
    extra = os.open("/dev/null", os.O_RDONLY)
    state = receive(json.dumps(doc).encode(), [extra, os.dup(listener_source)])
    assert list(state.fds) == ["seccompFd"]
    state.close()
    assert open_fds() == before


BAD = {
    "garbage": (b"\x00\xffnot json}", 1, "not valid JSON"),
    "array": (b"[1, 2]", 1, "JSON object"),
    "no state": (b'{"ociVersion": "1", "fds": ["seccompFd"]}', 1, '"state"'),
    "no fd": (RUNC_STATE, 0, "0 were attached"),
    "no seccompFd name": (RUNC_STATE.replace(b'"seccompFd"', b'"other"'), 1, "no \"seccompFd\""),
    "bad pid": (RUNC_STATE.replace(b'"pid":16569,"metadata"', b'"pid":"x","metadata"'), 1, '"pid" must be'),
    "empty id": (RUNC_STATE.replace(b'"id":"c1"', b'"id":""'), 1, '"state.id" is empty'),
    "empty": (b"", 0, "empty container state"),
    "deep": (b'{"a":' * 5000 + b"1" + b"}" * 5000, 1, "nested deeper than 32 levels"),
    "deep arrays": (b'{"a":' + b"[" * 100000, 1, "nested deeper than 32 levels"),
    "invalid utf-8": (RUNC_STATE.replace(b'"c1"', b'"c\xff"'), 1, "not valid JSON"),
    "truncated": (RUNC_STATE[:60], 1, "not valid JSON"),
    "huge pid": (RUNC_STATE.replace(b'"pid":16569,"metadata"', b'"pid":99999999999999999999,"metadata"'), 1,
                 '"pid" must be a pid'),
    "negative pid": (RUNC_STATE.replace(b'"pid":16569,"metadata"', b'"pid":-1,"metadata"'), 1, '"pid" must be a pid'),
    "huge number": (RUNC_STATE.replace(b'"pid":16569,"metadata"', b'"pid":' + b"9" * 5000 + b',"metadata"'), 1,
                    "not valid JSON"),
    "newline in id": (RUNC_STATE.replace(b'"id":"c1"', b'"id":"c1\\nsysgate agent: INFO: forged"'), 1,
                      '"state.id" contains control characters'),
    "escape in status": (RUNC_STATE.replace(b'"status":"creating"', b'"status":"\\u001b[2J"'), 1,
                         '"state.status" contains control characters'),
    "annotations list": (RUNC_STATE.replace(b'{"a":"b"}', b'["a"]'), 1, "annotations"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_states_are_rejected_without_fd_leaks(name, listener_source):
    data, nfds, message = BAD[name]
    before = open_fds()
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(")):
        receive(data, [os.dup(listener_source) for _ in range(nfds)])
    assert open_fds() == before


def test_parse_state_refuses_deep_nesting_itself(listener_source):
    """parse_state is total on its own (the reader's depth cap is not its only guard)."""
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_state(b'{"a":' * 100000 + b"1" + b"}" * 100000, [])


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=20), st.integers(1, 7), st.data())
def test_object_end_is_found_in_any_split(value, parts, data):
    """The scanner finds the end of any JSON object however the bytes are cut, escapes included."""
    doc = json.dumps({"x": value, "s": '\\"{[}]'}).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(doc)), max_size=parts)))
    pieces = [doc[a:b] for a, b in zip([0] + cuts, cuts + [len(doc)])]
    scan = _ObjectEnd(max_depth=1000)
    ends = [scan.feed(piece) for piece in pieces]
    assert [i for i, end in enumerate(ends) if end] == [max(i for i, piece in enumerate(pieces) if piece)]


def test_fd_that_is_not_a_listener_is_rejected():
    before = open_fds()
    with pytest.raises(ProtocolError, match="not a seccomp listener"):
        receive(RUNC_STATE, [os.open("/dev/null", os.O_RDONLY)])
    assert open_fds() == before


def test_too_many_fds_are_refused_and_closed():
    before = open_fds()
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(20)]
    with pytest.raises(ProtocolError, match="more than 4 fds"):
        receive(RUNC_STATE, fds, max_fds=4)
    assert open_fds() == before


def test_fds_after_the_first_message_are_refused(listener_source):
    before = open_fds()
    client, server = socket.socketpair()
    reader = StateReader(server)
    client.send(RUNC_STATE[:10])
    assert reader.read() is False
    fd = os.dup(listener_source)
    client.sendmsg([RUNC_STATE[10:]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())])
    os.close(fd)
    client.close()
    with pytest.raises(ProtocolError, match="after the first message"):
        reader.read_all(timeout=2)
    server.close()
    assert open_fds() == before


def test_oversized_state_is_refused():
    client, server = socket.socketpair()
    client.setblocking(False)
    try:
        client.send(b"{" + b" " * 9000)
    except BlockingIOError:
        pass
    with pytest.raises(ProtocolError, match="larger than 4096 bytes"):
        StateReader(server, max_bytes=4096).read_all(timeout=2)
    client.close()
    server.close()


def test_silent_client_times_out():
    client, server = socket.socketpair()
    client.send(b'{"ociVersion": ')
    with pytest.raises(ProtocolError, match="timed out"):
        StateReader(server).read_all(timeout=0.2)
    client.close()
    server.close()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                              max_leaves=20).map(lambda d: json.dumps(d).encode())))
def test_parser_only_raises_protocol_errors(data):
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        parse_state(data, [fd])
    except ProtocolError:
        pass
    finally:
        os.close(fd)


def test_object_end_survives_every_cut_and_empty_messages():
    """Every cut of a state full of escapes, with an empty (fds-only) message at the cut."""
    doc = json.dumps({"a": '\\"}{][\\\\', "b": ["\x07", {"c": '"'}], "d": "\\"}).encode()
    for cut in range(len(doc) + 1):
        scan = _ObjectEnd()
        ends = [scan.feed(doc[:cut]), scan.feed(b""), scan.feed(doc[cut:])]
        assert ends == [cut == len(doc), False, cut < len(doc)], cut
