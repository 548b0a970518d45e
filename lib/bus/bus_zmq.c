/*
 * bus_zmq.c - the bus on libzmq PUB/SUB.
 *
 * High-water marks are raised from ZeroMQ's default (BUS_HWM, bus.h).  A
 * publisher binds its PUB socket, or connects it to every bus forwarder
 * (bus_forwarder.c), which then each carry the same messages: a subscriber
 * of several forwarders takes the first copy of each and its sequence drops
 * the others.
 */
#include "bus.h"
#include "bus_curve.h"
#include "proto_bus.h"
#include "log.h"
#include "metrics.h"

#include <endian.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define SUB_FRAMES 4

static void *context;
static pthread_once_t context_once = PTHREAD_ONCE_INIT;

static metric_value *malformed_total;

static void context_create(void)
{
    context = zmq_ctx_new();
    malformed_total = metrics_counter("broker_bus_malformed_total",
                                      "bus messages dropped because they did not parse (or named no valid tenant, event or user)");
}

static void *bus_context(void)
{
    pthread_once(&context_once, context_create);
    return context;
}

struct bus_pub {
    void *sock;
    pthread_mutex_t lock;
};

struct bus_sub {
    void *sock;
    void *monitor;
    int endpoints;
    int connected;
    int inproc_only;
    int redundant; /* BUS_SUB_REDUNDANT */
    zmq_msg_t frames[SUB_FRAMES];
    int nframes;
};

/* A PUB socket with the bus's queue and linger, not bound or connected yet. */
static bus_pub *pub_new(void)
{
    bus_pub *p = calloc(1, sizeof *p);
    int hwm = BUS_HWM, linger = 1000;
    if (p == NULL || bus_context() == NULL)
        goto fail;
    p->sock = zmq_socket(bus_context(), ZMQ_PUB);
    if (p->sock == NULL)
        goto fail;
    if (zmq_setsockopt(p->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger) != 0)
        goto fail;
    if (pthread_mutex_init(&p->lock, NULL) != 0)
        goto fail;
    return p;
fail:
    log_error("bus: cannot make a publisher: %s", zmq_strerror(zmq_errno()));
    if (p && p->sock)
        zmq_close(p->sock);
    free(p);
    return NULL;
}

bus_pub *bus_pub_open(const char *endpoint)
{
    bus_pub *p = pub_new();
    if (p == NULL)
        return NULL;
    if (bus_curve_server(bus_context(), p->sock, endpoint) != 0) {
        bus_pub_close(p);
        return NULL;
    }
    if (zmq_bind(p->sock, endpoint) != 0) {
        log_error("bus: cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        bus_pub_close(p);
        return NULL;
    }
    return p;
}

bus_pub *bus_pub_connect(const char *endpoints, const char *server_keys)
{
    bus_pub *p = pub_new();
    char *list = strdup(endpoints ? endpoints : ""), *save = NULL;
    /* Queue only for forwarders that are connected: one that is down would
     * otherwise hold up to BUS_HWM stale messages and hand them over when it
     * comes back, long after the other forwarder delivered them. */
    int immediate = 1, n = 0;
    if (p == NULL || list == NULL || zmq_setsockopt(p->sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate) != 0)
        goto fail;
    for (char *ep = strtok_r(list, ",", &save); ep != NULL; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (*ep == '\0')
            continue;
        char key_file[4096];
        if (bus_server_key_for(server_keys, n, key_file, sizeof key_file) != 0 ||
            bus_curve_client(p->sock, ep, key_file) != 0)
            goto fail;
        if (zmq_connect(p->sock, ep) != 0) {
            log_error("bus: cannot connect to %s: %s", ep, zmq_strerror(zmq_errno()));
            goto fail;
        }
        n++;
    }
    if (n == 0) {
        log_error("bus: no forwarder to publish to");
        goto fail;
    }
    free(list);
    return p;
fail:
    free(list);
    bus_pub_close(p);
    return NULL;
}

void bus_pub_close(bus_pub *p)
{
    if (p == NULL)
        return;
    zmq_close(p->sock);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Sends `n` frames as one message under the publisher's lock. */
static int send_frames(bus_pub *p, const void *const *bufs, const size_t *lens, int n)
{
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < n && rc == 0; i++)
        if (zmq_send(p->sock, bufs[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            rc = -1;
    pthread_mutex_unlock(&p->lock);
    if (rc != 0)
        log_error("bus: publish failed: %s", zmq_strerror(zmq_errno()));
    return rc;
}

int bus_publish_event(bus_pub *p, const char *tenant, uint64_t seq, int64_t ts_ms, const char *event,
                      const char *data, size_t data_len)
{
    char topic[160];
    unsigned char header[BUS_EVENT_HEADER_LEN];
    int tlen = snprintf(topic, sizeof topic, BUS_TOPIC_EVENT "%s/", tenant);
    if (tlen < 0 || (size_t)tlen >= sizeof topic)
        return -1;
    uint64_t s = htobe64(seq), t = htobe64((uint64_t)ts_ms);
    memcpy(header, &s, 8);
    memcpy(header + 8, &t, 8);
    const void *bufs[] = {topic, header, event, data};
    size_t lens[] = {(size_t)tlen, sizeof header, strlen(event), data_len};
    return send_frames(p, bufs, lens, 4);
}

int bus_publish_user(bus_pub *p, const char *username, int revoked)
{
    const void *bufs[] = {BUS_TOPIC_USER, username, revoked ? "1" : "0"};
    size_t lens[] = {strlen(BUS_TOPIC_USER), strlen(username), 1};
    return send_frames(p, bufs, lens, 3);
}

int bus_publish_clock(bus_pub *p, int64_t offset_ms, char source, const char *reason)
{
    uint64_t v = htobe64((uint64_t)offset_ms);
    size_t rlen = strnlen(reason, BUS_CLOCK_REASON_MAX);
    const void *bufs[] = {BUS_TOPIC_CLOCK, &v, &source, reason};
    size_t lens[] = {strlen(BUS_TOPIC_CLOCK), sizeof v, 1, rlen};
    return send_frames(p, bufs, lens, 4);
}

int bus_publish_cert(bus_pub *p, const char *cert_path)
{
    const void *bufs[] = {BUS_TOPIC_CERT, cert_path};
    size_t lens[] = {strlen(BUS_TOPIC_CERT), strlen(cert_path)};
    return send_frames(p, bufs, lens, 2);
}

int bus_publish_presence(bus_pub *p, uint64_t replica, uint64_t seq, int full, const char *json, size_t len)
{
    unsigned char header[BUS_PRESENCE_HEADER_LEN];
    uint64_t r = htobe64(replica), s = htobe64(seq);
    memcpy(header, &r, 8);
    memcpy(header + 8, &s, 8);
    header[16] = full ? 'F' : 'D';
    const void *bufs[] = {BUS_TOPIC_PRESENCE, header, json};
    size_t lens[] = {strlen(BUS_TOPIC_PRESENCE), sizeof header, len};
    return send_frames(p, bufs, lens, 3);
}

/* What a subscriber asks of its publishers (a prefix match on the topic):
 * certd's messages only, or events, user changes and the stream replicas'
 * presence. */
static int sub_topics(void *sock, int control)
{
    static const char *const control_topics[] = {BUS_TOPIC_CLOCK, BUS_TOPIC_CERT, NULL};
    static const char *const stream_topics[] = {BUS_TOPIC_EVENT, BUS_TOPIC_USER, BUS_TOPIC_PRESENCE, NULL};
    for (const char *const *t = control ? control_topics : stream_topics; *t != NULL; t++)
        if (zmq_setsockopt(sock, ZMQ_SUBSCRIBE, *t, strlen(*t)) != 0)
            return -1;
    return 0;
}

bus_sub *bus_sub_open(const char *endpoints, const char *server_keys, int options)
{
    static atomic_int monitor_seq;
    bus_sub *s = calloc(1, sizeof *s);
    int hwm = BUS_HWM, linger = 0;
    char *list = strdup(endpoints ? endpoints : ""), *save = NULL;
    char monitor_ep[64];
    if (s == NULL || list == NULL || bus_context() == NULL)
        goto fail;
    s->sock = zmq_socket(bus_context(), ZMQ_SUB);
    if (s->sock == NULL)
        goto fail;
    s->redundant = (options & BUS_SUB_REDUNDANT) != 0;
    if (zmq_setsockopt(s->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        sub_topics(s->sock, (options & BUS_SUB_CONTROL) != 0) != 0)
        goto fail;
    snprintf(monitor_ep, sizeof monitor_ep, "inproc://bus-monitor-%d", atomic_fetch_add(&monitor_seq, 1));
    if (zmq_socket_monitor(s->sock, monitor_ep,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0)
        goto fail;
    s->monitor = zmq_socket(bus_context(), ZMQ_PAIR);
    if (s->monitor == NULL || zmq_connect(s->monitor, monitor_ep) != 0)
        goto fail;
    s->inproc_only = 1;
    for (char *ep = strtok_r(list, ",", &save); ep != NULL; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (*ep == '\0')
            continue;
        char key_file[4096];
        if (bus_server_key_for(server_keys, s->endpoints, key_file, sizeof key_file) != 0 ||
            bus_curve_client(s->sock, ep, key_file) != 0)
            goto fail;
        if (zmq_connect(s->sock, ep) != 0) {
            log_error("bus: cannot connect to %s: %s", ep, zmq_strerror(zmq_errno()));
            goto fail;
        }
        s->endpoints++;
        if (strncmp(ep, "inproc://", 9) != 0)
            s->inproc_only = 0;
    }
    if (s->endpoints == 0) {
        log_error("bus: no endpoint to subscribe to");
        goto fail;
    }
    free(list);
    return s;
fail:
    free(list);
    bus_sub_close(s);
    return NULL;
}

void bus_sub_close(bus_sub *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < s->nframes; i++)
        zmq_msg_close(&s->frames[i]);
    if (s->monitor)
        zmq_close(s->monitor);
    if (s->sock)
        zmq_close(s->sock);
    free(s);
}

int bus_sub_fd(bus_sub *s)
{
    int fd = -1;
    size_t len = sizeof fd;
    zmq_getsockopt(s->sock, ZMQ_FD, &fd, &len);
    return fd;
}

int bus_sub_ready(bus_sub *s)
{
    if (s->inproc_only)
        return 1;
    /* Drain the monitor: each event is two frames (id+value, then address). */
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, s->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            break;
        }
        uint16_t id = 0;
        if (zmq_msg_size(&ev) >= 2)
            memcpy(&id, zmq_msg_data(&ev), 2);
        zmq_msg_close(&ev);
        zmq_msg_init(&addr);
        zmq_msg_recv(&addr, s->monitor, 0);
        if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
            log_warn("bus: %.*s refused this process's handshake (is its public key in that side's "
                     "--bus_trusted_keys, and --bus_server_key the server's?)",
                     (int)zmq_msg_size(&addr), (const char *)zmq_msg_data(&addr));
        zmq_msg_close(&addr);
        if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            s->connected++;
        else if (id == ZMQ_EVENT_DISCONNECTED && s->connected > 0)
            s->connected--;
    }
    return s->redundant ? s->connected > 0 : s->connected >= s->endpoints;
}

static int frame_is(const zmq_msg_t *m, const char *prefix)
{
    size_t n = strlen(prefix);
    return zmq_msg_size((zmq_msg_t *)m) >= n && memcmp(zmq_msg_data((zmq_msg_t *)m), prefix, n) == 0;
}

/* A tenant name as the store accepts it: 1-128 of [A-Za-z0-9_.-]. */
static int tenant_valid(const char *t, size_t len)
{
    if (len == 0 || len > 128)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* Text a peer may put in a name: not empty, no NUL, at most `max` bytes. */
static int name_valid(const zmq_msg_t *m, size_t max)
{
    size_t len = zmq_msg_size((zmq_msg_t *)m);
    return len > 0 && len <= max && memchr(zmq_msg_data((zmq_msg_t *)m), '\0', len) == NULL;
}

/* Usernames are 1-128 characters: at most 4 bytes each in UTF-8. */
#define USERNAME_BYTES_MAX 512

static int parse_event(zmq_msg_t *f, int n, bus_msg *msg)
{
    const char *topic = zmq_msg_data(&f[0]);
    size_t tlen = zmq_msg_size(&f[0]), plen = strlen(BUS_TOPIC_EVENT);
    uint64_t seq, ts;
    if (n != 4 || zmq_msg_size(&f[1]) != BUS_EVENT_HEADER_LEN || tlen < plen + 2 || topic[tlen - 1] != '/' ||
        !tenant_valid(topic + plen, tlen - plen - 1) || !name_valid(&f[2], BUS_EVENT_NAME_MAX) ||
        zmq_msg_size(&f[3]) == 0)
        return 0;
    memcpy(&seq, zmq_msg_data(&f[1]), 8);
    memcpy(&ts, (char *)zmq_msg_data(&f[1]) + 8, 8);
    msg->kind = BUS_EVENT;
    msg->tenant = topic + plen;
    msg->tenant_len = tlen - plen - 1;
    msg->seq = be64toh(seq);
    msg->ts_ms = (int64_t)be64toh(ts);
    msg->event = zmq_msg_data(&f[2]);
    msg->event_len = zmq_msg_size(&f[2]);
    msg->data = zmq_msg_data(&f[3]);
    msg->data_len = zmq_msg_size(&f[3]);
    return 1;
}

static int parse_user(zmq_msg_t *f, int n, bus_msg *msg)
{
    if (n != 3 || !name_valid(&f[1], USERNAME_BYTES_MAX) || zmq_msg_size(&f[2]) != 1)
        return 0;
    char flag = *(const char *)zmq_msg_data(&f[2]);
    if (flag != '0' && flag != '1')
        return 0;
    msg->kind = BUS_USER;
    msg->username = zmq_msg_data(&f[1]);
    msg->username_len = zmq_msg_size(&f[1]);
    msg->revoked = flag == '1';
    return 1;
}

static int parse_clock(zmq_msg_t *f, int n, bus_msg *msg)
{
    uint64_t v;
    if (n != 4 || zmq_msg_size(&f[1]) != 8 || zmq_msg_size(&f[2]) != 1 || zmq_msg_size(&f[3]) > BUS_CLOCK_REASON_MAX)
        return 0;
    memcpy(&v, zmq_msg_data(&f[1]), 8);
    msg->kind = BUS_CLOCK;
    msg->clock_offset_ms = (int64_t)be64toh(v);
    msg->clock_source = *(const char *)zmq_msg_data(&f[2]);
    memcpy(msg->clock_reason, zmq_msg_data(&f[3]), zmq_msg_size(&f[3]));
    msg->clock_reason[zmq_msg_size(&f[3])] = '\0';
    return msg->clock_source == 'N' || msg->clock_source == 'K' || msg->clock_source == 'H';
}

static int parse_cert(zmq_msg_t *f, int n, bus_msg *msg)
{
    if (n != 2 || zmq_msg_size(&f[1]) > BUS_CERT_PATH_MAX || memchr(zmq_msg_data(&f[1]), '\0', zmq_msg_size(&f[1])))
        return 0;
    msg->kind = BUS_CERT;
    memcpy(msg->cert_path, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]));
    msg->cert_path[zmq_msg_size(&f[1])] = '\0';
    return 1;
}

static int parse_presence(zmq_msg_t *f, int n, bus_msg *msg)
{
    if (n != 3 || zmq_msg_size(&f[0]) != strlen(BUS_TOPIC_PRESENCE) ||
        zmq_msg_size(&f[1]) != BUS_PRESENCE_HEADER_LEN || zmq_msg_size(&f[2]) == 0)
        return 0;
    const unsigned char *h = zmq_msg_data(&f[1]);
    uint64_t r, s;
    memcpy(&r, h, 8);
    memcpy(&s, h + 8, 8);
    if (h[16] != 'F' && h[16] != 'D')
        return 0;
    msg->kind = BUS_PRESENCE;
    msg->replica = be64toh(r);
    msg->replica_seq = be64toh(s);
    msg->full = h[16] == 'F';
    msg->data = zmq_msg_data(&f[2]);
    msg->data_len = zmq_msg_size(&f[2]);
    return 1;
}

int bus_sub_recv(bus_sub *s, bus_msg *msg)
{
    for (;;) {
        for (int i = 0; i < s->nframes; i++)
            zmq_msg_close(&s->frames[i]);
        s->nframes = 0;
        int more = 1, extra = 0;
        while (more) {
            zmq_msg_t frame;
            zmq_msg_init(&frame);
            if (zmq_msg_recv(&frame, s->sock, s->nframes == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                int err = zmq_errno();
                zmq_msg_close(&frame);
                if (s->nframes == 0 && err == EAGAIN)
                    return 0;
                log_error("bus: receive failed: %s", zmq_strerror(err));
                return -1;
            }
            more = zmq_msg_more(&frame);
            if (s->nframes < SUB_FRAMES)
                s->frames[s->nframes++] = frame;
            else
                zmq_msg_close(&frame), extra = 1;
        }
        memset(msg, 0, sizeof *msg);
        zmq_msg_t *f = s->frames;
        int n = extra ? SUB_FRAMES + 1 : s->nframes;
        if (frame_is(&f[0], BUS_TOPIC_EVENT) ? parse_event(f, n, msg)
            : frame_is(&f[0], BUS_TOPIC_USER) ? parse_user(f, n, msg)
            : frame_is(&f[0], BUS_TOPIC_CLOCK) ? parse_clock(f, n, msg)
            : frame_is(&f[0], BUS_TOPIC_CERT) ? parse_cert(f, n, msg)
            : frame_is(&f[0], BUS_TOPIC_PRESENCE) ? parse_presence(f, n, msg)
                                              : 0)
            return 1;
        log_warn("bus: dropped a malformed %.*s message (%d frames)", (int)(zmq_msg_size(&f[0]) < 16 ? zmq_msg_size(&f[0]) : 16),
                 (const char *)zmq_msg_data(&f[0]), n);
        if (malformed_total != NULL)
            atomic_fetch_add(malformed_total, 1);
    }
}
