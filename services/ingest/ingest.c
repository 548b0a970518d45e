/*
 * ingest.c - POST /insert.
 *
 * The event is answered only once the store has it on disk (the store
 * allocates the tenant's sequence in the same transaction), and published
 * after that.  Concurrent inserts of one tenant may reach the bus out of
 * sequence order; subscribers put them back in order (a gap is filled from
 * the store, a late duplicate dropped), so no lock is held across the two.
 *
 * Event names: 1..256 bytes of UTF-8 without control characters (a newline
 * would break SSE framing).  data: any JSON value, null included; it is
 * stored and sent as compact JSON, which never contains a raw newline.
 */
#include "ingest.h"
#include "event_name.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "proto_bus.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static metric_value *inserted_total, *publish_failed_total;
/* One batch is one store write (one commit, flush included): the operator's
 * view of what the disk costs.  Mean batch = inserted / batches; mean write
 * time = microseconds / batches. */
static metric_value *write_batches_total, *write_us_total;

static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    inserted_total = metrics_counter("broker_events_inserted_total", "events stored and answered");
    publish_failed_total = metrics_counter("broker_bus_publish_failed_total", "stored events the bus refused");
    write_batches_total = metrics_counter("broker_store_write_batches_total",
                                          "batches of inserts written to the store, one commit each");
    write_us_total = metrics_counter("broker_store_write_microseconds_total",
                                     "time spent writing those batches, the flush to disk included");
}

/* Both insert paths count into the same metrics, whichever starts first. */
void ingest_metrics_init(void)
{
    pthread_once(&metrics_once, metrics_init);
}

int ingest_prepare(broker_runtime *rt, const char *authorization, const char *address, const char *body, size_t len,
                   ingest_item *item, struct _u_response *resp)
{
    const char *why = NULL;
    authn_identity who;
    authn_result r = authn_check(&rt->authn, authorization, NULL, address, &who, &why);
    if (r != AUTHN_OK) {
        memset(item, 0, sizeof *item);
        authn_reply_refusal(resp, r, why);
        return -1;
    }
    return ingest_prepare_as(&who, body, len, (size_t)rt->cfg.max_event_bytes, item, resp);
}

int ingest_prepare_as(const authn_identity *who, const char *body, size_t len, size_t max_event_bytes, ingest_item *item,
                      struct _u_response *resp)
{
    const char *why = NULL, *event;
    memset(item, 0, sizeof *item);
    item->who = *who;
    json_t *obj = http_json_parse(body, len, resp);
    if (obj == NULL)
        return -1;
    json_t *data = json_object_get(obj, "data");
    int ret = -1;
    if (http_field_string(obj, "event", 1, &event, resp) != 0) {
        /* answered */
    } else if ((why = event_name_check(event, strlen(event))) != NULL) {
        http_reply_error(resp, 400, "%s", why);
    } else if (data == NULL) {
        http_reply_error(resp, 400, "missing field 'data' (any JSON value)");
    } else if ((item->event = strdup(event)) == NULL ||
               (item->data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) {
        http_reply_error(resp, 500, "could not encode data");
        ingest_item_clear(item);
    } else if (strlen(item->data) > max_event_bytes) {
        http_reply_error(resp, 413, "event data is %zu bytes as compact JSON; at most %zu (--max_event_bytes)",
                         strlen(item->data), max_event_bytes);
        ingest_item_clear(item);
    } else {
        item->ts_ms = clock_now_ms();
        ret = 0;
    }
    json_decref(obj);
    return ret;
}

void ingest_item_clear(ingest_item *item)
{
    free(item->event);
    free(item->data);
    item->event = item->data = NULL;
}

void ingest_store(broker_runtime *rt, ingest_item *items, size_t n)
{
    store_insert one, *ins = n == 1 ? &one : calloc(n, sizeof *ins);
    if (ins == NULL) {
        for (size_t i = 0; i < n; i++)
            items[i].status = STORE_UNAVAILABLE;
        return;
    }
    for (size_t i = 0; i < n; i++)
        ins[i] = (store_insert){.tenant = items[i].who.tenant, .event = items[i].event, .data = items[i].data,
                                .ts_ms = items[i].ts_ms, .max_names = (size_t)rt->cfg.max_event_names};
    int64_t t0 = clock_mono_us();
    store_event_insert_many(rt->store, ins, n);
    atomic_fetch_add(write_us_total, clock_mono_us() - t0);
    atomic_fetch_add(write_batches_total, 1);
    for (size_t i = 0; i < n; i++) {
        items[i].status = ins[i].status;
        items[i].seq = ins[i].seq;
        if (ins[i].status == STORE_OK)
            atomic_fetch_add(inserted_total, 1);
    }
    if (ins != &one)
        free(ins);
}

void ingest_publish(broker_runtime *rt, const ingest_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (items[i].status != STORE_OK)
            continue;
        /* Stored: the answer is 200 whatever the bus does; a subscriber
         * that misses it sees the gap and reads it from the store. */
        if (bus_publish_event(rt->bus, items[i].who.tenant, items[i].seq, items[i].ts_ms, items[i].event,
                              items[i].data, strlen(items[i].data)) != 0)
            atomic_fetch_add(publish_failed_total, 1);
    }
}

static int insert(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    broker_runtime *rt = ctx;
    ingest_item item;
    char addr[64];
    http_client_address(req, &rt->cfg, addr, sizeof addr);
    if (ingest_prepare(rt, u_map_get_case(req->map_header, "Authorization"), addr, req->binary_body,
                       req->binary_body_length, &item, resp) != 0)
        return U_CALLBACK_COMPLETE;
    ingest_store(rt, &item, 1);
    ingest_publish(rt, &item, 1);
    int ret;
    if (item.status == STORE_LIMIT) {
        ret = http_reply_error(resp, 400,
                               "tenant '%s' has as many event names as it may (%ld, --max_event_names): "
                               "insert under a name it already has",
                               item.who.tenant, rt->cfg.max_event_names);
    } else if (item.status == STORE_FULL) {
        ret = http_reply_error(resp, 507, "the event store's disk is full; the event was not stored");
    } else if (item.status != STORE_OK) {
        ret = http_reply_error(resp, 500, "the event store is unavailable; the event was not stored");
    } else {
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)item.seq);
        ret = http_reply_json(resp, 200, json_pack("{s:s}", "id", id));
    }
    ingest_item_clear(&item);
    return ret;
}

int ingest_add_routes(http_server *s, broker_runtime *rt)
{
    static const http_route routes[] = {
        {"POST", "/insert", insert},
        {NULL, NULL, NULL},
    };
    ingest_metrics_init();
    return http_server_add_routes(s, routes, rt);
}
