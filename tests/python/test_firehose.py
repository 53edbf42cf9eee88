"""Firehose tracing (amq.rabbitmq.trace), as RabbitMQ's: switched on per
vhost at run time, it copies every publish (publish.<exchange>) and every
delivery (deliver.<queue>) with the original body and, as headers, what the
message was and where it went. Runs against RabbitMQ too."""

import time

import pika
import pytest

from http_support import q

TRACE = "amq.rabbitmq.trace"


@pytest.fixture
def traced(api, broker):
    """A fresh vhost with tracing on and a queue bound to its trace
    exchange with '#'; yields (vhost, channel, capture queue)."""
    vhost = api.create_vhost()
    r = api.put(f"/api/vhosts/{q(vhost)}", {"tracing": True})
    assert r.status_code in (201, 204), r.text
    conn = pika.BlockingConnection(broker.params(virtual_host=vhost))
    ch = conn.channel()
    capture = ch.queue_declare("fh-capture").method.queue
    ch.queue_bind(capture, TRACE, "#")
    yield vhost, ch, capture
    if conn.is_open:
        conn.close()


def read_all(ch, queue, expect, timeout=5):
    """At least `expect` trace messages (all there are once that many came)."""
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            if len(got) >= expect:
                ch.connection.sleep(0.2)
                method, props, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    return got
            else:
                ch.connection.sleep(0.05)
                continue
        got.append((method.routing_key, props, body))
    pytest.fail(f"expected {expect} trace messages, got {[g[0] for g in got]}")


def test_the_trace_exchange_is_in_every_vhost(api, broker):
    vhost = api.create_vhost()
    x = api.json(f"/api/exchanges/{q(vhost)}/{TRACE}")
    assert (x["type"], x["durable"], x["internal"], x["auto_delete"]) == (
        "topic", True, True, False)
    assert api.json(f"/api/vhosts/{q(vhost)}")["tracing"] is False


def test_publishes_and_deliveries_are_copied(traced, broker, api):
    vhost, ch, capture = traced
    assert api.json(f"/api/vhosts/{q(vhost)}")["tracing"] is True
    conn = pika.BlockingConnection(broker.params(virtual_host=vhost))
    pch = conn.channel()
    pch.exchange_declare("fh-x", exchange_type="direct")
    pch.queue_declare("fh-q")
    pch.queue_bind("fh-q", "fh-x", "k")
    props = pika.BasicProperties(content_type="text/plain", headers={"a": 1, "s": "str"},
                                 delivery_mode=2, priority=3, correlation_id="c-1",
                                 message_id="m-1", timestamp=1700000000, app_id="fh")
    pch.basic_publish("fh-x", "k", b"traced body", props)
    pch.basic_publish("", "fh-q", b"second")
    pch.basic_publish("fh-x", "nokey", b"unroutable")
    got = read_all(ch, capture, 3)
    keys = [k for k, _, _ in got]
    assert keys == ["publish.fh-x", "publish.", "publish.fh-x"]
    key, tprops, body = got[0]
    assert body == b"traced body"
    assert tprops.delivery_mode is None and tprops.content_type is None
    h = tprops.headers
    assert h["exchange_name"] == "fh-x" and h["routing_keys"] == ["k"]
    assert h["routed_queues"] == ["fh-q"]
    assert h["vhost"] == vhost and h["user"] == "guest"
    assert h["channel"] == pch.channel_number
    assert " -> " in h["connection"]
    assert h["node"]
    p = h["properties"]
    assert p["content_type"] == "text/plain" and p["headers"] == {"a": 1, "s": "str"}
    assert (p["delivery_mode"], p["priority"], p["timestamp"]) == (2, 3, 1700000000)
    assert (p["correlation_id"], p["message_id"], p["app_id"]) == ("c-1", "m-1", "fh")
    assert "reply_to" not in p
    assert got[1][1].headers["exchange_name"] == ""
    assert got[2][1].headers["routed_queues"] == []

    # Deliveries: a get, then a consumer's redelivery after a nack.
    method, _, _ = pch.basic_get("fh-q")
    pch.basic_nack(method.delivery_tag, requeue=True)
    got = read_all(ch, capture, 1)
    assert [k for k, _, _ in got] == ["deliver.fh-q"]
    h = got[0][1].headers
    assert h["redelivered"] == 0 and h["exchange_name"] == "fh-x"
    assert got[0][2] == b"traced body"
    assert "routed_queues" not in h
    for method, _, _ in pch.consume("fh-q", inactivity_timeout=0.5):
        if method is None:
            break
        pch.basic_ack(method.delivery_tag)
    pch.cancel()
    got = read_all(ch, capture, 2)
    assert [k for k, _, _ in got] == ["deliver.fh-q", "deliver.fh-q"]
    assert got[0][1].headers["redelivered"] == 1
    conn.close()


def test_cc_keys_are_listed(traced, broker):
    vhost, ch, capture = traced
    conn = pika.BlockingConnection(broker.params(virtual_host=vhost))
    pch = conn.channel()
    pch.queue_declare("fh-a")
    pch.queue_declare("fh-b")
    pch.basic_publish("", "fh-a", b"cc", pika.BasicProperties(headers={"CC": ["fh-b"]}))
    got = read_all(ch, capture, 1)
    h = got[0][1].headers
    assert h["routing_keys"] == ["fh-a", "fh-b"]
    assert sorted(h["routed_queues"]) == ["fh-a", "fh-b"]
    conn.close()


def test_copies_are_not_traced_again_and_tracing_switches_off(traced, broker, api):
    vhost, ch, capture = traced
    ch.queue_declare("fh-plain")
    for i in range(3):
        ch.basic_publish("", "fh-plain", f"m{i}".encode())
    # Reading the copies (deliveries from the capture queue) adds none.
    got = read_all(ch, capture, 3)
    assert [k for k, _, _ in got] == ["publish."] * 3
    assert read_all(ch, capture, 0) == []
    r = api.put(f"/api/vhosts/{q(vhost)}", {"tracing": False})
    assert r.status_code in (201, 204)
    assert api.json(f"/api/vhosts/{q(vhost)}")["tracing"] is False
    ch.basic_publish("", "fh-plain", b"after")
    ch.connection.sleep(0.3)
    assert read_all(ch, capture, 0) == []
