/*
 * bus.h - publish and receive bus messages (proto/proto_bus.h) over ZeroMQ,
 * and forward them (a bus forwarder, the broker-bus service).
 *
 * A bus_pub either binds one PUB socket (bus_pub_open: subscribers connect to
 * each publisher) or connects it to every bus forwarder (bus_pub_connect: a
 * PUB connected to several forwarders sends every message to each), and may
 * be used from many threads (sends are serialised by a mutex).  A bus_sub
 * connects one SUB socket to one or more endpoints and belongs to one thread;
 * its file descriptor goes into that thread's epoll set (ZMQ_FD is
 * edge-triggered: drain with bus_sub_recv() until it returns 0 every time it
 * fires).
 *
 * ZeroMQ lives in lib/bus/ only: bus_zmq.c (publishers and subscribers) and
 * bus_forwarder.c (the forwarder and the --bus_forwarders list).
 */
#ifndef BROKER_BUS_H
#define BROKER_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "proto_bus.h"

/* Messages a socket queues per peer, raised from ZeroMQ's default: a burst
 * of inserts must not be dropped just because a subscriber is busy for a
 * moment.  Whatever is still dropped shows up as a sequence gap at the
 * subscriber, which refills it from the store. */
#define BUS_HWM 200000

/* The longest certificate path a ctl/cert message may name. */
#define BUS_CERT_PATH_MAX 1023

typedef struct bus_pub bus_pub;
typedef struct bus_sub bus_sub;
typedef struct bus_forwarder bus_forwarder;

typedef enum bus_kind { BUS_EVENT = 1, BUS_USER = 2, BUS_CLOCK = 3, BUS_CERT = 4, BUS_PRESENCE = 5 } bus_kind;

/* A received message; its pointers are valid until the next bus_sub_recv(). */
typedef struct bus_msg {
    bus_kind kind;
    const char *tenant; /* BUS_EVENT: not NUL-terminated */
    size_t tenant_len;
    uint64_t seq;
    int64_t ts_ms;
    const char *event;
    size_t event_len;
    const char *data; /* BUS_EVENT, BUS_PRESENCE: not NUL-terminated */
    size_t data_len;
    uint64_t replica;  /* BUS_PRESENCE: the sender, */
    uint64_t replica_seq; /* its message number, */
    int full;             /* and whether it is its whole list */
    const char *username; /* BUS_USER: not NUL-terminated */
    size_t username_len;
    int revoked;
    int64_t clock_offset_ms; /* BUS_CLOCK */
    char clock_source;       /* BUS_CLOCK: 'N', 'K' or 'H' (clock_source) */
    char clock_reason[BUS_CLOCK_REASON_MAX + 1];
    char cert_path[BUS_CERT_PATH_MAX + 1]; /* BUS_CERT: "" when it names none */
} bus_msg;

/* Binds `endpoint` (a CURVE server when bus_security_init() loaded keys:
 * bus_curve.h). */
bus_pub *bus_pub_open(const char *endpoint);
/* Connects to every endpoint of `endpoints` (comma-separated): the
 * publishers' sides of the bus forwarders.  Messages go only to forwarders
 * connected at the time: one that is down gets nothing queued for it.
 * server_keys: with CURVE, the public key files of the servers (one for
 * all, or one per endpoint in order, comma-separated); else NULL or "". */
bus_pub *bus_pub_connect(const char *endpoints, const char *server_keys);
void bus_pub_close(bus_pub *p);
int bus_publish_event(bus_pub *p, const char *tenant, uint64_t seq, int64_t ts_ms, const char *event,
                      const char *data, size_t data_len);
int bus_publish_user(bus_pub *p, const char *username, int revoked);
int bus_publish_clock(bus_pub *p, int64_t offset_ms, char source, const char *reason);
int bus_publish_cert(bus_pub *p, const char *cert_path);
int bus_publish_presence(bus_pub *p, uint64_t replica, uint64_t seq, int full, const char *json, size_t len);

/* bus_sub_open() options, or-ed. */
enum {
    /* The endpoints carry the same messages (bus forwarders): the subscriber
     * is ready once any one is connected, and receives most messages once per
     * connected endpoint (events are told apart by their sequence; user,
     * clock and certificate messages say a state, so a second copy changes
     * nothing).  Without it, the endpoints are distinct publishers and all of
     * them must be connected. */
    BUS_SUB_REDUNDANT = 1,
    /* Only certd's control messages (clock, certificates), not events or
     * user changes: what a service that follows certd needs. */
    BUS_SUB_CONTROL = 2,
};

/* endpoints: one or more, comma-separated; server_keys as for
 * bus_pub_connect(); options: BUS_SUB_* or 0. */
bus_sub *bus_sub_open(const char *endpoints, const char *server_keys, int options);
void bus_sub_close(bus_sub *s);
int bus_sub_fd(bus_sub *s);
/* 1: *msg filled; 0: nothing pending; -1: error (logged). Malformed messages
 * (a bad frame count or size, a tenant, event name or username that is not
 * one, an unknown revoked flag or clock source) are dropped, logged and
 * counted in broker_bus_malformed_total. */
int bus_sub_recv(bus_sub *s, bus_msg *msg);
/* 1 once every endpoint (BUS_SUB_REDUNDANT: any endpoint) has completed its
 * handshake (inproc: at once). */
int bus_sub_ready(bus_sub *s);

/* Turns --bus_forwarders ("host[:port]" entries, comma-separated; the port
 * BUS_FORWARDER_PORT by default) into the endpoints publishers connect to
 * (*publish: "tcp://host:port,...") and those subscribers connect to
 * (*subscribe: port + 1), each malloc'd; either pointer may be NULL when
 * that list is not wanted.  0, or -1 with the bad entry logged. */
int bus_forwarder_endpoints(const char *forwarders, char **publish, char **subscribe);

/* Binds an XSUB socket on `frontend` (publishers connect to it) and an XPUB
 * socket on `backend` (subscribers connect to it) and forwards everything
 * from one to the other, and subscriptions back, on a thread of its own.
 * NULL when a socket cannot be bound or the thread cannot start (logged). */
bus_forwarder *bus_forwarder_start(const char *frontend, const char *backend);
/* Messages received from publishers so far (read from the running proxy;
 * not from two threads at once).  0, or -1 when it did not answer. */
int bus_forwarder_received(bus_forwarder *f, uint64_t *messages);
/* Stops the thread, closes everything; NULL is a no-op. */
void bus_forwarder_stop(bus_forwarder *f);

#endif
