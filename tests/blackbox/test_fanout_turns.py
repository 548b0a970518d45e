"""The stream engine writes a big fan-out a slice at a time (FLUSH_BUDGET sockets per turn of its
loop) and takes its other work between slices: inserts it answers, new requests, hang-ups.

These tests need many subscribers at once (more than one slice), hanging up or inserting while a
fan-out is still being written. Run against the ASan build (blackbox-asan), a subscriber freed
while still queued for writing shows up as a crash here.
"""
import json
import socket
import struct
import threading
import time

from test_insert_wire import Conn, insert_id, insert_request, new_writer, sse_request, stream_events

SUBSCRIBERS = 300  # more than two slices of writes (FLUSH_BUDGET is 128)
EVENTS = 20


def open_subscribers(broker, jwt, n):
    subs = []
    try:
        for _ in range(n):
            c = Conn(broker)
            subs.append(c)
            c.send(sse_request(c.host, jwt))
        for c in subs:  # the engine authenticates them one after the other: a shared deadline
            head = c.read_response(timeout=60, stream=True)
            assert head.status == 200, "GET /sse answered %d" % head.status
    except BaseException:
        for c in subs:
            c.close()
        raise
    return subs


def reset(conn):
    """Hangs up with a TCP reset, the way a killed client's kernel does."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def live_values(conn, name, count):
    events = stream_events(conn, lambda evs: sum(e.event == name for e in evs) >= count)
    return [json.loads(e.data)["i"] for e in events if e.event == name]


def test_subscribers_hanging_up_during_a_fan_out(broker):
    # One sender inserts back to back while half the subscribers hang up one by one, so that
    # hang-ups land while fan-outs are half written.  The others must get every event, in order.
    _, jwt = new_writer(broker)
    subs = open_subscribers(broker, jwt, SUBSCRIBERS)
    leaving, staying = subs[::2], subs[1::2]
    events = 100
    ids, failure = [], []

    def send():
        try:
            with Conn(broker) as pub:
                for i in range(events):
                    ids.append(insert_id(pub.roundtrip(insert_request(pub.host, jwt, "fan", {"i": i}))))
        except BaseException as e:  # reported by the main thread
            failure.append(e)

    sender = threading.Thread(target=send)
    try:
        sender.start()
        for c in leaving:
            reset(c)
            time.sleep(0.001)
        sender.join(60)
        assert not sender.is_alive(), "the sender did not finish"
        assert not failure, "sender: %r" % failure
        assert ids == list(range(ids[0], ids[0] + events)), ids
        for k, c in enumerate(staying):
            got = live_values(c, "fan", events)
            assert got == list(range(events)), "subscriber %d got %r" % (k, got)
    finally:
        sender.join(60)
        for c in subs:
            c.close()
    assert broker.get("/healthz").status_code == 200


def test_inserts_answered_while_a_fan_out_is_written(broker):
    # A sender of one insert at a time, each after the answer to the last, while every event
    # goes to SUBSCRIBERS sockets: all answered, and every subscriber has every event in order.
    _, jwt = new_writer(broker)
    subs = open_subscribers(broker, jwt, SUBSCRIBERS)
    try:
        with Conn(broker) as pub:
            for i in range(EVENTS):
                insert_id(pub.roundtrip(insert_request(pub.host, jwt, "seq", {"i": i})))
        for k, c in enumerate(subs):
            got = live_values(c, "seq", EVENTS)
            assert got == list(range(EVENTS)), "subscriber %d got %r" % (k, got)
    finally:
        for c in subs:
            c.close()
