/*
 * stream_presence.c - who is online: a tenant's users who hold at least one
 * stream anywhere in the deployment.
 *
 * Each user of a tenant has a count of streams here (`local`) and the sum of
 * what the other stream replicas said they hold (`remote`); online is either
 * above zero.  The replicas tell each other over the bus ("pr/",
 * proto_bus.h): every quarter second what changed here, every few seconds
 * the whole list, which also says the replica is alive.  A replica not heard
 * from for REPLICA_SILENCE_MS is gone, and its users' streams with it.
 *
 * A stream that asked for presence gets, before its snapshot, a `$presence`
 * frame with the users that every presence stream of its tenant has been told
 * of (`announced`), then `{"join":[..],"leave":[..]}` frames.  Changes are
 * not sent as they come: a user whose state may have changed goes on its
 * tenant's dirty list, and each quarter second a tenant's dirty users are
 * compared with what was announced, so a user who comes and goes in between
 * costs nothing, and 10,000 users arriving at once make one frame a tick.
 * Presence frames have no id: they never move a client's Last-Event-ID.
 *
 * Everything runs on the front door's thread, like the rest of the engine.
 */
#include "stream_internal.h"
#include "clock.h"
#include "hash.h"
#include "log.h"

#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define TICK_MS 250            /* the most frames a second a stream gets is 1000 / TICK_MS */
#define FULL_EVERY_TICKS 12    /* a replica's full list every 3 s */
#define REPLICA_SILENCE_MS 10000 /* then its users leave: within 15 s of its end, coalescing included */
#define COUNT_MAX 1000000      /* the most streams a peer may claim for one user */

/* The tables of tenants and of each tenant's users: chained hash tables of
 * entries named by a string, each entry starting with its chain link, its
 * name `name_off` bytes in. */
typedef struct name_link {
    struct name_link *next;
} name_link;

typedef struct name_table {
    name_link **buckets;
    size_t mask, count, name_off;
} name_table;

typedef struct presence_user {
    name_link link; /* first: the tenant's table */
    struct presence_user *dnext; /* the tenant's dirty list */
    uint32_t local, remote;
    uint8_t announced;   /* presence streams were told this user is here */
    uint8_t dirty;       /* on the dirty list */
    uint8_t local_dirty; /* `local` changed since the last change list went out */
    char name[];
} presence_user;

struct presence_tenant {
    name_link link;         /* first: the engine's table */
    presence_tenant *dnext; /* the engine's list of tenants with dirty users */
    name_table users;
    presence_user *dirty;
    /* The list a new presence stream starts with, made once and shared by
     * every stream that comes before the tenant's next change: made for each
     * stream, a crowd arriving at once cost the square of its size. */
    sse_frame *list;
    stream_client *subs; /* streams that asked for presence (client_extra's pnext) */
    uint8_t on_dirty;
    char name[];
};

/* What another replica last said it holds. */
typedef struct presence_replica {
    struct presence_replica *next;
    uint64_t id, seq;
    int64_t heard_ms;
    json_t *counts; /* {"tenant": {"user": streams}} */
} presence_replica;

struct presence {
    name_table tenants;
    presence_tenant *dirty;
    presence_replica *replicas;
    uint64_t id, seq;
    bus_pub *pub; /* the forwarders, or this replica's own endpoint; NULL: no other replica hears it */
    bus_sub *peers; /* without forwarders: the other replicas' endpoints (--bus_peers) */
    unsigned ticks;
    size_t users_local, users_online;
    metric_value *m_users_local, *m_users_online, *m_replicas, *m_frames, *m_dropped;
};

/* ---- tables --------------------------------------------------------------- */

#define NAME_OF(tab, link) ((const char *)(link) + (tab)->name_off)

static int table_init(name_table *tab, size_t name_off)
{
    tab->mask = 15;
    tab->count = 0;
    tab->name_off = name_off;
    tab->buckets = calloc(tab->mask + 1, sizeof *tab->buckets);
    return tab->buckets != NULL ? 0 : -1;
}

static name_link *table_find(const name_table *tab, const char *name, size_t len)
{
    for (name_link *l = tab->buckets[hash_fnv1a(name, len) & tab->mask]; l != NULL; l = l->next)
        if (strlen(NAME_OF(tab, l)) == len && memcmp(NAME_OF(tab, l), name, len) == 0)
            return l;
    return NULL;
}

static void table_add(name_table *tab, name_link *l)
{
    if (tab->count + 1 > (tab->mask + 1) * 2) {
        size_t ncap = (tab->mask + 1) * 2;
        name_link **nb = calloc(ncap, sizeof *nb);
        if (nb != NULL) { /* else longer chains, still correct */
            for (size_t b = 0; b <= tab->mask; b++)
                for (name_link *x = tab->buckets[b], *next; x != NULL; x = next) {
                    next = x->next;
                    size_t i = hash_fnv1a(NAME_OF(tab, x), strlen(NAME_OF(tab, x))) & (ncap - 1);
                    x->next = nb[i];
                    nb[i] = x;
                }
            free(tab->buckets);
            tab->buckets = nb;
            tab->mask = ncap - 1;
        }
    }
    size_t i = hash_fnv1a(NAME_OF(tab, l), strlen(NAME_OF(tab, l))) & tab->mask;
    l->next = tab->buckets[i];
    tab->buckets[i] = l;
    tab->count++;
}

static void table_remove(name_table *tab, name_link *l)
{
    name_link **pp = &tab->buckets[hash_fnv1a(NAME_OF(tab, l), strlen(NAME_OF(tab, l))) & tab->mask];
    while (*pp != l)
        pp = &(*pp)->next;
    *pp = l->next;
    tab->count--;
}

static presence_tenant *tenant_get(presence *p, const char *name, size_t len, int create)
{
    presence_tenant *t = (presence_tenant *)table_find(&p->tenants, name, len);
    if (t != NULL || !create)
        return t;
    t = calloc(1, sizeof *t + len + 1);
    if (t == NULL || table_init(&t->users, offsetof(presence_user, name)) != 0) {
        free(t);
        return NULL;
    }
    memcpy(t->name, name, len);
    table_add(&p->tenants, &t->link);
    return t;
}

static void tenant_drop(presence *p, presence_tenant *t)
{
    table_remove(&p->tenants, &t->link);
    sse_frame_unref(t->list);
    free(t->users.buckets);
    free(t);
}

/* A tenant with no user, no presence stream and nothing pending goes. */
static void tenant_maybe_drop(presence *p, presence_tenant *t)
{
    if (t->users.count == 0 && t->subs == NULL && !t->on_dirty)
        tenant_drop(p, t);
}

static presence_user *user_get(presence_tenant *t, const char *name, size_t len, int create)
{
    presence_user *u = (presence_user *)table_find(&t->users, name, len);
    if (u != NULL || !create)
        return u;
    u = calloc(1, sizeof *u + len + 1);
    if (u == NULL)
        return NULL;
    memcpy(u->name, name, len);
    table_add(&t->users, &u->link);
    return u;
}

static void user_drop(presence_tenant *t, presence_user *u)
{
    table_remove(&t->users, &u->link);
    free(u);
}

static void mark_dirty(presence *p, presence_tenant *t, presence_user *u)
{
    if (!u->dirty) {
        u->dirty = 1;
        u->dnext = t->dirty;
        t->dirty = u;
    }
    if (!t->on_dirty) {
        t->on_dirty = 1;
        t->dnext = p->dirty;
        p->dirty = t;
    }
}

static int online(const presence_user *u)
{
    return u->local > 0 || u->remote > 0;
}

/* ---- this replica's streams ------------------------------------------- */

void presence_stream_opened(stream_engine *e, stream_client *c)
{
    presence *p = e->presence;
    if (p == NULL || c->username == NULL)
        return;
    presence_tenant *t = tenant_get(p, c->tenant->name, strlen(c->tenant->name), 1);
    presence_user *u = t != NULL ? user_get(t, c->username, strlen(c->username), 1) : NULL;
    if (u == NULL) {
        log_error("stream: out of memory for presence: %s's stream is not counted", c->username);
        if (t != NULL)
            tenant_maybe_drop(p, t);
        return;
    }
    if (u->local++ == 0)
        p->users_local++;
    u->local_dirty = 1;
    mark_dirty(p, t, u);
}

void presence_stream_closed(stream_engine *e, stream_client *c)
{
    presence *p = e->presence;
    if (p == NULL || c->tenant == NULL || c->username == NULL)
        return;
    presence_tenant *t = tenant_get(p, c->tenant->name, strlen(c->tenant->name), 0);
    if (c->x != NULL && c->x->presence != NULL) { /* off the tenant's presence streams */
        if (c->x->pprev)
            c->x->pprev->x->pnext = c->x->pnext;
        else
            c->x->presence->subs = c->x->pnext;
        if (c->x->pnext)
            c->x->pnext->x->pprev = c->x->pprev;
        c->x->presence = NULL;
    }
    presence_user *u = t != NULL ? user_get(t, c->username, strlen(c->username), 0) : NULL;
    if (u == NULL || u->local == 0) { /* not counted (out of memory when it opened) */
        if (t != NULL)
            tenant_maybe_drop(p, t);
        return;
    }
    if (--u->local == 0)
        p->users_local--;
    u->local_dirty = 1;
    mark_dirty(p, t, u);
}

/* The users presence streams of `t` have been told of, with their streams. */
static json_t *users_json(const presence_tenant *t, int announced_only)
{
    json_t *users = json_array();
    for (size_t b = 0; users != NULL && b <= t->users.mask; b++)
        for (const name_link *l = t->users.buckets[b]; l != NULL; l = l->next) {
            const presence_user *u = (const presence_user *)l;
            if (announced_only ? u->announced : online(u))
                json_array_append_new(users, json_pack("{s:s,s:I}", "username", u->name, "connections",
                                                       (json_int_t)u->local + u->remote));
        }
    return users;
}

static sse_frame *presence_frame(json_t *body)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL)
        return NULL;
    size_t len = strlen(text);
    static const char head[] = "event: $presence\ndata: ";
    char *bytes = malloc(sizeof head - 1 + len + 2);
    sse_frame *f = NULL;
    if (bytes != NULL) {
        memcpy(bytes, head, sizeof head - 1);
        memcpy(bytes + sizeof head - 1, text, len);
        memcpy(bytes + sizeof head - 1 + len, "\n\n", 2);
        f = sse_frame_text(bytes, sizeof head - 1 + len + 2);
    }
    free(bytes);
    free(text);
    return f;
}

int presence_stream_started(stream_engine *e, stream_client *c)
{
    presence *p = e->presence;
    if (p == NULL || c->x == NULL || !c->x->wants_presence)
        return 0;
    presence_tenant *t = tenant_get(p, c->tenant->name, strlen(c->tenant->name), 1);
    if (t == NULL)
        return -1;
    if (t->list == NULL && (t->list = presence_frame(json_pack("{s:o}", "users", users_json(t, 1)))) == NULL) {
        tenant_maybe_drop(p, t);
        return -1;
    }
    if (client_enqueue(e, c, t->list, 0) != 0) {
        tenant_maybe_drop(p, t);
        return -1;
    }
    c->x->presence = t;
    c->x->pprev = NULL;
    c->x->pnext = t->subs;
    if (t->subs)
        t->subs->x->pprev = c;
    t->subs = c;
    atomic_fetch_add(p->m_frames, 1);
    return 0;
}

char *presence_list_json(stream_engine *e, const char *tenant)
{
    presence *p = e->presence;
    presence_tenant *t = p != NULL ? tenant_get(p, tenant, strlen(tenant), 0) : NULL;
    json_t *users = t != NULL ? users_json(t, 0) : json_array();
    json_t *body = users != NULL ? json_pack("{s:o}", "users", users) : NULL;
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

/* ---- the other replicas ------------------------------------------------- */

/* Adds `delta` to what the other replicas hold for tenant/user. */
static void remote_add(presence *p, const char *tenant, const char *user, long delta)
{
    presence_tenant *t = tenant_get(p, tenant, strlen(tenant), delta > 0);
    presence_user *u = t != NULL ? user_get(t, user, strlen(user), delta > 0) : NULL;
    if (u == NULL) {
        if (t != NULL)
            tenant_maybe_drop(p, t);
        return;
    }
    long v = (long)u->remote + delta;
    u->remote = v < 0 ? 0 : (uint32_t)v;
    mark_dirty(p, t, u);
}

/* Takes away all a replica said (it is gone, or a full list replaces it). */
static void replica_forget(presence *p, presence_replica *r)
{
    const char *tenant, *user;
    json_t *users, *n;
    json_object_foreach(r->counts, tenant, users)
        json_object_foreach(users, user, n)
            remote_add(p, tenant, user, -(long)json_integer_value(n));
    json_object_clear(r->counts);
}

/* Whether a peer's list is one we can take: tenants and usernames as names
 * (1-128 tenant bytes, 1-512 username bytes), counts 0..COUNT_MAX. */
static int counts_valid(json_t *j)
{
    const char *tenant, *user;
    json_t *users, *n;
    if (!json_is_object(j))
        return 0;
    json_object_foreach(j, tenant, users) {
        size_t tl = strlen(tenant);
        if (tl == 0 || tl > 128 || !json_is_object(users))
            return 0;
        json_object_foreach(users, user, n) {
            size_t ul = strlen(user);
            if (ul == 0 || ul > 512 || !json_is_integer(n) || json_integer_value(n) < 0 ||
                json_integer_value(n) > COUNT_MAX)
                return 0;
        }
    }
    return 1;
}

static presence_replica *replica_find(presence *p, uint64_t id)
{
    for (presence_replica *r = p->replicas; r != NULL; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static presence_replica *replica_new(presence *p, uint64_t id)
{
    presence_replica *r = calloc(1, sizeof *r);
    if (r == NULL || (r->counts = json_object()) == NULL) {
        free(r);
        return NULL;
    }
    r->id = id;
    r->next = p->replicas;
    p->replicas = r;
    atomic_fetch_add(p->m_replicas, 1);
    return r;
}

void presence_bus_message(stream_engine *e, const bus_msg *m)
{
    presence *p = e->presence;
    if (p == NULL || m->replica == p->id)
        return; /* off, or this replica's own message back from a forwarder */
    presence_replica *r = replica_find(p, m->replica);
    if (r != NULL && m->replica_seq <= r->seq)
        return; /* a copy through the other forwarder, or late */
    json_t *j = json_loadb(m->data, m->data_len, JSON_REJECT_DUPLICATES, NULL);
    if (!counts_valid(j)) {
        json_decref(j);
        atomic_fetch_add(p->m_dropped, 1);
        log_warn("stream: dropped a malformed presence list from replica %016llx", (unsigned long long)m->replica);
        return;
    }
    if (r == NULL && (r = replica_new(p, m->replica)) == NULL) {
        json_decref(j);
        return;
    }
    /* A change list after a lost message would build on what we do not
     * have: wait for the next full list, which comes within seconds. */
    if (!m->full && m->replica_seq != r->seq + 1 && r->seq != 0) {
        r->seq = m->replica_seq;
        r->heard_ms = door_now_ms();
        json_decref(j);
        return;
    }
    if (m->full)
        replica_forget(p, r);
    const char *tenant, *user;
    json_t *users, *n;
    json_object_foreach(j, tenant, users) {
        json_t *known = json_object_get(r->counts, tenant);
        json_object_foreach(users, user, n) {
            json_int_t was = known != NULL ? json_integer_value(json_object_get(known, user)) : 0;
            json_int_t now = json_integer_value(n);
            if (now != was)
                remote_add(p, tenant, user, (long)(now - was));
            if (known == NULL && now > 0) {
                known = json_object();
                json_object_set_new(r->counts, tenant, known);
            }
            if (known != NULL) {
                if (now > 0)
                    json_object_set_new(known, user, json_integer(now));
                else
                    json_object_del(known, user);
            }
        }
        if (known != NULL && json_object_size(known) == 0)
            json_object_del(r->counts, tenant);
    }
    json_decref(j);
    r->seq = m->replica_seq;
    r->heard_ms = door_now_ms();
}

static void replicas_expire(presence *p)
{
    int64_t now = door_now_ms();
    for (presence_replica **pp = &p->replicas; *pp != NULL;) {
        presence_replica *r = *pp;
        if (now - r->heard_ms <= REPLICA_SILENCE_MS) {
            pp = &r->next;
            continue;
        }
        log_info("stream: presence: replica %016llx fell silent: its users' streams are gone",
                 (unsigned long long)r->id);
        replica_forget(p, r);
        *pp = r->next;
        json_decref(r->counts);
        free(r);
        atomic_fetch_sub(p->m_replicas, 1);
    }
}

/* ---- each tick ------------------------------------------------------------ */

static void publish(presence *p, json_t *body, int full)
{
    char *text = json_dumps(body, JSON_COMPACT);
    if (text != NULL)
        bus_publish_presence(p->pub, p->id, ++p->seq, full, text, strlen(text));
    free(text);
}

/* This replica's whole list: what the others hold of it is replaced. */
static void publish_full(presence *p)
{
    json_t *all = json_object();
    for (size_t b = 0; all != NULL && b <= p->tenants.mask; b++)
        for (name_link *tl = p->tenants.buckets[b]; tl != NULL; tl = tl->next) {
            presence_tenant *t = (presence_tenant *)tl;
            json_t *users = json_object();
            for (size_t ub = 0; users != NULL && ub <= t->users.mask; ub++)
                for (name_link *ul = t->users.buckets[ub]; ul != NULL; ul = ul->next)
                    if (((presence_user *)ul)->local > 0)
                        json_object_set_new(users, ((presence_user *)ul)->name,
                                            json_integer(((presence_user *)ul)->local));
            if (users != NULL && json_object_size(users) > 0)
                json_object_set_new(all, t->name, users);
            else
                json_decref(users);
        }
    if (all != NULL)
        publish(p, all, 1);
    json_decref(all);
}

/* One tenant's dirty users: a frame of joins and leaves for its presence
 * streams, this replica's changes into `changes`, and users gone from
 * everywhere freed. */
static void flush_tenant(stream_engine *e, presence_tenant *t, json_t *changes)
{
    presence *p = e->presence;
    json_t *join = json_array(), *leave = json_array(), *mine = NULL;
    presence_user *u = t->dirty;
    /* A user's streams changed: the next presence stream gets a list made
     * anew (the counts as of this tick). */
    sse_frame_unref(t->list);
    t->list = NULL;
    t->dirty = NULL;
    for (presence_user *next; u != NULL; u = next) {
        next = u->dnext;
        u->dirty = 0;
        u->dnext = NULL;
        if (u->local_dirty && changes != NULL) {
            /* `changes` holds it (json_object_set_new frees it on failure). */
            if (mine == NULL && (mine = json_object()) != NULL && json_object_set_new(changes, t->name, mine) != 0)
                mine = NULL;
            if (mine != NULL)
                json_object_set_new(mine, u->name, json_integer(u->local));
        }
        u->local_dirty = 0;
        int now = online(u);
        if (now && !u->announced) {
            json_array_append_new(join, json_string(u->name));
            u->announced = 1;
            p->users_online++;
        } else if (!now && u->announced) {
            json_array_append_new(leave, json_string(u->name));
            u->announced = 0;
            p->users_online--;
        }
        if (!now)
            user_drop(t, u);
    }
    if (t->subs != NULL && join != NULL && leave != NULL &&
        (json_array_size(join) > 0 || json_array_size(leave) > 0)) {
        sse_frame *f = presence_frame(json_pack("{s:O,s:O}", "join", join, "leave", leave));
        if (f != NULL) {
            for (stream_client *c = t->subs; c != NULL; c = c->x->pnext)
                if (client_enqueue(e, c, f, 1) == 0)
                    atomic_fetch_add(p->m_frames, 1);
            sse_frame_unref(f);
        } else {
            log_error("stream: out of memory for a presence frame of tenant %s", t->name);
        }
    }
    json_decref(join);
    json_decref(leave);
}

/* The other replicas' messages, when they come straight from them.  ZMQ_FD
 * signals edges only: drained whenever it fires, and at every tick. */
static void peers_drain(stream_engine *e)
{
    bus_msg m;
    for (int i = 0; i < 1024 && bus_sub_recv(e->presence->peers, &m) > 0; i++)
        if (m.kind == BUS_PRESENCE)
            presence_bus_message(e, &m);
}

static void peers_readable(void *arg)
{
    peers_drain(arg);
}

static void presence_tick(void *arg)
{
    stream_engine *e = arg;
    presence *p = e->presence;
    if (p->peers != NULL)
        peers_drain(e);
    replicas_expire(p);
    json_t *changes = p->pub != NULL ? json_object() : NULL;
    presence_tenant *t = p->dirty;
    p->dirty = NULL;
    for (presence_tenant *next; t != NULL; t = next) {
        next = t->dnext;
        t->on_dirty = 0;
        t->dnext = NULL;
        flush_tenant(e, t, changes);
        tenant_maybe_drop(p, t);
    }
    if (p->pub != NULL) {
        if (++p->ticks % FULL_EVERY_TICKS == 0)
            publish_full(p);
        else if (changes != NULL && json_object_size(changes) > 0)
            publish(p, changes, 0);
    }
    json_decref(changes);
    atomic_store(p->m_users_local, (long long)p->users_local);
    atomic_store(p->m_users_online, (long long)p->users_online);
}

/* ---- life ----------------------------------------------------------------- */

int presence_init(stream_engine *e)
{
    const broker_config *cfg = &e->rt->cfg;
    if (!cfg->presence)
        return 0;
    presence *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -1;
    e->presence = p;
    if (table_init(&p->tenants, offsetof(presence_tenant, name)) != 0 ||
        getrandom(&p->id, sizeof p->id, 0) != sizeof p->id)
        return -1;
    p->m_users_local = metrics_gauge("broker_presence_users_local", "users with a stream open on this process");
    p->m_users_online = metrics_gauge("broker_presence_users_online",
                                      "users with a stream open anywhere in the deployment, as this process knows");
    p->m_replicas = metrics_gauge("broker_presence_replicas", "other stream replicas this process hears from");
    p->m_frames = metrics_counter("broker_presence_frames_total", "$presence frames queued for streams");
    p->m_dropped = metrics_counter("broker_presence_dropped_total", "presence lists from other replicas that did not parse");
    /* The other replicas: through the bus forwarders, which carry every
     * message to every subscriber (this engine's bus takes "pr/" too); or,
     * with publishers of their own, each replica binds --bus_publish and
     * subscribes to the others' (--bus_peers). */
    if (cfg->bus_forwarders[0] != '\0') {
        char *forwarders = NULL;
        if (bus_forwarder_endpoints(cfg->bus_forwarders, &forwarders, NULL) != 0)
            return -1;
        p->pub = bus_pub_connect(forwarders, cfg->bus_server_key);
        free(forwarders);
        if (p->pub == NULL)
            return -1;
    } else if (cfg->bus_peers[0] != '\0') {
        if (cfg->bus_publish[0] == '\0') {
            log_error("stream: --bus_peers needs --bus_publish, the endpoint the other replicas subscribe to");
            return -1;
        }
        if ((p->pub = bus_pub_open(cfg->bus_publish)) == NULL ||
            (p->peers = bus_sub_open(cfg->bus_peers, cfg->bus_peer_keys, BUS_SUB_REDUNDANT)) == NULL ||
            door_watch(e->door, bus_sub_fd(p->peers), peers_readable, e) != 0)
            return -1;
        log_info("stream: presence: publishing on %s, hearing %s", cfg->bus_publish, cfg->bus_peers);
    } else if (strncmp(e->bus_endpoints, "inproc://", 9) != 0) {
        log_info("stream: presence counts this process's streams only (other replicas are heard through "
                 "--bus_forwarders, or --bus_peers)");
    }
    return door_timer_add(e->door, TICK_MS, presence_tick, e);
}

void presence_free(stream_engine *e)
{
    presence *p = e->presence;
    if (p == NULL)
        return;
    for (size_t b = 0; p->tenants.buckets != NULL && b <= p->tenants.mask; b++)
        for (name_link *tl = p->tenants.buckets[b], *next; tl != NULL; tl = next) {
            next = tl->next;
            presence_tenant *t = (presence_tenant *)tl;
            for (size_t ub = 0; ub <= t->users.mask; ub++)
                for (name_link *ul = t->users.buckets[ub], *un; ul != NULL; ul = un) {
                    un = ul->next;
                    free(ul);
                }
            free(t->users.buckets);
            sse_frame_unref(t->list);
            free(t);
        }
    for (presence_replica *r = p->replicas, *next; r != NULL; r = next) {
        next = r->next;
        json_decref(r->counts);
        free(r);
    }
    bus_sub_close(p->peers);
    bus_pub_close(p->pub);
    free(p->tenants.buckets);
    free(p);
    e->presence = NULL;
}
