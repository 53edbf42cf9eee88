"""Resource alarms, as RabbitMQ's: publishers are sent connection.blocked and
not read while an alarm is on, consumers carry on, and connection.unblocked
follows once it clears; the health check answers 503 meanwhile.

These tests start a broker of their own with a tiny watermark or an
impossible disk limit, so they run against Warren only."""

import base64
import http.client
import json

import pika
import pytest

from amqp_support import start_warren, stop_warren, wait_until


@pytest.fixture
def own_broker(request, tmp_path):
    started = []

    def _start(extra_env, on_disk=False):
        args = ("--data-dir", str(tmp_path)) if on_disk else ("--ephemeral",)
        b = start_warren(extra_env, store_args=args)
        started.append(b)
        return b

    yield _start
    for b in started:
        stop_warren(b)


def alarms_check(broker):
    conn = http.client.HTTPConnection("127.0.0.1", broker.admin_port, timeout=5)
    auth = base64.b64encode(b"guest:guest").decode()
    conn.request("GET", "/api/health/checks/alarms",
                 headers={"Authorization": f"Basic {auth}"})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def watch_blocking(conn):
    seen = []
    conn.add_on_connection_blocked_callback(
        lambda _c, frame: seen.append(("blocked", frame.method.reason)))
    conn.add_on_connection_unblocked_callback(
        lambda _c, _frame: seen.append(("unblocked", None)))
    return seen


def test_the_memory_alarm_blocks_publishers_not_consumers_and_clears(own_broker):
    broker = own_broker({"WARREN_MEMORY_HIGH_WATERMARK": "64KiB"})
    publisher = pika.BlockingConnection(broker.params())
    seen = watch_blocking(publisher)
    pch = publisher.channel()
    pch.queue_declare("hoard")
    # 128 KiB of messages nobody consumes yet: past the watermark.
    for _ in range(128):
        pch.basic_publish("", "hoard", b"x" * 1024)
    assert wait_until(publisher, lambda: ("blocked", "low on memory") in seen), seen
    status, body = alarms_check(broker)
    assert status == 503
    assert body["status"] == "failed"
    assert [a["resource"] for a in body["alarms"]] == ["memory"]

    # A consumer on another connection carries on and drains the queue.
    consumer = pika.BlockingConnection(broker.params())
    cch = consumer.channel()
    got = 0
    for method, _props, _body in cch.consume("hoard", auto_ack=True,
                                            inactivity_timeout=2):
        if method is None:
            break
        got += 1
        if got == 128:
            break
    assert got == 128
    assert wait_until(publisher, lambda: ("unblocked", None) in seen, timeout=5), seen
    assert alarms_check(broker)[0] == 200
    # Publishing works again.
    pch.basic_publish("", "hoard", b"after")
    consumer.close()
    publisher.close()


def test_the_disk_alarm_blocks_publishers_when_free_space_is_below_the_limit(own_broker):
    broker = own_broker({"WARREN_DISK_FREE_LIMIT": "1000PB"}, on_disk=True)
    conn = pika.BlockingConnection(broker.params())
    seen = watch_blocking(conn)
    ch = conn.channel()
    ch.queue_declare("wanted")
    # The alarm is on from the start; a connection is blocked once it
    # publishes (as in RabbitMQ: one that only consumes carries on).
    ch.basic_publish("", "wanted", b"x")
    assert wait_until(conn, lambda: ("blocked", "low on disk") in seen, timeout=5), seen
    status, body = alarms_check(broker)
    assert status == 503
    assert body["reason"] == "resource alarm(s) in effect"
    assert [a["resource"] for a in body["alarms"]] == ["disk"]
    # A blocked connection is not read, so a clean close would wait for a
    # close-ok that never comes (RabbitMQ's too); the broker's shutdown
    # closes it.
