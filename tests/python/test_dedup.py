"""Message deduplication with LavinMQ's names: x-message-deduplication on a
queue or an exchange, x-cache-size, x-cache-ttl, and the
x-deduplication-header header (or the header that argument names). A
duplicate within the window is dropped and still confirmed. Beyond
LavinMQ: a durable queue's window survives a restart."""

import time

import pika
import pytest

from amqp_support import depth, get_all, warren_on, warren_only

pytestmark = warren_only


def publish(ch, exchange, key, body, dedup_id=None, header="x-deduplication-header"):
    headers = None if dedup_id is None else {header: dedup_id}
    ch.basic_publish(exchange, key, body, pika.BasicProperties(headers=headers))


def test_a_queue_drops_duplicates_and_still_confirms_them(ch, names):
    q = names.q("dedup")
    ch.queue_declare(q, arguments={"x-message-deduplication": True})
    ch.confirm_delivery()
    for body, dedup_id in [(b"a", "1"), (b"a-again", "1"), (b"b", "2"), (b"no-id", None),
                           (b"no-id-again", None), (b"b-again", "2")]:
        publish(ch, "", q, body, dedup_id)  # each confirmed, or pika raises
    assert [b for _, _, b in get_all(ch, q)] == [b"a", b"b", b"no-id", b"no-id-again"]


def test_the_window_is_bounded_by_size_and_time(ch, names):
    sized, timed = names.q("sized"), names.q("timed")
    ch.queue_declare(sized, arguments={"x-message-deduplication": True, "x-cache-size": 2})
    ch.queue_declare(timed, arguments={"x-message-deduplication": True, "x-cache-ttl": 300})
    for dedup_id in ["1", "2", "3", "1"]:  # "1" was pushed out by "3"
        publish(ch, "", sized, dedup_id.encode(), dedup_id)
    publish(ch, "", timed, b"first", "x")
    publish(ch, "", timed, b"inside", "x")
    time.sleep(0.4)
    publish(ch, "", timed, b"outside", "x")
    assert [b for _, _, b in get_all(ch, sized)] == [b"1", b"2", b"3", b"1"]
    assert depth(ch, timed, expect=2) == 2
    assert [b for _, _, b in get_all(ch, timed)] == [b"first", b"outside"]


def test_an_argument_can_name_another_header(ch, names):
    q = names.q("named")
    ch.queue_declare(q, arguments={"x-message-deduplication": True,
                                   "x-deduplication-header": "order-id"})
    publish(ch, "", q, b"a", "42", header="order-id")
    publish(ch, "", q, b"b", "42", header="order-id")
    publish(ch, "", q, b"c", "42")  # the default header is not it here
    assert depth(ch, q, expect=2) == 2


def test_an_exchange_drops_duplicates_before_routing(ch, names):
    x = names.x("dedup")
    ch.exchange_declare(x, "fanout", arguments={"x-message-deduplication": True})
    q1, q2 = names.q("one"), names.q("two")
    for q in (q1, q2):
        ch.queue_declare(q)
        ch.queue_bind(q, x)
    ch.confirm_delivery()
    publish(ch, x, "", b"m", "7")
    publish(ch, x, "", b"m-again", "7")
    publish(ch, x, "", b"n", "8")
    for q in (q1, q2):
        assert [b for _, _, b in get_all(ch, q)] == [b"m", b"n"]


def test_bad_arguments_are_refused(connect, names):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(names.q("bad"), arguments={"x-message-deduplication": True,
                                                    "x-cache-size": "big"})
    assert e.value.reply_code == 406
    assert "x-cache-size must be a non-negative integer" in e.value.reply_text


def test_a_durable_queues_window_survives_a_restart(tmp_path):
    with warren_on(tmp_path) as broker:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        ch.queue_declare("orders", durable=True, arguments={"x-message-deduplication": True})
        ch.confirm_delivery()
        publish(ch, "", "orders", b"order-1", "o-1")
        publish(ch, "", "orders", b"order-2", "o-2")
        # Consumed before the restart: the ids stay in the window.
        assert [b for _, _, b in get_all(ch, "orders")] == [b"order-1", b"order-2"]
        conn.close()
    with warren_on(tmp_path) as broker:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        ch.confirm_delivery()
        publish(ch, "", "orders", b"order-1 retried", "o-1")
        publish(ch, "", "orders", b"order-3", "o-3")
        assert [b for _, _, b in get_all(ch, "orders")] == [b"order-3"]
        conn.close()


def test_the_management_api_publish_is_deduplicated_too(broker, ch, names):
    import requests
    x = names.x("dedup-http")
    ch.exchange_declare(x, "fanout", arguments={"x-message-deduplication": True})
    q = names.q("dedup-http")
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    url = f"http://{broker.host}:{broker.admin_port}/api/exchanges/%2F/{x}/publish"
    for payload in ["first", "again"]:
        r = requests.post(url, auth=(broker.user, broker.password), timeout=10, json={
            "routing_key": "", "payload": payload, "payload_encoding": "string",
            "properties": {"headers": {"x-deduplication-header": "h-1"}}})
        assert r.status_code == 200, r.text
    assert [b for _, _, b in get_all(ch, q)] == [b"first"]
