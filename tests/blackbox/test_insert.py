"""POST /insert of docs/API.md: credentials, the event/data rules, ids, body size.

Choices where the API contract is silent (as the stream needs them):
  * an event name with a line break (\\n or \\r) is bad input (400): it would break SSE framing;
  * "event" is limited in bytes of UTF-8, not characters;
  * ids are per-tenant sequences: a tenant's first id does not depend on other tenants' inserts.
"""

import json
import re

import pytest

from conftest import (assert_error, assert_ok, basic_header, bearer_header, describe,
                      make_jwt, uniq)

DECIMAL = re.compile(r"^[0-9]+$")


def insert(broker, headers, event="e", data=None, raw=None):
    if raw is not None:
        return broker.post_raw("/insert", raw, headers=headers)
    return broker.post("/insert", {"event": event, "data": data}, headers=headers)


def insert_id(broker, headers, event="e", data=None):
    """Inserts and insists on 200 {"id": "<decimal>"}; returns the id as int."""
    r = insert(broker, headers, event, data)
    body = assert_ok(r)
    assert isinstance(body, dict) and set(body) == {"id"}, "insert answered %s" % describe(r)
    assert isinstance(body["id"], str) and DECIMAL.match(body["id"]), \
        "id must be a decimal string: %s" % describe(r)
    return int(body["id"])


@pytest.fixture(scope="module")
def writer(broker):
    """A user (Basic) and its JWT, in a tenant of its own."""
    u = broker.create_user(tenant_name=uniq("t"))
    return u, broker.login(u.username, u.password)


# ================================================================ success and ids

def test_insert_with_bearer_and_basic(broker, writer):
    u, jwt = writer
    a = insert_id(broker, bearer_header(jwt), "bearer", {"v": 1})
    b = insert_id(broker, u.basic(), "basic", {"v": 2})
    assert b > a, "ids must increase within a tenant: %d then %d" % (a, b)


def test_ids_strictly_increasing_and_per_tenant(broker):
    # Prefix-named tenants: "<p>_1" is a prefix of "<p>_10"; both fresh.
    p = uniq("t")
    u1 = broker.create_user(tenant_name=p + "_1")
    u10 = broker.create_user(tenant_name=p + "_10")
    ids1 = [insert_id(broker, u1.basic(), "ev", {"i": i}) for i in range(5)]
    first10 = insert_id(broker, u10.basic(), "ev", {"i": 0})
    # Each tenant starts its own sequence: 5 inserts in t_1 do not move t_10's first id.
    assert first10 == ids1[0], \
        "tenant %s_10's first id %d != tenant %s_1's first id %d: ids are not per tenant" \
        % (p, first10, p, ids1[0])
    # Interleave: each tenant's ids keep strictly increasing.
    ids10 = [first10]
    for i in range(5):
        ids1.append(insert_id(broker, u1.basic(), "ev", {"i": 10 + i}))
        ids10.append(insert_id(broker, u10.basic(), "other", {"i": 10 + i}))
    for ids, t in ((ids1, "_1"), (ids10, "_10")):
        assert all(a < b for a, b in zip(ids, ids[1:])), \
            "ids of tenant %s%s not strictly increasing: %r" % (p, t, ids)
    # Tenant t_10's sequence is not advanced by t_1's inserts (10 inserts vs 6).
    assert ids10[-1] < ids1[-1], "t_10 ids %r vs t_1 ids %r: not independent" % (ids10, ids1)


# ================================================================ 401

def test_no_credentials_401(broker):
    assert_error(broker.post("/insert", {"event": "e", "data": 1}), 401)


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ""])
def test_bad_jwt_401(broker, token):
    assert_error(insert(broker, {"Authorization": "Bearer " + token}, "e", 1), 401)


def test_forged_jwt_401(broker, writer):
    u, _ = writer
    tok = make_jwt({"sub": u.username, "tenant": u.tenant_name, "iat": 1, "exp": 4102444800,
                    "iss": "broker"}, "not-the-secret")
    assert_error(insert(broker, bearer_header(tok), "e", 1), 401)


def test_wrong_basic_password_401(broker, writer):
    u, _ = writer
    assert_error(insert(broker, basic_header(u.username, u.password + "x"), "e", 1), 401)


def test_revoked_user_401(broker):
    u = broker.create_user()
    jwt = broker.login(u.username, u.password)
    insert_id(broker, bearer_header(jwt), "e", 1)
    assert_ok(broker.admin("/revoke_user", username=u.username))
    assert_error(insert(broker, bearer_header(jwt), "e", 2), 401)
    assert_error(insert(broker, u.basic(), "e", 3), 401)
    # ... and back once unrevoked
    assert_ok(broker.admin("/unrevoke_user", username=u.username))
    insert_id(broker, u.basic(), "e", 4)


# ================================================================ 400

BAD_BODIES = {
    "malformed_json": b'{"event": "e", "data": ',
    "trailing_garbage": b'{"event": "e", "data": 1} x',
    "not_json": b"event=e&data=1",
    "empty_body": b"",
    "array": b'[{"event": "e", "data": 1}]',
    "string": b'"e"',
    "number": b"42",
    "null": b"null",
    "missing_event": b'{"data": 1}',
    "missing_data": b'{"event": "e"}',
    "event_number": b'{"event": 5, "data": 1}',
    "event_null": b'{"event": null, "data": 1}',
    "event_object": b'{"event": {"a": 1}, "data": 1}',
    "event_empty": b'{"event": "", "data": 1}',
    "event_257_bytes": json.dumps({"event": "x" * 257, "data": 1}).encode(),
    "event_257_utf8_bytes": json.dumps({"event": "\u00e9" * 128 + "x", "data": 1}).encode(),
    "event_newline": b'{"event": "a\\nb", "data": 1}',
    "event_cr": b'{"event": "a\\rb", "data": 1}',
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_body_400(broker, writer, name):
    u, _ = writer
    assert_error(insert(broker, u.basic(), raw=BAD_BODIES[name]), 400)


def test_event_of_256_bytes_ok(broker, writer):
    u, _ = writer
    insert_id(broker, u.basic(), "x" * 256, 1)
    insert_id(broker, u.basic(), "\u00e9" * 128, 1)  # 256 bytes of UTF-8


@pytest.mark.parametrize("data", [
    None, 0, -1.5, 12345678901234567, True, False, "", "text", "line\nbreak \u00e9 \U0001F600",
    [], [1, "a", None], {}, {"a": {"b": [1, {"c": None}]}}, [[[[[]]]]],
], ids=lambda d: type(d).__name__ + "_" + json.dumps(d)[:12])
def test_any_json_data_ok(broker, writer, data):
    u, _ = writer
    insert_id(broker, u.basic(), "anydata", data)


# ================================================================ 413

def test_body_over_max_body_413(broker_factory):
    b = broker_factory(["--max_body", "1024"])
    u = b.create_user()
    small = json.dumps({"event": "e", "data": "x" * 900}).encode()
    assert len(small) <= 1024
    r = b.post_raw("/insert", small, headers=u.basic())
    assert_ok(r)
    big = json.dumps({"event": "e", "data": "x" * 1100}).encode()
    assert_error(b.post_raw("/insert", big, headers=u.basic()), 413)
