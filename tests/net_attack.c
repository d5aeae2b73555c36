#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif
#ifndef TCP_FASTOPEN_CONNECT
#define TCP_FASTOPEN_CONNECT 30
#endif

static void out(const char *tag, long r) { printf("%s %ld %d\n", tag, r, r < 0 ? errno : 0); fflush(stdout); }

static socklen_t addr_of(const char *host, int port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    if (strncmp(host, "unix:", 5) == 0 || strncmp(host, "@", 1) == 0) {
        struct sockaddr_un *un = (void *)ss; un->sun_family = AF_UNIX;
        const char *p = host[0] == '@' ? host : host + 5;
        strncpy(un->sun_path, p, sizeof un->sun_path - 1);
        if (host[0] == '@') { un->sun_path[0] = 0; return offsetof(struct sockaddr_un, sun_path) + strlen(p); }
        return sizeof *un;
    }
    if (strchr(host, ':')) {
        struct sockaddr_in6 *s6 = (void *)ss; s6->sin6_family = AF_INET6; s6->sin6_port = htons(port);
        inet_pton(AF_INET6, host, &s6->sin6_addr); return sizeof *s6;
    }
    struct sockaddr_in *s4 = (void *)ss; s4->sin_family = AF_INET; s4->sin_port = htons(port);
    inet_pton(AF_INET, host, &s4->sin_addr); return sizeof *s4;
}

static int family_of(const char *host) { return host[0] == '@' || !strncmp(host, "unix:", 5) ? AF_UNIX : strchr(host, ':') ? AF_INET6 : AF_INET; }

#ifdef __i386__
static long sc(int call, unsigned long *a) { return syscall(SYS_socketcall, call, a); }
#endif

static const char *g_host; static int g_port;
static void *blocker(void *arg) {
    struct sockaddr_storage ss; socklen_t l = addr_of(g_host, g_port, &ss);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    connect(s, (void *)&ss, l);
    return NULL;
}
static void noop(int sig) { (void)sig; }

static void *dgram_blocker(void *arg) {
    struct sockaddr_storage ss; socklen_t l = addr_of((const char *)arg, 0, &ss);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    sendto(s, "stuck", 5, 0, (void *)&ss, l);                  /* the receiver's queue is full: blocks */
    return NULL;
}

static long mmsg_to(const char *host, int timeo_ms) {                /* 2 datagrams with sendmmsg */
    struct sockaddr_storage ss; socklen_t l = addr_of(host, 0, &ss);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (timeo_ms) { struct timeval tv = {0, timeo_ms * 1000}; setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); }
    struct iovec iov = {"mm", 2}; struct mmsghdr mm[2];
    memset(mm, 0, sizeof mm);
    for (int k = 0; k < 2; k++) { mm[k].msg_hdr.msg_name = &ss; mm[k].msg_hdr.msg_namelen = l; mm[k].msg_hdr.msg_iov = &iov; mm[k].msg_hdr.msg_iovlen = 1; }
    long r = sendmmsg(s, mm, 2, 0);
    int e = errno; close(s); errno = e;
    return r;
}
static void *mmsg_blocker(void *arg) { mmsg_to((const char *)arg, 0); return NULL; }
static volatile int g_pipes;
static void count_pipe(int sig) { (void)sig; g_pipes++; }

static volatile int g_stop; static volatile struct sockaddr_in g_flip; static int g_ok, g_bad;
static void *flipper(void *arg) {
    (void)arg;
    while (!g_stop) { g_flip.sin_port = htons(g_bad); g_flip.sin_port = htons(g_ok); }
    return NULL;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *op = argv[i];
        struct sockaddr_storage ss; socklen_t len;
        if (!strcmp(op, "connect") || !strcmp(op, "dconnect")) {          /* connect TYPE HOST PORT */
            int type = !strcmp(argv[i+1], "udp") ? SOCK_DGRAM : SOCK_STREAM;
            len = addr_of(argv[i+2], atoi(argv[i+3]), &ss);
            int s = socket(family_of(argv[i+2]), type, 0);
            long r = connect(s, (void *)&ss, len);
            if (r == 0 && type == SOCK_DGRAM) r = send(s, "dgram", 5, 0);
            if (r >= 0 && type == SOCK_STREAM) r = write(s, "hello", 5);
            out(op, r); i += 3; close(s);
        } else if (!strcmp(op, "sendto")) {                     /* sendto HOST PORT */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_DGRAM, 0);
            out(op, sendto(s, "sendto", 6, 0, (void *)&ss, len)); i += 2; close(s);
#ifdef __i386__
        } else if (!strcmp(op, "sc_connect")) {                 /* sc_connect TYPE HOST PORT */
            int type = !strcmp(argv[i+1], "udp") ? SOCK_DGRAM : SOCK_STREAM;
            len = addr_of(argv[i+2], atoi(argv[i+3]), &ss);
            int s = socket(family_of(argv[i+2]), type, 0);
            unsigned long a[3] = {s, (unsigned long)&ss, len};
            long r = sc(3, a);                                  /* SYS_CONNECT */
            if (r == 0) { unsigned long w[4] = {s, (unsigned long)"sc-hi", 5, 0}; r = sc(9, w); } /* SYS_SEND */
            out(op, r); i += 3; close(s);
        } else if (!strcmp(op, "sc_sendto")) {                  /* sc_sendto HOST PORT */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_DGRAM, 0);
            unsigned long a[6] = {s, (unsigned long)"sc-sendto", 9, 0, (unsigned long)&ss, len};
            out(op, sc(11, a)); i += 2; close(s);
        } else if (!strcmp(op, "sc_sendmsg")) {                 /* sc_sendmsg HOST PORT */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_DGRAM, 0);
            struct iovec iov = {"sc-msg", 6}; struct msghdr m = {&ss, len, &iov, 1, 0, 0, 0};
            unsigned long a[3] = {s, (unsigned long)&m, 0};
            out(op, sc(16, a)); i += 2; close(s);
        } else if (!strcmp(op, "sc_sendmmsg")) {                /* sc_sendmmsg HOST PORT */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_DGRAM, 0);
            struct iovec iov = {"sc-mmsg", 7}; struct mmsghdr mm = {{&ss, len, &iov, 1, 0, 0, 0}, 0};
            unsigned long a[4] = {s, (unsigned long)&mm, 1, 0};
            out(op, sc(20, a)); i += 2; close(s);
        } else if (!strcmp(op, "sc_bind")) {                    /* sc_bind HOST PORT */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_STREAM, 0);
            unsigned long a[3] = {s, (unsigned long)&ss, len};
            out(op, sc(2, a)); i += 2; close(s);
        } else if (!strcmp(op, "sc_listen")) {                  /* sc_listen: unbound inet listen */
            int s = socket(AF_INET, SOCK_STREAM, 0);
            unsigned long a[2] = {s, 4};
            out(op, sc(4, a)); i += 0; close(s);
        } else if (!strcmp(op, "sc_other")) {                   /* sub-calls that name nothing */
            int sv[2]; unsigned long a[4] = {AF_UNIX, SOCK_STREAM, 0, (unsigned long)sv};
            long r = sc(8, a);                                   /* SYS_SOCKETPAIR */
            if (r == 0) { unsigned long w[4] = {sv[0], (unsigned long)"pair", 4, 0}; r = sc(9, w); }
            char buf[8]; if (r == 4) { unsigned long rd[4] = {sv[1], (unsigned long)buf, 8, 0}; r = sc(10, rd); }
            out(op, r);
            unsigned long bad[2] = {0, 0}; out("sc_bad", sc(99, bad));
#endif
        } else if (!strcmp(op, "mmsg")) {                       /* mmsg HOST P1 P2 P3: three datagrams */
            int s = socket(family_of(argv[i+1]), SOCK_DGRAM, 0);
            struct sockaddr_storage a[3]; struct mmsghdr mm[3]; struct iovec iov[3]; char *txt[3] = {"m1", "m2", "m3"};
            memset(mm, 0, sizeof mm);
            for (int k = 0; k < 3; k++) {
                socklen_t l = addr_of(argv[i+1], atoi(argv[i+2+k]), &a[k]);
                iov[k].iov_base = txt[k]; iov[k].iov_len = 2;
                mm[k].msg_hdr.msg_name = &a[k]; mm[k].msg_hdr.msg_namelen = l;
                mm[k].msg_hdr.msg_iov = &iov[k]; mm[k].msg_hdr.msg_iovlen = 1; mm[k].msg_len = 77;
            }
            long r = sendmmsg(s, mm, 3, 0);
            printf("mmsg %ld %d %u %u %u\n", r, r < 0 ? errno : 0, mm[0].msg_len, mm[1].msg_len, mm[2].msg_len);
            fflush(stdout); i += 4; close(s);
        } else if (!strcmp(op, "mmsg_fastopen")) {             /* mmsg_fastopen HOST PORT: TCP via sendmmsg */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_STREAM, 0);
            struct iovec iov = {"mmsg-tfo", 8}; struct mmsghdr mm = {{&ss, len, &iov, 1, 0, 0, 0}, 0};
            out(op, sendmmsg(s, &mm, 1, MSG_FASTOPEN)); i += 2; close(s);
        } else if (!strcmp(op, "fastopen")) {                   /* fastopen HOST PORT: sendto(MSG_FASTOPEN) */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_STREAM, 0);
            out(op, sendto(s, "tfo-data", 8, MSG_FASTOPEN, (void *)&ss, len)); i += 2; close(s);
        } else if (!strcmp(op, "fastopen_msg")) {               /* fastopen_msg HOST PORT: sendmsg(MSG_FASTOPEN) */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_STREAM, 0);
            struct iovec iov = {"tfo-msg", 7}; struct msghdr m = {&ss, len, &iov, 1, 0, 0, 0};
            out(op, sendmsg(s, &m, MSG_FASTOPEN)); i += 2; close(s);
        } else if (!strcmp(op, "defer_connect")) {              /* TCP_FASTOPEN_CONNECT: connect sends no SYN */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_STREAM, 0), one = 1;
            setsockopt(s, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof one);
            long r = connect(s, (void *)&ss, len);
            if (r == 0) r = write(s, "deferred", 8);
            out(op, r); i += 2; close(s);
        } else if (!strcmp(op, "raw")) {                        /* raw ALLOWED_IP ALLOWED_PORT DST_IP DST_PORT */
            int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            unsigned char pkt[20 + 8 + 7] = {0};
            pkt[0] = 0x45; pkt[3] = sizeof pkt; pkt[8] = 64; pkt[9] = IPPROTO_UDP;
            inet_pton(AF_INET, "127.0.0.1", pkt + 12); inet_pton(AF_INET, argv[i+3], pkt + 16);
            int dport = atoi(argv[i+4]);
            pkt[20] = 0x04; pkt[21] = 0xd2; pkt[22] = dport >> 8; pkt[23] = dport & 0xff; pkt[25] = 15;
            memcpy(pkt + 28, "RAWLEAK", 7);
            out("raw_connect", connect(s, (void *)&ss, len));
            out("raw_send", send(s, pkt, sizeof pkt, 0));
            out("raw_sendto", sendto(s, pkt, sizeof pkt, 0, (void *)&ss, len));
            i += 4; close(s);
        } else if (!strcmp(op, "namelen")) {                    /* namelen HOST PORT N: connected UDP, msg_namelen N */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_DGRAM, 0);
            connect(s, (void *)&ss, len);
            struct iovec iov = {"nl", 2}; struct msghdr m = {&ss, atoi(argv[i+3]), &iov, 1, 0, 0, 0};
            printf("namelen%s ", argv[i+3]); out("", sendmsg(s, &m, 0));
            printf("sendtolen%s ", argv[i+3]); out("", sendto(s, "nl", 2, 0, (void *)&ss, atoi(argv[i+3])));
            i += 3; close(s);
        } else if (!strcmp(op, "bindunix")) {                   /* bindunix PATH: bind, print getsockname */
            int s = socket(AF_UNIX, SOCK_STREAM, 0);
            len = addr_of(argv[i+1], 0, &ss);
            long r = bind(s, (void *)&ss, len);
            struct sockaddr_un got; socklen_t gl = sizeof got; memset(&got, 0, sizeof got);
            getsockname(s, (void *)&got, &gl);
            printf("bindunix %ld %d %s\n", r, r < 0 ? errno : 0, got.sun_path[0] ? got.sun_path : "-"); fflush(stdout);
            i += 1; close(s);
        } else if (!strcmp(op, "listen")) {                     /* listen on an unbound TCP socket */
            int s = socket(AF_INET, SOCK_STREAM, 0);
            out(op, listen(s, 4)); close(s);
        } else if (!strcmp(op, "flood")) {                      /* flood HOST PORT N: N blocked connects in threads */
            g_host = argv[i+1]; g_port = atoi(argv[i+2]);
            for (int k = 0; k < atoi(argv[i+3]); k++) { pthread_t t; pthread_create(&t, NULL, blocker, NULL); }
            usleep(300000); i += 3;
        } else if (!strcmp(op, "dgram_flood")) {                /* dgram_flood unix:PATH N: N blocked sends */
            for (int k = 0; k < atoi(argv[i+2]); k++) { pthread_t t; pthread_create(&t, NULL, dgram_blocker, argv[i+1]); }
            usleep(300000); i += 2;
        } else if (!strcmp(op, "mmsg_flood")) {                 /* mmsg_flood unix:PATH N: N blocked sendmmsg */
            for (int k = 0; k < atoi(argv[i+2]); k++) { pthread_t t; pthread_create(&t, NULL, mmsg_blocker, argv[i+1]); }
            usleep(300000); i += 2;
        } else if (!strcmp(op, "mmsg_timeo")) {                 /* mmsg_timeo unix:PATH: SO_SNDTIMEO 300 ms */
            out(op, mmsg_to(argv[i+1], 300)); i += 1;
        } else if (!strcmp(op, "dgram_timeo")) {                /* dgram_timeo unix:PATH: 300 ms SO_SNDTIMEO */
            len = addr_of(argv[i+1], 0, &ss);
            int s = socket(AF_UNIX, SOCK_DGRAM, 0); struct timeval tv = {0, 300000};
            setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            out(op, sendto(s, "late", 4, 0, (void *)&ss, len)); i += 1; close(s);
        } else if (!strcmp(op, "eintr")) {                      /* eintr HOST PORT: alarm interrupts a connect */
            struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = noop; sigaction(SIGALRM, &sa, NULL);
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(AF_INET, SOCK_STREAM, 0);
            alarm(1); out(op, connect(s, (void *)&ss, len)); alarm(0); i += 2; close(s);
        } else if (!strcmp(op, "nonblock")) {                   /* nonblock HOST PORT */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            out(op, connect(s, (void *)&ss, len)); i += 2; close(s);
        } else if (!strcmp(op, "sndtimeo")) {                   /* sndtimeo HOST PORT: 300 ms send timeout */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(AF_INET, SOCK_STREAM, 0); struct timeval tv = {0, 300000};
            setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            out(op, connect(s, (void *)&ss, len)); i += 2; close(s);
        } else if (!strcmp(op, "unix_sndtimeo")) {              /* unix_sndtimeo PATH: full backlog, 300 ms */
            len = addr_of(argv[i+1], 0, &ss);
            int s = socket(AF_UNIX, SOCK_STREAM, 0); struct timeval tv = {0, 300000};
            setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            out(op, connect(s, (void *)&ss, len)); i += 1; close(s);
        } else if (!strcmp(op, "usertimeout")) {                /* usertimeout HOST PORT: TCP_USER_TIMEOUT 500 ms */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(AF_INET, SOCK_STREAM, 0), ms = 500;
            setsockopt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
            out(op, connect(s, (void *)&ss, len)); i += 2; close(s);
        } else if (!strcmp(op, "flip")) {                       /* flip OKPORT BADPORT N: race the sockaddr */
            g_ok = atoi(argv[i+1]); g_bad = atoi(argv[i+2]); int n = atoi(argv[i+3]), okc = 0;
            g_flip.sin_family = AF_INET; g_flip.sin_addr.s_addr = htonl(0x7f000001); g_flip.sin_port = htons(g_ok);
            pthread_t t; pthread_create(&t, NULL, flipper, NULL);
            for (int k = 0; k < n; k++) {
                int s = socket(AF_INET, SOCK_STREAM, 0);
                if (connect(s, (const void *)&g_flip, sizeof g_flip) == 0) okc++;
                close(s);
            }
            g_stop = 1; pthread_join(t, NULL);
            printf("flip %d 0\n", okc); fflush(stdout); i += 3;
        } else if (!strcmp(op, "fork")) {                       /* fork HOST OK BAD: a socket made before fork */
            int s = socket(AF_INET, SOCK_STREAM, 0), u = socket(AF_INET, SOCK_STREAM, 0);
            pid_t child = fork();
            if (child == 0) {
                len = addr_of(argv[i+1], atoi(argv[i+3]), &ss);
                out("fork_child_bad", connect(s, (void *)&ss, len));
                len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
                long r = connect(u, (void *)&ss, len);
                if (r == 0) r = write(u, "forked", 6);
                out("fork_child_ok", r); _exit(0);
            }
            int st; waitpid(child, &st, 0);
            len = addr_of(argv[i+1], atoi(argv[i+3]), &ss);
            out("fork_parent_bad", connect(s, (void *)&ss, len));
            i += 3; close(s); close(u);
        } else if (!strcmp(op, "unspec")) {                     /* unspec OKPORT BADPORT: AF_UNSPEC tricks (UDP) */
            struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_addr.s_addr = htonl(0x7f000001);
            int s = socket(AF_INET, SOCK_DGRAM, 0);
            a.sin_port = htons(atoi(argv[i+1]));
            out("unspec_connect_ok", connect(s, (void *)&a, sizeof a));
            a.sin_family = AF_UNSPEC; a.sin_port = htons(atoi(argv[i+2]));
            out("unspec_sendto", sendto(s, "unspec", 6, 0, (void *)&a, sizeof a));   /* udp reads it as AF_INET */
            out("unspec_connect", connect(s, (void *)&a, sizeof a));                 /* dissolves, names no peer */
            out("unspec_send_after", send(s, "after", 5, 0));
            i += 2; close(s);
        } else if (!strcmp(op, "udpconnect")) {                 /* udpconnect HOST PORT: connect then send */
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(family_of(argv[i+1]), SOCK_DGRAM, 0);
            out(op, connect(s, (void *)&ss, len));
            out("udpconnect_send", send(s, "udpc", 4, 0)); i += 2; close(s);
        } else if (!strcmp(op, "sigpipe")) {                    /* sigpipe HOST PORT: the peer closes, we send */
            signal(SIGPIPE, count_pipe);
            len = addr_of(argv[i+1], atoi(argv[i+2]), &ss);
            int s = socket(AF_INET, SOCK_STREAM, 0);
            out("sigpipe_connect", connect(s, (void *)&ss, len));
            char eof;
            out("sigpipe_peer_closed", read(s, &eof, 1));       /* wait for the peer's close, not a timer */
            struct iovec iov = {"pipe", 4}; struct msghdr m = {0, 0, &iov, 1, 0, 0, 0};
            for (int k = 0; k < 3; k++) { long r = sendmsg(s, &m, 0); if (r < 0) { out("sigpipe_send", r); break; } usleep(100000); }
            long r = sendmsg(s, &m, MSG_NOSIGNAL); out("sigpipe_nosignal", r);
            printf("sigpipes %d 0\n", g_pipes); fflush(stdout); i += 2; close(s);
        } else {
            fprintf(stderr, "unknown op %s\n", op); return 2;
        }
    }
    fflush(stdout);
    _exit(0);
}
