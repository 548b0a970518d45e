/*
 * test_stream_filter.c - GET /sse?events=: the value's items (split on the
 * raw commas, then percent-decoded; a trailing '*' makes a prefix), every
 * refusal naming its item, and the per-tenant index that finds the streams
 * an event's name matches, as streams come and go.
 */
#include "check.h"
#include "stream_internal.h"

static stream_filter *parsed(const char *raw)
{
    stream_filter *f = NULL;
    char why[256] = "";
    if (stream_filter_parse(raw, &f, why, sizeof why) != 0) {
        fprintf(stderr, "  %s: refused: %s\n", raw, why);
        check_case_failures++;
    }
    return f;
}

/* The refusal of `raw`, which must name `needle`. */
static void refused(const char *raw, const char *needle)
{
    stream_filter *f = (stream_filter *)1;
    char why[256] = "";
    CHECK_INT(stream_filter_parse(raw, &f, why, sizeof why), -1);
    CHECK(f == NULL);
    CHECK_CONTAINS(why, needle);
}

static void case_items(void)
{
    stream_filter *f = parsed("a,room.42.*");
    CHECK(f != NULL);
    CHECK_INT(f->n, 2);
    CHECK_STR(f->items[0].name, "a");
    CHECK_INT(f->items[0].prefix, 0);
    CHECK_STR(f->items[1].name, "room.42.");
    CHECK_INT(f->items[1].prefix, 1);
    free(f);

    /* Split first, decoded after: %2C is a comma inside a name, %2A a star. */
    f = parsed("a%2Cb,x%2A,%2B%2Bx%2C*");
    CHECK(f != NULL);
    CHECK_INT(f->n, 3);
    CHECK_STR(f->items[0].name, "a,b");
    CHECK_INT(f->items[0].prefix, 0);
    CHECK_STR(f->items[1].name, "x*");
    CHECK_INT(f->items[1].prefix, 0);
    CHECK_STR(f->items[2].name, "++x,");
    CHECK_INT(f->items[2].prefix, 1);
    free(f);
}

static void case_everything(void)
{
    stream_filter *f = (stream_filter *)1;
    char why[64];
    CHECK_INT(stream_filter_parse("*", &f, why, sizeof why), 0);
    CHECK(f == NULL);
    f = (stream_filter *)1;
    CHECK_INT(stream_filter_parse("a,*,b.*", &f, why, sizeof why), 0);
    CHECK(f == NULL);
    /* A bad item is refused whatever else the list holds. */
    refused("*,,a", "item 2");
}

static void case_duplicates_once(void)
{
    stream_filter *f = parsed("a,a,b.*,b.*,b.");
    CHECK(f != NULL);
    CHECK_INT(f->n, 3); /* "b." exact and "b." prefix are two items */
    free(f);
}

static void case_refusals(void)
{
    refused("", "item 1");
    refused("", "is empty");
    refused("a,,b", "item 2");
    refused("a,", "item 2");
    refused("a,%zz", "percent-encoded");
    refused("ok,%24presence", "reserved");
    refused("$x.*", "reserved");
    refused("bad%01name", "control characters");
    refused("a%00b", "item 1");

    char many[64 * 3 + 8] = "";
    for (int i = 0; i < 65; i++)
        strcat(many, i ? ",e" : "e");
    refused(many, "65 items");
    many[strlen(many) - 2] = '\0'; /* 64 items pass */
    stream_filter *f = parsed(many);
    CHECK(f != NULL);
    free(f);

    char name[300];
    memset(name, 'n', 257);
    name[257] = '\0';
    refused(name, "1 to 256 bytes");
    name[256] = '\0';
    f = parsed(name); /* 256: the longest name */
    CHECK(f != NULL);
    free(f);
    name[256] = '*';
    name[257] = '\0';
    refused(name, "at most 255 bytes"); /* a prefix of 256 matches nothing longer */
}

static void case_match(void)
{
    stream_filter *f = parsed("exact,room.*");
    CHECK(stream_filter_match(f, "exact", 5));
    CHECK(!stream_filter_match(f, "exactly", 7));
    CHECK(!stream_filter_match(f, "exac", 4));
    CHECK(stream_filter_match(f, "room.", 5));
    CHECK(stream_filter_match(f, "room.1.msg", 10));
    CHECK(!stream_filter_match(f, "room", 4));
    CHECK(!stream_filter_match(f, "roomy", 5));
    free(f);
}

/* ---- the index ---------------------------------------------------------- */

typedef struct seen {
    stream_client *who[16];
    int n;
} seen;

static void note(stream_client *c, void *arg)
{
    seen *s = arg;
    if (s->n < 16)
        s->who[s->n++] = c;
}

static int count_of(const seen *s, const stream_client *c)
{
    int k = 0;
    for (int i = 0; i < s->n; i++)
        k += s->who[i] == c;
    return k;
}

static seen lookup(filter_index *ix, const char *name)
{
    seen s = {.n = 0};
    filter_index_each(ix, name, strlen(name), note, &s);
    return s;
}

static void client_with(stream_client *c, const char *raw)
{
    memset(c, 0, sizeof *c);
    c->x = calloc(1, sizeof *c->x);
    c->x->filter = parsed(raw);
    c->x->slots = calloc(c->x->filter->n, sizeof *c->x->slots);
}

static void client_done(stream_client *c)
{
    free(c->x->filter);
    free(c->x->slots);
    free(c->x);
}

static void case_index(void)
{
    filter_index *ix = filter_index_new();
    stream_client a, b, c, d;
    client_with(&a, "room.1.*");
    client_with(&b, "room.1.msg,room.2.*");
    client_with(&c, "room.*,room.1.*"); /* overlapping: comes once per matching item */
    client_with(&d, "room.1.msg");
    CHECK_INT(filter_index_add(ix, &a), 0);
    CHECK_INT(filter_index_add(ix, &b), 0);
    CHECK_INT(filter_index_add(ix, &c), 0);
    CHECK_INT(filter_index_add(ix, &d), 0);

    seen s = lookup(ix, "room.1.msg");
    CHECK_INT(count_of(&s, &a), 1);
    CHECK_INT(count_of(&s, &b), 1);
    CHECK_INT(count_of(&s, &c), 2);
    CHECK_INT(count_of(&s, &d), 1);
    s = lookup(ix, "room.2.typing");
    CHECK_INT(s.n, 2);
    CHECK_INT(count_of(&s, &b), 1);
    CHECK_INT(count_of(&s, &c), 1);
    s = lookup(ix, "room.1."); /* a prefix takes a name equal to it */
    CHECK_INT(count_of(&s, &a), 1);
    s = lookup(ix, "lobby");
    CHECK_INT(s.n, 0);

    /* Leaving moves the last stream of an entry into the hole: every other
     * stream must still be found, and the one that left never. */
    filter_index_remove(ix, &a);
    s = lookup(ix, "room.1.msg");
    CHECK_INT(count_of(&s, &a), 0);
    CHECK_INT(count_of(&s, &b), 1);
    CHECK_INT(count_of(&s, &c), 2);
    CHECK_INT(count_of(&s, &d), 1);
    filter_index_remove(ix, &b);
    s = lookup(ix, "room.1.msg");
    CHECK_INT(s.n, 3);
    CHECK_INT(count_of(&s, &d), 1);
    client_done(&a);
    client_with(&a, "room.1.msg"); /* back, after the swaps */
    CHECK_INT(filter_index_add(ix, &a), 0);
    filter_index_remove(ix, &d);
    s = lookup(ix, "room.1.msg");
    CHECK_INT(count_of(&s, &a), 1);
    CHECK_INT(count_of(&s, &d), 0);
    filter_index_remove(ix, &a);
    filter_index_remove(ix, &c);
    s = lookup(ix, "room.1.msg");
    CHECK_INT(s.n, 0);
    client_done(&a);
    client_done(&b);
    client_done(&c);
    client_done(&d);
    filter_index_free(ix);
}

/* Enough distinct names that the table grows while streams sit in it. */
static void case_index_grows(void)
{
    enum { N = 200 };
    filter_index *ix = filter_index_new();
    static stream_client cs[N];
    char raw[64];
    for (int i = 0; i < N; i++) {
        snprintf(raw, sizeof raw, "n.%d,p.%d.*", i, i);
        client_with(&cs[i], raw);
        CHECK_INT(filter_index_add(ix, &cs[i]), 0);
    }
    int ok = 1;
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "n.%d", i);
        seen s = lookup(ix, name);
        ok &= s.n == 1 && s.who[0] == &cs[i];
        snprintf(name, sizeof name, "p.%d.x", i);
        s = lookup(ix, name);
        ok &= s.n == 1 && s.who[0] == &cs[i];
    }
    CHECK(ok);
    for (int i = 0; i < N; i++) {
        filter_index_remove(ix, &cs[i]);
        client_done(&cs[i]);
    }
    filter_index_free(ix);
}

int main(void)
{
    RUN_CASE(case_items);
    RUN_CASE(case_everything);
    RUN_CASE(case_duplicates_once);
    RUN_CASE(case_refusals);
    RUN_CASE(case_match);
    RUN_CASE(case_index);
    RUN_CASE(case_index_grows);
    return check_summary();
}
