/*
 * proto/proto_bus.h - the bus envelope: what travels between services over ZeroMQ
 * PUB/SUB.  Shared by every service; change it only together with all of them.
 *
 * Topics (first frame; ZeroMQ subscriptions match it by prefix):
 *   "ev/<tenant>/"   an event of <tenant>.  Tenant names are [A-Za-z0-9_.-],
 *                    so the closing '/' makes sure no tenant's topic is a
 *                    prefix of another's ("ev/t_1/" vs "ev/t_10/").
 *   "ctl/user/"      a user was revoked, unrevoked or updated: open streams of
 *                    that user close, caches drop it.
 *   "ctl/clock/"     the network-corrected clock offset (from certd).
 *   "ctl/cert/"      a certificate was renewed (from certd).
 *   "pr/"            who is online: a stream replica's streams per user.
 *
 * Frames of an event message:
 *   1. topic          "ev/<tenant>/"
 *   2. header         16 bytes: seq (uint64, big-endian), ts_ms (int64, big-endian)
 *   3. event name     UTF-8, 1..256 bytes
 *   4. data           compact JSON text
 * `seq` is the per-tenant sequence allocated by the store with the write: a
 * subscriber that sees seq jump past last+1 has missed events and fills the
 * gap from the store; seq <= last is a duplicate and is dropped.
 *
 * Frames of "ctl/user/": 2. username  3. one byte, '1' revoked or '0' not.
 * Frames of "ctl/clock/": 2. offset in ms to add to the host clock, int64
 *   big-endian; 3. its source, one byte: 'N' a fresh network measurement,
 *   'K' the last one kept (no server answered since), 'H' the host clock
 *   (offset meaningless); 4. why it is not fresh network time, UTF-8 text,
 *   empty when it is.  certd sends it after every measurement and again
 *   every few seconds, so that a process that starts later learns it soon.
 * Frames of "ctl/cert/": 2. the certificate's path: certd wrote a new key and
 *   chain there; every TLS listener loads them again.
 *
 * Frames of "pr/": 2. header, 17 bytes: the replica's id (uint64, random at
 *   start), its message number (uint64, counting up from 1; both
 *   big-endian) and 'F' (its full list: forget what it said before) or 'D'
 *   (changes only); 3. JSON {"<tenant>": {"<username>": <streams>, ...}, ...},
 *   a count of 0 in a change meaning the user has none there any more.  A
 *   replica sends its changes every quarter second and its full list every
 *   few seconds; one not heard from for longer than a few of those is gone,
 *   and so are its users.  Only with bus forwarders, which carry it from
 *   every stream replica to every other; a message that comes twice (once
 *   per forwarder) or late is known by its number.
 *
 * Endpoints: the all-in-one uses "inproc://broker-bus" (and its certd part
 * sets the clock and reloads certificates in-process: no control messages).
 * A split deployment binds each publisher on tcp (ingest on tcp port 5556,
 * auth on 5557, certd on 5558); every stream process connects to ingest and
 * auth (--bus_subscribe) and every service to certd (--bus_control).
 *
 * With bus forwarders (--bus_forwarders, the broker-bus service), no service
 * binds or knows another: each forwarder binds an XSUB socket on
 * BUS_FORWARDER_PORT (its publishers' side) and an XPUB socket on the next
 * port (its subscribers' side).  Every publisher (ingest, auth, certd)
 * connects to the publishers' side of every forwarder, every subscriber
 * (stream, and every service for certd's control messages) to the
 * subscribers' side of every forwarder.  So ingest and stream may each be
 * replicated, and two forwarders leave no single point of failure: a
 * subscriber gets each message once per forwarder up, drops events it already
 * has by their seq, and takes user, clock and certificate messages twice,
 * which changes nothing since each says a state.
 */
#ifndef BROKER_PROTO_BUS_H
#define BROKER_PROTO_BUS_H

#define BUS_TOPIC_EVENT "ev/"
#define BUS_TOPIC_USER "ctl/user/"
#define BUS_TOPIC_CLOCK "ctl/clock/"
#define BUS_TOPIC_CERT "ctl/cert/"
#define BUS_TOPIC_PRESENCE "pr/"
#define BUS_PRESENCE_HEADER_LEN 17
#define BUS_INPROC_ENDPOINT "inproc://broker-bus"
/* A bus forwarder's publishers' side (XSUB); its subscribers' side (XPUB) is
 * the next port. */
#define BUS_FORWARDER_PORT 5559
#define BUS_EVENT_HEADER_LEN 16
#define BUS_EVENT_NAME_MAX 256
#define BUS_CLOCK_REASON_MAX 511

#endif
