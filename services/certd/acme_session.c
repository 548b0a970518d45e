/*
 * acme_session.c - one conversation with an ACME CA: the HTTP exchanges, the
 * nonces, the signed POSTs, the CA's problem documents, and the polling.
 *
 * A session is one curl easy handle reused for every request of a call (one
 * TLS connection to the CA most of the time), the directory, the latest
 * unused nonce and the account URL; nothing outlives the call, so there is no
 * global state beyond curl_global_init (run once, under pthread_once).
 *
 * Every request goes through acme_http(), the one place that bounds it: a
 * deadline for the whole call, 30 s per request, 1 MiB per body (a hostile CA
 * must not exhaust memory), https only (unless the directory itself is http),
 * and a progress callback that aborts as soon as certd is shutting down.
 * Every POST goes through acme_post(), the one place that signs (acme_jws.c),
 * uses up nonces and retries badNonce, and turns the CA's problem documents
 * into the why-text the caller logs: an operator reads it, so it always says
 * which step failed and what the CA said.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime, strdup under -std=c11 */
#endif
#include "acme.h"
#include "acme_internal.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#ifndef BROKER_VERSION
#define BROKER_VERSION "dev"
#endif

#define ACME_DEFAULT_TIMEOUT_S 300
#define ACME_REQUEST_TIMEOUT_MS 30000L
#define ACME_CONNECT_TIMEOUT_MS 10000L
#define ACME_BADNONCE_RETRIES 5
#define ACME_POLL_DEFAULT_MS 1000L
#define ACME_POLL_CAP_MS 10000L
#define ACME_SLEEP_SLICE_MS 100L
#define PROBLEM_BADNONCE "urn:ietf:params:acme:error:badNonce"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int stopping(const acme_session *s)
{
    return s->cfg->stop != NULL && *s->cfg->stop != 0;
}

int acme_fail(acme_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->why, s->why_size, fmt, ap);
    va_end(ap);
    return -1;
}

void acme_response_free(acme_response *r)
{
    free(r->body);
    free(r->location);
    memset(r, 0, sizeof *r);
}

/* ---- one HTTP exchange --------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    acme_response *r = arg;
    size_t n = size * nmemb;
    if (n > ACME_MAX_BODY - r->len) {
        r->too_large = 1;
        return 0; /* curl aborts the transfer with CURLE_WRITE_ERROR */
    }
    char *grown = realloc(r->body, r->len + n + 1);
    if (grown == NULL)
        return 0;
    memcpy(grown + r->len, data, n);
    r->body = grown;
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return stopping(arg) ? 1 : 0;
}

static int url_allowed(const acme_session *s, const char *url)
{
    return url != NULL && (strncasecmp(url, "https://", 8) == 0 || (s->allow_http && strncasecmp(url, "http://", 7) == 0));
}

/* The curl failure as an operator would say it. */
static int transfer_failed(acme_session *s, const char *what, const char *url, CURLcode rc, const acme_response *r)
{
    const char *detail = s->curl_err[0] ? s->curl_err : curl_easy_strerror(rc);
    if (stopping(s))
        return acme_fail(s, "stopped: certd is shutting down");
    if (r->too_large)
        return acme_fail(s, "%s %s: the answer is larger than %d bytes", what, url, ACME_MAX_BODY);
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
        return acme_fail(s, "%s %s: could not resolve the host: %s", what, url, detail);
    case CURLE_COULDNT_CONNECT:
        return acme_fail(s, "%s %s: could not connect: %s", what, url, detail);
    case CURLE_OPERATION_TIMEDOUT:
        return acme_fail(s, "%s %s: timed out: %s", what, url, detail);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        return acme_fail(s, "%s %s: TLS failed: %s", what, url, detail);
    default:
        return acme_fail(s, "%s %s: %s", what, url, detail);
    }
}

static char *header_copy(CURL *curl, const char *name)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(curl, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || h == NULL || h->value == NULL)
        return NULL;
    return strdup(h->value);
}

/* GET, HEAD (payload NULL, head 1) or POST of `payload` as JOSE JSON. 0 with *r filled (any
 * status), or -1 with why when no answer came. */
int acme_http(acme_session *s, const char *what, const char *url, const char *payload, int head, const char *accept,
              acme_response *r)
{
    memset(r, 0, sizeof *r);
    if (!url_allowed(s, url))
        return acme_fail(s, "%s: refusing the URL \"%s\": only %s is allowed", what, url ? url : "(none)",
                         s->allow_http ? "http(s)" : "https");
    if (stopping(s))
        return acme_fail(s, "stopped: certd is shutting down");
    long long left = s->deadline_ms - now_ms();
    if (left <= 0)
        return acme_fail(s, "timed out before %s %s could be asked", what, url);
    struct curl_slist *headers = NULL, *h;
    char accept_header[128];
    snprintf(accept_header, sizeof accept_header, "Accept: %s", accept ? accept : "application/json");
    if ((h = curl_slist_append(headers, accept_header)) != NULL)
        headers = h;
    if (payload != NULL && (h = curl_slist_append(headers, "Content-Type: application/jose+json")) != NULL)
        headers = h;
    s->curl_err[0] = '\0';
    CURL *c = s->curl;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L); /* back to GET after a HEAD or a POST on this handle */
    if (head)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (payload != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, left < ACME_REQUEST_TIMEOUT_MS ? left : ACME_REQUEST_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, left < ACME_CONNECT_TIMEOUT_MS ? left : ACME_CONNECT_TIMEOUT_MS);
    CURLcode rc = headers == NULL ? CURLE_OUT_OF_MEMORY : curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        transfer_failed(s, what, url, rc, r);
        acme_response_free(r);
        return -1;
    }
    curl_off_t retry = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &retry) == CURLE_OK && retry > 0)
        r->retry_after = retry > 86400 * 7 ? 86400 * 7 : (long)retry;
    r->location = header_copy(c, "Location");
    char *nonce = header_copy(c, "Replay-Nonce");
    if (nonce != NULL) { /* every answer may carry a fresh nonce: keep the latest */
        free(s->nonce);
        s->nonce = nonce;
    }
    return 0;
}

/* ---- problems (RFC 7807) and POST ---------------------------------------------------- */

json_t *acme_response_json(const acme_response *r)
{
    return r->body != NULL ? json_loadb(r->body, r->len, 0, NULL) : NULL;
}

const char *acme_json_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* "type: detail", then each subproblem as "; <identifier>: type: detail". */
void acme_problem_text(const json_t *problem, char *out, size_t size)
{
    const char *type = acme_json_str(problem, "type"), *detail = acme_json_str(problem, "detail");
    int used = snprintf(out, size, "%s: %s", type ? type : "(no type)", detail ? detail : "(no detail)");
    const json_t *subs = json_object_get(problem, "subproblems");
    size_t i;
    const json_t *sub;
    json_array_foreach(subs, i, sub)
    {
        if (used < 0 || (size_t)used >= size)
            return;
        const char *ident = acme_json_str(json_object_get(sub, "identifier"), "value");
        const char *st = acme_json_str(sub, "type"), *sd = acme_json_str(sub, "detail");
        used += snprintf(out + used, size - (size_t)used, "; %s: %s: %s", ident ? ident : "?", st ? st : "?",
                         sd ? sd : "?");
    }
}

/* An error answer as the why: what the CA said, and when it says to come back. */
int acme_refused(acme_session *s, const char *what, const acme_response *r)
{
    char text[1024];
    json_t *problem = acme_response_json(r);
    if (json_is_object(problem))
        acme_problem_text(problem, text, sizeof text);
    else
        snprintf(text, sizeof text, "HTTP %ld without a problem document", r->status);
    json_decref(problem);
    if (r->retry_after > 0 || r->status == 429 || r->status == 503)
        return acme_fail(s, "%s was refused: %s (HTTP %ld, retry after %ld s)", what, text, r->status, r->retry_after);
    return acme_fail(s, "%s was refused: %s", what, text);
}

static int is_bad_nonce(const acme_response *r)
{
    if (r->status != 400)
        return 0;
    json_t *problem = acme_response_json(r);
    const char *type = acme_json_str(problem, "type");
    int bad = type != NULL && strcmp(type, PROBLEM_BADNONCE) == 0;
    json_decref(problem);
    return bad;
}

static int fresh_nonce(acme_session *s)
{
    if (s->nonce != NULL)
        return 0;
    acme_response r;
    const char *url = acme_json_str(s->dir, "newNonce");
    if (acme_http(s, "the nonce", url, NULL, 1, NULL, &r) != 0)
        return -1;
    long status = r.status;
    acme_response_free(&r);
    if (s->nonce == NULL || status >= 400)
        return acme_fail(s, "the nonce %s: no Replay-Nonce in the answer (HTTP %ld)", url, status);
    return 0;
}

/* A signed POST of `payload` ("" = POST-as-GET); a badNonce answer is retried with the nonce it
 * carried.  0 with a successful *r; -1 with why (transport failure or error answer). */
int acme_post(acme_session *s, const char *what, const char *url, const char *payload, const char *accept,
              acme_response *r)
{
    for (int attempt = 0;; attempt++) {
        if (fresh_nonce(s) != 0)
            return -1;
        char *nonce = s->nonce;
        s->nonce = NULL; /* a nonce is good for one request */
        char *jws = acme_jws(s->account_key, s->kid, nonce, url, payload);
        free(nonce);
        if (jws == NULL)
            return acme_fail(s, "%s: could not sign the request (OpenSSL)", what);
        int rc = acme_http(s, what, url, jws, 0, accept, r);
        free(jws);
        if (rc != 0)
            return -1;
        if (r->status < 400)
            return 0;
        if (!is_bad_nonce(r) || attempt >= ACME_BADNONCE_RETRIES)
            break;
        acme_response_free(r);
    }
    acme_refused(s, what, r);
    acme_response_free(r);
    return -1;
}

/* acme_post whose answer must be a JSON object: *out (decref it), and *location if asked. */
int acme_post_json(acme_session *s, const char *what, const char *url, const char *payload, json_t **out,
                   char **location, long *retry_after)
{
    acme_response r;
    if (acme_post(s, what, url, payload, NULL, &r) != 0)
        return -1;
    *out = acme_response_json(&r);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        acme_fail(s, "%s %s: the answer is not a JSON object (HTTP %ld)", what, url, r.status);
        acme_response_free(&r);
        return -1;
    }
    if (location != NULL) {
        *location = r.location;
        r.location = NULL;
    }
    if (retry_after != NULL)
        *retry_after = r.retry_after;
    acme_response_free(&r);
    return 0;
}

/* ---- waiting ------------------------------------------------------------------------- */

/* Sleeps `ms` in slices so that a shutdown is noticed; -1 if it was, or if the deadline would
 * pass first. */
static int pause_ms(acme_session *s, long ms, const char *waiting_for)
{
    if (now_ms() + ms >= s->deadline_ms)
        return acme_fail(s, "timed out waiting for %s", waiting_for);
    for (long slept = 0; slept < ms; slept += ACME_SLEEP_SLICE_MS) {
        if (stopping(s))
            return acme_fail(s, "stopped: certd is shutting down");
        long slice = ms - slept < ACME_SLEEP_SLICE_MS ? ms - slept : ACME_SLEEP_SLICE_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = slice * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* POST-as-GET `url` until its status is neither pending nor processing (nor `also`, if given);
 * waits as long as Retry-After says, capped, or a second.  *out is the last object. */
int acme_poll(acme_session *s, const char *what, const char *url, const char *also, const char *waiting_for,
              json_t **out)
{
    for (;;) {
        long retry_after = 0;
        if (acme_post_json(s, what, url, "", out, NULL, &retry_after) != 0)
            return -1;
        const char *status = acme_json_str(*out, "status");
        if (status == NULL) {
            json_decref(*out);
            *out = NULL;
            return acme_fail(s, "%s %s: the answer has no status", what, url);
        }
        if (strcmp(status, "pending") != 0 && strcmp(status, "processing") != 0 && (also == NULL || strcmp(status, also) != 0))
            return 0;
        json_decref(*out);
        *out = NULL;
        long wait = retry_after > 0 ? retry_after * 1000 : ACME_POLL_DEFAULT_MS;
        if (pause_ms(s, wait < ACME_POLL_CAP_MS ? wait : ACME_POLL_CAP_MS, waiting_for) != 0)
            return -1;
    }
}

/* ---- opening and closing ------------------------------------------------------------- */

int acme_session_open(acme_session *s, const acme_config *cfg, char *why, size_t why_size)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->why = why;
    s->why_size = why_size;
    if (why_size > 0)
        why[0] = '\0';
    if (cfg == NULL || cfg->directory_url == NULL)
        return acme_fail(s, "no ACME directory URL");
    int timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : ACME_DEFAULT_TIMEOUT_S;
    s->deadline_ms = now_ms() + (long long)timeout_s * 1000;
    s->allow_http = strncasecmp(cfg->directory_url, "http://", 7) == 0;
    if (pthread_once(&curl_once, curl_init) != 0 || curl_init_rc != CURLE_OK)
        return acme_fail(s, "libcurl could not be initialised");
    if ((s->curl = curl_easy_init()) == NULL)
        return acme_fail(s, "libcurl could not make a handle");
    CURL *c = s->curl;
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* worker thread: no SIGALRM for DNS timeouts */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s->curl_err);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "broker-certd/" BROKER_VERSION);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, s->allow_http ? "http,https" : "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L); /* ACME never redirects; Location means a resource */
    if (cfg->ca_file != NULL)
        curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
    return 0;
}

void acme_session_close(acme_session *s)
{
    if (s->curl != NULL)
        curl_easy_cleanup(s->curl);
    json_decref(s->dir);
    free(s->nonce);
    free(s->kid);
    s->curl = NULL;
    s->dir = NULL;
    s->nonce = s->kid = NULL;
}