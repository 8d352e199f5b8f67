/* Pipe ping-pong in C, pinned like ipcbench's same-cpu cases: the reference
 * the Python suite is held to. Prints one line of JSON:
 *   round_trip_ns: client -> server -> client over two pipes, both on one CPU
 *   self_ns:       one process writes and reads its own pipe (two messages, no switch)
 * Usage: c_pingpong CPU PAYLOAD_BYTES ITERATIONS [batch]
 *   batch: run both processes under SCHED_BATCH, as ipcbench's chains do
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void full_write(int fd, const char *buf, size_t n) {
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w <= 0) _exit(1);
        buf += w;
        n -= (size_t)w;
    }
}

static int full_read(int fd, char *buf, size_t n) {
    while (n) {
        ssize_t r = read(fd, buf, n);
        if (r <= 0) return -1;
        buf += r;
        n -= (size_t)r;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s CPU PAYLOAD_BYTES ITERATIONS [batch]\n", argv[0]);
        return 2;
    }
    if (argc == 5) {
        struct sched_param none = {0};
        if (sched_setscheduler(0, SCHED_BATCH, &none) != 0) { perror("SCHED_BATCH"); return 1; }
    }
    int cpu = atoi(argv[1]);
    size_t size = (size_t)atol(argv[2]);
    long iters = atol(argv[3]);
    if (size < 1) size = 1; /* a zero-length write wakes nobody */
    char *buf = calloc(size, 1);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) { perror("sched_setaffinity"); return 1; }

    int c2s[2], s2c[2], self[2];
    if (pipe(c2s) || pipe(s2c) || pipe(self)) { perror("pipe"); return 1; }
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(c2s[1]); close(s2c[0]); close(self[0]); close(self[1]);
        while (full_read(c2s[0], buf, size) == 0) full_write(s2c[1], buf, size);
        _exit(0);
    }
    close(c2s[0]); close(s2c[1]);
    for (long i = 0; i < iters / 10 + 100; i++) { full_write(c2s[1], buf, size); full_read(s2c[0], buf, size); }
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) { full_write(c2s[1], buf, size); full_read(s2c[0], buf, size); }
    double t1 = now_ns();
    for (long i = 0; i < iters; i++) { full_write(self[1], buf, size); full_read(self[0], buf, size); }
    double t2 = now_ns();
    close(c2s[1]);
    waitpid(pid, NULL, 0);
    printf("{\"round_trip_ns\": %.1f, \"self_ns\": %.1f}\n", (t1 - t0) / iters, (t2 - t1) / iters);
    return 0;
}
