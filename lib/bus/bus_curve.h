/*
 * bus_curve.h - who may speak on the bus: CURVE keys and the ZAP handler.
 *
 * In the split deployment every tcp:// (or ipc://) link of the bus is
 * CurveZMQ: each process has a key pair (--bus_key_file), a binding socket
 * is a CURVE server that accepts only the client keys of an allowlist
 * (--bus_trusted_keys, through a ZAP handler on inproc://zeromq.zap.01 of
 * its context), and a connecting socket is a CURVE client that knows the
 * public key of the server it connects to (--bus_server_key,
 * --bus_control_key), so it cannot be handed to an impostor either.
 * Without a key pair the bus runs in the clear, which is only allowed on
 * loopback endpoints unless --bus_insecure says otherwise; inproc:// (the
 * all-in-one) needs nothing.
 *
 * Keys live in files, never on the command line.  A key pair file holds
 *     public-key = "<40 Z85 characters>"
 *     secret-key = "<40 Z85 characters>"
 * (what zmq_curve_keypair() makes; broker-keygen writes one, mode 0600, and
 * the public half beside it as PATH.pub).  A public key file holds the
 * public-key line, or the bare key; an allowlist is such a file with one key
 * per line, or a directory of them.
 */
#ifndef BROKER_BUS_CURVE_H
#define BROKER_BUS_CURVE_H

#include <stddef.h>

/* A Z85 key's length, and its buffer with the NUL. */
#define BUS_KEY_TEXT 40
#define BUS_KEY_SIZE (BUS_KEY_TEXT + 1)

typedef struct bus_security_options {
    const char *key_file;     /* this process's key pair; "" = no CURVE */
    const char *trusted_keys; /* allowlist (file or directory) of the client keys a binding socket accepts */
    const char *certd_key;    /* certd's public key file: at a forwarder, the only publisher of ctl/clock and ctl/cert */
    int insecure;             /* no keys on a non-loopback endpoint is allowed */
} bus_security_options;

/* Loads this process's key pair and checks the allowlist once.  Called once
 * at start, before any bus socket is made.  0, or -1 (logged). */
int bus_security_init(const bus_security_options *o);
/* 1 when the bus uses CURVE (a key pair was loaded). */
int bus_curve_enabled(void);

/* Makes `sock` (not bound yet) a CURVE server for `endpoint` when keys are
 * set, after starting the ZAP handler of `context` if needed; without keys
 * refuses a non-loopback endpoint unless --bus_insecure.  0 or -1 (logged). */
int bus_curve_server(void *context, void *sock, const char *endpoint);
/* Makes `sock` a CURVE client of the server whose public key is in
 * `server_key_file` for its next zmq_connect() to `endpoint`; the same
 * loopback rule without keys.  0 or -1 (logged). */
int bus_curve_client(void *sock, const char *endpoint, const char *server_key_file);

/* The comma-separated `files` entry for the i-th endpoint: the i-th file,
 * or the only one when there is one.  Copies it into `out`; "" when `files`
 * is empty.  0, or -1 when the list is shorter than the endpoints. */
int bus_server_key_for(const char *files, int index, char *out, size_t size);

/* The Z85 public key of certd (--bus_certd_key) in `out`; 0, or -1 when
 * none is set. */
int bus_certd_key(char out[BUS_KEY_SIZE]);

/* Stops the ZAP handler of `context` (after zmq_ctx_term of the context has
 * begun or ended: the handler ends with it). */
void bus_zap_stop(void *context);

/* Writes a new key pair to `path` (mode 0600, never over an existing file)
 * and its public half to `path`.pub.  0, or -1 with the reason on stderr. */
int bus_keygen(const char *path);

#endif
