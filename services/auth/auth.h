/*
 * auth.h - the user system: create, login, verify, revoke, unrevoke, list,
 * get and update users (docs/API.md, HTTP API).
 */
#ifndef BROKER_AUTH_H
#define BROKER_AUTH_H

#include "runtime.h"

/* Adds the auth endpoints to `s`; handlers use `rt` for the store and flags. */
int auth_add_routes(http_server *s, broker_runtime *rt);

#endif
