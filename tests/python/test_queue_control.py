"""Queue control (Warren's; RabbitMQ declined it, LavinMQ forgets it on
restart): pausing a queue's deliveries over HTTP, kept across restarts."""

import pika
import pytest
import requests

from amqp_support import Deliveries, depth, warren_on, warren_only

pytestmark = warren_only


def http(broker, method, path, **kw):
    return requests.request(method, f"http://{broker.host}:{broker.admin_port}{path}",
                            auth=(broker.user, broker.password), timeout=10, **kw)


def state(broker, q):
    r = http(broker, "GET", f"/api/queues/%2F/{q}")
    assert r.status_code == 200, r.text
    return r.json()["state"]


def test_a_paused_queue_keeps_messages_until_resumed(broker, conn, names):
    ch = conn.channel()
    q = names.q("paused")
    ch.queue_declare(q)
    consumer = Deliveries(conn, ch, q)
    ch.basic_publish("", q, b"before")
    consumer.wait(1)
    assert consumer.bodies() == [b"before"]
    assert http(broker, "PUT", f"/api/queues/%2F/{q}/pause").status_code == 204
    assert state(broker, q) == "paused"
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    assert consumer.quiet(0.5)
    assert depth(ch, q, expect=5) == 5
    # basic.get finds a paused queue empty.
    assert ch.basic_get(q)[0] is None
    # The management API's get still reads it.
    r = http(broker, "POST", f"/api/queues/%2F/{q}/get",
             json={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert [m["payload"] for m in r.json()] == ["m0"]
    assert http(broker, "PUT", f"/api/queues/%2F/{q}/resume").status_code == 204
    assert state(broker, q) == "running"
    consumer.wait(6)
    assert consumer.bodies() == [b"before", b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_pausing_a_missing_queue_or_a_stream_is_refused(broker, conn, names):
    assert http(broker, "PUT", "/api/queues/%2F/no-such-queue/pause").status_code == 404
    ch = conn.channel()
    s = names.q("stream")
    ch.queue_declare(s, durable=True, arguments={"x-queue-type": "stream"})
    r = http(broker, "PUT", f"/api/queues/%2F/{s}/pause")
    assert r.status_code == 400
    assert "cannot be paused" in r.json()["reason"]


def test_a_paused_durable_queue_stays_paused_across_a_restart(tmp_path):
    with warren_on(tmp_path) as broker:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        ch.queue_declare("held", durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", "held", b"kept", pika.BasicProperties(delivery_mode=2))
        assert http(broker, "PUT", "/api/queues/%2F/held/pause").status_code == 204
        conn.close()
    with warren_on(tmp_path) as broker:
        assert state(broker, "held") == "paused"
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        consumer = Deliveries(conn, ch, "held")
        assert consumer.quiet(0.5)
        assert http(broker, "PUT", "/api/queues/%2F/held/resume").status_code == 204
        consumer.wait(1)
        assert consumer.bodies() == [b"kept"]
        conn.close()
    # Resumed is kept too.
    with warren_on(tmp_path) as broker:
        assert state(broker, "held") == "running"
