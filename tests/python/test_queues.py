"""Queue declaration, exclusivity, auto-delete, purge, delete, bindings, and
the broker's basic.cancel when a consumed queue goes away."""

import time

import pika
import pika.compat
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqp_support import Deliveries, depth, wait_until


def put(ch, q, n):
    for i in range(n):
        ch.basic_publish("", q, str(i).encode())


def test_server_named_queue_and_counts_in_declare_ok(conn, broker):
    ch = conn.channel()
    ok = ch.queue_declare("", exclusive=True)
    name = ok.method.queue
    assert name.startswith("amq.gen-"), name
    assert len(name) == len("amq.gen-") + 22
    assert (ok.method.message_count, ok.method.consumer_count) == (0, 0)
    put(ch, name, 3)
    assert depth(ch, name, 3) == 3
    got = Deliveries(conn, ch, name)
    got.wait(3)
    assert got.bodies() == [b"0", b"1", b"2"]
    # All 3 delivered (unacked): none ready, one consumer.
    again = ch.queue_declare(name, passive=True)
    assert (again.method.message_count, again.method.consumer_count) == (0, 1)
    # Each server-named queue is new.
    assert ch.queue_declare("", exclusive=True).method.queue != name


def test_passive_declare_of_a_missing_queue_is_404(ch, broker, names):
    missing = names.q("missing")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(missing, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no queue '{missing}' in vhost '{broker.vhost}'")


def test_redeclaration_must_be_equivalent(conn, broker, names):
    q = names.q()
    ch = conn.channel()
    ch.queue_declare(q, arguments={"x-message-ttl": 1000})
    # The same value in another integer width (pika sends a long here) is
    # equivalent.
    ch.queue_declare(q, arguments={"x-message-ttl": pika.compat.long(1000)})
    # Arguments the broker does not know are not compared.
    ch.queue_declare(q, arguments={"x-message-ttl": 1000, "x-custom": 1})
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(q)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' "
             f"in vhost '{broker.vhost}': received none but current is the value "
             f"'1000' of type 'signedint'")
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(q, durable=True, arguments={"x-message-ttl": 1000})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' "
             f"in vhost '{broker.vhost}': received 'true' but current is 'false'")


def test_exclusive_queue_is_locked_to_its_connection_and_dies_with_it(
        connect, broker, names):
    owner = connect()
    other = connect()
    och = owner.channel()
    q = names.q("mine")
    och.queue_declare(q, exclusive=True)

    locked = (f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
              f"'{q}' in vhost '{broker.vhost}'. It could be originally declared "
              f"on another connection or the exclusive property value does not "
              f"match that of the original declaration.")
    attempts = {
        "passive declare": lambda c: c.queue_declare(q, passive=True),
        "declare": lambda c: c.queue_declare(q),
        "consume": lambda c: c.basic_consume(q, lambda *a: None),
        "get": lambda c: c.basic_get(q),
        "purge": lambda c: c.queue_purge(q),
        "delete": lambda c: c.queue_delete(q),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ChannelClosedByBroker) as ei:
            attempt(other.channel())
        assert ei.value.reply_code == 405, what
        if what in ("passive declare", "declare"):
            assert ei.value.reply_text == locked, what

    # Other connections may still publish to it through the default exchange.
    other.channel().basic_publish("", q, b"from the other connection")
    assert depth(och, q, 1) == 1

    owner.close()

    def gone():
        probe = other.channel()
        try:
            probe.queue_declare(q, passive=True)
        except ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return True
        probe.close()
        return False

    assert wait_until(other, gone, timeout=3), "exclusive queue outlived its owner"


def test_auto_delete_queue_goes_with_its_last_consumer(conn, names):
    ch = conn.channel()
    q = names.q("temp")
    ch.queue_declare(q, auto_delete=True)
    # No consumer yet: it stays.
    ch.queue_declare(q, passive=True)
    a = ch.basic_consume(q, lambda *args: None, consumer_tag="a")
    b = ch.basic_consume(q, lambda *args: None, consumer_tag="b")
    assert (a, b) == ("a", "b")
    ch.basic_cancel("a")
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel("b")

    def gone():
        probe = conn.channel()
        try:
            probe.queue_declare(q, passive=True)
        except ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return True
        probe.close()
        return False

    assert wait_until(conn, gone, timeout=2), "auto-delete queue survived"


def test_purge_and_delete_report_counts_and_honour_conditions(conn, broker, names):
    ch = conn.channel()
    p = names.q("p")
    ch.queue_declare(p)
    put(ch, p, 5)
    assert ch.queue_purge(p).method.message_count == 5
    assert depth(ch, p, 0) == 0
    assert ch.queue_purge(p).method.message_count == 0
    put(ch, p, 2)
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_delete(p, if_empty=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - queue '{p}' in vhost '{broker.vhost}' not empty")

    ch = conn.channel()
    ch.basic_consume(p, lambda *args: None, consumer_tag="c")
    other = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        other.queue_delete(p, if_unused=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - queue '{p}' in vhost '{broker.vhost}' in use")

    d = names.q("d")
    other = conn.channel()
    other.queue_declare(d)
    put(other, d, 4)
    assert other.queue_delete(d, if_unused=True, if_empty=False).method.message_count == 4
    # Deleting a missing queue succeeds with a count of 0.
    assert other.queue_delete(d).method.message_count == 0


def test_deleting_a_consumed_queue_cancels_its_consumer(conn, names):
    ch = conn.channel()
    q = names.q("gone")
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method))
    ch.basic_consume(q, lambda *args: None, consumer_tag="watcher")
    assert ch.consumer_tags == ["watcher"]
    conn.channel().queue_delete(q)
    assert wait_until(conn, lambda: cancelled, timeout=3), "no basic.cancel"
    assert len(cancelled) == 1
    assert cancelled[0].NAME == "Basic.Cancel"
    assert cancelled[0].consumer_tag == "watcher"
    assert ch.consumer_tags == []
    # The channel stays usable.
    assert ch.is_open
    ch.queue_declare(names.q("next"))


def test_bind_and_unbind_change_routing(conn, broker, names):
    ch = conn.channel()
    q = names.q("b")
    x = names.x("x")
    ch.exchange_declare(x, exchange_type="direct")
    ch.queue_declare(q)
    ch.queue_bind(q, x, routing_key="k")
    ch.queue_bind(q, x, routing_key="k")  # binding twice is idempotent
    ch.basic_publish(x, "k", b"1")
    ch.queue_unbind(q, x, routing_key="k")
    ch.basic_publish(x, "k", b"2")
    assert depth(ch, q, 1) == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"1"
    # Unbinding what is not bound is fine.
    ch.queue_unbind(q, x, routing_key="never")
    missing = names.x("nope")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_bind(q, missing, routing_key="k")
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no exchange '{missing}' in vhost '{broker.vhost}'")
    ch = conn.channel()
    missing_q = names.q("nope")
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_bind(missing_q, x, routing_key="k")
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no queue '{missing_q}' in vhost '{broker.vhost}'")


def test_reserved_queue_names_are_refused(ch, names):
    name = "amq.mine-" + names.tag
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(name)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        403, f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'")


def test_message_ttl_per_queue_and_per_message(ch, names):
    short, plain = names.q("ttl"), names.q("plain")
    ch.queue_declare(short, arguments={"x-message-ttl": 200})
    ch.queue_declare(plain)
    ch.basic_publish("", short, b"short-lived")
    ch.basic_publish("", plain, b"expires", pika.BasicProperties(expiration="200"))
    ch.basic_publish("", plain, b"stays")
    time.sleep(0.5)
    method, _, body = ch.basic_get(short, auto_ack=True)
    assert method is None, f"{body!r} outlived the queue's x-message-ttl"
    method, _, body = ch.basic_get(plain, auto_ack=True)
    assert body == b"stays", f"{body!r} outlived its expiration"
    assert method.message_count == 0
