/*
 * runtime.h - what every service process holds: its flags, its store, its
 * credential checker, and hooks the services fill in.
 *
 * runtime_open() does the common start-up (flags, logging, warnings, store,
 * e-mail lists) so that each main() is a few lines.
 */
#ifndef BROKER_RUNTIME_H
#define BROKER_RUNTIME_H

#include "authn.h"
#include "bus.h"
#include "config.h"
#include "credcache.h"
#include "door.h"
#include "http.h"
#include "store.h"

typedef struct broker_runtime broker_runtime;

struct broker_runtime {
    broker_config cfg;
    store *store;
    credcache *basic_cache;
    authn authn;
    /* Failed logins and wrong admin_tokens per client address (NULL = no
     * limit); failed password checks per username live in authn. */
    ratelimit *failed_logins_by_ip, *failed_admin_by_ip;
    /* The publisher of this process's bus messages (events from ingest,
     * user changes from auth); NULL when the process publishes nothing. */
    bus_pub *bus;
    /* Called after a user is revoked, unrevoked or updated, so that other
     * parts (the bus, open streams, other processes' caches) can react.
     * NULL when nothing listens. */
    void (*user_changed)(broker_runtime *rt, const char *username, int revoked, void *arg);
    void *user_changed_arg;
    /* Extra readiness check (the bus); NULL = none.  Returns NULL when ready,
     * else a static reason. */
    const char *(*ready_check)(broker_runtime *rt, void *arg);
    void *ready_check_arg;
    /* This process is where control messages come from (certd): it does
     * not follow them. */
    int control_source;
};

/* Returns 0 when running; 1 when --help was printed; -1 on a start-up error
 * (already reported). */
int runtime_open(broker_runtime *rt, int argc, char **argv, const char *service);
/* The same without the store, e-mail lists and credential checks, for a
 * service that has no users or events (certd); rt->store stays NULL. */
int runtime_open_bare(broker_runtime *rt, int argc, char **argv, const char *service);
void runtime_close(broker_runtime *rt);

/* Opens rt->bus on `endpoint` (--bus_publish, or inproc in the all-in-one)
 * and makes user changes travel on it.  Returns 0 or -1 (logged). */
int runtime_open_bus(broker_runtime *rt, const char *endpoint);

/* Serves the port until SIGTERM/SIGINT: a front door (door.h) on
 * --bind:--port that answers the health routes itself (health.h) and hands
 * what no route takes to `http` (set up with its routes, not started yet),
 * following certd's control messages on --bus_control when set, with `attach` (NULL: none) plugging the
 * process's services into it; `conn_extra` is what they keep per connection
 * (door_new).  reuse_port: several processes share the port.  SIGHUP reloads
 * the TLS certificate.  On SIGTERM, a process whose services hold streams
 * drains (door_drain) for --drain_seconds at most: /readyz answers 503 at
 * once, and the process stops once its streams and requests are gone, at the
 * window's end, or at a second SIGTERM or a SIGINT; without streams, and on
 * a first SIGINT, it stops at once.  0, or -1 when it could not start
 * (logged). */
int runtime_serve(broker_runtime *rt, http_server *http, size_t conn_extra, int reuse_port,
                  int (*attach)(door *d, broker_runtime *rt, void *arg), void *arg, const char *service);

/* The whole life of a request/response service (auth): opens the bus
 * publisher on --bus_publish (or `default_bus`), serves the health routes
 * and those `add_routes` adds through runtime_serve(), then closes
 * everything.  Returns the process exit status. */
int runtime_serve_http(int argc, char **argv, const char *service, const char *default_bus,
                       int (*add_routes)(http_server *s, broker_runtime *rt));

/* Blocks until SIGINT or SIGTERM, and returns which; SIGHUP meanwhile
 * reloads certificates, SIGUSR1 calls what runtime_on_sigusr1() set. */
int runtime_wait_for_signal(void);
/* What SIGUSR1 does in this process (certd: renew the certificate now). */
void runtime_on_sigusr1(void (*fn)(void *arg), void *arg);

#endif
