"""Attacks on the ``net`` handler, as compiled C programs (64-bit and i386) under real filters,
against real servers on 127.0.0.0/8 and unix sockets made here. Each forbidden peer must get
nothing; allowed calls must answer exactly what the kernel answers without sysgate."""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import threading
import time

import pytest

from cprog import cprog
from handlers_support import run
from sysgate.handlers.net import SOCKETCALL, NetHandler, socketcall_condition
from sysgate.policy.model import ALLOW, Action, Policy, Rule

HERE = os.path.dirname(os.path.abspath(__file__))
EACCES = errno.EACCES


@pytest.fixture(scope="module")
def attack():
    with open(os.path.join(HERE, "net_attack.c")) as fh:
        source = fh.read()
    return {"x86_64": cprog(source), "i386": cprog(source, m32=True)}


def net_policy(handler, *, filtered: bool = True) -> Policy:
    """x86_64 and i386; the handler's calls notified (socketcall only for the sub-calls that name
    an address when ``filtered``, as the sandbox base routes it)."""
    rules = []
    for name in handler.syscalls:
        cond = socketcall_condition() if name == "socketcall" and filtered else None
        rules.append(Rule(name, Action("notify", handler=handler.name), cond))
    return Policy(default=ALLOW, arches=["x86_64", "i386"], rules=rules)


def results(out: str) -> dict[str, tuple[int, int]]:
    """``tag ret errno`` lines -> {tag: (ret, errno)} (the last of a repeated tag wins)."""
    found = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1].lstrip("-").isdigit():
            found[words[0]] = (int(words[1]), int(words[2]))
    return found


def sandboxed(binary, args, rules, *, filtered=True, **options):
    handler = NetHandler(rules, **options)
    code, out = run([binary, *map(str, args)], handler, policy=net_policy(handler, filtered=filtered))
    assert code == 0, out
    return out


def unsandboxed(binary, args) -> str:
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=30).stdout


class Server:
    """TCP listeners / UDP receivers / unix listeners that record what reaches them."""

    def __init__(self):
        self.got: list[bytes] = []
        self.socks: list[socket.socket] = []
        self._stop = False

    def tcp(self, host="127.0.0.1", backlog=16, accept=True) -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        s.listen(backlog)
        self.socks.append(s)
        if accept:
            self._serve(s, stream=True)
        return s.getsockname()[1]

    def tfo(self, host="127.0.0.1") -> int:
        s = socket.socket()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
        s.bind((host, 0))
        s.listen(16)
        self.socks.append(s)
        self._serve(s, stream=True)
        return s.getsockname()[1]

    def udp(self, host="127.0.0.1") -> int:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        self.socks.append(s)
        self._serve(s, stream=False)
        return s.getsockname()[1]

    def unix(self, path) -> str:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.listen(16)
        self.socks.append(s)
        self._serve(s, stream=True)
        return str(path)

    def _serve(self, s, stream):
        def loop():
            s.settimeout(0.2)
            while not self._stop:
                try:
                    if stream:
                        conn, _ = s.accept()
                        conn.settimeout(2)
                        try:
                            self.got.append(conn.recv(100))
                        except OSError:
                            pass
                        conn.close()
                    else:
                        self.got.append(s.recv(100))
                except (TimeoutError, socket.timeout):
                    continue
                except OSError:
                    return
        threading.Thread(target=loop, daemon=True).start()

    def settle(self, seconds=0.3):
        time.sleep(seconds)          # let the server threads record what arrived
        return self.got

    def close(self):
        self._stop = True
        for s in self.socks:
            s.close()


@pytest.fixture
def servers():
    srv = Server()
    yield srv
    srv.close()


# --- 1. i386 socketcall -----------------------------------------------------------------------
@pytest.mark.parametrize("filtered", [True, False], ids=["bpf-filtered", "all-subcalls"])
def test_i386_socketcall_cannot_reach_forbidden_peers(attack, servers, tmp_path, filtered):
    ok_tcp, bad_tcp = servers.tcp(), servers.tcp()
    ok_udp, bad_udp = servers.udp(), servers.udp()
    ok_unix, bad_unix = servers.unix(tmp_path / "ok.sock"), servers.unix(tmp_path / "bad.sock")
    bad_abstract = f"@sysgate-{os.getpid()}-{tmp_path.name}"
    servers.unix("\0" + bad_abstract[1:])
    args = ["sc_connect", "tcp", "127.0.0.1", ok_tcp, "sc_connect", "tcp", "127.0.0.1", bad_tcp,
            "sc_sendto", "127.0.0.1", ok_udp, "sc_sendto", "127.0.0.1", bad_udp,
            "sc_sendmsg", "127.0.0.1", bad_udp, "sc_sendmmsg", "127.0.0.1", bad_udp,
            "sc_connect", "udp", "127.0.0.1", bad_udp,
            "sc_connect", "unix", f"unix:{ok_unix}", 0, "sc_connect", "unix", f"unix:{bad_unix}", 0,
            "sc_connect", "unix", bad_abstract, 0, "sc_bind", "127.0.0.1", 0, "sc_listen", "sc_other"]
    # tags repeat: check each result line in order
    out = sandboxed(attack["i386"], args, [f"allow connect,send 127.0.0.1:{ok_tcp},{ok_udp}",
                                          f"allow connect unix:{ok_unix}"], filtered=filtered)
    lines = [line.split() for line in out.splitlines()]
    codes = [(w[0], int(w[1]), int(w[2])) for w in lines]
    assert codes == [("sc_connect", 5, 0), ("sc_connect", -1, EACCES), ("sc_sendto", 9, 0),
                     ("sc_sendto", -1, EACCES), ("sc_sendmsg", -1, EACCES), ("sc_sendmmsg", -1, EACCES),
                     ("sc_connect", -1, EACCES), ("sc_connect", 5, 0), ("sc_connect", -1, EACCES),
                     ("sc_connect", -1, EACCES), ("sc_bind", -1, EACCES), ("sc_listen", -1, EACCES),
                     ("sc_other", 4, 0), ("sc_bad", -1, errno.EINVAL)], out
    got = servers.settle()
    assert b"sc-sendto" in got and got.count(b"sc-hi") == 2
    assert not any(g in (b"sc-msg", b"sc-mmsg") for g in got)
    # and the kernel alone lets every one through
    plain = unsandboxed(attack["i386"], args)
    assert "sc_connect -1" not in plain and "sc_sendmmsg 1 0" in plain, plain


def test_socketcall_condition_routes_only_address_subcalls():
    cond = socketcall_condition()
    notified = {name for name, nr in SOCKETCALL.items() if cond.evaluate((nr, 0, 0, 0, 0, 0))}
    assert notified == {"bind", "connect", "listen", "sendto", "sendmsg", "sendmmsg"}
    assert {"connect", "bind", "listen", "sendto", "sendmsg", "sendmmsg", "socketcall"} <= set(NetHandler.syscalls)
