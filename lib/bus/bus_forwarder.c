/*
 * bus_forwarder.c - the bus forwarder (the broker-bus service) and the
 * --bus_forwarders list that tells the other services where forwarders are.
 *
 * A forwarder is ZeroMQ's proxy between an XSUB socket, which publishers
 * connect to, and an XPUB socket, which subscribers connect to: messages go
 * one way, subscriptions the other, so a publisher still sends only what some
 * subscriber asked for.  With forwarders no publisher or subscriber knows the
 * others, and any of them may be replicated.  Every publisher connects to
 * every forwarder and every subscriber too, so two forwarders leave no single
 * point of failure; the copies a subscriber gets are dropped by the event
 * sequence (proto/proto_bus.h).
 *
 * The proxy runs on a thread of its own with its own ZeroMQ context, steered
 * over an inproc PAIR socket: TERMINATE to stop it, STATISTICS for the
 * metrics.  It is a loop of its own rather than zmq_proxy() because, with
 * CURVE, it checks who sent each control message: a forwarder is where
 * every publisher's messages meet, and only certd may move the clock or
 * announce a certificate (the ZAP handler gives each message its sender's
 * key as the "User-Id" property).
 */
#include "bus.h"
#include "bus_curve.h"
#include "log.h"
#include "metrics.h"
#include "proto_bus.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define CONTROL_ENDPOINT "inproc://bus-forwarder-control"
/* How long a STATISTICS question may wait for the proxy's answer (ms). */
#define CONTROL_TIMEOUT_MS 1000
/* The proxy answers STATISTICS with this many frames, one number each:
 * the publishers' side's messages in, bytes in, messages out, bytes out,
 * then the same of the subscribers' side. */
#define STATISTICS_FRAMES 8
/* Frames a forwarded message may have (an event has the most). */
#define FORWARD_FRAMES_MAX 8

/* ---- the --bus_forwarders list ------------------------------------------ */

/* One entry: "host" or "host:port", host a name or an IPv4 address (the
 * bus's sockets are not opened for IPv6).  Fills host (not NUL-terminated)
 * and port; 0 or -1. */
static int parse_entry(const char *entry, size_t len, const char **host, size_t *host_len, long *port)
{
    const char *colon = memchr(entry, ':', len);
    *host = entry;
    *host_len = colon ? (size_t)(colon - entry) : len;
    *port = BUS_FORWARDER_PORT;
    if (*host_len == 0)
        return -1;
    for (size_t i = 0; i < *host_len; i++) {
        char c = entry[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_'))
            return -1;
    }
    if (colon == NULL)
        return 0;
    const char *digits = colon + 1, *end = entry + len;
    long v = 0;
    if (digits == end || end - digits > 5)
        return -1;
    for (const char *d = digits; d < end; d++) {
        if (*d < '0' || *d > '9')
            return -1;
        v = v * 10 + (*d - '0');
    }
    /* The subscribers' side is the next port: it must exist too. */
    if (v < 1 || v > 65534)
        return -1;
    *port = v;
    return 0;
}

int bus_forwarder_endpoints(const char *forwarders, char **publish, char **subscribe)
{
    size_t total = strlen(forwarders), entries = 1;
    for (const char *p = forwarders; *p; p++)
        entries += *p == ',';
    /* Each entry grows by at most the scheme, a port and the comma. */
    size_t cap = total + entries * (sizeof "tcp://" + sizeof ":65535") + 1;
    char *pub = malloc(cap), *sub = malloc(cap);
    size_t pub_len = 0, sub_len = 0;
    int n = 0;
    if (pub == NULL || sub == NULL) {
        log_error("bus: out of memory");
        goto fail;
    }
    pub[0] = sub[0] = '\0';
    for (const char *p = forwarders; *p != '\0';) {
        size_t len = strcspn(p, ",");
        const char *entry = p;
        p += len + (p[len] == ',');
        while (len > 0 && *entry == ' ')
            entry++, len--;
        while (len > 0 && entry[len - 1] == ' ')
            len--;
        if (len == 0)
            continue;
        const char *host;
        size_t host_len;
        long port;
        if (parse_entry(entry, len, &host, &host_len, &port) != 0) {
            log_error("bad entry '%.*s' in --bus_forwarders: expected host[:port] (a name or an IPv4 "
                      "address; the port 1..65534, %d when left out), such as bus:%d",
                      (int)len, entry, BUS_FORWARDER_PORT, BUS_FORWARDER_PORT);
            goto fail;
        }
        pub_len += (size_t)snprintf(pub + pub_len, cap - pub_len, "%stcp://%.*s:%ld", n ? "," : "", (int)host_len,
                                    host, port);
        sub_len += (size_t)snprintf(sub + sub_len, cap - sub_len, "%stcp://%.*s:%ld", n ? "," : "", (int)host_len,
                                    host, port + 1);
        n++;
    }
    if (n == 0) {
        log_error("--bus_forwarders names no forwarder");
        goto fail;
    }
    if (publish != NULL)
        *publish = pub;
    else
        free(pub);
    if (subscribe != NULL)
        *subscribe = sub;
    else
        free(sub);
    return 0;
fail:
    free(pub);
    free(sub);
    return -1;
}

/* ---- the forwarder --------------------------------------------------------- */

struct bus_forwarder {
    void *context; /* its own: the forwarder shares nothing with the process's bus */
    void *frontend; /* XSUB: publishers connect here */
    void *backend;  /* XPUB: subscribers connect here */
    void *steer;    /* the proxy's end of the control pair */
    void *control;  /* ours */
    pthread_t thread;
    int started;
    uint64_t received; /* messages from publishers (the proxy's thread only) */
    int check_senders;  /* CURVE: control messages only from certd's key */
    char certd_key[BUS_KEY_SIZE];
    metric_value *forged; /* control messages dropped: not from certd */
};

/* Whether `first` (a message's first frame, which carries the sender's key
 * as "User-Id") may pass.  Without CURVE there are no keys to check. */
static int sender_allowed(bus_forwarder *f, zmq_msg_t *first)
{
    if (!f->check_senders || !(zmq_msg_size(first) > 4 && memcmp(zmq_msg_data(first), "ctl/", 4) == 0))
        return 1;
    size_t n = zmq_msg_size(first);
    int control = (n >= strlen(BUS_TOPIC_CLOCK) && !memcmp(zmq_msg_data(first), BUS_TOPIC_CLOCK, strlen(BUS_TOPIC_CLOCK))) ||
                  (n >= strlen(BUS_TOPIC_CERT) && !memcmp(zmq_msg_data(first), BUS_TOPIC_CERT, strlen(BUS_TOPIC_CERT)));
    const char *sender = zmq_msg_gets(first, "User-Id");
    if (!control || (sender != NULL && strcmp(sender, f->certd_key) == 0))
        return 1;
    log_warn("bus forwarder: dropped a %.*s message from %s: only certd (--bus_certd_key) sends those",
             (int)(n < 16 ? n : 16), (const char *)zmq_msg_data(first), sender ? sender : "(no key)");
    atomic_fetch_add(f->forged, 1);
    return 0;
}

/* Moves one whole message from `from` to `to` (publishers' messages are
 * checked first).  0, or -1 when the context is ending. */
static int forward_message(bus_forwarder *f, void *from, void *to, int check)
{
    zmq_msg_t frames[FORWARD_FRAMES_MAX];
    int n = 0, more = 1, pass = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, from, 0) < 0) {
            zmq_msg_close(&m);
            for (int i = 0; i < n; i++)
                zmq_msg_close(&frames[i]);
            return zmq_errno() == ETERM ? -1 : 0;
        }
        more = zmq_msg_more(&m);
        if (n < FORWARD_FRAMES_MAX)
            frames[n++] = m;
        else
            zmq_msg_close(&m), pass = 0; /* no bus message has so many frames */
    }
    if (check) {
        f->received++;
        pass = pass && sender_allowed(f, &frames[0]);
    }
    for (int i = 0; i < n; i++) {
        /* A frame that is sent is the socket's; one that is not is ours. */
        if (!pass || zmq_msg_send(&frames[i], to, i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            zmq_msg_close(&frames[i]);
    }
    return 0;
}

/* Forwards what `from` holds, up to a batch, so that a burst costs one poll
 * rather than one per message while the control pair still gets its turn. */
static int forward_pending(bus_forwarder *f, void *from, void *to, int check)
{
    enum { BATCH = 1000 };
    for (int i = 0; i < BATCH; i++) {
        int events = 0;
        size_t len = sizeof events;
        if (i > 0 && (zmq_getsockopt(from, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN)))
            break;
        if (forward_message(f, from, to, check) != 0)
            return -1;
    }
    return 0;
}

/* A question on the control pair: 1 to go on, 0 to stop. */
static int answer_control(bus_forwarder *f)
{
    char command[32];
    int n = zmq_recv(f->steer, command, sizeof command, 0);
    if (n < 0)
        return zmq_errno() != ETERM;
    if (n == 9 && memcmp(command, "TERMINATE", 9) == 0)
        return 0;
    if (n == 10 && memcmp(command, "STATISTICS", 10) == 0) {
        uint64_t values[STATISTICS_FRAMES] = {f->received};
        for (int i = 0; i < STATISTICS_FRAMES; i++)
            zmq_send(f->steer, &values[i], sizeof values[i], i + 1 < STATISTICS_FRAMES ? ZMQ_SNDMORE : 0);
    }
    return 1;
}

static void *forward(void *arg)
{
    bus_forwarder *f = arg;
    for (;;) {
        zmq_pollitem_t items[] = {{f->frontend, 0, ZMQ_POLLIN, 0}, {f->backend, 0, ZMQ_POLLIN, 0},
                                  {f->steer, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 3, -1) < 0) {
            if (zmq_errno() == ETERM)
                break;
            continue;
        }
        if ((items[2].revents & ZMQ_POLLIN) && !answer_control(f))
            break;
        if ((items[0].revents & ZMQ_POLLIN) && forward_pending(f, f->frontend, f->backend, 1) != 0)
            break;
        /* Subscriptions, the other way. */
        if ((items[1].revents & ZMQ_POLLIN) && forward_pending(f, f->backend, f->frontend, 0) != 0)
            break;
    }
    return NULL;
}

/* A socket of the forwarder with the bus's queues, bound to `endpoint`. */
static void *bound_socket(bus_forwarder *f, int type, const char *endpoint)
{
    int hwm = BUS_HWM, linger = 0;
    void *sock = zmq_socket(f->context, type);
    if (sock != NULL && bus_curve_server(f->context, sock, endpoint) != 0) {
        zmq_close(sock);
        return NULL;
    }
    if (sock == NULL || zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0 || zmq_bind(sock, endpoint) != 0) {
        log_error("bus forwarder: cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        if (sock != NULL)
            zmq_close(sock);
        return NULL;
    }
    return sock;
}

bus_forwarder *bus_forwarder_start(const char *frontend, const char *backend)
{
    bus_forwarder *f = calloc(1, sizeof *f);
    int timeout = CONTROL_TIMEOUT_MS, linger = 0;
    if (f == NULL || (f->context = zmq_ctx_new()) == NULL)
        goto fail;
    f->forged = metrics_counter("broker_bus_forged_control_total",
                                "clock and certificate messages dropped because certd did not send them");
    if (bus_curve_enabled()) {
        if (bus_certd_key(f->certd_key) != 0) {
            log_error("bus forwarder: with CURVE, --bus_certd_key (certd's public key file) says who may send "
                      "clock and certificate messages");
            goto fail;
        }
        f->check_senders = 1;
    }
    f->frontend = bound_socket(f, ZMQ_XSUB, frontend);
    f->backend = f->frontend ? bound_socket(f, ZMQ_XPUB, backend) : NULL;
    if (f->backend == NULL)
        goto fail;
    f->control = zmq_socket(f->context, ZMQ_PAIR);
    f->steer = zmq_socket(f->context, ZMQ_PAIR);
    if (f->control == NULL || f->steer == NULL ||
        zmq_setsockopt(f->control, ZMQ_RCVTIMEO, &timeout, sizeof timeout) != 0 ||
        zmq_setsockopt(f->control, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(f->control, CONTROL_ENDPOINT) != 0 || zmq_connect(f->steer, CONTROL_ENDPOINT) != 0) {
        log_error("bus forwarder: cannot make its control socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    /* The sockets move to the proxy's thread here; pthread_create is the
     * memory barrier ZeroMQ asks for when a socket changes threads. */
    if (pthread_create(&f->thread, NULL, forward, f) != 0) {
        log_error("bus forwarder: cannot start its thread");
        goto fail;
    }
    f->started = 1;
    return f;
fail:
    bus_forwarder_stop(f);
    return NULL;
}

int bus_forwarder_received(bus_forwarder *f, uint64_t *messages)
{
    uint64_t values[STATISTICS_FRAMES];
    char stale[64];
    /* An answer that came after a question timed out would be taken for the
     * next one's: throw it away first. */
    while (zmq_recv(f->control, stale, sizeof stale, ZMQ_DONTWAIT) >= 0)
        ;
    if (zmq_send(f->control, "STATISTICS", 10, 0) != 10)
        return -1;
    for (int i = 0; i < STATISTICS_FRAMES; i++)
        if (zmq_recv(f->control, &values[i], sizeof values[i], 0) != (int)sizeof values[i])
            return -1;
    *messages = values[0];
    return 0;
}

void bus_forwarder_stop(bus_forwarder *f)
{
    if (f == NULL)
        return;
    if (f->started) {
        /* Shutting the context down also ends the proxy, with an error. */
        if (zmq_send(f->control, "TERMINATE", 9, 0) != 9)
            zmq_ctx_shutdown(f->context);
        pthread_join(f->thread, NULL);
    }
    void *socks[] = {f->control, f->steer, f->backend, f->frontend};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (socks[i] != NULL)
            zmq_close(socks[i]);
    if (f->context != NULL) {
        zmq_ctx_term(f->context);
        bus_zap_stop(f->context);
    }
    free(f);
}
