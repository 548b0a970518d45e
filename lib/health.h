/*
 * health.h - GET and HEAD of /healthz, /readyz and / (the health body), and
 * GET /metrics, answered by the front door itself.
 *
 * They are what an orchestrator probes and a dashboard scrapes, so they
 * never wait behind the request/response server: a flood of logins there
 * (each an Argon2id verification) must not make a liveness probe time out
 * and restart a broker that is only busy.  The door's thread answers them at
 * once.  What readiness asks of the store (a round trip; a small write after
 * a failed one) is asked on a thread of its own every HEALTH_CHECK_MS, and
 * /readyz answers with the last verdict; the process's own checks
 * (rt->ready_check, the clock) are read when it is asked.  From SIGTERM on
 * (door_draining) /readyz answers 503 whatever else holds.
 */
#ifndef BROKER_HEALTH_H
#define BROKER_HEALTH_H

#include "door.h"
#include "runtime.h"

#define HEALTH_CHECK_MS 2000

/* The paths health_attach() serves (NULL-ended), for the request/response
 * server's 405 (http_server_add_door_paths). */
extern const char *const health_paths[];

/* Adds the routes to `d` and starts the store's checker (stopped by
 * door_free).  0, or -1 (logged). */
int health_attach(door *d, broker_runtime *rt);

#endif
