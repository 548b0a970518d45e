/*
 * health.c - see health.h.
 */
#include "health.h"
#include "clock.h"
#include "http.h"
#include "http_answer.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct health {
    broker_runtime *rt;
    door *door;
    pthread_t thread;
    int started;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;
    int stop;
    store_status store; /* the last check's */
} health;

static store_status check_store(const broker_runtime *rt)
{
    return rt->store != NULL ? store_ping(rt->store) : STORE_OK;
}

static void *checker(void *arg)
{
    health *h = arg;
    pthread_mutex_lock(&h->lock);
    while (!h->stop) {
        pthread_mutex_unlock(&h->lock);
        store_status st = check_store(h->rt);
        pthread_mutex_lock(&h->lock);
        h->store = st;
        struct timespec until = clock_mono_after_ms(HEALTH_CHECK_MS);
        while (!h->stop && pthread_cond_timedwait(&h->wake, &h->lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

static void health_stop(void *arg)
{
    health *h = arg;
    if (!h->started)
        return;
    pthread_mutex_lock(&h->lock);
    h->stop = 1;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    h->started = 0;
}

static void health_release(void *arg)
{
    health *h = arg;
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* Writes the whole answer (a HEAD's without its body) and lets the door go on. */
static int answer(const health *h, door_conn *c, const door_request *req, unsigned status,
                  const char *content_type, const char *body, size_t body_len)
{
    (void)h;
    http_answer a = {.status = status, .request_id = req->request_id, .content_type = content_type,
                     .body = body, .body_len = body_len, .close = !req->head->keep_alive};
    door_conn_answer(c, &a, http_head_is(req->head, "HEAD", "", 1));
    return 1;
}

static int answer_json(const health *h, door_conn *c, const door_request *req, unsigned status, json_t *body)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        door_conn_refuse(c, 503, req->request_id, NULL, "the server is out of memory; retry");
        return 1;
    }
    answer(h, c, req, status, "application/json", text, strlen(text));
    free(text);
    return 1;
}

static int route_healthz(door_conn *c, const door_request *req, void *arg)
{
    return answer_json(arg, c, req, 200, json_pack("{s:s,s:s}", "status", "ok", "version", BROKER_VERSION));
}

/* How this process tells time: ready either way, with the reason when it is
 * not fresh network time. */
static json_t *clock_json(void)
{
    char reason[512];
    clock_source src = clock_state(reason, sizeof reason);
    const char *name = src == CLOCK_SOURCE_NETWORK ? "network" : src == CLOCK_SOURCE_KEPT ? "network-kept" : "host";
    json_t *j = json_pack("{s:s,s:I}", "source", name, "offset_ms", (json_int_t)clock_offset_ms());
    if (j != NULL && reason[0] != '\0')
        json_object_set_new(j, "warning", json_string(reason));
    return j;
}

static json_t *unavailable(const char *why)
{
    return json_pack("{s:s,s:s}", "status", "unavailable", "error", why);
}

static int route_readyz(door_conn *c, const door_request *req, void *arg)
{
    health *h = arg;
    broker_runtime *rt = h->rt;
    /* First: a load balancer must stop sending new clients here at once. */
    if (door_draining(h->door))
        return answer_json(h, c, req, 503, unavailable("the process is shutting down (SIGTERM)"));
    pthread_mutex_lock(&h->lock);
    store_status st = h->store;
    pthread_mutex_unlock(&h->lock);
    if (st == STORE_FULL)
        return answer_json(h, c, req, 503,
                           unavailable("the store's disk is full: an insert failed for lack of space, and one as "
                                       "large would fail again (see the log)"));
    if (st != STORE_OK)
        return answer_json(h, c, req, 503, unavailable("the store does not answer or cannot write (see the log)"));
    const char *why = rt->ready_check != NULL ? rt->ready_check(rt, rt->ready_check_arg) : NULL;
    if (why != NULL)
        return answer_json(h, c, req, 503, unavailable(why));
    return answer_json(h, c, req, 200, json_pack("{s:s,s:o}", "status", "ready", "clock", clock_json()));
}

static int route_metrics(door_conn *c, const door_request *req, void *arg)
{
    char *text = metrics_render();
    if (text == NULL) {
        door_conn_refuse(c, 500, req->request_id, NULL, "could not render metrics");
        return 1;
    }
    answer(arg, c, req, 200, "text/plain; version=0.0.4", text, strlen(text));
    free(text);
    return 1;
}

const char *const health_paths[] = {"/healthz", "/readyz", "/metrics", "/", NULL};

int health_attach(door *d, broker_runtime *rt)
{
    health *h = calloc(1, sizeof *h);
    if (h == NULL)
        return -1;
    h->rt = rt;
    h->door = d;
    pthread_mutex_init(&h->lock, NULL);
    if (clock_cond_init(&h->wake) != 0) {
        pthread_mutex_destroy(&h->lock);
        free(h);
        return -1;
    }
    h->store = check_store(rt); /* known before the first probe comes */
    if (door_on_shutdown(d, health_stop, health_release, h) != 0) {
        health_release(h);
        return -1;
    }
    static const struct {
        const char *method, *path;
        door_route_fn fn;
    } routes[] = {
        {"GET", "/healthz", route_healthz}, {"HEAD", "/healthz", route_healthz}, {"GET", "/", route_healthz},
        {"HEAD", "/", route_healthz},       {"GET", "/readyz", route_readyz},    {"HEAD", "/readyz", route_readyz},
        {"GET", "/metrics", route_metrics},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (door_route_add(d, routes[i].method, routes[i].path, 0, routes[i].fn, h) != 0) {
            log_error("health: the front door has no room for its routes");
            return -1;
        }
    if (pthread_create(&h->thread, NULL, checker, h) != 0) {
        log_error("health: cannot start the store's checker");
        return -1;
    }
    h->started = 1;
    return 0;
}
