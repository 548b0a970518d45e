/*
 * stream_limits.c - how many connections a process holds, per client address,
 * and how many streams a user keeps open.
 *
 * Every connection is a descriptor and every stream a queue; without limits
 * one client could hold a process's descriptors (its open-file limit) or one
 * account thousands of streams.  Each limit is a flag, off at 0:
 *   --max_connections          per process: 503 at accept
 *   --max_connections_per_ip   per client address: 429 at accept
 *   --max_streams_per_user     per username, per process: 429 at GET /sse
 * A refused connection gets its answer before its request is read (HTTP lets
 * a server answer early) and is closed.  Counting costs nothing when a limit
 * is off: the per-address table and the descriptor-to-address array exist
 * only when that limit is on, and addresses are remembered by descriptor, not
 * in each client, so an idle subscriber stays the size it was.
 */
#include "stream_internal.h"
#include "countmap.h"
#include "log.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static uint32_t address_key(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_addr.s_addr | 1u; /* never 0: 0 means "not counted" */
    if (ss->ss_family == AF_INET6) { /* folded to 32 bits: two addresses may share a count */
        const uint32_t *w = (const uint32_t *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
        return (w[0] ^ w[1] ^ w[2] ^ w[3]) | 1u;
    }
    return 0;
}

int stream_limits_init(stream_engine *e)
{
    const broker_config *cfg = &e->rt->cfg;
    e->max_connections = cfg->max_connections;
    e->max_connections_per_ip = cfg->max_connections_per_ip;
    e->max_streams_per_user = cfg->max_streams_per_user;
    e->m_refused_connections = metrics_counter("broker_limit_refused_total{limit=\"connections\"}",
                                               "connections and streams refused by a limit flag, by limit");
    e->m_refused_per_address = metrics_counter("broker_limit_refused_total{limit=\"connections_per_address\"}",
                                               "connections and streams refused by a limit flag, by limit");
    e->m_refused_streams = metrics_counter("broker_limit_refused_total{limit=\"streams_per_user\"}",
                                           "connections and streams refused by a limit flag, by limit");
    if (e->max_connections_per_ip > 0) {
        struct rlimit rl;
        e->fd_addr_cap = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur
                                                                                            : 65536;
        e->fd_addr = calloc(e->fd_addr_cap, sizeof *e->fd_addr);
        e->conns_by_address = countmap_new();
        if (e->fd_addr == NULL || e->conns_by_address == NULL)
            return -1;
    }
    if (e->max_streams_per_user > 0 && (e->streams_by_user = countmap_new()) == NULL)
        return -1;
    return 0;
}

void stream_limits_free(stream_engine *e)
{
    countmap_free(e->conns_by_address);
    countmap_free(e->streams_by_user);
    free(e->fd_addr);
    e->conns_by_address = e->streams_by_user = NULL;
    e->fd_addr = NULL;
}

int stream_limits_admit(stream_engine *e, stream_client *c, const struct sockaddr_storage *ss)
{
    if (e->max_connections > 0 && e->nclients > (size_t)e->max_connections) {
        atomic_fetch_add(e->m_refused_connections, 1);
        client_reject(e, c, 503, "Service Unavailable",
                      "the server holds as many connections as it may (--max_connections); retry later");
        return -1;
    }
    if (e->fd_addr == NULL || c->fd < 0 || (size_t)c->fd >= e->fd_addr_cap)
        return 0;
    uint32_t key = address_key(ss);
    if (key == 0)
        return 0;
    if (countmap_get(e->conns_by_address, &key, sizeof key) >= e->max_connections_per_ip) {
        atomic_fetch_add(e->m_refused_per_address, 1);
        client_reject(e, c, 429, "Too Many Requests",
                      "too many connections from this address (--max_connections_per_ip)");
        return -1;
    }
    if (countmap_add(e->conns_by_address, &key, sizeof key, 1) > 0)
        e->fd_addr[c->fd] = key;
    return 0;
}

void stream_limits_release(stream_engine *e, int fd)
{
    if (e->fd_addr == NULL || fd < 0 || (size_t)fd >= e->fd_addr_cap || e->fd_addr[fd] == 0)
        return;
    countmap_add(e->conns_by_address, &e->fd_addr[fd], sizeof e->fd_addr[fd], -1);
    e->fd_addr[fd] = 0;
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
