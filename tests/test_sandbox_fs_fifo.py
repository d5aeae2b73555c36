"""Issue 11, attack 3: the supervisor never blocks on the target's behalf. FIFO opens that
wait for the other end do not occupy the worker pool; they complete when the other end
comes (data flows), and a signal cancels them as the kernel would, leaving no phantom end."""
from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from support.cprog import cprog
from support.handlers import notify_policy, run
from sysgate.process import launch
from sysgate.handlers.fs import FsHandler
from sysgate.supervisor import Supervisor

FIFOS = 8

PROGRAM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static const char *D;
static void *reader(void *arg) {
    long i = (long)arg;
    char path[4096], buf[64] = {0};
    snprintf(path, sizeof path, "%s/fifo%ld", D, i);
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("fifo%ld open-error %d\n", i, errno); return NULL; }
    int flags = fcntl(fd, F_GETFL);
    int n = read(fd, buf, sizeof buf - 1);
    printf("fifo%ld read:%.*s nonblock:%d\n", i, n > 0 ? n : 0, buf, !!(flags & O_NONBLOCK));
    close(fd);
    return NULL;
}
static void *writer(void *arg) {
    char path[4096];
    snprintf(path, sizeof path, "%s/wfifo", D);
    int fd = open(path, O_WRONLY);
    if (fd < 0) { printf("wfifo open-error %d\n", errno); return NULL; }
    printf("wfifo wrote %zd\n", write(fd, "from-target", 11));
    close(fd);
    return NULL;
}
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void on_alarm(int sig) { (void)sig; }
static void interrupt_in_a_second(void) {         /* no SA_RESTART: a blocked open fails with EINTR */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(1);
}
int main(int argc, char **argv) {
    D = argv[2];
    char path[4096];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(argv[1], "intrw")) {
        snprintf(path, sizeof path, "%s/lonely", D);
        interrupt_in_a_second();
        int fd = open(path, O_WRONLY);
        printf("intrw %d\n", fd < 0 ? errno : 0);
        usleep(300000);
        fd = open(path, O_RDONLY | O_NONBLOCK);    /* now a reader exists: a leftover writer would connect */
        usleep(300000);
        char c;
        printf("phantom-writer %d\n", (int)read(fd, &c, 1) < 0 ? errno : 0);   /* EOF (0): no writer */
        return 0;
    }
    if (!strcmp(argv[1], "intr")) {
        snprintf(path, sizeof path, "%s/lonely", D);
        interrupt_in_a_second();
        int fd = open(path, O_RDONLY);
        printf("intr %d\n", fd < 0 ? errno : 0);
        usleep(300000);
        fd = open(path, O_WRONLY | O_NONBLOCK);    /* ENXIO unless someone still holds a read end */
        printf("phantom %d\n", fd < 0 ? errno : 0);
        return 0;
    }
    if (!strcmp(argv[1], "pipe")) {               /* reopening an anonymous pipe never waits */
        int p[2];
        pipe(p);
        close(p[1]);
        snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
        int fd = open(path, O_RDONLY);
        char c;
        printf("pipe-reopen %d read %d\n", fd < 0 ? errno : 0, fd < 0 ? -1 : (int)read(fd, &c, 1));
        return 0;
    }
    pthread_t t[64], w;
    long n = atol(argv[3]);
    if (!strcmp(argv[1], "hold")) {               /* n opens wait for writers that never come */
        for (long i = 0; i < n; i++) pthread_create(&t[i], NULL, reader, (void *)i);
        pause();
    }
    for (long i = 0; i < n; i++) pthread_create(&t[i], NULL, reader, (void *)i);
    pthread_create(&w, NULL, writer, NULL);
    usleep(300000);                               /* the FIFO opens are waiting now */
    snprintf(path, sizeof path, "%s/plain", D);
    double worst = 0;
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        double start = now();
        int fd = open(path, O_RDONLY);
        double took = now() - start;
        if (took > worst) worst = took;
        if (fd >= 0) { ok++; close(fd); }
    }
    printf("plain ok %d worst-ms %d\n", ok, (int)(worst * 1000));
    snprintf(path, sizeof path, "%s/ready", D);
    close(open(path, O_WRONLY | O_CREAT, 0644));
    for (long i = 0; i < n; i++) pthread_join(t[i], NULL);
    pthread_join(w, NULL);
    return 0;
}
"""


def _feed(d: str, got: dict) -> None:
    """Wait for the target's 'ready', then be the writer of every FIFO and the reader of wfifo."""
    end = time.monotonic() + 20
    while not os.path.exists(f"{d}/ready") and time.monotonic() < end:
        time.sleep(0.01)
    for i in range(FIFOS):
        while time.monotonic() < end:
            try:
                fd = os.open(f"{d}/fifo{i}", os.O_WRONLY | os.O_NONBLOCK)   # ENXIO: no reader yet
                break
            except OSError:
                time.sleep(0.01)
        else:
            return
        os.write(fd, f"data-{i}".encode())
        os.close(fd)
    fd = os.open(f"{d}/wfifo", os.O_RDONLY)
    got["wfifo"] = os.read(fd, 64)
    os.close(fd)


@pytest.mark.usefixtures("landlock")
def test_fifo_opens_without_the_other_end_do_not_wedge_the_pool(tmp_path):
    d = str(tmp_path)
    for i in range(FIFOS):
        os.mkfifo(f"{d}/fifo{i}")
    os.mkfifo(f"{d}/wfifo")
    (tmp_path / "plain").write_text("plain\n")
    got: dict = {}
    feeder = threading.Thread(target=_feed, args=(d, got), daemon=True)
    feeder.start()
    sup = Supervisor(workers=4, handler_timeout=5)
    try:
        code, out = run([cprog(PROGRAM), "many", d, str(FIFOS)], FsHandler(["allow read /**", f"allow rw {d}/**"]),
                        sup=sup, timeout=30)
        timeouts = sup.stats.timeouts
    finally:
        sup.close()
    feeder.join(5)
    assert code == 0, out
    lines = out.splitlines()
    plain = next(line for line in lines if line.startswith("plain"))
    assert plain.split()[2] == "20" and int(plain.split()[4]) < 2000, out     # answered, not after deadlines
    for i in range(FIFOS):
        assert f"fifo{i} read:data-{i} nonblock:0" in lines, out              # data flows; O_NONBLOCK cleared
    assert "wfifo wrote 11" in lines and got.get("wfifo") == b"from-target", out
    assert timeouts == 0


@pytest.mark.usefixtures("landlock")
def test_a_signal_cancels_a_waiting_fifo_open_like_the_kernel(tmp_path):
    d = str(tmp_path)
    os.mkfifo(f"{d}/lonely")
    exe = cprog(PROGRAM)
    kernel = subprocess.run([exe, "intr", d], capture_output=True, text=True, timeout=30)
    assert kernel.stdout == "intr 4\nphantom 6\n", kernel.stdout             # EINTR, then ENXIO
    code, out = run([exe, "intr", d], FsHandler(["allow read /**", f"allow rw {d}/**"]), timeout=30)
    assert out == kernel.stdout, out


@pytest.mark.usefixtures("landlock")
def test_reopening_an_anonymous_pipe_without_writer_does_not_wait(tmp_path):
    exe = cprog(PROGRAM)
    kernel = subprocess.run([exe, "pipe", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert kernel.stdout == "pipe-reopen 0 read 0\n"
    code, out = run([exe, "pipe", str(tmp_path)], FsHandler(["allow read /**"]), timeout=30)
    assert out == kernel.stdout, out


@pytest.mark.usefixtures("landlock")
def test_a_signal_cancels_a_waiting_fifo_writer_like_the_kernel(tmp_path):
    d = str(tmp_path)
    os.mkfifo(f"{d}/lonely")
    exe = cprog(PROGRAM)
    kernel = subprocess.run([exe, "intrw", d], capture_output=True, text=True, timeout=30)
    assert kernel.stdout == "intrw 4\nphantom-writer 0\n", kernel.stdout
    code, out = run([exe, "intrw", d], FsHandler(["allow read /**", f"allow rw {d}/**"]), timeout=30)
    assert out == kernel.stdout, out


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_closing_the_handler_while_its_target_dies_closes_each_waiting_end_once(tmp_path):
    """The waiter thread and close() once both closed an open whose target had just died
    (EBADF in close, and a double close can hit an fd another thread just got)."""
    d = str(tmp_path)
    for i in range(FIFOS):
        os.mkfifo(f"{d}/fifo{i}")
    exe = cprog(PROGRAM)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(40):
        h = FsHandler(["allow read /**", f"allow rw {d}/**"])
        h.waiter.interval = 0                     # step all the time: close() lands mid-step
        target = launch.spawn([exe, "hold", d, str(FIFOS)], notify_policy(h))
        sup = Supervisor(workers=2, handler_timeout=5)
        h.install(sup)
        sup.add_target(target)
        serving = threading.Thread(target=sup.run_until_idle, args=(30,), daemon=True)
        serving.start()
        deadline = time.monotonic() + 20
        while len(h.waiter._waits) < FIFOS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(h.waiter._waits) == FIFOS
        target.kill()
        h.close()
        serving.join(20)
        sup.close()
        target.wait(10)
        target.close()
    assert len(os.listdir("/proc/self/fd")) == before
