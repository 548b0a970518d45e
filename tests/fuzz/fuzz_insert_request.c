/*
 * fuzz_insert_request.c - libFuzzer target for insert_request_parse, which
 * decides whether the front door's insert route takes a POST /insert
 * (services/ingest/insert_request.c).
 *
 * Aborts when a documented property breaks: a verdict outside the enum, a
 * taken request whose parts lie outside what it was given or whose body is
 * empty, or a request that frames differently on its own than with bytes
 * after it.  AddressSanitizer catches any read past the input.
 */
#include "insert_request.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(cond)                                                                                                  \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "REQUIRE failed %s:%d: %s\n", __FILE__, __LINE__, #cond);                                 \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so that a read past `size` is an ASan report. */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    insert_request ir;
    insert_verdict v = insert_request_parse(buf, size, size + 16, 1 << 20, &ir);
    REQUIRE(v == INSERT_NEED_MORE || v == INSERT_FAST || v == INSERT_OTHER);
    if (v == INSERT_FAST) {
        REQUIRE(ir.total_len <= size && ir.body_off + ir.body_len == ir.total_len && ir.body_len > 0);
        REQUIRE(ir.auth_off + ir.auth_len <= ir.body_off && ir.auth_len >= 7);
        REQUIRE(ir.id_len == 0 || ir.id_off + ir.id_len <= ir.body_off);
        /* The same request alone frames the same way. */
        insert_request again;
        REQUIRE(insert_request_parse(buf, ir.total_len, ir.total_len, 1 << 20, &again) == INSERT_FAST &&
                again.total_len == ir.total_len && again.auth_off == ir.auth_off &&
                again.body_off == ir.body_off);
    }
    free(buf);
    return 0;
}
