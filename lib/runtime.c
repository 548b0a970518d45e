/*
 * runtime.c - common start-up and shutdown of a service process.
 */
#include "runtime.h"
#include "bus_curve.h"
#include "clock.h"
#include "health.h"
#include "email.h"
#include "log.h"
#include "metrics.h"
#include "password.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* How often the drain looks whether the door is done (door_drained). */
#define DRAIN_POLL_MS 100

int runtime_open_bare(broker_runtime *rt, int argc, char **argv, const char *service)
{
    memset(rt, 0, sizeof *rt);
    int rc = config_load(&rt->cfg, argc, argv, service);
    if (rc != 0)
        return rc;
    if (log_init(service, rt->cfg.log_level, rt->cfg.log_format) != 0) {
        fprintf(stderr, "%s: cannot start logging\n", service);
        config_free(&rt->cfg);
        return -1;
    }
    /* SIGINT/SIGTERM are taken by runtime_wait_for_signal(); block them before
     * any thread starts so that every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* Connections are descriptors: take the whole hard limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* A peer that closes its socket must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    bus_security_options bus = {.key_file = rt->cfg.bus_key_file, .trusted_keys = rt->cfg.bus_trusted_keys,
                                .certd_key = rt->cfg.bus_certd_key, .insecure = rt->cfg.bus_insecure};
    if (bus_security_init(&bus) != 0) {
        config_free(&rt->cfg);
        return -1;
    }
    return 0;
}

int runtime_open(broker_runtime *rt, int argc, char **argv, const char *service)
{
    int rc = runtime_open_bare(rt, argc, argv, service);
    if (rc != 0)
        return rc;
    config_warn_insecure(&rt->cfg);
    if (email_init() != 0)
        goto fail;
    const char *uri = rt->cfg.store[0] ? rt->cfg.store : rt->cfg.db;
    rt->store = store_open(uri);
    if (rt->store == NULL) {
        /* A URI may carry a password: never in the log. */
        log_error("cannot open the store '%s' (--store/--db)", strchr(uri, '@') ? "(a URI with credentials)" : uri);
        goto fail;
    }
    rt->basic_cache = credcache_new(4096, 300);
    if (rt->basic_cache == NULL)
        goto fail;
    authn_metrics_init();
    password_metrics_init();
    /* Each table holds this many keys at once; an attack spread wider
     * reuses the slots idle longest (ratelimit.h). */
    enum { LIMIT_SLOTS = 16384 };
    rt->failed_logins_by_ip = ratelimit_new("login_address", rt->cfg.login_limit_ip, LIMIT_SLOTS);
    rt->failed_admin_by_ip = ratelimit_new("admin_address", rt->cfg.admin_limit_ip, LIMIT_SLOTS);
    ratelimit *by_user = ratelimit_new("user", rt->cfg.login_limit_user, LIMIT_SLOTS);
    if ((rt->cfg.login_limit_ip > 0 && rt->failed_logins_by_ip == NULL) ||
        (rt->cfg.admin_limit_ip > 0 && rt->failed_admin_by_ip == NULL) || (rt->cfg.login_limit_user > 0 && by_user == NULL))
        goto fail;
    rt->authn = (authn){.store = rt->store, .jwt_secret = rt->cfg.jwt_secret, .basic_cache = rt->basic_cache,
                        .failed_by_user = by_user, .failed_by_address = rt->failed_logins_by_ip};
    return 0;
fail:
    runtime_close(rt);
    return -1;
}

static void publish_user_change(broker_runtime *rt, const char *username, int revoked, void *arg)
{
    (void)arg;
    bus_publish_user(rt->bus, username, revoked);
}

/* With --bus_forwarders a split service connects to every forwarder rather
 * than binding its own endpoint (inproc stays in-process). */
int runtime_open_bus(broker_runtime *rt, const char *endpoint)
{
    if (rt->cfg.bus_forwarders[0] != '\0' && strncmp(endpoint, "inproc://", 9) != 0) {
        char *forwarders = NULL;
        if (bus_forwarder_endpoints(rt->cfg.bus_forwarders, &forwarders, NULL) != 0)
            return -1;
        rt->bus = bus_pub_connect(forwarders, rt->cfg.bus_server_key);
        if (rt->bus != NULL)
            log_info("publishing to the bus forwarders %s", forwarders);
        free(forwarders);
    } else {
        rt->bus = bus_pub_open(endpoint);
        if (rt->bus != NULL && strncmp(endpoint, "inproc://", 9) != 0)
            log_info("publishing on %s", endpoint);
    }
    if (rt->bus == NULL)
        return -1;
    rt->user_changed = publish_user_change;
    return 0;
}

void runtime_close(broker_runtime *rt)
{
    bus_pub_close(rt->bus);
    rt->bus = NULL;
    credcache_free(rt->basic_cache);
    rt->basic_cache = NULL;
    ratelimit_free(rt->authn.failed_by_user);
    ratelimit_free(rt->failed_logins_by_ip);
    ratelimit_free(rt->failed_admin_by_ip);
    rt->authn.failed_by_user = rt->authn.failed_by_address = NULL;
    rt->failed_logins_by_ip = rt->failed_admin_by_ip = NULL;
    if (rt->store != NULL)
        store_close(rt->store);
    rt->store = NULL;
    config_free(&rt->cfg);
}

static void (*sigusr1_fn)(void *arg);
static void *sigusr1_arg;

void runtime_on_sigusr1(void (*fn)(void *arg), void *arg)
{
    sigusr1_fn = fn;
    sigusr1_arg = arg;
}

/* Waits for SIGINT or SIGTERM, at most `timeout_ms` when >= 0; SIGHUP and
 * SIGUSR1 meanwhile do their work.  The signal, or 0 when the time ran out. */
static int wait_signal(int64_t timeout_ms)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    int64_t until = door_now_ms() + timeout_ms;
    for (;;) {
        int sig = 0;
        if (timeout_ms < 0) {
            if (sigwait(&set, &sig) != 0)
                return SIGTERM;
        } else {
            int64_t left = until - door_now_ms();
            if (left <= 0)
                return 0;
            struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000L};
            sig = sigtimedwait(&set, NULL, &ts);
            if (sig < 0) {
                if (errno == EAGAIN)
                    return 0;
                continue; /* EINTR */
            }
        }
        if (sig == SIGINT || sig == SIGTERM)
            return sig;
        if (sig == SIGHUP) {
            log_info("SIGHUP: reloading the TLS certificate");
            door_reload_certificates();
        } else if (sigusr1_fn != NULL) {
            sigusr1_fn(sigusr1_arg);
        } else {
            log_info("SIGUSR1: nothing to do in this process");
        }
    }
}

int runtime_wait_for_signal(void)
{
    int sig = wait_signal(-1);
    log_info("signal %d: shutting down", sig);
    return sig;
}

/* After SIGTERM in a process that holds streams: the door drains them
 * (door_drain) over --drain_seconds.  Returns when nothing is left to wait
 * for, when the window is over, or at once on a second SIGTERM or a SIGINT
 * (an operator who does not want to wait). */
static void drain(door *d, long seconds)
{
    int64_t start = door_now_ms(), deadline = start + (int64_t)seconds * 1000;
    log_info("draining for %ld s at most: /readyz and new streams answer 503, open streams are closed "
             "spread over the window; a second SIGTERM or SIGINT stops at once", seconds);
    for (;;) {
        /* door_drained is read once the door has looked (a tick after the start). */
        if (door_drained(d)) {
            log_info("drained in %lld ms: no stream and no request left", (long long)(door_now_ms() - start));
            return;
        }
        int64_t left = deadline - door_now_ms();
        if (left <= 0) {
            log_info("the drain window (%ld s) is over: stopping", seconds);
            return;
        }
        int sig = wait_signal(left < DRAIN_POLL_MS ? left : DRAIN_POLL_MS);
        if (sig != 0) {
            log_info("signal %d during the drain: stopping at once", sig);
            return;
        }
    }
}

typedef struct control_follower {
    bus_sub *sub;
    const broker_config *cfg;
    metric_value *dropped;
} control_follower;

/* A ctl/cert may name no path, or one under this process's --certs or its
 * --cert_path itself: the reload always reads this process's own paths, and
 * a message naming any other place is not certd's. */
static int cert_path_ours(const broker_config *cfg, const char *path)
{
    size_t n = strlen(cfg->certs);
    if (path[0] == '\0' || strcmp(path, cfg->cert_path) == 0)
        return 1;
    if (strstr(path, "/../") != NULL || strncmp(path, "../", 3) == 0)
        return 0;
    return n > 0 && strncmp(path, cfg->certs, n) == 0 && (path[n] == '/' || cfg->certs[n - 1] == '/');
}

/* certd's control messages (split mode): the clock offset and renewed
 * certificates.  Even on an authenticated link they are checked: an offset
 * certd itself would refuse (--ntp_max_offset) or a certificate path that
 * is not this process's is dropped and counted.  ZMQ_FD is edge-triggered,
 * so every wake-up drains it; the messages are few and small. */
static void on_control(void *arg)
{
    control_follower *c = arg;
    bus_msg m;
    while (bus_sub_recv(c->sub, &m) > 0) {
        if (m.kind == BUS_CLOCK) {
            int64_t limit_ms = (int64_t)c->cfg->ntp_max_offset * 1000;
            if (m.clock_offset_ms > limit_ms || m.clock_offset_ms < -limit_ms) {
                log_warn("bus: dropped a clock offset of %lld ms: beyond --ntp_max_offset (%ld s)",
                         (long long)m.clock_offset_ms, c->cfg->ntp_max_offset);
                atomic_fetch_add(c->dropped, 1);
                continue;
            }
            clock_set_state(m.clock_offset_ms, (clock_source)m.clock_source, m.clock_reason);
        } else if (m.kind == BUS_CERT) {
            /* The reload reads this process's own --cert_path and --key_path,
             * never the path named; one naming another place is not certd's. */
            if (!cert_path_ours(c->cfg, m.cert_path)) {
                log_warn("bus: dropped a certificate renewal naming %s: not under --certs %s", m.cert_path,
                         c->cfg->certs);
                atomic_fetch_add(c->dropped, 1);
                continue;
            }
            log_info("certd renewed the certificate: reloading it");
            door_reload_certificates();
        }
    }
}

static void control_close(void *arg)
{
    control_follower *c = arg;
    bus_sub_close(c->sub);
    free(c);
}

/* certd's control messages come from --bus_control (certd's own key is the
 * server key there), or through the bus forwarders when there are some
 * (certd publishes to them like any other publisher; they check it is
 * certd).  Nothing to follow when neither is set. */
static int follow_control(door *d, const broker_config *cfg)
{
    char *forwarded = NULL;
    const char *endpoints = cfg->bus_control, *server_key = cfg->bus_certd_key;
    int options = BUS_SUB_CONTROL;
    if (cfg->bus_forwarders[0] != '\0') {
        if (bus_forwarder_endpoints(cfg->bus_forwarders, NULL, &forwarded) != 0)
            return -1;
        endpoints = forwarded;
        server_key = cfg->bus_server_key;
        options |= BUS_SUB_REDUNDANT;
    }
    if (endpoints[0] == '\0')
        return 0;
    control_follower *c = calloc(1, sizeof *c);
    if (c == NULL || (c->sub = bus_sub_open(endpoints, server_key, options)) == NULL) {
        free(c);
        free(forwarded);
        return -1;
    }
    c->cfg = cfg;
    c->dropped = metrics_counter("broker_bus_control_dropped_total",
                                 "control messages dropped: a clock offset beyond --ntp_max_offset, or a certificate path not under --certs");
    if (door_watch(d, bus_sub_fd(c->sub), on_control, c) != 0 || door_on_shutdown(d, NULL, control_close, c) != 0) {
        control_close(c);
        free(forwarded);
        return -1;
    }
    log_info("following certd's control messages on %s", endpoints);
    free(forwarded);
    return 0;
}

int runtime_serve(broker_runtime *rt, http_server *http, size_t conn_extra, int reuse_port,
                  int (*attach)(door *d, broker_runtime *rt, void *arg), void *arg, const char *service)
{
    if (http_server_add_door_paths(http, health_paths) != 0 || http_server_start(http) != 0)
        return -1;
    door *d = door_new(&rt->cfg, http, conn_extra, reuse_port);
    if (d == NULL)
        return -1;
    if (health_attach(d, rt) != 0 || (!rt->control_source && follow_control(d, &rt->cfg) != 0) ||
        (attach != NULL && attach(d, rt, arg) != 0) || door_start(d) != 0) {
        door_free(d);
        return -1;
    }
    http_server_log_urls(http, service);
    door_log_listening(d, service);
    log_info("%s listening on %s:%ld (store: %s)", service, rt->cfg.bind, rt->cfg.port,
             rt->store != NULL ? rt->store->ops->name : "none");
    if (runtime_wait_for_signal() == SIGTERM && rt->cfg.drain_seconds > 0 &&
        door_drain(d, (int64_t)rt->cfg.drain_seconds * 1000))
        drain(d, rt->cfg.drain_seconds);
    door_free(d);
    password_stop_waiting();
    return 0;
}

int runtime_serve_http(int argc, char **argv, const char *service, const char *default_bus,
                       int (*add_routes)(http_server *s, broker_runtime *rt))
{
    broker_runtime rt;
    http_server http;
    int rc = runtime_open(&rt, argc, argv, service);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    const char *bus = rt.cfg.bus_publish[0] ? rt.cfg.bus_publish : default_bus;
    int status = 1;
    if (runtime_open_bus(&rt, bus) == 0 && http_server_init(&http, &rt.cfg) == 0) {
        if (add_routes(&http, &rt) == 0 &&
            runtime_serve(&rt, &http, 0, 0, NULL, NULL, service) == 0)
            status = 0;
        http_server_stop(&http);
    }
    runtime_close(&rt);
    return status;
}
