/*
 * certd_challenge.c - HTTP-01: GET /.well-known/acme-challenge/<token>
 * answers the token's key authorization while an order waits for the CA to
 * look (RFC 8555 §8.3).  The route lives in the front door, so in the
 * all-in-one the --http_port listener serves it (its only answer that is not
 * a redirect) and broker-certd serves it on its own port, where the gateway
 * sends that path.
 */
#include "certd_internal.h"
#include "http.h"
#include "http_answer.h"

#include <stdlib.h>
#include <string.h>

#define CHALLENGE_PREFIX "/.well-known/acme-challenge/"

int certd_challenge_put(void *arg, const char *token, const char *key_authorization)
{
    certd *c = arg;
    if (strlen(token) >= sizeof c->challenges[0].token ||
        strlen(key_authorization) >= sizeof c->challenges[0].key_authorization)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&c->challenges_lock);
    for (int i = 0; i < CERTD_CHALLENGES && rc != 0; i++) {
        certd_challenge *ch = &c->challenges[i];
        if (ch->token[0] == '\0' || strcmp(ch->token, token) == 0) {
            strcpy(ch->token, token);
            strcpy(ch->key_authorization, key_authorization);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&c->challenges_lock);
    return rc;
}

void certd_challenge_drop(void *arg, const char *token)
{
    certd *c = arg;
    pthread_mutex_lock(&c->challenges_lock);
    for (int i = 0; i < CERTD_CHALLENGES; i++)
        if (strcmp(c->challenges[i].token, token) == 0)
            memset(&c->challenges[i], 0, sizeof c->challenges[i]);
    pthread_mutex_unlock(&c->challenges_lock);
}

/* The key authorization of the token the target names, copied into out;
 * 0 when no order waits on that token. */
static int find(certd *c, const char *token, size_t token_len, char *out, size_t size)
{
    int found = 0;
    pthread_mutex_lock(&c->challenges_lock);
    for (int i = 0; i < CERTD_CHALLENGES && !found; i++) {
        const certd_challenge *ch = &c->challenges[i];
        if (ch->token[0] != '\0' && strlen(ch->token) == token_len && memcmp(ch->token, token, token_len) == 0) {
            snprintf(out, size, "%s", ch->key_authorization);
            found = 1;
        }
    }
    pthread_mutex_unlock(&c->challenges_lock);
    return found;
}

static int challenge_route(door_conn *conn, const door_request *req, void *arg)
{
    certd *c = arg;
    const http_head *h = req->head;
    const char *token = h->target + strlen(CHALLENGE_PREFIX);
    size_t token_len = h->target_len - strlen(CHALLENGE_PREFIX);
    char key_authorization[sizeof c->challenges[0].key_authorization];
    if (!find(c, token, token_len, key_authorization, sizeof key_authorization)) {
        http_count_status(404);
        door_conn_refuse(conn, 404, req->request_id, NULL, "no ACME challenge waits for this token");
        return 1;
    }
    http_answer a = {.status = 200,
                     .request_id = req->request_id,
                     .content_type = "text/plain",
                     .body = key_authorization,
                     .body_len = strlen(key_authorization),
                     .close = !h->keep_alive};
    size_t len = 0;
    char *answer = http_answer_write(c->cfg, &a, &len);
    if (answer == NULL || door_conn_queue(conn, answer, len) != 0) {
        free(answer);
        door_conn_close(conn);
        return 1;
    }
    free(answer);
    http_count_status(200);
    door_conn_release(conn);
    return 1;
}

int certd_challenge_route(door *d, certd *c)
{
    return door_route_add(d, "GET", CHALLENGE_PREFIX, 1, challenge_route, c);
}
