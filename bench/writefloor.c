/*
 * writefloor - the kernel's own cost of one SSE delivery on this machine.
 *
 * A fan-out server must write each subscriber's socket at least once per
 * event; this tool measures that floor with nothing else in the way.  The
 * parent accepts N loopback TCP connections from a child process and then,
 * round after round, writes one SSE-sized frame to every connection, one
 * write() each, back to back, as a server's fan-out of a single event would.
 * No HTTP, no queue, no allocation: what a round costs is the kernel's send
 * path (on loopback it also runs the receiver's TCP input and wakes it).
 *
 *   writefloor [--conns N] [--rounds R] [--bytes B] [--reader idle|epoll]
 *
 * --reader idle   the child never reads (no wake-ups; buffers absorb the rounds)
 * --reader epoll  the child reads every byte in an epoll loop, like a load
 *                 generator; the writes then also pay for waking it
 *
 * Prints one line `WRITEFLOOR {json}`: per-round wall time p50/max (ms) for
 * all N writes, wall and CPU microseconds per write (the parent's CPU from
 * getrusage).  Loopback only; every loop is bounded (an alarm ends a stuck run).
 *
 * Build: gcc -O2 -Wall -Wextra -o build/writefloor bench/writefloor.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The child: open n connections, then read (or not) until the parent closes. */
static int child(int port, int n, int read_all)
{
    int *fds = calloc((size_t)n, sizeof *fds);
    int ep = epoll_create1(0);
    if (fds == NULL || ep < 0)
        return 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0) {
            perror("writefloor: connect");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    int open = n;
    struct epoll_event evs[512];
    char buf[65536];
    while (open > 0) {
        if (!read_all) { /* hold until the parent's SIGTERM */
            pause();
            continue;
        }
        int k = epoll_wait(ep, evs, 512, 1000);
        for (int i = 0; i < k; i++) {
            ssize_t r = read(evs[i].data.fd, buf, sizeof buf);
            if (r <= 0) {
                close(evs[i].data.fd);
                open--;
            }
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int n = 10000, rounds = 20, bytes = 120, read_all = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--conns"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--bytes"))
            bytes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reader"))
            read_all = strcmp(argv[i + 1], "idle") != 0;
        else {
            fprintf(stderr, "usage: writefloor [--conns N] [--rounds R] [--bytes B] [--reader idle|epoll]\n");
            return 2;
        }
    }
    if (n < 1 || n > 19000 || rounds < 1 || rounds > 1000 || bytes < 1 || bytes > 4096) {
        fprintf(stderr, "writefloor: --conns 1..19000, --rounds 1..1000, --bytes 1..4096\n");
        return 2;
    }
    alarm(120);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof sa;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("writefloor: listen");
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0)
        _exit(child(ntohs(sa.sin_port), n, read_all));
    int *fds = calloc((size_t)n, sizeof *fds);
    char *frame = malloc((size_t)bytes);
    double *round_ms = calloc((size_t)rounds, sizeof *round_ms);
    if (fds == NULL || frame == NULL || round_ms == NULL)
        return 1;
    /* An SSE event of the given size: "data: xxxx...\n\n". */
    memset(frame, 'x', (size_t)bytes);
    memcpy(frame, "data: ", bytes > 6 ? 6 : (size_t)bytes);
    if (bytes >= 2)
        frame[bytes - 1] = frame[bytes - 2] = '\n';
    for (int i = 0; i < n; i++) {
        fds[i] = accept(lfd, NULL, NULL);
        if (fds[i] < 0) {
            perror("writefloor: accept");
            return 1;
        }
        int one = 1;
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    usleep(200 * 1000);
    long failed = 0;
    double wall_total = 0, cpu_total = 0;
    for (int r = 0; r < rounds; r++) {
        double c0 = cpu_us(), t0 = now_us();
        for (int i = 0; i < n; i++)
            if (write(fds[i], frame, (size_t)bytes) != bytes)
                failed++;
        double t1 = now_us(), c1 = cpu_us();
        round_ms[r] = (t1 - t0) / 1000;
        wall_total += t1 - t0;
        cpu_total += c1 - c0;
        usleep(50 * 1000); /* let the reader drain, as between paced events */
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    qsort(round_ms, (size_t)rounds, sizeof *round_ms, cmp_double);
    double writes = (double)n * rounds;
    printf("WRITEFLOOR {\"conns\": %d, \"rounds\": %d, \"bytes\": %d, \"reader\": \"%s\", \"failed_writes\": %ld, "
           "\"round_ms_p50\": %.2f, \"round_ms_max\": %.2f, \"wall_us_per_write\": %.2f, \"cpu_us_per_write\": %.2f}\n",
           n, rounds, bytes, read_all ? "epoll" : "idle", failed, round_ms[rounds / 2], round_ms[rounds - 1],
           wall_total / writes, cpu_total / writes);
    return failed ? 1 : 0;
}
