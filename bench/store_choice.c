/*
 * store_choice.c - SQLite (WAL, synchronous=FULL) vs LMDB (default, synced
 * commits) for the broker's insert path, to choose the embedded store.
 *
 * Build and run (needs libsqlite3-dev and liblmdb-dev):
 *   gcc -O2 -Wall -Wextra -o /tmp/store_choice bench/store_choice.c -lsqlite3 -llmdb && /tmp/store_choice [DIR] [N]
 *
 * DIR (default: a fresh /tmp/store_choice.XXXXXX, which must be on the disk
 * under test) gets one subdirectory per engine; N (default 2000) durable
 * single-event commits are timed, then N*8 events in commits of 64.
 *
 * Each "insert" does what the broker's insert does: bump the tenant's
 * sequence, store the event under (tenant, seq), update latest[(tenant,
 * event)] = seq, all in one transaction.  Every commit is durable: SQLite
 * fsyncs the WAL at each commit (synchronous=FULL), LMDB syncs the data file
 * and then the meta page (no MDB_NOSYNC / MDB_NOMETASYNC).  The "fsync floor"
 * line is a 256-byte append + fdatasync, the least any durable commit costs.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <lmdb.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define TENANTS 4
#define NAMES 16

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "store_choice: %s: %s\n", what, why);
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Prints inserts/s and commit latency percentiles for one run. */
static void report(const char *label, size_t events, size_t commits, double total_us, double *lat)
{
    qsort(lat, commits, sizeof(*lat), cmp_double);
    double p50 = lat[commits / 2], p99 = lat[(size_t)(commits * 0.99)];
    printf("| %-32s | %7zu | %7zu | %10.0f | %9.2f | %9.2f |\n", label, events, commits, events / (total_us / 1e6),
           p50 / 1e3, p99 / 1e3);
    fflush(stdout);
}

/* A typical small event: the data is compact JSON of ~200 bytes. */
static void make_event(size_t i, char *tenant, char *name, char *data)
{
    sprintf(tenant, "tenant_%zu", i % TENANTS);
    sprintf(name, "event_%zu", (i * 7) % NAMES);
    sprintf(data,
            "{\"id\":%zu,\"user\":\"someone@example.com\",\"form\":{\"name\":\"Ada Lovelace\",\"age\":36,"
            "\"tags\":[\"math\",\"engine\",\"notes\"],\"done\":true},\"comment\":\"lorem ipsum dolor sit amet, "
            "consectetur adipiscing elit\"}",
            i);
}

/* ---- fsync floor ------------------------------------------------------------ */

static void bench_fsync(const char *dir, size_t n)
{
    char path[4096], buf[256];
    snprintf(path, sizeof(path), "%s/fsync.log", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0)
        die("open", path);
    memset(buf, 'x', sizeof(buf));
    double *lat = malloc(n * sizeof(*lat));
    double t0 = now_us();
    for (size_t i = 0; i < n; i++) {
        double t = now_us();
        if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fdatasync(fd) != 0)
            die("write/fdatasync", path);
        lat[i] = now_us() - t;
    }
    report("fsync floor (256 B + fdatasync)", n, n, now_us() - t0, lat);
    free(lat);
    close(fd);
}

/* ---- SQLite ------------------------------------------------------------------ */

typedef struct sq {
    sqlite3 *db;
    sqlite3_stmt *begin, *commit, *next, *ins, *lat;
} sq;

static void sq_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err);
}

static sqlite3_stmt *sq_prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die(sql, sqlite3_errmsg(db));
    return st;
}

static void sq_step(sq *q, sqlite3_stmt *st, int want)
{
    if (sqlite3_step(st) != want)
        die("step", sqlite3_errmsg(q->db));
}

static void sq_open(sq *q, const char *path)
{
    if (sqlite3_open(path, &q->db) != SQLITE_OK)
        die("sqlite open", path);
    sq_exec(q->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                   "CREATE TABLE tenants(name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;"
                   "CREATE TABLE events(tenant TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,"
                   " data TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY(tenant, seq)) WITHOUT ROWID;"
                   "CREATE TABLE latest(tenant TEXT NOT NULL, event TEXT NOT NULL, seq INTEGER NOT NULL,"
                   " PRIMARY KEY(tenant, event)) WITHOUT ROWID;");
    q->begin = sq_prep(q->db, "BEGIN IMMEDIATE");
    q->commit = sq_prep(q->db, "COMMIT");
    q->next = sq_prep(q->db, "INSERT INTO tenants(name, seq) VALUES (?1, 1)"
                             " ON CONFLICT(name) DO UPDATE SET seq = seq + 1 RETURNING seq");
    q->ins = sq_prep(q->db, "INSERT INTO events(tenant, seq, event, data, ts) VALUES (?1, ?2, ?3, ?4, ?5)");
    q->lat = sq_prep(q->db, "INSERT INTO latest(tenant, event, seq) VALUES (?1, ?2, ?3)"
                            " ON CONFLICT(tenant, event) DO UPDATE SET seq = excluded.seq");
}

static void sq_close(sq *q)
{
    sqlite3_finalize(q->begin);
    sqlite3_finalize(q->commit);
    sqlite3_finalize(q->next);
    sqlite3_finalize(q->ins);
    sqlite3_finalize(q->lat);
    sqlite3_close(q->db);
}

static void sq_insert_one(sq *q, size_t i)
{
    char tenant[32], name[32], data[512];
    make_event(i, tenant, name, data);
    sqlite3_bind_text(q->next, 1, tenant, -1, SQLITE_STATIC);
    sq_step(q, q->next, SQLITE_ROW);
    sqlite3_int64 seq = sqlite3_column_int64(q->next, 0);
    sqlite3_reset(q->next);
    sqlite3_bind_text(q->ins, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q->ins, 2, seq);
    sqlite3_bind_text(q->ins, 3, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->ins, 4, data, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q->ins, 5, (sqlite3_int64)i);
    sq_step(q, q->ins, SQLITE_DONE);
    sqlite3_reset(q->ins);
    sqlite3_bind_text(q->lat, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->lat, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q->lat, 3, seq);
    sq_step(q, q->lat, SQLITE_DONE);
    sqlite3_reset(q->lat);
}

static void bench_sqlite(const char *dir, size_t events, size_t per_commit, const char *label)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/sqlite-%zu.db", dir, per_commit);
    sq q = {0};
    sq_open(&q, path);
    size_t commits = events / per_commit;
    double *lat = malloc(commits * sizeof(*lat));
    double t0 = now_us();
    for (size_t c = 0; c < commits; c++) {
        double t = now_us();
        sq_step(&q, q.begin, SQLITE_DONE);
        sqlite3_reset(q.begin);
        for (size_t k = 0; k < per_commit; k++)
            sq_insert_one(&q, c * per_commit + k);
        sq_step(&q, q.commit, SQLITE_DONE);
        sqlite3_reset(q.commit);
        lat[c] = now_us() - t;
    }
    report(label, commits * per_commit, commits, now_us() - t0, lat);
    free(lat);
    sq_close(&q);
}

/* ---- LMDB -------------------------------------------------------------------- */

#define MDB_CHECK(call)                                                                                                \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_ != MDB_SUCCESS)                                                                                        \
            die(#call, mdb_strerror(rc_));                                                                             \
    } while (0)

typedef struct lm {
    MDB_env *env;
    MDB_dbi tenants, events, latest;
} lm;

static void lm_open(lm *l, const char *path)
{
    mkdir(path, 0700);
    MDB_CHECK(mdb_env_create(&l->env));
    MDB_CHECK(mdb_env_set_maxdbs(l->env, 4));
    MDB_CHECK(mdb_env_set_mapsize(l->env, (size_t)1 << 30));
    MDB_CHECK(mdb_env_open(l->env, path, 0, 0600)); /* default flags: synced commits */
    MDB_txn *txn;
    MDB_CHECK(mdb_txn_begin(l->env, NULL, 0, &txn));
    MDB_CHECK(mdb_dbi_open(txn, "tenants", MDB_CREATE, &l->tenants));
    MDB_CHECK(mdb_dbi_open(txn, "events", MDB_CREATE, &l->events));
    MDB_CHECK(mdb_dbi_open(txn, "latest", MDB_CREATE, &l->latest));
    MDB_CHECK(mdb_txn_commit(txn));
}

static void lm_insert_one(lm *l, MDB_txn *txn, size_t i)
{
    char tenant[32], name[32], data[512], key[96], val[600];
    make_event(i, tenant, name, data);
    size_t tlen = strlen(tenant) + 1; /* the NUL keeps "t_1" keys apart from "t_10" ones */

    MDB_val k = {tlen, tenant}, v;
    uint64_t seq = 1;
    int rc = mdb_get(txn, l->tenants, &k, &v);
    if (rc == MDB_SUCCESS) {
        memcpy(&seq, v.mv_data, sizeof(seq));
        seq++;
    } else if (rc != MDB_NOTFOUND) {
        die("mdb_get", mdb_strerror(rc));
    }
    v = (MDB_val){sizeof(seq), &seq};
    MDB_CHECK(mdb_put(txn, l->tenants, &k, &v, 0));

    /* events: tenant\0 + big-endian seq -> ts, name\0, data */
    memcpy(key, tenant, tlen);
    for (int b = 0; b < 8; b++)
        key[tlen + b] = (char)(seq >> (56 - 8 * b));
    int64_t ts = (int64_t)i;
    size_t nlen = strlen(name) + 1, dlen = strlen(data);
    memcpy(val, &ts, sizeof(ts));
    memcpy(val + sizeof(ts), name, nlen);
    memcpy(val + sizeof(ts) + nlen, data, dlen);
    k = (MDB_val){tlen + 8, key};
    v = (MDB_val){sizeof(ts) + nlen + dlen, val};
    MDB_CHECK(mdb_put(txn, l->events, &k, &v, 0));

    /* latest: tenant\0name -> seq */
    memcpy(key + tlen, name, nlen);
    k = (MDB_val){tlen + nlen, key};
    v = (MDB_val){sizeof(seq), &seq};
    MDB_CHECK(mdb_put(txn, l->latest, &k, &v, 0));
}

static void bench_lmdb(const char *dir, size_t events, size_t per_commit, const char *label)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/lmdb-%zu", dir, per_commit);
    lm l = {0};
    lm_open(&l, path);
    size_t commits = events / per_commit;
    double *lat = malloc(commits * sizeof(*lat));
    double t0 = now_us();
    for (size_t c = 0; c < commits; c++) {
        double t = now_us();
        MDB_txn *txn;
        MDB_CHECK(mdb_txn_begin(l.env, NULL, 0, &txn));
        for (size_t k = 0; k < per_commit; k++)
            lm_insert_one(&l, txn, c * per_commit + k);
        MDB_CHECK(mdb_txn_commit(txn));
        lat[c] = now_us() - t;
    }
    report(label, commits * per_commit, commits, now_us() - t0, lat);
    free(lat);
    mdb_env_close(l.env);
}

int main(int argc, char **argv)
{
    char tmpl[] = "/tmp/store_choice.XXXXXX";
    const char *dir = argc > 1 ? argv[1] : mkdtemp(tmpl);
    size_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 2000;
    if (dir == NULL || n < 100)
        die("usage", "store_choice [DIR] [N >= 100]");
    mkdir(dir, 0700);
    printf("dir %s, SQLite %s, %s\n\n", dir, sqlite3_libversion(), mdb_version(NULL, NULL, NULL));
    printf("| %-32s | %7s | %7s | %10s | %9s | %9s |\n", "engine", "events", "commits", "inserts/s", "p50 ms",
           "p99 ms");
    printf("|%s|%s|%s|%s|%s|%s|\n", "----------------------------------", "---------", "---------", "------------",
           "-----------", "-----------");
    bench_fsync(dir, n);
    bench_sqlite(dir, n, 1, "SQLite WAL FULL, 1/commit");
    bench_lmdb(dir, n, 1, "LMDB default, 1/commit");
    bench_sqlite(dir, n * 8, BATCH, "SQLite WAL FULL, 64/commit");
    bench_lmdb(dir, n * 8, BATCH, "LMDB default, 64/commit");
    return 0;
}
