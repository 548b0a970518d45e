/* bus_probe: an outsider's ZeroMQ sockets on the compose deployment's bus, for
 * tests/compose/test_compose_bus.py.
 *
 *   bus_probe sub SECONDS [KEYS] ENDPOINT[,SERVERKEY]...
 *   bus_probe pub SECONDS [KEYS] ENDPOINT[,SERVERKEY]... -- FRAME... [-- FRAME...]...
 *
 * KEYS: nothing (no CURVE: the socket offers no key), --stranger (a fresh key
 * pair nobody trusts) or --key-file PATH (a pair from broker-keygen: the
 * test's positive control, so that "received 0" means refused, not a probe
 * that cannot read).  With a key, ENDPOINT needs the server's public key after
 * a comma (Z85 has no comma).  A FRAME is its text, or x:HEX for bytes.
 *
 * sub subscribes to everything on one socket per endpoint for SECONDS,
 * prints `topic T` as each message arrives (flushed: the test learns when
 * the bus reaches it) and `received N` at the end; pub sends
 * every message on one socket per endpoint every 100 ms for SECONDS (a PUB
 * drops messages until the other side's subscription arrives, right after
 * the handshake) and prints `sent N`.  Both print `key PUBLIC` first when
 * they have a key, so the test can find it in the forwarders' logs, then
 * `connected N` once their sockets are connecting.
 *
 * Raw libzmq rather than lib/bus: an attacker has none of the project's code,
 * and the probe runs in a container of the broker image, which has libzmq
 * but no Python.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define MAX_SOCKETS 32
#define MAX_FRAMES 64
#define KEY_LEN 40 /* a CURVE key in Z85 */

typedef struct {
    char public_key[KEY_LEN + 1];
    char secret_key[KEY_LEN + 1];
    int have;
} key_pair;

typedef struct {
    unsigned char *data;
    size_t len;
    int last; /* the message's last frame */
} frame;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr, "usage: bus_probe sub|pub SECONDS [--stranger|--key-file PATH] ENDPOINT[,SERVERKEY]... "
                    "[-- FRAME...]...\n");
    return 2;
}

/* Reads `name = "value"` from a broker-keygen file. */
static int read_key(const char *path, const char *name, char out[KEY_LEN + 1])
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "bus_probe: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[256];
    int found = 0;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        size_t n = strlen(name);
        if (strncmp(line, name, n) != 0)
            continue;
        char *q = strchr(line + n, '"');
        if (q != NULL && strlen(q + 1) > KEY_LEN && q[1 + KEY_LEN] == '"') {
            memcpy(out, q + 1, KEY_LEN);
            out[KEY_LEN] = '\0';
            found = 1;
        }
    }
    fclose(f);
    if (!found)
        fprintf(stderr, "bus_probe: no %s in %s\n", name, path);
    return found ? 0 : -1;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int parse_frame(const char *arg, frame *f)
{
    if (strncmp(arg, "x:", 2) != 0) {
        f->data = (unsigned char *)strdup(arg);
        f->len = strlen(arg);
        return f->data == NULL ? -1 : 0;
    }
    const char *hex = arg + 2;
    size_t n = strlen(hex);
    if (n % 2 != 0)
        return -1;
    f->data = malloc(n / 2 + 1);
    if (f->data == NULL)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        f->data[i] = (unsigned char)(hi * 16 + lo);
    }
    f->len = n / 2;
    return 0;
}

/* One socket of `type` connected to `spec` (ENDPOINT[,SERVERKEY]). */
static void *open_socket(void *ctx, int type, const char *spec, const key_pair *keys)
{
    char endpoint[256];
    const char *comma = strchr(spec, ',');
    size_t n = comma != NULL ? (size_t)(comma - spec) : strlen(spec);
    if (n >= sizeof endpoint || (keys->have && (comma == NULL || strlen(comma + 1) != KEY_LEN))) {
        fprintf(stderr, "bus_probe: %s: want ENDPOINT%s\n", spec, keys->have ? ",SERVERKEY" : "");
        return NULL;
    }
    memcpy(endpoint, spec, n);
    endpoint[n] = '\0';
    void *s = zmq_socket(ctx, type);
    if (s == NULL)
        return NULL;
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (keys->have && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, comma + 1, KEY_LEN) != 0 ||
                       zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, keys->public_key, KEY_LEN) != 0 ||
                       zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, keys->secret_key, KEY_LEN) != 0)) {
        fprintf(stderr, "bus_probe: CURVE options on %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    if (type == ZMQ_SUB)
        zmq_setsockopt(s, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect(s, endpoint) != 0) {
        fprintf(stderr, "bus_probe: connect %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

static long run_sub(void **socks, int n, double seconds)
{
    zmq_pollitem_t items[MAX_SOCKETS];
    for (int i = 0; i < n; i++)
        items[i] = (zmq_pollitem_t){.socket = socks[i], .events = ZMQ_POLLIN};
    long received = 0;
    int first_frame = 1;
    double end = now_seconds() + seconds;
    for (double left; (left = end - now_seconds()) > 0;) {
        if (zmq_poll(items, n, (long)(left * 1000) + 1) < 0)
            break;
        for (int i = 0; i < n; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            char buf[64];
            int len;
            while ((len = zmq_recv(socks[i], buf, sizeof buf - 1, ZMQ_DONTWAIT)) >= 0) {
                int more = 0;
                size_t sz = sizeof more;
                zmq_getsockopt(socks[i], ZMQ_RCVMORE, &more, &sz);
                if (first_frame) {
                    buf[len < (int)sizeof buf - 1 ? len : (int)sizeof buf - 1] = '\0';
                    printf("topic %s\n", buf);
                    fflush(stdout);
                }
                first_frame = !more;
                if (!more)
                    received++;
            }
        }
    }
    printf("received %ld\n", received);
    return received;
}

static long run_pub(void **socks, int n, double seconds, const frame *frames, int nframes)
{
    long sent = 0;
    double end = now_seconds() + seconds;
    while (now_seconds() < end) {
        for (int i = 0; i < n; i++)
            for (int f = 0; f < nframes; f++)
                if (zmq_send(socks[i], frames[f].data, frames[f].len, frames[f].last ? ZMQ_DONTWAIT
                                                                                        : ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0 &&
                    frames[f].last)
                    sent++;
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    printf("sent %ld\n", sent);
    return sent;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return usage();
    int pub = !strcmp(argv[1], "pub");
    if (!pub && strcmp(argv[1], "sub") != 0)
        return usage();
    double seconds = atof(argv[2]);
    int i = 3;
    key_pair keys = {.have = 0};
    if (!strcmp(argv[i], "--stranger")) {
        if (zmq_curve_keypair(keys.public_key, keys.secret_key) != 0) {
            fprintf(stderr, "bus_probe: no CURVE in this libzmq\n");
            return 1;
        }
        keys.have = 1;
        i++;
    } else if (!strcmp(argv[i], "--key-file") && i + 1 < argc) {
        if (read_key(argv[i + 1], "public-key", keys.public_key) != 0 ||
            read_key(argv[i + 1], "secret-key", keys.secret_key) != 0)
            return 1;
        keys.have = 1;
        i += 2;
    }
    if (keys.have)
        printf("key %s\n", keys.public_key);
    fflush(stdout);

    void *ctx = zmq_ctx_new();
    void *socks[MAX_SOCKETS];
    int n = 0;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (n == MAX_SOCKETS || (socks[n] = open_socket(ctx, pub ? ZMQ_PUB : ZMQ_SUB, argv[i], &keys)) == NULL)
            return 1;
        n++;
    }
    frame frames[MAX_FRAMES];
    int nframes = 0;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            if (nframes > 0)
                frames[nframes - 1].last = 1;
            continue;
        }
        if (nframes == MAX_FRAMES || parse_frame(argv[i], &frames[nframes]) != 0) {
            fprintf(stderr, "bus_probe: bad frame %s\n", argv[i]);
            return 1;
        }
        frames[nframes++].last = 0;
    }
    if (nframes > 0)
        frames[nframes - 1].last = 1;
    if (n == 0 || (pub && nframes == 0))
        return usage();

    /* The sockets exist and connect from here on: the test starts the traffic
     * the probe must (or must not) see only after this line. */
    printf("connected %d\n", n);
    fflush(stdout);
    if (pub)
        run_pub(socks, n, seconds, frames, nframes);
    else
        run_sub(socks, n, seconds);
    fflush(stdout);
    for (int k = 0; k < n; k++)
        zmq_close(socks[k]);
    for (int k = 0; k < nframes; k++)
        free(frames[k].data);
    zmq_ctx_term(ctx);
    return 0;
}
