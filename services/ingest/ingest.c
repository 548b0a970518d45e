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
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "proto_bus.h"

#include <string.h>

static metric_value *inserted_total, *publish_failed_total;

static const char *check_event_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > BUS_EVENT_NAME_MAX)
        return "event must be 1 to 256 bytes";
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return "event must not contain control characters";
    return NULL;
}

static int insert(const struct _u_request *req, struct _u_response *resp, void *ctx)
{
    broker_runtime *rt = ctx;
    authn_identity who;
    const char *why = NULL, *event;
    authn_result r = authn_check(&rt->authn, u_map_get_case(req->map_header, "Authorization"), NULL, &who, &why);
    if (r != AUTHN_OK)
        return http_reply_error(resp, r == AUTHN_FAULT ? 500 : 401, "%s", why);
    json_t *body = http_json_object(req, resp);
    if (body == NULL)
        return U_CALLBACK_COMPLETE;
    int ret;
    json_t *data = json_object_get(body, "data");
    if (http_field_string(body, "event", 1, &event, resp) != 0) {
        ret = U_CALLBACK_COMPLETE;
    } else if ((why = check_event_name(event)) != NULL) {
        ret = http_reply_error(resp, 400, "%s", why);
    } else if (data == NULL) {
        ret = http_reply_error(resp, 400, "missing field 'data' (any JSON value)");
    } else {
        char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
        uint64_t seq = 0;
        int64_t ts = clock_now_ms();
        if (text == NULL) {
            ret = http_reply_error(resp, 500, "could not encode data");
        } else if (store_event_insert(rt->store, who.tenant, event, text, ts, &seq) != STORE_OK) {
            ret = http_reply_error(resp, 500, "the event store is unavailable; the event was not stored");
        } else {
            /* Stored: the answer is 200 whatever the bus does; a subscriber
             * that misses it sees the gap and reads it from the store. */
            if (bus_publish_event(rt->bus, who.tenant, seq, ts, event, text, strlen(text)) != 0)
                atomic_fetch_add(publish_failed_total, 1);
            atomic_fetch_add(inserted_total, 1);
            char id[24];
            snprintf(id, sizeof id, "%llu", (unsigned long long)seq);
            ret = http_reply_json(resp, 200, json_pack("{s:s}", "id", id));
        }
        free(text);
    }
    json_decref(body);
    return ret;
}

int ingest_add_routes(http_server *s, broker_runtime *rt)
{
    static const http_route routes[] = {
        {"POST", "/insert", insert},
        {NULL, NULL, NULL},
    };
    inserted_total = metrics_counter("broker_events_inserted_total", "events stored and answered");
    publish_failed_total = metrics_counter("broker_bus_publish_failed_total", "stored events the bus refused");
    return http_server_add_routes(s, routes, rt);
}
