/* Native ping-pong over many IPC mechanisms, pinned like ipcbench's cases: the
 * reference each Python transport of the same name is held to. Prints one line of JSON:
 *   {"mechanism": M, "round_trip_ns": X, "payload": N, "iterations": N}
 * round_trip_ns: client -> server -> client, one frame of PAYLOAD bytes each way.
 *
 * Build: cc -O2 -o pingpong pingpong.c -lrt    (-lrt: POSIX mq before glibc 2.34)
 * Usage: pingpong MECHANISM CLIENT_CPU SERVER_CPU PAYLOAD_BYTES ITERATIONS [batch]
 *        pingpong --list                       (the mechanisms, one a line)
 *   CLIENT_CPU == SERVER_CPU is same-cpu; batch runs both processes under SCHED_BATCH.
 * Exit: 0 measured; 1 a runtime failure (one perror-style line, or a failed echo check);
 *       2 bad arguments; 3 "unsupported: <reason>" (over the mechanism's limit here,
 *       a missing kernel feature, a CPU this process may not use).
 *
 * The client forks the server (which dies with it: PR_SET_PDEATHSIG), warms up with
 * ITERATIONS/10+100 round trips, times ITERATIONS round trips (CLOCK_MONOTONIC), then
 * sends one frame of a distinct pattern and checks it comes back byte-identical.
 * Every object is created before fork; names go as soon as both ends hold them, SysV
 * objects (IPC_PRIVATE) are IPC_RMIDed at exit, including on failures and on
 * SIGINT/SIGTERM/SIGHUP and an unexpected end of the server.
 *
 * One round trip per mechanism (the Python transport it mirrors in brackets). A 0-byte
 * payload travels as a 1-byte token where a zero-length message wakes nobody or reads
 * as EOF (pipe, fifo, uds, socketpair, tcp, udp), as Python's StreamChannel does.
 *   pipe          two anonymous pipes; write the frame, read until full      [pipe]
 *                 (F_SETPIPE_SZ to the payload past 64 KiB; limit fs/pipe-max-size)
 *   fifo          as pipe over two named pipes in a mkdtemp /tmp/ipcbench-native-XXXXXX,
 *                 opened before fork (reader O_NONBLOCK, then writer, then blocking
 *                 again) and unlinked at once with their folder
 *   uds           socketpair(AF_UNIX, SOCK_STREAM); write, read until full   [uds]
 *                 (SO_SNDBUF/SO_RCVBUF max(payload, 64 KiB) when payload > 0, as
 *                 every socket here; limit net.core.wmem_max)
 *   socketpair    socketpair(AF_UNIX, SOCK_SEQPACKET); one write, one read   [socketpair]
 *                 (limit wmem_max - 4096: a record must fit the send buffer)
 *   tcp           a 127.0.0.1 connection, TCP_NODELAY both ends; as uds     [tcp]
 *   udp           two UDP sockets on 127.0.0.1, each bound to an ephemeral port and
 *                 connected to the other; one datagram (write/read) per frame
 *                 (limit 65507, the largest IPv4 UDP payload, or wmem_max if less)
 *   eventfd       the frame in a MAP_SHARED|MAP_ANONYMOUS area; the client memcpy's its
 *                 frame in, adds 1 to the server's eventfd and reads its own; the
 *                 server reads its eventfd and rings back (the reply is the area) [eventfd]
 *   futex         as eventfd, the doorbell a 32-bit word in shared memory: ring =
 *                 store 1 + FUTEX_WAKE; wait = FUTEX_WAIT while 0, then store 0
 *   posix-mq      two POSIX queues (depth 2, msgsize max(payload,1)), mq_send and
 *                 mq_receive; names unlinked before fork (limit fs/mqueue/msgsize_max) [mq]
 *   sysv-mq       two SysV queues (msgget IPC_PRIVATE), msgsnd/msgrcv with mtype 1
 *                 (limit min(kernel/msgmax, kernel/msgmnb))
 *   shm-posix-sem as eventfd, the doorbells two sem_init(pshared=1) semaphores in shared
 *                 memory: sem_post / sem_wait                                 [shm]
 *   shm-sysv-sem  as eventfd, the doorbells a SysV set of 2 (semget IPC_PRIVATE): semop
 *                 +1 / -1                                                     [sysv-sem]
 *   signal        as eventfd, the doorbell SIGRTMIN (blocked in both before fork):
 *                 ring = kill(peer, SIGRTMIN); wait = sigwaitinfo
 * Shared-memory mechanisms carry at most a quarter of /dev/shm's free space, 1 GiB at
 * most (Python's shm_capacity); their echo is the area itself, so the final check
 * there proves the round trip completes and the area holds the frame.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum mech {
    PIPE, FIFO, UDS, SOCKETPAIR, TCP, UDP, EVENTFD, FUTEX, POSIX_MQ, SYSV_MQ,
    SHM_POSIX_SEM, SHM_SYSV_SEM, SIGNAL, N_MECH
};
static const char *const NAMES[N_MECH] = {
    "pipe", "fifo", "uds", "socketpair", "tcp", "udp", "eventfd", "futex", "posix-mq",
    "sysv-mq", "shm-posix-sem", "shm-sysv-sem", "signal",
};

#define DEFAULT_PIPE_SIZE (64 << 10)
#define SOCKET_BUFFER (1 << 16)
#define RECORD_SPARE (1 << 12)
#define UDP_MAX 65507
#define MQ_DEPTH 2
#define CREATE_ATTEMPTS 4

static enum mech mech;
static size_t payload, wire; /* wire = max(payload, 1): the token of a 0-byte frame */

/* What cleanup() removes; the client owns it all, the server none of it. */
static volatile pid_t server_pid;
static int is_server;
static char tmpdir[64], fifo_path[2][96], mq_name[2][64];
static int msq[2] = {-1, -1}, semid = -1;

/* The channel, created before fork. [0] is client -> server, [1] server -> client. */
static int c2s[2] = {-1, -1}, s2c[2] = {-1, -1}; /* pipes, fifos: [0] read, [1] write */
static int sock[2] = {-1, -1};                   /* sockets: the client's, the server's */
static int efd[2] = {-1, -1};
static mqd_t mq[2] = {(mqd_t)-1, (mqd_t)-1};
static char *area;                 /* the shared frame */
static sem_t *sem[2];              /* in one shared page, on separate cache lines */
static uint32_t *word[2];          /* likewise */
static pid_t client_pid;
static sigset_t rtset;

struct qmsg { long mtype; char mtext[]; };
static struct qmsg *smsg, *rmsg; /* every mechanism's buffers (mtext), sysv-mq's messages */
static char *sbuf, *rbuf;        /* the client's frame out and reply in; rbuf is the server's */
static size_t got;               /* bytes of the last reply */

/* ---- exits ---- */

/* The names (fifos, their folder, POSIX queues): they go as soon as both ends are open. */
static void forget_names(void) {
    for (int i = 0; i < 2; i++) {
        if (fifo_path[i][0]) { unlink(fifo_path[i]); fifo_path[i][0] = 0; }
        if (mq_name[i][0]) { mq_unlink(mq_name[i]); mq_name[i][0] = 0; }
    }
    if (tmpdir[0]) { rmdir(tmpdir); tmpdir[0] = 0; }
}

/* Everything left: the server, the names, the SysV objects (async-signal-safe calls). */
static void cleanup(void) {
    if (is_server) return;
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
    forget_names();
    for (int i = 0; i < 2; i++)
        if (msq[i] >= 0) { msgctl(msq[i], IPC_RMID, NULL); msq[i] = -1; }
    if (semid >= 0) { semctl(semid, 0, IPC_RMID); semid = -1; }
}

static sigset_t exit_signals; /* SIGCHLD, SIGINT, SIGTERM, SIGHUP */

static __attribute__((noreturn)) void quit(int code) {
    if (is_server) _exit(code);
    sigprocmask(SIG_BLOCK, &exit_signals, NULL); /* no handler runs cleanup() meanwhile */
    cleanup();
    exit(code);
}

static const char *role(void) { return is_server ? "pingpong server" : "pingpong"; }

static __attribute__((noreturn)) void die(const char *what) {
    int e = errno;
    fprintf(stderr, "%s: %s: %s\n", role(), what, strerror(e));
    quit(1);
}

static __attribute__((noreturn, format(printf, 1, 2))) void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", role());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    quit(1);
}

static __attribute__((noreturn, format(printf, 1, 2))) void unsupported(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("unsupported: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    quit(3);
}

/* A failed read or write: EOF (errno 0) is the peer gone; the server then just ends. */
static __attribute__((noreturn)) void lost(const char *what) {
    if (errno == 0) {
        if (is_server) _exit(0);
        fail("%s: the server closed its end", what);
    }
    die(what);
}

static void say(const char *s) {
    if (write(2, s, strlen(s)) < 0) return;
}

static void say_int(int v) {
    char digits[16];
    int i = sizeof digits;
    unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
    do digits[--i] = (char)('0' + u % 10); while ((u /= 10) && i > 1);
    if (v < 0) digits[--i] = '-';
    if (write(2, digits + i, sizeof digits - (size_t)i) < 0) return;
}

static void on_child(int sig) {
    (void)sig;
    int saved = errno, status;
    pid_t pid = server_pid;
    if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
        server_pid = 0;
        /* A server that failed said why (and exited 1); say only what it could not. */
        if (WIFSIGNALED(status)) {
            say("pingpong: the server was killed by signal ");
            say_int(WTERMSIG(status));
            say("\n");
        } else if (WEXITSTATUS(status) != 1) {
            say("pingpong: the server exited with status ");
            say_int(WEXITSTATUS(status));
            say("\n");
        }
        cleanup();
        _exit(1);
    }
    errno = saved;
}

static void on_exit_signal(int sig) {
    cleanup();
    _exit(128 + sig);
}

/* ---- arguments and limits ---- */

static __attribute__((noreturn)) void usage(const char *why) {
    if (why) fprintf(stderr, "pingpong: %s; usage: pingpong MECHANISM CLIENT_CPU SERVER_CPU "
                             "PAYLOAD_BYTES ITERATIONS [batch] | --list\n", why);
    exit(2);
}

static long long number(const char *s, const char *what, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        char why[160];
        snprintf(why, sizeof why, "bad %s %.40s (want %lld..%lld)", what, s, lo, hi);
        usage(why);
    }
    return v;
}

static long read_long(const char *path, long fallback) {
    FILE *f = fopen(path, "r");
    long v;
    if (!f) return fallback;
    if (fscanf(f, "%ld", &v) != 1) v = fallback;
    fclose(f);
    return v;
}

static size_t shm_capacity(void) {
    struct statvfs st;
    if (statvfs("/dev/shm", &st) != 0) return 64 << 20;
    unsigned long long quarter = (unsigned long long)st.f_bavail * st.f_frsize / 4;
    return quarter < (1ull << 30) ? (size_t)quarter : (size_t)1 << 30;
}

/* The largest payload the mechanism carries here, and where that limit comes from. */
static size_t limit_of(enum mech m, const char **source) {
    long wmem = read_long("/proc/sys/net/core/wmem_max", 1 << 20);
    switch (m) {
    case PIPE: case FIFO:
        *source = "/proc/sys/fs/pipe-max-size";
        return (size_t)read_long(*source, DEFAULT_PIPE_SIZE);
    case UDS: case TCP:
        *source = "/proc/sys/net/core/wmem_max";
        return (size_t)wmem;
    case SOCKETPAIR:
        *source = "/proc/sys/net/core/wmem_max, less 4096 for a record's overhead";
        return wmem > RECORD_SPARE ? (size_t)(wmem - RECORD_SPARE) : 0;
    case UDP:
        *source = wmem < UDP_MAX ? "/proc/sys/net/core/wmem_max" : "the largest IPv4 UDP payload";
        return wmem < UDP_MAX ? (size_t)wmem : UDP_MAX;
    case POSIX_MQ:
        *source = "/proc/sys/fs/mqueue/msgsize_max";
        return (size_t)read_long(*source, 8192);
    case SYSV_MQ: {
        long max = read_long("/proc/sys/kernel/msgmax", 8192);
        long mnb = read_long("/proc/sys/kernel/msgmnb", 16384);
        *source = max <= mnb ? "/proc/sys/kernel/msgmax" : "/proc/sys/kernel/msgmnb";
        return (size_t)(max <= mnb ? max : mnb);
    }
    default:
        *source = "a quarter of /dev/shm's free space, 1 GiB at most";
        return shm_capacity();
    }
}

/* ---- I/O helpers: errno 0 on return -1 means EOF ---- */

static int write_all(int fd, const char *buf, size_t n) {
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { if (w == 0) errno = 0; return -1; }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, char *buf, size_t n) {
    while (n) {
        ssize_t r = read(fd, buf, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { if (r == 0) errno = 0; return -1; }
        buf += r;
        n -= (size_t)r;
    }
    return 0;
}

static void write_record(int fd, const char *buf, size_t n) {
    ssize_t w;
    while ((w = write(fd, buf, n)) < 0 && errno == EINTR) {}
    if (w != (ssize_t)n) {
        if (w >= 0) errno = w ? EMSGSIZE : 0;
        lost("write");
    }
}

static size_t read_record(int fd, char *buf, size_t n) {
    ssize_t r;
    while ((r = read(fd, buf, n)) < 0 && errno == EINTR) {}
    if (r <= 0) {
        if (r == 0) errno = 0;
        lost("read");
    }
    return (size_t)r;
}

/* ---- doorbells ---- */

static inline void eventfd_ring(int fd) {
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) != sizeof one)
        if (errno != EINTR) die("eventfd write");
}

static inline void eventfd_wait(int fd) {
    uint64_t v;
    while (read(fd, &v, sizeof v) != sizeof v)
        if (errno != EINTR) die("eventfd read");
}

static long futex(uint32_t *w, int op, uint32_t val) {
    return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

static inline void futex_ring(uint32_t *w) {
    __atomic_store_n(w, 1, __ATOMIC_RELEASE);
    if (futex(w, FUTEX_WAKE, 1) < 0) die("futex wake");
}

static inline void futex_wait(uint32_t *w) {
    while (__atomic_load_n(w, __ATOMIC_ACQUIRE) == 0)
        if (futex(w, FUTEX_WAIT, 0) < 0 && errno != EAGAIN && errno != EINTR) die("futex wait");
    __atomic_store_n(w, 0, __ATOMIC_RELAXED);
}

static inline void sem_ring(sem_t *s) {
    if (sem_post(s) != 0) die("sem_post");
}

static inline void sem_wait_for(sem_t *s) {
    while (sem_wait(s) != 0)
        if (errno != EINTR) die("sem_wait");
}

static inline void semop_by(unsigned short num, short delta) {
    struct sembuf op = {num, delta, 0};
    while (semop(semid, &op, 1) != 0)
        if (errno != EINTR) die("semop");
}

static inline void signal_ring(pid_t pid) {
    if (kill(pid, SIGRTMIN) != 0) die("kill SIGRTMIN");
}

static inline void signal_wait(void) {
    while (sigwaitinfo(&rtset, NULL) < 0)
        if (errno != EINTR) die("sigwaitinfo");
}

/* ---- the client's round trips ---- */

static inline void rt_stream(void) {
    if (write_all(c2s[1], sbuf, wire)) lost("write");
    if (read_all(s2c[0], rbuf, wire)) lost("read");
    got = wire;
}

static inline void rt_socket_stream(void) {
    if (write_all(sock[0], sbuf, wire)) lost("write");
    if (read_all(sock[0], rbuf, wire)) lost("read");
    got = wire;
}

static inline void rt_record(void) {
    write_record(sock[0], sbuf, wire);
    got = read_record(sock[0], rbuf, wire);
}

static inline void rt_posix_mq(void) {
    ssize_t n;
    while (mq_send(mq[0], sbuf, payload, 0) != 0)
        if (errno != EINTR) die("mq_send");
    while ((n = mq_receive(mq[1], rbuf, wire, NULL)) < 0)
        if (errno != EINTR) die("mq_receive");
    got = (size_t)n;
}

static inline void rt_sysv_mq(void) {
    ssize_t n;
    while (msgsnd(msq[0], smsg, payload, 0) != 0)
        if (errno != EINTR) die("msgsnd");
    while ((n = msgrcv(msq[1], rmsg, payload, 1, 0)) < 0)
        if (errno != EINTR) die("msgrcv");
    got = (size_t)n;
}

static inline void rt_eventfd(void) {
    memcpy(area, sbuf, payload);
    eventfd_ring(efd[0]);
    eventfd_wait(efd[1]);
}

static inline void rt_futex(void) {
    memcpy(area, sbuf, payload);
    futex_ring(word[0]);
    futex_wait(word[1]);
}

static inline void rt_posix_sem(void) {
    memcpy(area, sbuf, payload);
    sem_ring(sem[0]);
    sem_wait_for(sem[1]);
}

static inline void rt_sysv_sem(void) {
    memcpy(area, sbuf, payload);
    semop_by(0, 1);
    semop_by(1, -1);
}

static inline void rt_signal(void) {
    memcpy(area, sbuf, payload);
    signal_ring(server_pid);
    signal_wait();
}

/* ---- the server: echo every frame until the client goes ---- */

static __attribute__((noreturn)) void serve(void) {
    ssize_t n;
    switch (mech) {
    case PIPE: case FIFO:
        for (;;) {
            if (read_all(c2s[0], rbuf, wire)) lost("read");
            if (write_all(s2c[1], rbuf, wire)) lost("write");
        }
    case UDS: case TCP:
        for (;;) {
            if (read_all(sock[1], rbuf, wire)) lost("read");
            if (write_all(sock[1], rbuf, wire)) lost("write");
        }
    case SOCKETPAIR: case UDP:
        for (;;) write_record(sock[1], rbuf, read_record(sock[1], rbuf, wire));
    case POSIX_MQ:
        for (;;) {
            while ((n = mq_receive(mq[0], rbuf, wire, NULL)) < 0)
                if (errno != EINTR) die("mq_receive");
            while (mq_send(mq[1], rbuf, (size_t)n, 0) != 0)
                if (errno != EINTR) die("mq_send");
        }
    case SYSV_MQ:
        for (;;) {
            while ((n = msgrcv(msq[0], rmsg, payload, 1, 0)) < 0)
                if (errno != EINTR) die("msgrcv");
            while (msgsnd(msq[1], rmsg, (size_t)n, 0) != 0)
                if (errno != EINTR) die("msgsnd");
        }
    case EVENTFD:
        for (;;) { eventfd_wait(efd[0]); eventfd_ring(efd[1]); }
    case FUTEX:
        for (;;) { futex_wait(word[0]); futex_ring(word[1]); }
    case SHM_POSIX_SEM:
        for (;;) { sem_wait_for(sem[0]); sem_ring(sem[1]); }
    case SHM_SYSV_SEM:
        for (;;) { semop_by(0, -1); semop_by(1, 1); }
    case SIGNAL:
        for (;;) { signal_wait(); signal_ring(client_pid); }
    default:
        _exit(1);
    }
}

/* ---- setting up each mechanism (before fork) ---- */

static void resize_pipes(size_t pipe_max) {
    if (payload <= DEFAULT_PIPE_SIZE) return;
    /* Without a bigger buffer a large frame crosses in 64 KiB chunks, a wake-up each. */
    size_t size = payload < pipe_max ? payload : pipe_max;
    int ends[2] = {c2s[0], s2c[0]};
    for (int i = 0; i < 2; i++) {
        if (fcntl(ends[i], F_SETPIPE_SZ, (int)size) >= 0) continue;
        if (errno == EPERM)
            unsupported("a %zu-byte pipe buffer is refused (EPERM: past the user's pipe pages)",
                        size);
        die("F_SETPIPE_SZ");
    }
}

static void open_fifo(int i, int ends[2]) {
    snprintf(fifo_path[i], sizeof fifo_path[i], "%s/%s", tmpdir, i ? "s2c" : "c2s");
    if (mkfifo(fifo_path[i], 0600) != 0) die("mkfifo");
    /* Reader first, non-blocking (an open for reading alone waits for a writer), then
     * the writer (which a reader lets through), then the reader blocking again. */
    if ((ends[0] = open(fifo_path[i], O_RDONLY | O_NONBLOCK)) < 0) die("open fifo for reading");
    if ((ends[1] = open(fifo_path[i], O_WRONLY)) < 0) die("open fifo for writing");
    int flags = fcntl(ends[0], F_GETFL);
    if (flags < 0 || fcntl(ends[0], F_SETFL, flags & ~O_NONBLOCK) < 0) die("fcntl O_NONBLOCK");
}

static void socket_buffers(int fd) {
    if (payload == 0) return;
    int size = payload > SOCKET_BUFFER ? (int)payload : SOCKET_BUFFER;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size) != 0) die("SO_SNDBUF");
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) != 0) die("SO_RCVBUF");
}

static struct sockaddr_in loopback_bound(int fd) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) die("bind 127.0.0.1");
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0) die("getsockname");
    return a;
}

static int inet_socket(int type) {
    int fd = socket(AF_INET, type, 0);
    if (fd < 0) {
        if (errno == EAFNOSUPPORT) unsupported("no IPv4 here");
        die("socket");
    }
    return fd;
}

static void setup_tcp(void) {
    int one = 1, listener = inet_socket(SOCK_STREAM);
    struct sockaddr_in a = loopback_bound(listener);
    if (listen(listener, 1) != 0) die("listen");
    sock[0] = inet_socket(SOCK_STREAM);
    if (connect(sock[0], (struct sockaddr *)&a, sizeof a) != 0) die("connect");
    if ((sock[1] = accept(listener, NULL, NULL)) < 0) die("accept");
    close(listener);
    for (int i = 0; i < 2; i++)
        if (setsockopt(sock[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            die("TCP_NODELAY");
}

static void setup_udp(void) {
    struct sockaddr_in a[2];
    for (int i = 0; i < 2; i++) {
        sock[i] = inet_socket(SOCK_DGRAM);
        a[i] = loopback_bound(sock[i]);
    }
    for (int i = 0; i < 2; i++)
        if (connect(sock[i], (struct sockaddr *)&a[1 - i], sizeof a[i]) != 0) die("connect");
}

static void *shared_map(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        if (errno == ENOMEM) unsupported("no room for a %zu-byte shared mapping", size);
        die("mmap");
    }
    return p;
}

static void setup_area(void) {
    area = shared_map(wire);
    char *ctl = shared_map(4096);
    for (int i = 0; i < 2; i++) { /* each doorbell in its own 128 bytes (adjacent-line prefetch) */
        sem[i] = (sem_t *)(ctl + 256 * i);
        word[i] = (uint32_t *)(ctl + 256 * i + 128);
    }
}

static void setup_posix_mq(void) {
    if (read_long("/proc/sys/fs/mqueue/msg_max", 10) < MQ_DEPTH)
        unsupported("posix-mq needs %d messages per queue; /proc/sys/fs/mqueue/msg_max is %ld",
                    MQ_DEPTH, read_long("/proc/sys/fs/mqueue/msg_max", 10));
    struct mq_attr attr = {.mq_maxmsg = MQ_DEPTH, .mq_msgsize = (long)wire};
    for (int i = 0; i < 2; i++) {
        for (int attempt = 0;; attempt++) {
            snprintf(mq_name[i], sizeof mq_name[i], "/ipcbench-native-%ld-%d-%s", (long)getpid(),
                     attempt, i ? "s2c" : "c2s");
            mq[i] = mq_open(mq_name[i], O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
            if (mq[i] != (mqd_t)-1) break;
            int e = errno;
            mq_name[i][0] = 0;
            if (e == EEXIST && attempt + 1 < CREATE_ATTEMPTS) continue;
            errno = e;
            if (e == ENOSYS) unsupported("POSIX message queues are not supported here");
            if (e == EMFILE || e == ENFILE || e == ENOSPC || e == ENOMEM)
                unsupported("mq_open: %s (RLIMIT_MSGQUEUE or /proc/sys/fs/mqueue/queues_max)",
                            strerror(e));
            if (e == EINVAL)
                unsupported("mq_open refuses %d messages of %zu bytes", MQ_DEPTH, wire);
            die("mq_open");
        }
    }
    forget_names(); /* descriptors survive fork, so the names can go now */
}

static void setup_sysv_mq(void) {
    for (int i = 0; i < 2; i++) {
        if ((msq[i] = msgget(IPC_PRIVATE, IPC_CREAT | 0600)) >= 0) continue;
        if (errno == ENOSYS) unsupported("SysV message queues are not supported here");
        if (errno == ENOSPC) unsupported("msgget: %s (/proc/sys/kernel/msgmni)", strerror(errno));
        die("msgget");
    }
}

static void setup_sysv_sem(void) {
    union semun { int val; struct semid_ds *buf; unsigned short *array; } zero = {.val = 0};
    if ((semid = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600)) < 0) {
        if (errno == ENOSYS) unsupported("SysV semaphores are not supported here");
        if (errno == ENOSPC) unsupported("semget: %s (/proc/sys/kernel/sem)", strerror(errno));
        die("semget");
    }
    for (int i = 0; i < 2; i++)
        if (semctl(semid, i, SETVAL, zero) != 0) die("semctl SETVAL");
}

static void setup(void) {
    switch (mech) {
    case PIPE: {
        const char *src;
        if (pipe(c2s) != 0 || pipe(s2c) != 0) die("pipe");
        resize_pipes(limit_of(PIPE, &src));
        break;
    }
    case FIFO: {
        const char *src;
        strcpy(tmpdir, "/tmp/ipcbench-native-XXXXXX");
        if (!mkdtemp(tmpdir)) { tmpdir[0] = 0; die("mkdtemp"); }
        open_fifo(0, c2s);
        open_fifo(1, s2c);
        forget_names(); /* both ends are open: the names and their folder go now */
        resize_pipes(limit_of(FIFO, &src));
        break;
    }
    case UDS: case SOCKETPAIR:
        if (socketpair(AF_UNIX, mech == UDS ? SOCK_STREAM : SOCK_SEQPACKET, 0, sock) != 0)
            die("socketpair");
        break;
    case TCP: setup_tcp(); break;
    case UDP: setup_udp(); break;
    case EVENTFD:
        setup_area();
        for (int i = 0; i < 2; i++) {
            if ((efd[i] = eventfd(0, 0)) >= 0) continue;
            if (errno == ENOSYS || errno == EINVAL) unsupported("eventfd is not supported here");
            die("eventfd");
        }
        break;
    case FUTEX:
        setup_area();
        if (futex(word[0], FUTEX_WAKE, 1) < 0) {
            if (errno == ENOSYS) unsupported("futex is not supported here");
            die("futex");
        }
        break;
    case POSIX_MQ: setup_posix_mq(); break;
    case SYSV_MQ: setup_sysv_mq(); break;
    case SHM_POSIX_SEM:
        setup_area();
        for (int i = 0; i < 2; i++) {
            if (sem_init(sem[i], 1, 0) == 0) continue;
            if (errno == ENOSYS) unsupported("process-shared POSIX semaphores are not supported");
            die("sem_init");
        }
        break;
    case SHM_SYSV_SEM: setup_area(); setup_sysv_sem(); break;
    case SIGNAL: setup_area(); break;
    default: break;
    }
    if (sock[0] >= 0)
        for (int i = 0; i < 2; i++) socket_buffers(sock[i]);
}

/* The ends the other side uses: each process closes the other's. */
static void close_other_ends(void) {
    if (is_server) {
        if (c2s[1] >= 0) { close(c2s[1]); close(s2c[0]); }
        if (sock[0] >= 0) close(sock[0]);
    } else {
        if (c2s[0] >= 0) { close(c2s[0]); close(s2c[1]); }
        if (sock[1] >= 0) close(sock[1]);
    }
}

/* ---- main ---- */

static void pin(int cpu, int probing) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) == 0) return;
    if (probing && errno == EINVAL) unsupported("cpu %d is not available to this process", cpu);
    die("sched_setaffinity");
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void handle(int sig, void (*handler)(int), int flags) {
    struct sigaction sa = {.sa_handler = handler, .sa_flags = flags};
    sa.sa_mask = exit_signals;
    if (sigaction(sig, &sa, NULL) != 0) die("sigaction");
}

#define MEASURE(rt)                                                 \
    do {                                                            \
        for (long i = 0; i < warm; i++) rt();                       \
        t0 = now_ns();                                              \
        for (long i = 0; i < iters; i++) rt();                      \
        t1 = now_ns();                                              \
        for (size_t i = 0; i < wire; i++)                           \
            sbuf[i] = (char)(0x5a ^ (i * 7) ^ (i >> 8));            \
        memset(rbuf, 0, wire);                                      \
        rt();                                                       \
    } while (0)

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < N_MECH; i++) puts(NAMES[i]);
        return 0;
    }
    if (argc != 6 && argc != 7) usage("wrong number of arguments");
    int m = 0;
    while (m < N_MECH && strcmp(argv[1], NAMES[m]) != 0) m++;
    if (m == N_MECH) usage("unknown mechanism (pingpong --list names them)");
    mech = (enum mech)m;
    int client_cpu = (int)number(argv[2], "CLIENT_CPU", 0, CPU_SETSIZE - 1);
    int server_cpu = (int)number(argv[3], "SERVER_CPU", 0, CPU_SETSIZE - 1);
    payload = (size_t)number(argv[4], "PAYLOAD_BYTES", 0, LLONG_MAX);
    long iters = (long)number(argv[5], "ITERATIONS", 1, LONG_MAX / 2);
    if (argc == 7 && strcmp(argv[6], "batch") != 0) usage("the sixth argument can only be batch");
    long warm = iters / 10 + 100;
    wire = payload ? payload : 1;

    sigemptyset(&exit_signals);
    sigaddset(&exit_signals, SIGCHLD);
    sigaddset(&exit_signals, SIGINT);
    sigaddset(&exit_signals, SIGTERM);
    sigaddset(&exit_signals, SIGHUP);

    const char *source;
    size_t limit = limit_of(mech, &source);
    if (payload > limit)
        unsupported("%s carries at most %zu bytes here (%s)", NAMES[mech], limit, source);

    if (argc == 7) {
        struct sched_param none = {0};
        if (sched_setscheduler(0, SCHED_BATCH, &none) != 0) die("sched_setscheduler SCHED_BATCH");
    }
    pin(server_cpu, 1); /* only a probe: the server pins itself after fork */
    pin(client_cpu, 1);

    signal(SIGPIPE, SIG_IGN); /* a gone peer shows as EPIPE, not a silent death */
    handle(SIGCHLD, on_child, SA_RESTART | SA_NOCLDSTOP);
    handle(SIGINT, on_exit_signal, 0);
    handle(SIGTERM, on_exit_signal, 0);
    handle(SIGHUP, on_exit_signal, 0);

    smsg = aligned_alloc(64, (sizeof(struct qmsg) + wire + 63) / 64 * 64);
    rmsg = aligned_alloc(64, (sizeof(struct qmsg) + wire + 63) / 64 * 64);
    if (!smsg || !rmsg) die("malloc");
    smsg->mtype = rmsg->mtype = 1;
    sbuf = smsg->mtext;
    rbuf = rmsg->mtext;
    memset(sbuf, 0, wire); /* fault the pages in: no zero page behind a copy */
    memset(rbuf, 0, wire);

    setup();

    sigset_t fork_mask;
    fork_mask = exit_signals;
    sigemptyset(&rtset);
    sigaddset(&rtset, SIGRTMIN);
    if (mech == SIGNAL && sigprocmask(SIG_BLOCK, &rtset, NULL) != 0) die("sigprocmask");
    if (sigprocmask(SIG_BLOCK, &fork_mask, NULL) != 0) die("sigprocmask");
    client_pid = getpid();
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        is_server = 1;
        signal(SIGCHLD, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("PR_SET_PDEATHSIG");
        if (getppid() != client_pid) _exit(1); /* the client is gone already */
        sigprocmask(SIG_UNBLOCK, &fork_mask, NULL); /* SIGRTMIN stays blocked */
        pin(server_cpu, 0);
        close_other_ends();
        serve();
    }
    server_pid = pid;
    sigprocmask(SIG_UNBLOCK, &fork_mask, NULL);
    close_other_ends();

    double t0 = 0, t1 = 0;
    const char *reply = rbuf; /* where the echo lands, and its expected length */
    size_t expect = wire;
    switch (mech) {
    case PIPE: case FIFO: MEASURE(rt_stream); break;
    case UDS: case TCP: MEASURE(rt_socket_stream); break;
    case SOCKETPAIR: case UDP: MEASURE(rt_record); break;
    case POSIX_MQ: MEASURE(rt_posix_mq); expect = payload; break;
    case SYSV_MQ: MEASURE(rt_sysv_mq); expect = payload; break;
    case EVENTFD: MEASURE(rt_eventfd); break;
    case FUTEX: MEASURE(rt_futex); break;
    case SHM_POSIX_SEM: MEASURE(rt_posix_sem); break;
    case SHM_SYSV_SEM: MEASURE(rt_sysv_sem); break;
    case SIGNAL: MEASURE(rt_signal); break;
    default: break;
    }
    if (area) { reply = area; expect = got = payload; }
    if (got != expect)
        fail("echo check: the reply has %zu bytes, not %zu", got, expect);
    for (size_t i = 0; i < expect; i++)
        if (reply[i] != sbuf[i])
            fail("echo check: the reply differs from the frame sent at byte %zu", i);

    /* The server has no more to do: end it (it would serve forever), then the names. */
    sigprocmask(SIG_BLOCK, &exit_signals, NULL);
    signal(SIGCHLD, SIG_DFL);
    cleanup();
    printf("{\"mechanism\": \"%s\", \"round_trip_ns\": %.1f, \"payload\": %zu, "
           "\"iterations\": %ld}\n", NAMES[mech], (t1 - t0) / iters, payload, iters);
    return 0;
}
