/*
 * ingest.h - POST /insert: validate, store durably, then publish.
 */
#ifndef BROKER_INGEST_H
#define BROKER_INGEST_H

#include "runtime.h"

/* Adds POST /insert to `s`.  rt->bus must be open: every stored event is
 * published on it. */
int ingest_add_routes(http_server *s, broker_runtime *rt);

#endif
