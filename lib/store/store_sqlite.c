/*
 * store_sqlite.c - the embedded store: one SQLite file in WAL mode.
 *
 * The idea: SQLite's WAL gives one writer and any number of readers that never
 * block each other, and with synchronous=FULL every commit fsyncs the WAL, so
 * an answered insert survives a crash or a power cut (bench/STORE_CHOICE.md
 * has the measurement that chose SQLite over LMDB).
 *
 *   - One write connection behind a mutex.  Writers queue on the mutex, never
 *     on SQLITE_BUSY; busy_timeout only covers another process on the file.
 *   - Read connections come from a small idle pool; when the pool is empty a
 *     new connection is opened instead of waiting, so a reader never waits for
 *     another reader (nor for a callback that re-enters the store).  At most
 *     READER_IDLE_MAX idle connections are kept.
 *   - Each connection caches its prepared statements (prepared on first use).
 *
 * Schema (proto/ documents the same collections for MongoDB):
 *   users(id, username UNIQUE, password_hash, revoked, tenant_name, email?, data?)
 *   tenants(name PK, seq)                 the tenant's last allocated sequence
 *   events(tenant, seq, event, data, ts)  PK (tenant, seq), WITHOUT ROWID
 *   latest(tenant, event, seq)            PK (tenant, event): the newest seq of
 *                                         each event name, kept in the insert's
 *                                         transaction, so the snapshot sent on
 *                                         connect costs O(event names).
 * An insert is one BEGIN IMMEDIATE transaction: bump tenants.seq (upsert ...
 * RETURNING), insert the event, upsert latest, commit.  Since seq is bumped
 * and the event stored in one commit, readers always see a gap-free prefix of
 * each tenant's sequence and tenants.seq is the tenant's max seq.
 *
 * Callbacks run inside a read transaction on a pooled connection: they should
 * be quick (a long read transaction holds back WAL checkpoints).
 */
#include "store.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 2 /* 2: users.token_gen */
#define READER_IDLE_MAX 8
#define BUSY_TIMEOUT_MS 5000
#define DB_FILE_NAME "broker.sqlite3"

/* Every statement a connection may need; prepared lazily, cached per connection. */
enum stmt_id {
    STMT_BEGIN,
    STMT_BEGIN_IMMEDIATE,
    STMT_COMMIT,
    STMT_ROLLBACK,
    STMT_USER_INSERT,
    STMT_USER_GET,
    STMT_USER_LIST,
    STMT_USER_UPDATE,
    STMT_USER_SET_REVOKED,
    STMT_TENANT_NEXT_SEQ,
    STMT_TENANT_MAX_SEQ,
    STMT_EVENT_INSERT,
    STMT_LATEST_UPSERT,
    STMT_EVENT_LATEST,
    STMT_EVENT_RANGE,
    STMT_PING,
    STMT_PROBE_WRITE,
    STMT_LATEST_HAS,
    STMT_LATEST_COUNT,
    STMT_COUNT
};

static const char *const stmt_sql[STMT_COUNT] = {
    [STMT_BEGIN] = "BEGIN",
    [STMT_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_USER_INSERT] = "INSERT INTO users(id, username, password_hash, revoked, tenant_name, email, data,"
                         " token_gen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [STMT_USER_GET] = "SELECT id, username, password_hash, revoked, tenant_name, email, data, token_gen"
                      " FROM users WHERE username = ?1",
    [STMT_USER_LIST] = "SELECT id, username, password_hash, revoked, tenant_name, email, data, token_gen"
                       " FROM users ORDER BY rowid",
    [STMT_USER_UPDATE] = "UPDATE users SET tenant_name = ?2, password_hash = ?3, email = ?4, data = ?5,"
                         " revoked = ?6, token_gen = ?7 WHERE username = ?1",
    /* Revoking moves the token generation in the same statement, so no
     * token issued before a revocation works again after an unrevoke. */
    [STMT_USER_SET_REVOKED] = "UPDATE users SET revoked = ?2, token_gen = token_gen + ?2 WHERE username = ?1",
    /* Takes ?2 sequence numbers at once; returns the last of them. */
    [STMT_TENANT_NEXT_SEQ] = "INSERT INTO tenants(name, seq) VALUES (?1, ?2)"
                             " ON CONFLICT(name) DO UPDATE SET seq = seq + excluded.seq RETURNING seq",
    [STMT_TENANT_MAX_SEQ] = "SELECT seq FROM tenants WHERE name = ?1",
    [STMT_EVENT_INSERT] = "INSERT INTO events(tenant, seq, event, data, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
    [STMT_LATEST_UPSERT] = "INSERT INTO latest(tenant, event, seq) VALUES (?1, ?2, ?3)"
                           " ON CONFLICT(tenant, event) DO UPDATE SET seq = excluded.seq",
    [STMT_EVENT_LATEST] = "SELECT e.seq, e.event, e.data, e.ts FROM latest AS l"
                          " JOIN events AS e ON e.tenant = l.tenant AND e.seq = l.seq"
                          " WHERE l.tenant = ?1 ORDER BY l.seq",
    [STMT_EVENT_RANGE] = "SELECT seq, event, data, ts FROM events"
                         " WHERE tenant = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
    [STMT_PING] = "SELECT count(*) FROM sqlite_schema",
    /* A write of a few bytes: can the store write at all (a full disk)? */
    [STMT_LATEST_HAS] = "SELECT 1 FROM latest WHERE tenant = ?1 AND event = ?2",
    /* Counts no further than the bound: a tenant's names are a range of the key. */
    [STMT_LATEST_COUNT] = "SELECT count(*) FROM (SELECT 1 FROM latest WHERE tenant = ?1 LIMIT ?2)",
    [STMT_PROBE_WRITE] = "INSERT INTO probe(id, at) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET at = excluded.at",
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS users ("
    "  id TEXT NOT NULL,"
    "  username TEXT NOT NULL UNIQUE,"
    "  password_hash TEXT NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0,"
    "  tenant_name TEXT NOT NULL,"
    "  email TEXT,"
    "  data TEXT,"
    "  token_gen INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS tenants ("
    "  name TEXT PRIMARY KEY,"
    "  seq INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS events ("
    "  tenant TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  event TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant, seq)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS latest ("
    "  tenant TEXT NOT NULL,"
    "  event TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant, event)) WITHOUT ROWID;";

#define FULL_MARGIN (1024 * 1024) /* free bytes beyond twice a refused batch before the store is ready again */

typedef struct sqlite_conn {
    sqlite3 *db;
    sqlite3_stmt *stmts[STMT_COUNT];
} sqlite_conn;

/* One insert waiting for a group commit (see sqlite_event_insert_many). */
typedef struct insert_req {
    store_insert *item;
    int refused;  /* STORE_LIMIT: not numbered, not written */
    int new_name; /* a name its tenant did not have (for check_names) */
    int done;
    pthread_cond_t *wake; /* its caller's: a commit wakes only the callers whose inserts it did */
    struct insert_req *next;
} insert_req;

typedef struct sqlite_store {
    store base; /* first: a store * is a sqlite_store * */
    char *path;
    pthread_mutex_t commit_lock; /* guards pending, committing and each req's done */
    insert_req *pending, **pending_tail;
    int committing;
    pthread_mutex_t ckpt_lock; /* guards wal_frames, ckpt_stop; with ckpt_wake */
    pthread_cond_t ckpt_wake;
    int wal_frames, ckpt_stop, ckpt_started;
    pthread_t ckpt_thread;
    pthread_mutex_t write_lock; /* guards writer */
    sqlite_conn *writer;
    pthread_mutex_t pool_lock; /* guards idle[] and n_idle */
    sqlite_conn *idle[READER_IDLE_MAX];
    int n_idle;
    /* The last write of events failed (a full disk, an I/O error): until a
     * write succeeds again, ping says the store is not ready, and tries a
     * small write itself so that readiness comes back with the space even
     * when no client writes meanwhile. */
    _Atomic int write_failing;
    /* The bytes of a batch the disk had no room for (SQLITE_FULL), or 0:
     * while the disk has not room enough for one as large, ping says
     * STORE_FULL, even though its own small write would fit. */
    _Atomic size_t full_need;
} sqlite_store;

static const store_ops sqlite_ops;

/* ---- errors ---------------------------------------------------------------- */

/* Logs what failed with SQLite's own message (which never holds bound values,
 * so no hash reaches the log) and maps it to STORE_UNAVAILABLE. */
static store_status sq_fail(sqlite_conn *c, const char *what)
{
    log_error("store sqlite: %s: %s (code %d)", what, sqlite3_errmsg(c->db),
              sqlite3_extended_errcode(c->db));
    return STORE_UNAVAILABLE;
}

/* ---- connections ----------------------------------------------------------- */

static void conn_close(sqlite_conn *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < STMT_COUNT; i++)
        sqlite3_finalize(c->stmts[i]);
    if (sqlite3_close(c->db) != SQLITE_OK)
        log_error("store sqlite: close: %s", sqlite3_errmsg(c->db));
    free(c);
}

static sqlite_conn *conn_open(const char *path, int flags)
{
    sqlite_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        log_error("store sqlite: out of memory");
        return NULL;
    }
    /* NOMUTEX: a connection is only ever used by one thread at a time (the
     * write lock or the pool hands it out), so SQLite's own mutex is waste. */
    int rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        log_error("store sqlite: open %s: %s", path, c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        free(c);
        return NULL;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    return c;
}

/* The cached statement, prepared on first use; NULL (logged) on failure. */
static sqlite3_stmt *conn_stmt(sqlite_conn *c, enum stmt_id id)
{
    if (c->stmts[id] == NULL &&
        sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->stmts[id], NULL) != SQLITE_OK) {
        sq_fail(c, "prepare");
        c->stmts[id] = NULL;
    }
    return c->stmts[id];
}

/* Resets a statement for its next use and drops its (borrowed) bindings. */
static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows (BEGIN, COMMIT, ...). */
static store_status conn_exec(sqlite_conn *c, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = conn_stmt(c, id);
    if (st == NULL)
        return STORE_UNAVAILABLE;
    int rc = sqlite3_step(st);
    store_status ret = rc == SQLITE_DONE ? STORE_OK : sq_fail(c, what);
    stmt_done(st);
    return ret;
}

/* Ends whatever transaction a failed call left open. */
static void conn_abort(sqlite_conn *c)
{
    if (!sqlite3_get_autocommit(c->db))
        conn_exec(c, STMT_ROLLBACK, "rollback");
}

static int exec_sql(sqlite_conn *c, const char *sql, const char *what)
{
    char *err = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        log_error("store sqlite: %s: %s", what, err ? err : sqlite3_errmsg(c->db));
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

/* An integer-valued pragma query, e.g. "PRAGMA user_version"; -1 on error. */
static long long pragma_int(sqlite_conn *c, const char *sql)
{
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        sq_fail(c, sql);
    sqlite3_finalize(st);
    return v;
}

/* Sets WAL + FULL sync and creates the schema; run once on the write connection. */
static int writer_setup(sqlite_conn *c)
{
    sqlite3_stmt *st = NULL;
    int wal = 0;
    if (sqlite3_prepare_v2(c->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        wal = mode != NULL && strcmp(mode, "wal") == 0;
    }
    if (!wal)
        sq_fail(c, "cannot switch to WAL mode");
    sqlite3_finalize(st);
    if (!wal)
        return -1;

    /* FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, and an
     * answered insert must survive power loss.  journal_size_limit keeps the
     * WAL file from staying large after a burst. */
    if (exec_sql(c, "PRAGMA synchronous=FULL; PRAGMA journal_size_limit=67108864;", "pragmas") != 0)
        return -1;

    if (exec_sql(c, "BEGIN IMMEDIATE", "schema") != 0)
        return -1;
    long long version = pragma_int(c, "PRAGMA user_version");
    if (version < 0 || version > SCHEMA_VERSION) {
        if (version > SCHEMA_VERSION)
            log_error("store sqlite: database schema version %lld is newer than this broker's (%d)", version,
                      SCHEMA_VERSION);
        exec_sql(c, "ROLLBACK", "schema rollback");
        return -1;
    }
    char version_sql[64];
    snprintf(version_sql, sizeof(version_sql), "PRAGMA user_version=%d", SCHEMA_VERSION);
    /* A version 1 database (before token generations) gains the column; its
     * users start at generation 0, which their tokens (no "gen") also carry. */
    if (version == 1 &&
        exec_sql(c, "ALTER TABLE users ADD COLUMN token_gen INTEGER NOT NULL DEFAULT 0", "schema upgrade to 2") != 0) {
        exec_sql(c, "ROLLBACK", "schema rollback");
        return -1;
    }
    if (exec_sql(c, schema_sql, "create schema") != 0 || exec_sql(c, version_sql, "schema version") != 0 ||
        exec_sql(c, "COMMIT", "schema commit") != 0) {
        exec_sql(c, "ROLLBACK", "schema rollback");
        return -1;
    }
    return 0;
}

static sqlite_conn *reader_acquire(sqlite_store *s)
{
    sqlite_conn *c = NULL;
    pthread_mutex_lock(&s->pool_lock);
    if (s->n_idle > 0)
        c = s->idle[--s->n_idle];
    pthread_mutex_unlock(&s->pool_lock);
    if (c != NULL)
        return c;
    /* Readers open read-write (WAL readers need the -shm file) but are
     * query_only, so a bug can never write around the write lock. */
    c = conn_open(s->path, SQLITE_OPEN_READWRITE);
    if (c != NULL && exec_sql(c, "PRAGMA query_only=1", "reader setup") != 0) {
        conn_close(c);
        c = NULL;
    }
    return c;
}

static void reader_release(sqlite_store *s, sqlite_conn *c)
{
    conn_abort(c); /* never pool a connection inside a transaction */
    pthread_mutex_lock(&s->pool_lock);
    if (s->n_idle < READER_IDLE_MAX) {
        s->idle[s->n_idle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&s->pool_lock);
    conn_close(c);
}

/* ---- opening --------------------------------------------------------------- */

static int has_extension(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strchr(base, '.') != NULL && strcmp(base, ".") != 0 && strcmp(base, "..") != 0;
}

/* mkdir -p; 0 on success (or when it already is a directory). */
static int make_dirs(const char *dir)
{
    char *tmp = strdup(dir);
    if (tmp == NULL)
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
            free(tmp);
            return -1;
        }
        *p = '/';
    }
    int rc = mkdir(tmp, 0700);
    free(tmp);
    if (rc != 0 && errno != EEXIST)
        return -1;
    /* Make the new directory entry itself durable. */
    char *parent = strdup(dir);
    if (parent != NULL) {
        char *slash = strrchr(parent, '/');
        const char *pdir = slash == NULL ? "." : (slash == parent ? "/" : (*slash = '\0', parent));
        int fd = open(pdir, O_RDONLY | O_DIRECTORY);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
        free(parent);
    }
    return 0;
}

/* The database file for `path`: a directory (existing, or missing and without
 * an extension) holds DB_FILE_NAME; anything else is the file itself. */
static char *resolve_db_file(const char *path)
{
    struct stat sb;
    int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!is_dir && !has_extension(path) && stat(path, &sb) != 0) {
        if (make_dirs(path) != 0) {
            log_error("store sqlite: cannot create directory %s: %s", path, strerror(errno));
            return NULL;
        }
        is_dir = 1;
    }
    if (!is_dir)
        return strdup(path);
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    char *file = malloc(len + 1 + sizeof(DB_FILE_NAME));
    if (file != NULL)
        sprintf(file, "%.*s/%s", (int)len, path, DB_FILE_NAME);
    return file;
}

/* ---- checkpoints ------------------------------------------------------------ */

#define CHECKPOINT_FRAMES 1000 /* SQLite's own default threshold */

/* Called by SQLite after each commit on the writer: wakes the checkpointer
 * instead of checkpointing inside the commit (which used to put the copy of
 * the WAL into some unlucky insert's latency). */
static int wal_committed(void *arg, sqlite3 *db, const char *name, int frames)
{
    sqlite_store *s = arg;
    (void)db;
    (void)name;
    pthread_mutex_lock(&s->ckpt_lock);
    s->wal_frames = frames;
    if (frames >= CHECKPOINT_FRAMES)
        pthread_cond_signal(&s->ckpt_wake);
    pthread_mutex_unlock(&s->ckpt_lock);
    return SQLITE_OK;
}

/* A PASSIVE checkpoint on a connection of its own: it copies what no reader
 * still needs and never blocks a writer. */
static void *checkpointer(void *arg)
{
    sqlite_store *s = arg;
    sqlite_conn *c = conn_open(s->path, SQLITE_OPEN_READWRITE);
    /* A connection opens the file lazily; until it has read something it
     * does not know the database is in WAL mode and checkpoints nothing. */
    if (c != NULL && exec_sql(c, "SELECT count(*) FROM sqlite_master", "checkpointer") != 0) {
        conn_close(c);
        c = NULL;
    }
    pthread_mutex_lock(&s->ckpt_lock);
    while (!s->ckpt_stop) {
        if (s->wal_frames < CHECKPOINT_FRAMES) {
            pthread_cond_wait(&s->ckpt_wake, &s->ckpt_lock);
            continue;
        }
        s->wal_frames = 0;
        pthread_mutex_unlock(&s->ckpt_lock);
        if (c != NULL && sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) != SQLITE_OK)
            log_warn("store sqlite: checkpoint: %s", sqlite3_errmsg(c->db));
        pthread_mutex_lock(&s->ckpt_lock);
    }
    pthread_mutex_unlock(&s->ckpt_lock);
    conn_close(c);
    return NULL;
}

/* Process-wide settings, before SQLite's first use.  Memory statistics take a
 * global mutex on every allocation SQLite makes: with many request threads
 * that lock was contended on every insert, and nothing reads the statistics. */
static void sqlite_configure(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

store *store_sqlite_open(const char *path)
{
    if (path == NULL || *path == '\0') {
        log_error("store sqlite: empty database path");
        return NULL;
    }
    static pthread_once_t configured = PTHREAD_ONCE_INIT;
    pthread_once(&configured, sqlite_configure);
    if (!sqlite3_threadsafe()) {
        log_error("store sqlite: libsqlite3 was built without thread support");
        return NULL;
    }
    sqlite_store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        log_error("store sqlite: out of memory");
        return NULL;
    }
    s->base.ops = &sqlite_ops;
    pthread_mutex_init(&s->commit_lock, NULL);
    s->pending_tail = &s->pending;
    pthread_mutex_init(&s->write_lock, NULL);
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_mutex_init(&s->ckpt_lock, NULL);
    pthread_cond_init(&s->ckpt_wake, NULL);
    s->path = resolve_db_file(path);
    if (s->path == NULL)
        goto fail;
    s->writer = conn_open(s->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (s->writer == NULL || writer_setup(s->writer) != 0)
        goto fail;
    /* Checkpoints run on their own thread, never inside a commit. */
    sqlite3_wal_autocheckpoint(s->writer->db, 0);
    sqlite3_wal_hook(s->writer->db, wal_committed, s);
    if (pthread_create(&s->ckpt_thread, NULL, checkpointer, s) != 0)
        goto fail;
    s->ckpt_started = 1;
    log_info("store sqlite: %s (WAL, synchronous=FULL)", s->path);
    return &s->base;
fail:
    log_error("store sqlite: cannot open database at %s", path);
    sqlite_ops.close(&s->base);
    return NULL;
}

static void sqlite_close(store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    if (s == NULL)
        return;
    if (s->ckpt_started) {
        pthread_mutex_lock(&s->ckpt_lock);
        s->ckpt_stop = 1;
        pthread_cond_signal(&s->ckpt_wake);
        pthread_mutex_unlock(&s->ckpt_lock);
        pthread_join(s->ckpt_thread, NULL);
    }
    for (int i = 0; i < s->n_idle; i++)
        conn_close(s->idle[i]);
    conn_close(s->writer); /* last: it checkpoints and removes the WAL */
    pthread_mutex_destroy(&s->pool_lock);
    pthread_mutex_destroy(&s->write_lock);
    pthread_cond_destroy(&s->ckpt_wake);
    pthread_mutex_destroy(&s->ckpt_lock);
    pthread_mutex_destroy(&s->commit_lock);
    free(s->path);
    free(s);
}

/* ---- binding helpers ------------------------------------------------------- */

/* Text parameters are borrowed (SQLITE_STATIC): every statement is reset and
 * its bindings cleared before the caller's strings can go away. */
static int bind_text(sqlite3_stmt *st, int idx, const char *text)
{
    return text == NULL ? sqlite3_bind_null(st, idx) : sqlite3_bind_text(st, idx, text, -1, SQLITE_STATIC);
}

static const char *col_text(sqlite3_stmt *st, int col)
{
    return (const char *)sqlite3_column_text(st, col);
}

/* A user row (columns as in STMT_USER_GET) viewed in place, valid until the next step. */
static void user_view(sqlite3_stmt *st, store_user *u)
{
    memset(u, 0, sizeof(*u));
    const char *id = col_text(st, 0);
    snprintf(u->id, sizeof(u->id), "%s", id ? id : "");
    u->username = (char *)col_text(st, 1);
    u->password_hash = (char *)col_text(st, 2);
    u->revoked = sqlite3_column_int(st, 3) != 0;
    u->tenant_name = (char *)col_text(st, 4);
    u->email = (char *)col_text(st, 5);
    u->data = (char *)col_text(st, 6);
    u->token_gen = sqlite3_column_int64(st, 7);
}

static int event_view_call(sqlite3_stmt *st, const char *tenant, store_event_fn fn, void *arg)
{
    store_event ev = {
        .seq = (uint64_t)sqlite3_column_int64(st, 0),
        .tenant = tenant,
        .event = col_text(st, 1),
        .data = col_text(st, 2),
        .ts_ms = sqlite3_column_int64(st, 3),
    };
    if (ev.event == NULL)
        ev.event = "";
    if (ev.data == NULL)
        ev.data = "null";
    return fn(&ev, arg);
}

/* ---- users ----------------------------------------------------------------- */

static store_status sqlite_user_create(store *base, const store_user *u)
{
    sqlite_store *s = (sqlite_store *)base;
    store_status ret = STORE_UNAVAILABLE;
    pthread_mutex_lock(&s->write_lock);
    sqlite3_stmt *st = conn_stmt(s->writer, STMT_USER_INSERT);
    if (st != NULL) {
        bind_text(st, 1, u->id);
        bind_text(st, 2, u->username);
        bind_text(st, 3, u->password_hash);
        sqlite3_bind_int(st, 4, u->revoked != 0);
        bind_text(st, 5, u->tenant_name);
        bind_text(st, 6, u->email);
        bind_text(st, 7, u->data);
        sqlite3_bind_int64(st, 8, u->token_gen);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            ret = STORE_OK;
        else if (sqlite3_extended_errcode(s->writer->db) == SQLITE_CONSTRAINT_UNIQUE)
            ret = STORE_CONFLICT; /* the only UNIQUE column is username */
        else
            ret = sq_fail(s->writer, "user create");
        stmt_done(st);
    }
    pthread_mutex_unlock(&s->write_lock);
    return ret;
}

static store_status sqlite_user_get(store *base, const char *username, store_user *out)
{
    sqlite_store *s = (sqlite_store *)base;
    memset(out, 0, sizeof(*out));
    sqlite_conn *c = reader_acquire(s);
    if (c == NULL)
        return STORE_UNAVAILABLE;
    store_status ret = STORE_UNAVAILABLE;
    sqlite3_stmt *st = conn_stmt(c, STMT_USER_GET);
    if (st != NULL) {
        bind_text(st, 1, username);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            store_user view;
            user_view(st, &view);
            if (store_user_copy(out, &view) != 0) {
                log_error("store sqlite: out of memory reading a user");
            } else {
                ret = STORE_OK;
            }
        } else if (rc == SQLITE_DONE) {
            ret = STORE_NOT_FOUND;
        } else {
            ret = sq_fail(c, "user get");
        }
        stmt_done(st);
    }
    reader_release(s, c);
    return ret;
}

static store_status sqlite_user_list(store *base, store_user_fn fn, void *arg)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite_conn *c = reader_acquire(s);
    if (c == NULL)
        return STORE_UNAVAILABLE;
    store_status ret = STORE_UNAVAILABLE;
    sqlite3_stmt *st = conn_stmt(c, STMT_USER_LIST);
    if (st != NULL) {
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            store_user view;
            user_view(st, &view);
            if (fn(&view, arg) != 0) {
                rc = SQLITE_DONE;
                break;
            }
        }
        ret = rc == SQLITE_DONE ? STORE_OK : sq_fail(c, "user list");
        stmt_done(st);
    }
    reader_release(s, c);
    return ret;
}

/* Runs an UPDATE on users under the write lock; no row changed = no such user. */
static store_status user_update_run(sqlite_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    store_status ret;
    if (rc != SQLITE_DONE)
        ret = sq_fail(s->writer, what);
    else
        ret = sqlite3_changes(s->writer->db) > 0 ? STORE_OK : STORE_NOT_FOUND;
    stmt_done(st);
    return ret;
}

static store_status sqlite_user_update(store *base, const store_user *u)
{
    sqlite_store *s = (sqlite_store *)base;
    store_status ret = STORE_UNAVAILABLE;
    pthread_mutex_lock(&s->write_lock);
    sqlite3_stmt *st = conn_stmt(s->writer, STMT_USER_UPDATE);
    if (st != NULL) {
        bind_text(st, 1, u->username);
        bind_text(st, 2, u->tenant_name);
        bind_text(st, 3, u->password_hash);
        bind_text(st, 4, u->email);
        bind_text(st, 5, u->data);
        sqlite3_bind_int(st, 6, u->revoked != 0);
        sqlite3_bind_int64(st, 7, u->token_gen);
        ret = user_update_run(s, st, "user update");
    }
    pthread_mutex_unlock(&s->write_lock);
    return ret;
}

static store_status sqlite_user_set_revoked(store *base, const char *username, int revoked)
{
    sqlite_store *s = (sqlite_store *)base;
    store_status ret = STORE_UNAVAILABLE;
    pthread_mutex_lock(&s->write_lock);
    sqlite3_stmt *st = conn_stmt(s->writer, STMT_USER_SET_REVOKED);
    if (st != NULL) {
        bind_text(st, 1, username);
        sqlite3_bind_int(st, 2, revoked != 0);
        ret = user_update_run(s, st, "user set revoked");
    }
    pthread_mutex_unlock(&s->write_lock);
    return ret;
}

/* ---- events ---------------------------------------------------------------- */

/* Takes `count` sequence numbers of `tenant`, inside the writer's open
 * transaction; *last_out is the last of them. */
static store_status take_seqs(sqlite_conn *c, const char *tenant, int64_t count, sqlite3_int64 *last_out)
{
    sqlite3_stmt *next = conn_stmt(c, STMT_TENANT_NEXT_SEQ);
    if (next == NULL)
        return STORE_UNAVAILABLE;
    bind_text(next, 1, tenant);
    sqlite3_bind_int64(next, 2, count);
    if (sqlite3_step(next) != SQLITE_ROW) {
        store_status ret = sq_fail(c, "event insert: next seq");
        stmt_done(next);
        return ret;
    }
    *last_out = sqlite3_column_int64(next, 0);
    /* Step RETURNING to completion before the next statement of the txn. */
    int rc = sqlite3_step(next);
    stmt_done(next);
    return rc == SQLITE_DONE ? STORE_OK : sq_fail(c, "event insert: next seq");
}

/* Gives every insert of the batch its sequence number: one statement per
 * tenant in the batch, not one per insert, numbered in batch order. */
static store_status batch_number(sqlite_conn *c, insert_req *batch)
{
    for (insert_req *r = batch; r != NULL; r = r->next) {
        if (r->refused)
            continue;
        const char *tenant = r->item->tenant;
        int first = 1;
        for (insert_req *p = batch; p != r && first; p = p->next)
            first = p->refused || strcmp(p->item->tenant, tenant) != 0;
        if (!first)
            continue; /* numbered with the tenant's first insert */
        int64_t count = 0;
        for (insert_req *q = r; q != NULL; q = q->next)
            count += !q->refused && strcmp(q->item->tenant, tenant) == 0;
        sqlite3_int64 seq;
        store_status ret = take_seqs(c, tenant, count, &seq);
        if (ret != STORE_OK)
            return ret;
        seq -= count - 1;
        for (insert_req *q = r; q != NULL; q = q->next)
            if (!q->refused && strcmp(q->item->tenant, tenant) == 0)
                q->item->seq = (uint64_t)seq++;
    }
    return STORE_OK;
}

/* Writes a numbered insert's row, and its name's latest pointer unless a
 * later insert of the batch has the same tenant and name. */
static store_status event_row(sqlite_conn *c, const insert_req *r)
{
    const store_insert *it = r->item;
    sqlite3_stmt *ins = conn_stmt(c, STMT_EVENT_INSERT);
    sqlite3_stmt *lat = conn_stmt(c, STMT_LATEST_UPSERT);
    if (ins == NULL || lat == NULL)
        return STORE_UNAVAILABLE;
    bind_text(ins, 1, it->tenant);
    sqlite3_bind_int64(ins, 2, (sqlite3_int64)it->seq);
    bind_text(ins, 3, it->event);
    bind_text(ins, 4, it->data);
    sqlite3_bind_int64(ins, 5, it->ts_ms);
    int rc = sqlite3_step(ins);
    store_status ret = rc == SQLITE_DONE ? STORE_OK : sq_fail(c, "event insert");
    stmt_done(ins);
    if (ret != STORE_OK)
        return ret;

    for (const insert_req *q = r->next; q != NULL; q = q->next)
        if (!q->refused && strcmp(q->item->event, it->event) == 0 && strcmp(q->item->tenant, it->tenant) == 0)
            return STORE_OK; /* superseded within the batch */
    bind_text(lat, 1, it->tenant);
    bind_text(lat, 2, it->event);
    sqlite3_bind_int64(lat, 3, (sqlite3_int64)it->seq);
    rc = sqlite3_step(lat);
    ret = rc == SQLITE_DONE ? STORE_OK : sq_fail(c, "event insert: latest");
    stmt_done(lat);
    return ret;
}

/* Refuses `r` when its name is new to its tenant and the tenant already
 * holds max_names names, counting the new names the batch adds before it.
 * One indexed lookup per insert that has a bound; the count only for a new
 * name. */
static store_status check_names(sqlite_conn *c, insert_req *batch, insert_req *r)
{
    const store_insert *it = r->item;
    if (it->max_names == 0)
        return STORE_OK;
    size_t added = 0;
    for (insert_req *p = batch; p != r; p = p->next) {
        if (p->refused || strcmp(p->item->tenant, it->tenant) != 0)
            continue;
        if (strcmp(p->item->event, it->event) == 0)
            return STORE_OK; /* the batch writes this name already */
        added += p->new_name;
    }
    sqlite3_stmt *has = conn_stmt(c, STMT_LATEST_HAS);
    if (has == NULL)
        return STORE_UNAVAILABLE;
    bind_text(has, 1, it->tenant);
    bind_text(has, 2, it->event);
    int rc = sqlite3_step(has);
    stmt_done(has);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc != SQLITE_DONE)
        return sq_fail(c, "event insert: name lookup");
    sqlite3_stmt *count = conn_stmt(c, STMT_LATEST_COUNT);
    if (count == NULL)
        return STORE_UNAVAILABLE;
    bind_text(count, 1, it->tenant);
    sqlite3_bind_int64(count, 2, (sqlite3_int64)it->max_names);
    rc = sqlite3_step(count);
    size_t n = rc == SQLITE_ROW ? (size_t)sqlite3_column_int64(count, 0) : 0;
    stmt_done(count);
    if (rc != SQLITE_ROW)
        return sq_fail(c, "event insert: name count");
    if (n + added >= it->max_names)
        r->refused = 1;
    else
        r->new_name = 1;
    return STORE_OK;
}

/* Commits a batch of inserts in one transaction: one fsync for all of them.
 * A failure fails the whole batch (it can only be the disk or the file).
 * Statements per batch: one per tenant for the numbers, one per insert for
 * its row, one per tenant and name for the latest pointers (the batch scans
 * are quadratic in its length, which the callers bound: ingest takes 256 at
 * most, and a request thread adds one insert). */
/* What a batch brings to the file, roughly: its strings. */
static size_t batch_bytes(const insert_req *batch)
{
    size_t n = 0;
    for (const insert_req *r = batch; r != NULL; r = r->next)
        n += strlen(r->item->tenant) + strlen(r->item->event) + strlen(r->item->data) + 64;
    return n;
}

static void commit_batch(sqlite_store *s, insert_req *batch)
{
    int full = 0;
    pthread_mutex_lock(&s->write_lock);
    sqlite_conn *c = s->writer;
    store_status ret = conn_exec(c, STMT_BEGIN_IMMEDIATE, "event insert: begin");
    for (insert_req *r = batch; r != NULL && ret == STORE_OK; r = r->next)
        ret = check_names(c, batch, r);
    if (ret == STORE_OK)
        ret = batch_number(c, batch);
    for (insert_req *r = batch; r != NULL && ret == STORE_OK; r = r->next)
        if (!r->refused)
            ret = event_row(c, r);
    if (ret == STORE_OK)
        ret = conn_exec(c, STMT_COMMIT, "event insert: commit");
    if (ret != STORE_OK) {
        full = sqlite3_errcode(c->db) == SQLITE_FULL;
        conn_abort(c);
    }
    pthread_mutex_unlock(&s->write_lock);
    atomic_store(&s->write_failing, ret != STORE_OK);
    size_t bytes = batch_bytes(batch);
    if (full) {
        ret = STORE_FULL;
        if (bytes > atomic_load(&s->full_need))
            atomic_store(&s->full_need, bytes);
    } else if (ret == STORE_OK && bytes >= atomic_load(&s->full_need)) {
        atomic_store(&s->full_need, 0);
    }
    for (insert_req *r = batch; r != NULL; r = r->next)
        r->item->status = ret == STORE_OK && r->refused ? STORE_LIMIT : ret;
}

/* Group commit, leader/follower style: a caller's inserts join the pending
 * list; if no commit is running, its thread becomes the leader and commits
 * everything pending (its own inserts included) in one transaction, again
 * and again while more arrive; the others sleep until their inserts are done.
 * With one client this is one transaction per insert; with many, a durable
 * insert costs a fraction of an fsync (bench/RESULTS.md, W3).  Commits take
 * the pending list whole and in order, so a caller's inserts are done when
 * its last one is. */
static void sqlite_event_insert_many(store *base, store_insert *items, size_t n)
{
    sqlite_store *s = (sqlite_store *)base;
    if (n == 0)
        return;
    insert_req one, *reqs = n == 1 ? &one : calloc(n, sizeof *reqs);
    pthread_cond_t wake;
    if (reqs == NULL) {
        log_error("store sqlite: event insert: out of memory");
        for (size_t i = 0; i < n; i++)
            items[i].status = STORE_UNAVAILABLE;
        return;
    }
    pthread_cond_init(&wake, NULL);
    pthread_mutex_lock(&s->commit_lock);
    for (size_t i = 0; i < n; i++) {
        reqs[i] = (insert_req){.item = &items[i], .wake = &wake};
        *s->pending_tail = &reqs[i];
        s->pending_tail = &reqs[i].next;
    }
    insert_req *last = &reqs[n - 1];
    /* A follower sleeps until a leader has done its inserts, or until the
     * running commit ends without them (then it leads the next one). */
    while (!last->done && s->committing)
        pthread_cond_wait(&wake, &s->commit_lock);
    while (!last->done) {
        /* Leader: commit what is pending until our own inserts are done. */
        insert_req *batch = s->pending;
        s->pending = NULL;
        s->pending_tail = &s->pending;
        s->committing = 1;
        pthread_mutex_unlock(&s->commit_lock);
        commit_batch(s, batch);
        pthread_mutex_lock(&s->commit_lock);
        for (insert_req *r = batch; r != NULL; r = r->next) {
            r->done = 1; /* r stays valid until we drop the lock */
            if (r->wake != &wake)
                pthread_cond_signal(r->wake);
        }
        s->committing = 0;
        /* The first insert still pending leads the next commit. */
        if (s->pending != NULL)
            pthread_cond_signal(s->pending->wake);
    }
    pthread_mutex_unlock(&s->commit_lock);
    pthread_cond_destroy(&wake);
    if (reqs != &one)
        free(reqs);
}

/* Walks the rows of a prepared event query; stops early when fn asks. */
static store_status event_walk(sqlite_conn *c, sqlite3_stmt *st, const char *tenant, store_event_fn fn, void *arg,
                               const char *what)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (event_view_call(st, tenant, fn, arg) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    store_status ret = rc == SQLITE_DONE ? STORE_OK : sq_fail(c, what);
    stmt_done(st);
    return ret;
}

static store_status sqlite_event_latest(store *base, const char *tenant, store_event_fn fn, void *arg,
                                        uint64_t *max_seq_out)
{
    sqlite_store *s = (sqlite_store *)base;
    sqlite_conn *c = reader_acquire(s);
    if (c == NULL)
        return STORE_UNAVAILABLE;
    /* One read transaction: the max seq and the snapshot come from the same
     * WAL snapshot, so a subscriber can resume live events right after it. */
    store_status ret = conn_exec(c, STMT_BEGIN, "event latest: begin");
    sqlite3_stmt *max = ret == STORE_OK ? conn_stmt(c, STMT_TENANT_MAX_SEQ) : NULL;
    sqlite3_stmt *lat = ret == STORE_OK ? conn_stmt(c, STMT_EVENT_LATEST) : NULL;
    if (max == NULL || lat == NULL)
        ret = STORE_UNAVAILABLE;
    if (ret == STORE_OK) {
        bind_text(max, 1, tenant);
        int rc = sqlite3_step(max);
        uint64_t max_seq = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(max, 0) : 0;
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            ret = sq_fail(c, "event latest: max seq");
        stmt_done(max);
        if (ret == STORE_OK && max_seq_out != NULL)
            *max_seq_out = max_seq;
    }
    if (ret == STORE_OK) {
        bind_text(lat, 1, tenant);
        ret = event_walk(c, lat, tenant, fn, arg, "event latest");
    }
    if (ret == STORE_OK)
        ret = conn_exec(c, STMT_COMMIT, "event latest: end");
    reader_release(s, c); /* rolls back if still open */
    return ret;
}

static store_status sqlite_event_range(store *base, const char *tenant, uint64_t after, uint64_t upto, size_t limit,
                                       store_event_fn fn, void *arg)
{
    sqlite_store *s = (sqlite_store *)base;
    /* SQLite integers are signed 64-bit; clamp so huge bounds mean "no bound". */
    const uint64_t imax = (uint64_t)INT64_MAX;
    if (after >= imax)
        return STORE_OK;
    if (upto == 0 || upto > imax)
        upto = imax;
    sqlite3_int64 lim = (limit == 0 || limit > imax) ? -1 : (sqlite3_int64)limit; /* -1: no limit */

    sqlite_conn *c = reader_acquire(s);
    if (c == NULL)
        return STORE_UNAVAILABLE;
    store_status ret = STORE_UNAVAILABLE;
    sqlite3_stmt *st = conn_stmt(c, STMT_EVENT_RANGE);
    if (st != NULL) {
        bind_text(st, 1, tenant);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)after);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)upto);
        sqlite3_bind_int64(st, 4, lim);
        ret = event_walk(c, st, tenant, fn, arg, "event range");
    }
    reader_release(s, c);
    return ret;
}

/* One small durable write, under the write lock; clears write_failing when it
 * goes through. */
static store_status probe_write(sqlite_store *s)
{
    pthread_mutex_lock(&s->write_lock);
    store_status ret = STORE_UNAVAILABLE;
    sqlite3_stmt *st = conn_stmt(s->writer, STMT_PROBE_WRITE);
    if (st != NULL) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
        ret = sqlite3_step(st) == SQLITE_DONE ? STORE_OK : sq_fail(s->writer, "probe write");
        stmt_done(st);
    }
    pthread_mutex_unlock(&s->write_lock);
    if (ret == STORE_OK)
        atomic_store(&s->write_failing, 0);
    return ret;
}

/* Whether the disk under the file has room for `need` bytes of events,
 * with a margin for SQLite's pages and journal. */
static int room_for(const sqlite_store *s, size_t need)
{
    struct statvfs fs;
    if (statvfs(s->path, &fs) != 0)
        return 0;
    return (unsigned long long)fs.f_bavail * fs.f_frsize >= 2ull * need + FULL_MARGIN;
}

static store_status sqlite_ping(store *base)
{
    sqlite_store *s = (sqlite_store *)base;
    size_t need = atomic_load(&s->full_need);
    if (need > 0) {
        if (!room_for(s, need))
            return STORE_FULL;
        if (probe_write(s) != STORE_OK)
            return STORE_UNAVAILABLE;
        atomic_compare_exchange_strong(&s->full_need, &need, 0);
    }
    if (atomic_load(&s->write_failing) && probe_write(s) != STORE_OK)
        return STORE_UNAVAILABLE;
    sqlite_conn *c = reader_acquire(s);
    if (c == NULL)
        return STORE_UNAVAILABLE;
    store_status ret = STORE_UNAVAILABLE;
    sqlite3_stmt *st = conn_stmt(c, STMT_PING);
    if (st != NULL) {
        ret = sqlite3_step(st) == SQLITE_ROW ? STORE_OK : sq_fail(c, "ping");
        stmt_done(st);
    }
    reader_release(s, c);
    return ret;
}

static const store_ops sqlite_ops = {
    .name = "sqlite",
    .user_create = sqlite_user_create,
    .user_get = sqlite_user_get,
    .user_list = sqlite_user_list,
    .user_update = sqlite_user_update,
    .user_set_revoked = sqlite_user_set_revoked,
    .event_insert_many = sqlite_event_insert_many,
    .event_latest = sqlite_event_latest,
    .event_range = sqlite_event_range,
    .ping = sqlite_ping,
    .close = sqlite_close,
};
