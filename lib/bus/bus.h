/*
 * bus.h - publish and receive bus messages (proto/proto_bus.h) over ZeroMQ.
 *
 * A bus_pub binds one PUB socket and may be used from many threads (sends are
 * serialised by a mutex).  A bus_sub connects one SUB socket to one or more
 * publishers and belongs to one thread; its file descriptor goes into that
 * thread's epoll set (ZMQ_FD is edge-triggered: drain with bus_sub_recv()
 * until it returns 0 every time it fires).
 */
#ifndef BROKER_BUS_H
#define BROKER_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "proto_bus.h"

typedef struct bus_pub bus_pub;
typedef struct bus_sub bus_sub;

typedef enum bus_kind { BUS_EVENT = 1, BUS_USER = 2, BUS_CLOCK = 3, BUS_CERT = 4 } bus_kind;

/* A received message; its pointers are valid until the next bus_sub_recv(). */
typedef struct bus_msg {
    bus_kind kind;
    const char *tenant; /* BUS_EVENT: not NUL-terminated */
    size_t tenant_len;
    uint64_t seq;
    int64_t ts_ms;
    const char *event;
    size_t event_len;
    const char *data;
    size_t data_len;
    const char *username; /* BUS_USER: not NUL-terminated */
    size_t username_len;
    int revoked;
    int64_t clock_offset_ms; /* BUS_CLOCK */
    char clock_source;       /* BUS_CLOCK: 'N', 'K' or 'H' (clock_source) */
    char clock_reason[BUS_CLOCK_REASON_MAX + 1];
} bus_msg;

bus_pub *bus_pub_open(const char *endpoint);
void bus_pub_close(bus_pub *p);
int bus_publish_event(bus_pub *p, const char *tenant, uint64_t seq, int64_t ts_ms, const char *event,
                      const char *data, size_t data_len);
int bus_publish_user(bus_pub *p, const char *username, int revoked);
int bus_publish_clock(bus_pub *p, int64_t offset_ms, char source, const char *reason);
int bus_publish_cert(bus_pub *p, const char *cert_path);

/* endpoints: one or more, comma-separated. */
bus_sub *bus_sub_open(const char *endpoints);
void bus_sub_close(bus_sub *s);
int bus_sub_fd(bus_sub *s);
/* 1: *msg filled; 0: nothing pending; -1: error (logged). Malformed messages
 * are skipped and logged. */
int bus_sub_recv(bus_sub *s, bus_msg *msg);
/* 1 once every endpoint has completed its handshake (inproc: at once). */
int bus_sub_ready(bus_sub *s);

#endif
