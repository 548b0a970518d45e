/*
 * certd.h - network time and certificates, for every service of the process.
 *
 * certd keeps two promises: the broker tells time by the network, not by the
 * host's clock, and with --secure --auto_cert it gets and renews its own
 * certificate by ACME (RFC 8555, HTTP-01).  Each runs on a thread of its own,
 * since both wait on the network for seconds:
 *   certd_time.c       measures the clock's offset by SNTP (sntp.h) every
 *                      --ntp_interval and sets the process's corrected clock
 *                      (lib/clock.h);
 *   certd_cert.c       keeps the key and chain under --certs current: orders
 *                      a certificate when there is none, when it no longer
 *                      covers --domain, at two thirds of its lifetime or when
 *                      the CA's renewal information says so (acme.h);
 *   certd_challenge.c  answers GET /.well-known/acme-challenge/<token> in the
 *                      front door while an order waits for its validation.
 * In the all-in-one everything happens in-process: the clock is set and the
 * door reloads the new certificate directly.  As its own service
 * (broker-certd) it also publishes both on the bus (proto/proto_bus.h), and
 * every other service follows them (--bus_control, lib/runtime.c).
 */
#ifndef BROKER_CERTD_H
#define BROKER_CERTD_H

#include "bus.h"
#include "door.h"
#include "runtime.h"

typedef struct certd_options {
    /* Where to publish the clock and renewed certificates; NULL: nowhere
     * (the all-in-one, where they take effect in-process). */
    bus_pub *publish;
    /* Get and renew the certificate (--secure --auto_cert). */
    int manage_certificates;
} certd_options;

/* Plugs certd into the process's door (the challenge route; its threads
 * start now and stop at the door's shutdown).  SIGUSR1 renews the
 * certificate at once.  0, or -1 (logged). */
int certd_attach(door *d, broker_runtime *rt, const certd_options *options);

#endif
