"""net handler with real targets: TCP/UDP/unix allow-lists, emulated calls, privileged ports."""
from __future__ import annotations

import ipaddress
import socket
import threading

import pytest

from sysgate.errors import SysgateError
from sysgate.handlers import sockaddr
from sysgate.handlers.net import NetHandler, NetRules, parse_rule
from support.handlers import run

PY = ["/usr/bin/python3", "-S", "-c"]


def tcp_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    got = []

    def serve():
        srv.settimeout(20)
        try:
            while True:
                conn, _ = srv.accept()
                got.append(conn.recv(100))
                conn.close()
        except OSError:
            pass
    threading.Thread(target=serve, daemon=True).start()
    return srv, got


def test_rules():
    rules = NetRules(["allow connect 127.0.0.0/8:80,8000-8100", "allow bind *:9000", "allow connect [::1]:443",
                      "allow connect unix:/run/**", "allow send unix:@abs*", "deny any *"])

    def v4(ip, port):
        return sockaddr.SockAddr(socket.AF_INET, ipaddress.ip_address(ip), port)

    assert rules.allows("connect", v4("127.0.0.2", 8050)) and not rules.allows("connect", v4("127.0.0.2", 8200))
    assert not rules.allows("bind", v4("127.0.0.1", 80)) and rules.allows("bind", v4("0.0.0.0", 9000))
    mapped = sockaddr.SockAddr(socket.AF_INET6, ipaddress.ip_address("::ffff:127.0.0.1"), 80)
    assert rules.allows("connect", mapped)            # IPv4-mapped IPv6 is checked as IPv4
    assert rules.allows("connect", sockaddr.SockAddr(socket.AF_INET6, ipaddress.ip_address("::1"), 443))
    assert rules.allows("connect", sockaddr.SockAddr(socket.AF_UNIX, b"/run/x.sock"))
    assert rules.allows("send", sockaddr.SockAddr(socket.AF_UNIX, b"\0abstract"))
    assert not rules.allows("connect", sockaddr.SockAddr(socket.AF_UNIX, b"\0abstract"))
    assert not rules.allows("connect", sockaddr.SockAddr(socket.AF_NETLINK))
    for bad in ("allow connect", "allow fly *", "allow connect 300.1.1.1:80", "allow connect 1.2.3.4:99999",
                "allow connect [::1]x", {"allow": "connect", "cidr": "x"}):
        with pytest.raises(SysgateError):
            parse_rule(bad)


def test_tcp_connect_allowed_port_and_denied_port():
    srv, got = tcp_server()
    port = srv.getsockname()[1]
    script = (f"import socket\n"
              f"s=socket.socket(); s.connect(('127.0.0.1', {port})); s.sendall(b'hello'); s.close()\n"
              f"t=socket.socket(); "
              f"print('denied', t.connect_ex(('127.0.0.1', {port + 1 if port < 65535 else port - 1})))\n"
              f"u=socket.socket(socket.AF_INET6); print('v6', u.connect_ex(('::1', {port})))\n"
              f"w=socket.socket(); w.setblocking(False); print('nb', w.connect_ex(('127.0.0.1', {port})))\n")
    code, out = run(PY + [script], NetHandler([f"allow connect 127.0.0.1:{port}"]))
    srv.close()
    assert code == 0, out
    assert b"hello" in got
    assert "denied 13" in out and "v6 13" in out                 # EACCES
    assert "nb 115" in out or "nb 0" in out                    # EINPROGRESS like the kernel


def test_udp_sendto_checked_and_connected_send_continues():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    script = (f"import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              f"print('ok', s.sendto(b'data1', ('127.0.0.1', {port})))\n"
              f"try:\n s.sendto(b'nope', ('127.0.0.2', {port}))\nexcept OSError as e:\n print('denied', e.errno)\n"
              f"print('msg', s.sendmsg([b'da', b'ta3'], [], 0, ('127.0.0.1', {port})))\n"
              f"try:\n s.sendmsg([b'x'], [], 0, ('127.0.0.3', {port}))\n"
              f"except OSError as e:\n print('msgdenied', e.errno)\n"
              f"try:\n s.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(4))], 0, "
              f"('127.0.0.1', {port}))\n"
              f"except OSError as e:\n print('control', e.errno)\n"
              f"s.connect(('127.0.0.1', {port})); print('sent', s.send(b'data2'))\n")
    code, out = run(PY + [script], NetHandler([f"allow connect,send 127.0.0.1:{port}"]))
    assert code == 0, out
    assert "ok 5" in out and "denied 13" in out and "sent 5" in out and "msg 5" in out
    assert "msgdenied 13" in out and "control 1" in out                    # EACCES; EPERM for control data
    assert [rx.recv(100) for _ in range(3)] == [b"data1", b"data3", b"data2"]
    rx.close()


def test_unix_connect_resolves_symlinks_before_checking(tmp_path):
    good, bad = tmp_path / "good.sock", tmp_path / "bad.sock"
    servers = []
    for path in (good, bad):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.listen(4)
        servers.append(s)
    (tmp_path / "alias.sock").symlink_to(bad)
    script = (f"import socket,os\nos.chdir('{tmp_path}')\n"
              f"for p in ('{good}', 'good.sock', '{tmp_path}/alias.sock', '{bad}', '{tmp_path}/missing'):\n"
              f"  s=socket.socket(socket.AF_UNIX); print(p.rsplit('/',1)[-1], s.connect_ex(p))\n")
    code, out = run(PY + [script], NetHandler([f"allow connect unix:{good}"]))
    for s in servers:
        s.close()
    lines = dict(line.split() for line in out.splitlines())
    assert lines == {"good.sock": "0", "alias.sock": "13", "bad.sock": "13", "missing": "2"}, out


def test_bind_privileged_port_needs_the_capability():
    script = ("import socket\nfor port in (80, 0):\n s=socket.socket()\n"
              " try:\n  s.bind(('127.0.0.1', port)); print(port, 'bound', s.getsockname()[1] > 0)\n"
              " except OSError as e:\n  print(port, 'error', e.errno)\n")
    handler = NetHandler(["allow bind 127.0.0.1"])
    code, out = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                     "--bounding-set=-all", *PY, script], handler)
    assert "80 error 13" in out and "0 bound True" in out, out
    code, out = run(PY + [script.replace("(80, 0)", "(0,)")], NetHandler(["deny bind *"]))
    assert "0 error 13" in out


def test_rule_socket_types_and_raw_sockets():
    from sysgate.handlers.sockaddr import SocketInfo

    tcp = SocketInfo(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    udp = SocketInfo(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    raw = SocketInfo(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    packet = SocketInfo(17, socket.SOCK_DGRAM, 0)                       # AF_PACKET, even not SOCK_RAW
    unix = SocketInfo(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0)
    local = sockaddr.SockAddr(socket.AF_INET, ipaddress.ip_address("127.0.0.1"), 53)
    rules = NetRules(["allow connect tcp 127.0.0.1:53", "allow send udp,icmp *:53", "allow any seqpacket *"])
    assert rules.allows("connect", local, tcp) and not rules.allows("connect", local, udp)
    assert rules.allows("send", local, udp) and not rules.allows("send", local, tcp)
    assert rules.allows("bind", sockaddr.SockAddr(socket.AF_UNIX, b"/x"), unix)
    everything = NetRules(["allow any *"], default="allow")
    assert everything.allows("send", local, udp)
    assert not everything.allows("send", local, raw) and not everything.allows("bind", local, packet)
    assert NetRules(["allow send raw 127.0.0.1"]).allows("send", local, raw)
    assert parse_rule({"allow": "send", "type": "udp", "cidr": "10.0.0.0/8"}).kinds == {"udp"}
    for bad in ("allow connect tcpx 1.2.3.4", "allow connect tcp udp 1.2.3.4:1", {"allow": "send", "type": "x"}):
        with pytest.raises(SysgateError):
            parse_rule(bad)


def test_socketcall_is_decoded_by_sub_call():
    from sysgate.handlers.decode import format_call
    from sysgate.testing import FakeNotification

    n = FakeNotification("socketcall", [3, 0x1000], arch="i386")
    assert format_call(n, read=False) == "socketcall(SYS_CONNECT, 0x1000)"


from hypothesis import given, settings, strategies as st  # noqa: E402

_WORDS = st.sampled_from(["allow", "deny", "connect", "bind", "send", "any", "tcp", "udp", "raw", "stream", "*",
                          "127.0.0.1:80", "[::1]:1-2", "unix:/x/**", "10.0.0.0/8", "1.2.3.4:99999", "connect,send",
                          "tcp,udp", "x", "", "[", ":", "unix:@a*"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=5).map(" ".join) | st.text(max_size=40))
def test_rule_parser_accepts_or_reports_one_error(text):
    try:
        rule = parse_rule(text)
    except SysgateError as exc:
        assert str(exc).startswith("net rule")
        return
    assert rule.verdict in ("allow", "deny") and rule.ops and rule.kinds <= {"tcp", "udp", "icmp", "stream",
                                                                            "dgram", "seqpacket", "raw"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=130))
def test_sockaddr_parse_never_fails_otherwise(raw):
    try:
        addr = sockaddr.parse(raw)
    except ValueError:
        assert len(raw) < 26
        return
    assert str(addr)
