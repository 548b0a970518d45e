/* bus_curve: what CURVE costs the bus, in paired runs (bench/RESULTS.md, "The bus with CURVE").
 *
 *   build/bench_bus_curve [--count N] [--rate R] [--size BYTES] [--pairs P]
 *
 * One publisher (bus_pub_open) and one subscriber (bus_sub_open) of lib/bus over tcp on
 * loopback, in a child process per run, alternately in the clear and with CURVE (key pairs
 * from bus_keygen, the subscriber's key allowlisted through the ZAP handler): the same code
 * the split services run.  Each run publishes N events of BYTES bytes of data at R events/s
 * (0: as fast as the socket takes them) and the subscriber notes, per event, the time from
 * just before bus_publish_event() to its bus_sub_recv() (CLOCK_MONOTONIC, carried in the
 * event's timestamp field).  Prints one line `RESULT {json}` per run: mode, received,
 * events/s, latency p50/p99/max in microseconds.  Only loopback.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bus.h"
#include "bus_curve.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct run {
    bus_pub *pub;
    long count, rate;
    size_t size;
    volatile int go;
} run;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void *publish(void *arg)
{
    run *r = arg;
    char *data = malloc(r->size + 1);
    if (data == NULL)
        return NULL;
    memset(data, 'x', r->size);
    data[0] = '"', data[r->size - 1] = '"', data[r->size] = '\0';
    while (!r->go)
        usleep(1000);
    int64_t start = now_ns();
    for (long i = 0; i < r->count; i++) {
        if (r->rate > 0) {
            int64_t due = start + i * 1000000000 / r->rate;
            while (now_ns() < due)
                ;
        }
        bus_publish_event(r->pub, "bench", (uint64_t)i + 1, now_ns(), "e", data, r->size);
    }
    free(data);
    return NULL;
}

/* bus_keygen prints the public key: not on our output. */
static int keygen_quiet(const char *path)
{
    fflush(stdout);
    int saved = dup(1), null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    int rc = bus_keygen(path);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(null);
    return rc;
}

static int run_once(int curve, long count, long rate, size_t size, int port)
{
    char dir[] = "/tmp/bench-bus-curve-XXXXXX", pair[256], public_key[300], endpoint[64];
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(pair, sizeof pair, "%s/pair", dir);
    snprintf(public_key, sizeof public_key, "%s/pair.pub", dir);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    if (keygen_quiet(pair) != 0)
        return 1;
    /* One process plays both ends with its one pair: the publisher is the CURVE server, the
     * subscriber a client whose key (the same) the allowlist holds.  The handshake and every
     * message's encryption are the same work as between two processes. */
    bus_security_options o = {.key_file = curve ? pair : "", .trusted_keys = curve ? public_key : ""};
    if (bus_security_init(&o) != 0)
        return 1;
    run r = {.count = count, .rate = rate, .size = size};
    if ((r.pub = bus_pub_open(endpoint)) == NULL)
        return 1;
    bus_sub *sub = bus_sub_open(endpoint, curve ? public_key : "", 0);
    if (sub == NULL)
        return 1;
    /* The subscription reaches the publisher a moment after the handshake. */
    int64_t deadline = now_ns() + 5000000000LL;
    while (!bus_sub_ready(sub) && now_ns() < deadline)
        usleep(1000);
    usleep(200000);
    pthread_t t;
    int64_t *lat = calloc((size_t)count, sizeof *lat);
    long got = 0;
    if (lat == NULL || pthread_create(&t, NULL, publish, &r) != 0)
        return 1;
    int64_t start = now_ns();
    r.go = 1;
    deadline = start + (rate > 0 ? count * 1000000000LL / rate : 0) + 10000000000LL;
    struct pollfd pfd = {.fd = bus_sub_fd(sub), .events = POLLIN};
    int64_t last = start;
    while (got < count && now_ns() < deadline) {
        bus_msg m;
        int rc;
        while (got < count && (rc = bus_sub_recv(sub, &m)) > 0) {
            last = now_ns();
            lat[got++] = last - m.ts_ms;
        }
        poll(&pfd, 1, 1);
    }
    pthread_join(t, NULL);
    qsort(lat, (size_t)got, sizeof *lat, cmp_i64);
    double secs = (double)(last - start) / 1e9;
    printf("RESULT {\"mode\": \"%s\", \"sent\": %ld, \"received\": %ld, \"rate\": %ld, \"size\": %zu, "
           "\"events_per_s\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f}\n",
           curve ? "curve" : "clear", count, got, rate, size, got / (secs > 0 ? secs : 1),
           got ? lat[got / 2] / 1e3 : 0, got ? lat[got * 99 / 100] / 1e3 : 0, got ? lat[got - 1] / 1e3 : 0);
    fflush(stdout);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 && got == count ? 0 : 1;
}

int main(int argc, char **argv)
{
    long count = 20000, rate = 2000, size = 100, pairs = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        long v = strtol(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--count"))
            count = v;
        else if (!strcmp(argv[i], "--rate"))
            rate = v;
        else if (!strcmp(argv[i], "--size"))
            size = v;
        else if (!strcmp(argv[i], "--pairs"))
            pairs = v;
    }
    if (count < 1 || rate < 0 || size < 2 || pairs < 1) {
        fprintf(stderr, "usage: %s [--count N] [--rate R] [--size BYTES] [--pairs P]\n", argv[0]);
        return 2;
    }
    int status = 0;
    for (long p = 0; p < pairs; p++) {
        for (int curve = 0; curve <= 1; curve++) {
            pid_t pid = fork();
            if (pid == 0)
                _exit(run_once(curve, count, rate, (size_t)size, 20000 + (int)(getpid() % 20000)));
            int st = 0;
            waitpid(pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                status = 1;
        }
    }
    return status;
}
