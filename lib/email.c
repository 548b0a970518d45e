/*
 * email.c - address syntax and the throwaway-domain hash sets.
 *
 * The sets are open-addressing tables of pointers into the embedded,
 * read-only lists (email_data.S): 121,570 domains cost one pointer-sized slot
 * each at load factor 1/2, and no string is copied.
 */
#include "email.h"
#include "hash.h"
#include "log.h"

#include <ctype.h>
#include <pthread.h>
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern const char email_data_domains[];
extern const char email_data_wildcards[];

typedef struct domain_set {
    const char **slots; /* each points at a line of the embedded list */
    size_t mask;
} domain_set;

static domain_set exact_set, wildcard_set;
static regex_t address_re;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_status = -1;

static uint64_t hash_bytes(const char *s, size_t len)
{
    return hash_fnv1a(s, len);
}

static size_t line_len(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0' && s[n] != '\n' && s[n] != '\r')
        n++;
    return n;
}

static int set_build(domain_set *set, const char *list)
{
    size_t lines = 0;
    for (const char *p = list; *p; p++)
        lines += *p == '\n';
    size_t cap = 16;
    while (cap < (lines + 1) * 2)
        cap <<= 1;
    set->slots = calloc(cap, sizeof *set->slots);
    if (set->slots == NULL)
        return -1;
    set->mask = cap - 1;
    for (const char *p = list; *p;) {
        size_t n = line_len(p);
        if (n > 0) {
            size_t i = hash_bytes(p, n) & set->mask;
            while (set->slots[i] != NULL)
                i = (i + 1) & set->mask;
            set->slots[i] = p;
        }
        p += n;
        while (*p == '\n' || *p == '\r')
            p++;
    }
    return 0;
}

static int set_contains(const domain_set *set, const char *s, size_t len)
{
    for (size_t i = hash_bytes(s, len) & set->mask; set->slots[i] != NULL; i = (i + 1) & set->mask)
        if (line_len(set->slots[i]) == len && memcmp(set->slots[i], s, len) == 0)
            return 1;
    return 0;
}

/* Local part: the printable characters RFC 5322 allows unquoted.  Domain: dot-
 * separated labels of letters, digits and inner hyphens, at least two labels,
 * a top-level label of letters of two or more (or an IDN "xn--" label). */
static const char ADDRESS_PATTERN[] =
    "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    "@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+([A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})$";

static void email_load(void)
{
    if (regcomp(&address_re, ADDRESS_PATTERN, REG_EXTENDED | REG_NOSUB) != 0) {
        log_error("email: the address pattern does not compile");
        return;
    }
    if (set_build(&exact_set, email_data_domains) != 0 || set_build(&wildcard_set, email_data_wildcards) != 0) {
        log_error("email: out of memory loading the throwaway-domain lists");
        return;
    }
    init_status = 0;
}

int email_init(void)
{
    pthread_once(&init_once, email_load);
    return init_status;
}

email_verdict email_check(const char *address)
{
    if (email_init() != 0 || address == NULL)
        return EMAIL_MALFORMED;
    size_t len = strlen(address);
    if (len < 3 || len > 254)
        return EMAIL_MALFORMED;
    const char *at = strrchr(address, '@');
    if (at == NULL || at - address > 64)
        return EMAIL_MALFORMED;
    if (regexec(&address_re, address, 0, NULL, 0) != 0)
        return EMAIL_MALFORMED;

    char domain[256];
    size_t dlen = strlen(at + 1);
    for (size_t i = 0; i <= dlen; i++)
        domain[i] = (char)tolower((unsigned char)at[1 + i]);
    if (set_contains(&exact_set, domain, dlen))
        return EMAIL_DISPOSABLE;
    /* The domain and each parent against the wildcard list. */
    for (const char *d = domain; d != NULL; d = strchr(d, '.') ? strchr(d, '.') + 1 : NULL)
        if (set_contains(&wildcard_set, d, strlen(d)))
            return EMAIL_DISPOSABLE;
    return EMAIL_OK;
}
