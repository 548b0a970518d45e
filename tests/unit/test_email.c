/*
 * test_email.c - sign-up address checks: syntax, the 254-byte limit, and the
 * throwaway-domain lists (exact and wildcard).
 *
 * The domains used below were picked from data/ so that each list is
 * exercised on its own:
 *   guerrillamail.com  exact list only
 *   anonaddy.com       wildcard list only
 *   10mail.org         both
 *   0-180.com / zzzz1717.com, 0x01.gq / zeroe.ml
 *                      the first and last lines of each file (the embedded
 *                      data's boundaries)
 * case_lists_contain_picks reads data/ (via BROKER_SOURCE_DIR) to make sure
 * the picks are still where this file says they are.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "email.h"
#include "log.h"

#include <pthread.h>

static const char *verdict_name(email_verdict v)
{
    switch (v) {
    case EMAIL_OK:
        return "OK";
    case EMAIL_MALFORMED:
        return "MALFORMED";
    case EMAIL_DISPOSABLE:
        return "DISPOSABLE";
    }
    return "?";
}

#define CHECK_EMAIL(addr, want)                                                                                        \
    do {                                                                                                               \
        const char *a_ = (addr);                                                                                       \
        email_verdict got_ = email_check(a_);                                                                          \
        if (got_ != (want)) {                                                                                          \
            fprintf(stderr, "  FAIL %s:%d: email_check(\"%s\") = %s, want %s\n", __FILE__, __LINE__,                  \
                    a_ ? a_ : "(null)", verdict_name(got_), verdict_name(want));                                       \
            check_case_failures++;                                                                                     \
        }                                                                                                              \
    } while (0)

/* 1 when `line` is a whole line of data/<file>. */
static int data_has_line(const char *file, const char *line)
{
    const char *root = getenv("BROKER_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/data/%s", root ? root : ".", file);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "  cannot open %s\n", path);
        return -1;
    }
    char buf[512];
    int found = 0;
    while (!found && fgets(buf, sizeof buf, f) != NULL) {
        buf[strcspn(buf, "\r\n")] = '\0';
        found = strcmp(buf, line) == 0;
    }
    fclose(f);
    return found;
}

static void *check_in_thread(void *arg)
{
    (void)arg;
    long bad = 0;
    for (int i = 0; i < 50; i++) {
        bad += email_check("someone@mailinator.com") != EMAIL_DISPOSABLE;
        bad += email_check("someone@example.com") != EMAIL_OK;
    }
    return (void *)bad;
}

/* First use from several threads at once: the lists load once, all agree. */
static void case_concurrent_first_use(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK_INT(pthread_create(&t[i], NULL, check_in_thread, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *bad = NULL;
        pthread_join(t[i], &bad);
        CHECK_INT((long)bad, 0);
    }
    CHECK_INT(email_init(), 0);
    CHECK_INT(email_init(), 0);
}

static void case_lists_contain_picks(void)
{
    CHECK_INT(data_has_line("disposable-email-domains.txt", "mailinator.com"), 1);
    CHECK_INT(data_has_line("disposable-email-domains.txt", "guerrillamail.com"), 1);
    CHECK_INT(data_has_line("disposable-email-wildcards.txt", "guerrillamail.com"), 0);
    CHECK_INT(data_has_line("disposable-email-domains.txt", "sub.guerrillamail.com"), 0);
    CHECK_INT(data_has_line("disposable-email-wildcards.txt", "anonaddy.com"), 1);
    CHECK_INT(data_has_line("disposable-email-domains.txt", "x.anonaddy.com"), 0);
    CHECK_INT(data_has_line("disposable-email-wildcards.txt", "10mail.org"), 1);
    CHECK_INT(data_has_line("disposable-email-domains.txt", "x.10mail.org"), 0);
    CHECK_INT(data_has_line("disposable-email-domains.txt", "0-180.com"), 1);
    CHECK_INT(data_has_line("disposable-email-domains.txt", "zzzz1717.com"), 1);
    CHECK_INT(data_has_line("disposable-email-wildcards.txt", "0x01.gq"), 1);
    CHECK_INT(data_has_line("disposable-email-wildcards.txt", "zeroe.ml"), 1);
    CHECK_INT(data_has_line("disposable-email-domains.txt", "example.com"), 0);
    CHECK_INT(data_has_line("disposable-email-domains.txt", "example.co.uk"), 0);
}

static void case_valid(void)
{
    CHECK_EMAIL("a@example.com", EMAIL_OK);
    CHECK_EMAIL("first.last+tag@sub.example.co.uk", EMAIL_OK);
    CHECK_EMAIL("Mixed.Case@Example.COM", EMAIL_OK);
    CHECK_EMAIL("o'brien@example.ie", EMAIL_OK);
    CHECK_EMAIL("x_y-z=1#2@ex-ample.com", EMAIL_OK);
    CHECK_EMAIL("user@xn--80ak6aa92e.com", EMAIL_OK);
    CHECK_EMAIL("user@example.xn--p1ai", EMAIL_OK);
    CHECK_EMAIL("a@b.co", EMAIL_OK);
    CHECK_EMAIL("1@2.example", EMAIL_OK);

    /* Exactly 254 bytes: 64-byte local part, '@', 189-byte domain. */
    char addr[300];
    memset(addr, 'l', 64);
    addr[64] = '@';
    char *d = addr + 65;
    memset(d, 'a', 63);
    d[63] = '.';
    memset(d + 64, 'b', 63);
    d[127] = '.';
    memset(d + 128, 'c', 57);
    strcpy(d + 185, ".com");
    CHECK_INT(strlen(addr), 254);
    CHECK_EMAIL(addr, EMAIL_OK);
}

static void case_malformed(void)
{
    static const char *const bad[] = {
        "",
        "a",
        "ab",
        "no-at.example.com",
        "a@@example.com",
        "a@b@example.com",
        "@example.com",
        "a@",
        "a b@example.com",
        " a@example.com",
        "a@example.com ",
        "a@exa mple.com",
        "a@example",
        "a@localhost",
        "a@-bad.example.com",
        "a@bad-.example.com",
        "a@example.-com",
        "a@.example.com",
        "a@example..com",
        "a@example.com.",
        "a@example.c",
        "a@example.123",
        "a@192.168.0.1",
        "a@[192.168.0.1]",
        ".a@example.com",
        "a.@example.com",
        "a..b@example.com",
        "\"quoted\"@example.com",
        "a(comment)@example.com",
        "a@exam_ple.com",
        "a@example.com\n",
        "a\n@example.com",
        "a@example.com\r\nBcc: x@example.com",
        "a\t@example.com",
        "ä@example.com",
        "a@exämple.com",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EMAIL(bad[i], EMAIL_MALFORMED);
    CHECK_EMAIL(NULL, EMAIL_MALFORMED);

    /* 255 bytes (the 254-byte valid address of case_valid, one longer). */
    char addr[400];
    memset(addr, 'l', 64);
    addr[64] = '@';
    char *d = addr + 65;
    memset(d, 'a', 63);
    d[63] = '.';
    memset(d + 64, 'b', 63);
    d[127] = '.';
    memset(d + 128, 'c', 58);
    strcpy(d + 186, ".com");
    CHECK_INT(strlen(addr), 255);
    CHECK_EMAIL(addr, EMAIL_MALFORMED);

    /* Much longer. */
    char huge[2000];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    huge[1000] = '@';
    memcpy(huge + 1980, ".com", 5);
    CHECK_EMAIL(huge, EMAIL_MALFORMED);

    /* Local part of 65 bytes. */
    char local[100];
    memset(local, 'l', 65);
    strcpy(local + 65, "@example.com");
    CHECK_EMAIL(local, EMAIL_MALFORMED);
    local[64] = '\0'; /* 64 is fine */
    strcat(local, "@example.com");
    CHECK_EMAIL(local, EMAIL_OK);

    /* A 64-byte domain label is too long; 63 is fine (case_valid). */
    char label[128] = "a@";
    memset(label + 2, 'x', 64);
    strcpy(label + 66, ".com");
    CHECK_EMAIL(label, EMAIL_MALFORMED);
}

static void case_disposable(void)
{
    /* Exact list. */
    CHECK_EMAIL("someone@mailinator.com", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@guerrillamail.com", EMAIL_DISPOSABLE);
    /* The first and last line of each list. */
    CHECK_EMAIL("someone@0-180.com", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@zzzz1717.com", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@0x01.gq", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@zeroe.ml", EMAIL_DISPOSABLE);
    /* Case-insensitive domain. */
    CHECK_EMAIL("someone@MAILINATOR.COM", EMAIL_DISPOSABLE);
    CHECK_EMAIL("Someone@MailInator.Com", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@GuerrillaMail.com", EMAIL_DISPOSABLE);
    /* Wildcard list: the domain itself and any subdomain. */
    CHECK_EMAIL("someone@anonaddy.com", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@x.anonaddy.com", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@x.10mail.org", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@deep.sub.10mail.org", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@X.10MAIL.ORG", EMAIL_DISPOSABLE);
    CHECK_EMAIL("someone@sub.zeroe.ml", EMAIL_DISPOSABLE);
    /* Exact-list domains do not extend to subdomains (email.h: "the domain
     * itself is looked up in the shipped list, and the domain and each of its
     * parents in the wildcard list"). */
    CHECK_EMAIL("someone@sub.guerrillamail.com", EMAIL_OK);
    /* Names that merely end like a listed domain are not it. */
    CHECK_EMAIL("someone@xguerrillamail.com", EMAIL_OK);
    CHECK_EMAIL("someone@xanonaddy.com", EMAIL_OK);
    CHECK_EMAIL("someone@anonaddy.com.example.com", EMAIL_OK);
    CHECK_EMAIL("someone@mailinator.co", EMAIL_OK);
    /* A listed domain in the local part means nothing. */
    CHECK_EMAIL("mailinator.com@example.com", EMAIL_OK);
}

int main(void)
{
    log_init("test_email", "error", NULL);
    RUN_CASE(case_concurrent_first_use);
    RUN_CASE(case_lists_contain_picks);
    RUN_CASE(case_valid);
    RUN_CASE(case_malformed);
    RUN_CASE(case_disposable);
    log_close();
    return check_summary();
}
