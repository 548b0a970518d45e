/*
 * email.h - e-mail address checks for sign-up.
 *
 * An address must look like one (a conservative regular expression, at most
 * 254 bytes) and its domain must not be a throwaway one: the domain itself is
 * looked up in the shipped list, and the domain and each of its parents in the
 * wildcard list.  The lists are loaded once into hash sets.
 */
#ifndef BROKER_EMAIL_H
#define BROKER_EMAIL_H

typedef enum email_verdict {
    EMAIL_OK = 0,
    EMAIL_MALFORMED = 1,
    EMAIL_DISPOSABLE = 2,
} email_verdict;

/* Loads the lists (idempotent, thread-safe).  Returns 0, or -1 on failure. */
int email_init(void);
email_verdict email_check(const char *address);

#endif
