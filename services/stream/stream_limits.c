/*
 * stream_limits.c - how many streams a user keeps open (--max_streams_per_user,
 * 429 at GET /sse; off at 0).  The connection limits are the front door's
 * (lib/door.c).  Counting costs nothing when the limit is off: the table
 * exists only when it is on.
 */
#include "stream_internal.h"
#include "countmap.h"

#include <stdlib.h>
#include <string.h>

int stream_limits_init(stream_engine *e)
{
    e->max_streams_per_user = e->rt->cfg.max_streams_per_user;
    e->m_refused_streams = metrics_counter("broker_limit_refused_total{limit=\"streams_per_user\"}",
                                           "connections and streams refused by a limit flag, by limit");
    if (e->max_streams_per_user > 0 && (e->streams_by_user = countmap_new()) == NULL)
        return -1;
    return 0;
}

void stream_limits_free(stream_engine *e)
{
    countmap_free(e->streams_by_user);
    e->streams_by_user = NULL;
}

int stream_limits_allow_stream(stream_engine *e, const char *username)
{
    if (e->streams_by_user == NULL)
        return 1;
    if (countmap_get(e->streams_by_user, username, strlen(username)) < e->max_streams_per_user)
        return 1;
    atomic_fetch_add(e->m_refused_streams, 1);
    return 0;
}

void stream_limits_stream_opened(stream_engine *e, stream_client *c)
{
    if (e->streams_by_user != NULL && c->username != NULL)
        countmap_add(e->streams_by_user, c->username, strlen(c->username), 1);
}

void stream_limits_stream_closed(stream_engine *e, stream_client *c)
{
    if (e->streams_by_user != NULL && c->username != NULL)
        countmap_add(e->streams_by_user, c->username, strlen(c->username), -1);
}
