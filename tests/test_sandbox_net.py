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

from support.cprog import cprog
from support.handlers import run
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

    def unix_dgram(self, path) -> str:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(path))
        self.socks.append(s)
        self._serve(s, stream=False)
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

    def settle(self, quiet=0.3, limit=5.0):
        """What arrived, once the server threads recorded nothing new for ``quiet`` seconds."""
        end, seen, last = time.monotonic() + limit, -1, time.monotonic()
        while time.monotonic() < end:
            if len(self.got) != seen:
                seen, last = len(self.got), time.monotonic()
            elif time.monotonic() - last >= quiet:
                break
            time.sleep(0.05)
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
@pytest.mark.usefixtures("landlock")
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


def codes(out: str) -> list[tuple[str, int, int]]:
    """Every ``tag ret errno`` line, in order."""
    return [(w[0], int(w[1]), int(w[2])) for w in (line.split() for line in out.splitlines())
            if len(w) >= 3 and w[1].lstrip("-").isdigit()]


# --- what already worked: direct calls, AF_UNSPEC, mapped/IPv6, the flipping race, fork ----------
@pytest.mark.usefixtures("landlock")
def test_direct_forbidden_peers_tcp_udp_unix_abstract_v6(attack, servers, tmp_path):
    ok_tcp, bad_tcp, ok_udp, bad_udp = servers.tcp(), servers.tcp(), servers.udp(), servers.udp()
    bad_v6 = servers.tcp("::1")
    ok_unix, bad_unix = servers.unix(tmp_path / "ok.sock"), servers.unix(tmp_path / "bad.sock")
    abstract = f"@sysgate-{os.getpid()}-{tmp_path.name}"
    servers.unix("\0" + abstract[1:])
    args = ["connect", "tcp", "127.0.0.1", ok_tcp, "dconnect", "tcp", "127.0.0.1", bad_tcp,
            "sendto", "127.0.0.1", ok_udp, "sendto", "127.0.0.1", bad_udp, "udpconnect", "127.0.0.1", bad_udp,
            "connect", "tcp", "::ffff:127.0.0.1", bad_tcp, "connect", "tcp", "::1", bad_v6,
            "connect", "unix", f"unix:{ok_unix}", 0, "dconnect", "unix", f"unix:{bad_unix}", 0,
            "dconnect", "unix", abstract, 0, "unspec", ok_udp, bad_udp]
    rules = [f"allow connect,send 127.0.0.1:{ok_tcp},{ok_udp}", f"allow connect unix:{ok_unix}"]
    for arch in ("x86_64", "i386"):
        out = sandboxed(attack[arch], args, rules)
        assert codes(out) == [
            ("connect", 5, 0), ("dconnect", -1, EACCES), ("sendto", 6, 0), ("sendto", -1, EACCES),
            ("udpconnect", -1, EACCES), ("udpconnect_send", -1, errno.EDESTADDRREQ),
            ("connect", -1, EACCES), ("connect", -1, EACCES), ("connect", 5, 0), ("dconnect", -1, EACCES),
            ("dconnect", -1, EACCES), ("unspec_connect_ok", 0, 0), ("unspec_sendto", -1, EACCES),
            ("unspec_connect", 0, 0), ("unspec_send_after", -1, errno.EDESTADDRREQ)], (arch, out)
    got = servers.settle()
    assert got.count(b"hello") == 4 and got.count(b"sendto") == 2
    assert not {b"udpc", b"unspec", b"after"} & set(got)
    plain = codes(unsandboxed(attack["x86_64"], args))          # the kernel alone: all reached
    assert ("unspec_sendto", 6, 0) in plain and ("dconnect", 5, 0) in plain


@pytest.mark.usefixtures("landlock")
def test_thread_flipping_the_sockaddr_never_connects_to_the_forbidden_port(attack, servers):
    ok, bad = servers.tcp(backlog=128), servers.tcp(backlog=4096, accept=False)
    out = sandboxed(attack["x86_64"], ["flip", ok, bad, 3000], [f"allow connect 127.0.0.1:{ok}"])
    (tag, connected, _), = codes(out)
    assert tag == "flip" and connected > 0
    bad_sock = servers.socks[1]
    bad_sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        bad_sock.accept()           # nothing ever reached the forbidden listener
    assert len(servers.settle(quiet=1)) == connected


@pytest.mark.usefixtures("landlock")
def test_sockets_shared_across_fork_are_checked_in_the_child(attack, servers):
    ok, bad = servers.tcp(), servers.tcp()
    out = sandboxed(attack["x86_64"], ["fork", "127.0.0.1", ok, bad], [f"allow connect 127.0.0.1:{ok}"])
    assert sorted(codes(out)) == [("fork_child_bad", -1, EACCES), ("fork_child_ok", 6, 0),
                                  ("fork_parent_bad", -1, EACCES)], out
    assert servers.settle() == [b"forked"]


# --- 2. sendmmsg ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("landlock")
def test_sendmmsg_checks_every_message_and_counts_like_the_kernel(attack, servers):
    ok1, ok2, bad = servers.udp(), servers.udp(), servers.udp()
    rules = [f"allow send 127.0.0.1:{ok1},{ok2}"]
    for arch in ("x86_64", "i386"):
        out = sandboxed(attack[arch], ["mmsg", "127.0.0.1", ok1, ok2, bad, "mmsg", "127.0.0.1", bad, ok1, ok2],
                        rules)
        lines = [line.split() for line in out.splitlines()]
        assert lines == [["mmsg", "2", "0", "2", "2", "77"],          # partial success: 2 sent, msg_len set
                         ["mmsg", "-1", str(EACCES), "77", "77", "77"]], (arch, out)
    assert sorted(servers.settle()) == [b"m1", b"m1", b"m2", b"m2"]
    plain = unsandboxed(attack["x86_64"], ["mmsg", "127.0.0.1", ok1, ok2, bad])
    assert plain.split() == ["mmsg", "3", "0", "2", "2", "2"]


# --- 3. TCP fast open is a connect ---------------------------------------------------------------
@pytest.mark.usefixtures("landlock")
def test_fast_open_and_deferred_connect_are_checked_as_connects(attack, servers):
    ok, bad = servers.tfo(), servers.tfo()
    rules = [f"allow connect 127.0.0.1:{ok}", f"allow send 127.0.0.1:{bad}"]    # send must not open TCP
    args = ["fastopen", "127.0.0.1", bad, "fastopen_msg", "127.0.0.1", bad, "defer_connect", "127.0.0.1", bad,
            "mmsg_fastopen", "127.0.0.1", bad, "fastopen", "127.0.0.1", ok, "mmsg_fastopen", "127.0.0.1", ok]
    for arch in ("x86_64", "i386"):
        out = sandboxed(attack[arch], args, rules)
        assert codes(out) == [("fastopen", -1, EACCES), ("fastopen_msg", -1, EACCES), ("defer_connect", -1, EACCES),
                              ("mmsg_fastopen", -1, EACCES), ("fastopen", 8, 0), ("mmsg_fastopen", 1, 0)], (arch, out)
    got = servers.settle()
    assert sorted(got) == sorted([b"tfo-data", b"mmsg-tfo"] * 2), got
    plain = codes(unsandboxed(attack["x86_64"], args))
    assert plain[:4] == [("fastopen", 8, 0), ("fastopen_msg", 7, 0), ("defer_connect", 8, 0),
                         ("mmsg_fastopen", 1, 0)], plain                     # the kernel alone connects


# --- 4. socket types and raw sockets -------------------------------------------------------------
@pytest.mark.usefixtures("landlock")
def test_rules_check_the_socket_type(attack, servers):
    tcp_port = servers.tcp()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", tcp_port))              # the same port number for UDP
    udp.settimeout(0.5)
    servers.socks.append(udp)
    out = sandboxed(attack["x86_64"], ["connect", "tcp", "127.0.0.1", tcp_port, "sendto", "127.0.0.1", tcp_port,
                                       "udpconnect", "127.0.0.1", tcp_port],
                    [f"allow connect tcp 127.0.0.1:{tcp_port}"])
    assert codes(out) == [("connect", 5, 0), ("sendto", -1, EACCES), ("udpconnect", -1, EACCES),
                          ("udpconnect_send", -1, errno.EDESTADDRREQ)], out
    with pytest.raises(TimeoutError):
        udp.recv(100)
    out = sandboxed(attack["x86_64"], ["sendto", "127.0.0.1", tcp_port, "connect", "tcp", "127.0.0.1", tcp_port],
                    [f"allow send,connect udp 127.0.0.1:{tcp_port}"])
    assert codes(out) == [("sendto", 6, 0), ("connect", -1, EACCES)], out
    assert udp.recv(100) == b"sendto"


# one mode only: its rules allow every TCP connect and bind, so Landlock has nothing to enforce (no plan)
def test_raw_socket_connected_to_an_allowed_address_cannot_send(attack, servers):
    """IP_HDRINCL: the packet's own header names 127.0.0.2, whatever the socket is connected to."""
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.2", 0))
    victim.settimeout(0.5)
    servers.socks.append(victim)
    port = victim.getsockname()[1]
    args = ["raw", "127.0.0.1", 9, "127.0.0.2", port]
    out = sandboxed(attack["x86_64"], args, ["allow connect,send 127.0.0.1", "allow any *"], default="allow")
    assert codes(out) == [("raw_connect", -1, EACCES), ("raw_send", -1, errno.EDESTADDRREQ),
                          ("raw_sendto", -1, EACCES)], out
    with pytest.raises(TimeoutError):
        victim.recv(100)
    out = sandboxed(attack["x86_64"], args, ["allow connect,send raw 127.0.0.1"])    # explicitly allowed
    assert codes(out) == [("raw_connect", 0, 0), ("raw_send", 35, 0), ("raw_sendto", 35, 0)], out
    assert victim.recv(100) == b"RAWLEAK"      # what a raw rule allows: any packet


# --- 5. unix rules follow inodes -----------------------------------------------------------------
@pytest.mark.usefixtures("landlock")
def test_hard_link_to_a_denied_socket_under_an_allowed_name_is_refused(attack, servers, tmp_path):
    secret = servers.unix(tmp_path / "secret.sock")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    os.link(secret, allowed / "x.sock")
    servers.unix(allowed / "fine.sock")
    rules = [f"deny connect unix:{secret}", f"allow connect unix:{allowed}/*"]
    out = sandboxed(attack["x86_64"], ["dconnect", "unix", f"unix:{allowed}/x.sock", 0,
                                       "connect", "unix", f"unix:{allowed}/fine.sock", 0], rules)
    assert codes(out) == [("dconnect", -1, EACCES), ("connect", 5, 0)], out
    assert servers.settle() == [b"hello"]


@pytest.mark.usefixtures("landlock")
def test_deny_rule_inode_is_looked_up_at_connect_time_too(attack, servers, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    handler_rules = [f"deny connect unix:{tmp_path}/late.sock", f"allow connect unix:{allowed}/*"]
    handler = NetHandler(handler_rules)                  # loaded before the socket exists
    late = servers.unix(tmp_path / "late.sock")
    os.link(late, allowed / "y.sock")
    code, out = run([attack["x86_64"], "dconnect", "unix", f"unix:{allowed}/y.sock", "0"], handler,
                    policy=net_policy(handler))
    assert codes(out) == [("dconnect", -1, EACCES)], out


# --- 6. slow connects do not starve the workers; allowed connects answer like the kernel ----------
@pytest.fixture
def full_backlog():
    """A listener whose accept queue is full: further SYNs are dropped, connects hang in SYN_SENT."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    held = [socket.create_connection(("127.0.0.1", port))]
    for _ in range(2):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        held.append(c)
    yield port
    for s in held + [srv]:
        s.close()


@pytest.mark.usefixtures("landlock")
def test_blocked_connects_do_not_starve_an_allowed_connect(attack, servers, full_backlog):
    ok = servers.tcp()
    handler = NetHandler([f"allow connect 127.0.0.1:{full_backlog},{ok}"])
    started = time.monotonic()
    code, out = run([attack["x86_64"], "flood", "127.0.0.1", str(full_backlog), "8", "connect", "tcp", "127.0.0.1",
                     str(ok)], handler, policy=net_policy(handler), timeout=20)
    assert codes(out) == [("connect", 5, 0)], out
    assert servers.settle() == [b"hello"]
    # 8 connects still waiting for the full listener and the allowed one went through: the pool
    # (4 workers) held none of them (before, the allowed connect failed after the 30 s deadline)
    assert time.monotonic() - started < 15


@pytest.mark.usefixtures("landlock")
def test_allowed_connects_answer_like_the_kernel(attack, full_backlog):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused = closed.getsockname()[1]
    closed.close()
    args = ["eintr", "127.0.0.1", full_backlog, "nonblock", "127.0.0.1", full_backlog,
            "sndtimeo", "127.0.0.1", full_backlog, "usertimeout", "127.0.0.1", full_backlog,
            "connect", "tcp", "127.0.0.1", refused]
    expected = [("eintr", -1, errno.EINTR), ("nonblock", -1, errno.EINPROGRESS), ("sndtimeo", -1, errno.EINPROGRESS),
                ("usertimeout", -1, errno.ETIMEDOUT), ("connect", -1, errno.ECONNREFUSED)]
    assert codes(unsandboxed(attack["x86_64"], args)) == expected
    handler = NetHandler([f"allow connect 127.0.0.1:{full_backlog},{refused}"])
    code, out = run([attack["x86_64"], *map(str, args)], handler, policy=net_policy(handler))
    assert codes(out) == expected, out
    assert handler.waiter.pending() == 0          # the interrupted one was dropped, the others answered


# --- 7. emulated results are the kernel's ------------------------------------------------------------
@pytest.mark.usefixtures("landlock")
def test_sendmsg_name_lengths_match_the_kernel(attack, servers):
    port = servers.udp()
    args = [a for n in (0, 200, -1, 16) for a in ("namelen", "127.0.0.1", port, n)]
    plain = unsandboxed(attack["x86_64"], args)
    assert "namelen0 2 0" in " ".join(plain.split()) and "sendtolen200 -1 22" in " ".join(plain.split())
    for arch in ("x86_64", "i386"):
        out = sandboxed(attack[arch], args, [f"allow connect,send 127.0.0.1:{port}"])
        assert out.split() == plain.split(), (arch, out, plain)


@pytest.mark.usefixtures("landlock")
def test_unix_bind_names_the_socket_with_the_targets_path(attack, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    args = ["bindunix", f"unix:{tmp_path}/d/a.sock", "bindunix", f"unix:{tmp_path}/link/b.sock",
            "bindunix", f"unix:{tmp_path}/elsewhere/c.sock"]
    out = sandboxed(attack["x86_64"], args, [f"allow bind unix:{tmp_path}/d/*"])
    assert out.split("\n")[:3] == [f"bindunix 0 0 {tmp_path}/d/a.sock", f"bindunix 0 0 {tmp_path}/link/b.sock",
                                   f"bindunix -1 {EACCES} -"], out
    assert sorted(os.listdir(tmp_path / "d")) == ["a.sock", "b.sock"] and not os.listdir(tmp_path / "elsewhere")
    os.unlink(tmp_path / "d" / "a.sock")
    os.unlink(tmp_path / "d" / "b.sock")
    assert unsandboxed(attack["x86_64"], args[:4]).split("\n")[:2] == out.split("\n")[:2]


@pytest.mark.usefixtures("landlock")
def test_listen_on_an_unbound_socket_is_a_wildcard_bind(attack):
    assert codes(sandboxed(attack["x86_64"], ["listen"], ["allow bind 127.0.0.1"])) == [("listen", -1, EACCES)]
    assert codes(sandboxed(attack["x86_64"], ["listen"], ["allow bind 0.0.0.0:0"])) == [("listen", 0, 0)]
    assert codes(sandboxed(attack["i386"], ["sc_listen"], ["allow bind *:0"])) == [("sc_listen", 0, 0)]


@pytest.mark.usefixtures("landlock")
def test_emulated_send_on_a_broken_connection_raises_sigpipe_like_the_kernel(attack):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def close_each():
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()
    threading.Thread(target=close_each, daemon=True).start()
    args = ["sigpipe", "127.0.0.1", port]
    plain = codes(unsandboxed(attack["x86_64"], args))
    out = sandboxed(attack["x86_64"], args, [f"allow connect 127.0.0.1:{port}"])
    srv.close()
    assert codes(out) == plain, (out, plain)
    assert ("sigpipe_peer_closed", 0, 0) in plain and ("sigpipes", 1, 0) in plain
    assert ("sigpipe_nosignal", -1, errno.EPIPE) in plain


def test_socketcall_condition_is_the_policy_text_the_readme_shows():
    from sysgate.policy.parser import parse_policy

    policy = parse_policy("arch: x86_64, i386\ndefault: allow\n"
                          "socketcall: call in {2, 3, 4, 11, 16, 20} -> notify(net)\n")
    assert policy.rules[0].condition == socketcall_condition()


@pytest.mark.usefixtures("landlock")
def test_unix_datagrams_to_forbidden_paths_and_abstract_names_are_refused(attack, servers, tmp_path):
    ok = servers.unix_dgram(tmp_path / "ok.dgram")
    bad = servers.unix_dgram(tmp_path / "bad.dgram")
    abstract = f"@sysgate-dgram-{os.getpid()}-{tmp_path.name}"
    servers.unix_dgram("\0" + abstract[1:])
    (tmp_path / "alias.dgram").symlink_to(bad)
    args = ["sendto", f"unix:{ok}", 0, "sendto", f"unix:{bad}", 0, "sendto", f"unix:{tmp_path}/alias.dgram", 0,
            "sendto", abstract, 0, "mmsg", f"unix:{bad}", 0, 0, 0]
    for arch in ("x86_64", "i386"):
        out = sandboxed(attack[arch], args, [f"allow send unix:{ok}"])
        assert out.split("\n")[:5] == ["sendto 6 0", f"sendto -1 {EACCES}", f"sendto -1 {EACCES}",
                                        f"sendto -1 {EACCES}", f"mmsg -1 {EACCES} 77 77 77"], (arch, out)
    assert servers.settle() == [b"sendto", b"sendto"]
    assert unsandboxed(attack["x86_64"], args).split("\n")[:4] == ["sendto 6 0"] * 4      # the kernel: all sent


@pytest.mark.usefixtures("landlock")
def test_unix_connect_to_a_full_backlog_waits_like_the_kernel(attack, tmp_path):
    path = str(tmp_path / "full.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(0)
    held = []
    for _ in range(2):                          # fill the backlog (non-blocking: the last one fails)
        c = socket.socket(socket.AF_UNIX)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            pass
        held.append(c)
    args = ["unix_sndtimeo", f"unix:{path}"]
    plain = codes(unsandboxed(attack["x86_64"], args))
    assert plain == [("unix_sndtimeo", -1, errno.EAGAIN)]
    handler = NetHandler([f"allow connect unix:{path}"])
    code, out = run([attack["x86_64"], *args], handler, policy=net_policy(handler))
    assert codes(out) == plain, out
    # without a timeout it waits until the server accepts (the waiter retries; no worker held)
    timer = threading.Timer(0.5, lambda: held.append(srv.accept()[0]))
    timer.start()
    handler = NetHandler([f"allow connect unix:{path}"])
    code, out = run([attack["x86_64"], "connect", "unix", f"unix:{path}", "0"], handler, policy=net_policy(handler))
    timer.join()
    assert codes(out) == [("connect", 5, 0)], out
    for s in held + [srv]:
        s.close()


@pytest.mark.usefixtures("landlock")
def test_sends_blocked_on_a_full_peer_do_not_starve_an_allowed_connect(attack, servers, tmp_path):
    path = str(tmp_path / "full.dgram")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)                             # never read
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        while True:
            filler.sendto(b"x", socket.MSG_DONTWAIT, path)
    except BlockingIOError:
        pass                                    # its queue is full: blocking sends to it wait
    ok = servers.tcp()
    args = ["dgram_timeo", f"unix:{path}", "mmsg_timeo", f"unix:{path}"]
    plain = codes(unsandboxed(attack["x86_64"], args))
    assert plain == [("dgram_timeo", -1, errno.EAGAIN), ("mmsg_timeo", -1, errno.EAGAIN)]
    handler = NetHandler([f"allow send unix:{path}", f"allow connect 127.0.0.1:{ok}"])
    started = time.monotonic()
    code, out = run([attack["x86_64"], *args, "dgram_flood", f"unix:{path}", "4", "mmsg_flood", f"unix:{path}", "4",
                     "connect", "tcp", "127.0.0.1", str(ok)], handler, policy=net_policy(handler), timeout=20)
    assert codes(out) == plain + [("connect", 5, 0)], out
    assert time.monotonic() - started < 15
    sink.close()
    filler.close()


@pytest.mark.usefixtures("landlock")
def test_past_max_waits_a_worker_waits_itself(attack, full_backlog):
    """The waiter's bound (each wait holds an fd): beyond it connects still answer like the kernel."""
    handler = NetHandler([f"allow connect 127.0.0.1:{full_backlog}"], max_waits=0)
    code, out = run([attack["x86_64"], "eintr", "127.0.0.1", str(full_backlog), "sndtimeo", "127.0.0.1",
                     str(full_backlog)], handler, policy=net_policy(handler))
    assert codes(out) == [("eintr", -1, errno.EINTR), ("sndtimeo", -1, errno.EINPROGRESS)], out
    assert handler.waiter.pending() == 0
