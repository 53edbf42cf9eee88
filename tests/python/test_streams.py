"""Stream queues (x-queue-type: stream) over AMQP 0-9-1 (issue 13).

Everything not marked otherwise is what RabbitMQ 3.10.8 does, checked by
running this file against it (WARREN_TEST_RABBITMQ); the same tests then
judge Warren. Where RabbitMQ 3.10.8 crashes the connection with
541 INTERNAL_ERROR on a malformed argument, Warren is expected to refuse it
with the nearest 406 RabbitMQ gives for that argument instead (the tests say
so where it happens). Tests marked `warren_only` are features RabbitMQ 3.10.8
does not have (exact filtering, server-side offset tracking, retention on an
idle stream, ...); tests marked `rabbitmq_only` record what 3.10.8 does where
Warren deliberately differs.

Things RabbitMQ 3.10.8 does that are worth knowing when reading the tests:

* Offsets are per record in the log, not per message: RabbitMQ writes a
  tracking snapshot at the start of every segment, so offsets skip one at
  each segment roll (only visible with a small
  x-stream-max-segment-size-bytes). Within a segment they are consecutive
  from 0.
* "last" means the first offset of the last *chunk* (a batch of records
  written together). Publishing one message at a time, each waiting for its
  confirm, makes every message its own chunk, so "last" is then the last
  message; the tests publish that way unless they say otherwise.
* A stream's message count (queue.declare-ok, management API) comes from
  statistics refreshed about every 5 s, so the tests poll for it.
* The declare-ok consumer_count of a stream is always 0, queue.delete
  ignores if-unused and if-empty, basic.consume's exclusive flag is not
  enforced: all asserted here as RabbitMQ does them.
"""

import datetime
import time

import pika
import pika.data
import pytest
from pika.exceptions import ChannelClosedByBroker

from amqp_support import pump, start_warren, stop_warren, wait_until, warren_only
from http_support import eventually, until
from http_support import q as segment
from stream_support import (COUNT_TIMEOUT, STREAM, Reader, declare, first_retained,
                            msgs, offset_header_types, prefix, publish, rabbitmq_only,
                            read_all, refused_on_channel, refused_on_connection,
                            roundtrip)

# ------------------------------------------------------------------ declare

def test_durable_stream_declare_and_message_count(connect, broker, names):
    conn = connect()
    ch = conn.channel()
    q = names.q("stream")
    ok = declare(ch, q)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    publish(conn, q, msgs(7))
    reader = Reader(conn, q, "first").wait(7)

    def count():
        m = ch.queue_declare(q, passive=True).method
        assert m.message_count == 7
        return m
    passive = eventually(count, timeout=COUNT_TIMEOUT)
    # A stream's declare-ok never counts its consumers (RabbitMQ 3.10.8).
    assert passive.consumer_count == 0
    active = declare(ch, q)
    assert (active.message_count, active.consumer_count) == (7, 0)

    # Messages are not consumed away: a second reader sees them all again.
    Reader(conn, q, "first").exactly(msgs(7))
    assert reader.bodies() == msgs(7)

    # queue.delete ignores if-empty on a stream and reports 0 messages.
    deleted = ch.queue_delete(q, if_empty=True).method
    assert deleted.message_count == 0
    assert wait_until(conn, lambda: reader.cancelled, 3.0)
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(q, passive=True)
    assert ei.value.reply_code == 404


@pytest.mark.parametrize("flags,prop", [
    (dict(durable=False), "non-durable"),
    (dict(durable=True, exclusive=True), "exclusive-owner"),
    (dict(durable=True, auto_delete=True), "auto-delete"),
])
def test_transient_properties_are_refused(conn, broker, names, flags, prop):
    q = names.q("transient")
    assert refused_on_channel(
        lambda: conn.channel().queue_declare(q, arguments=STREAM, **flags)) == (
        406, f"PRECONDITION_FAILED - invalid property '{prop}' for queue '{q}' "
             f"in vhost '{broker.vhost}'")


@pytest.mark.parametrize("arg,value", [
    ("x-dead-letter-exchange", "dlx"),
    ("x-dead-letter-routing-key", "rk"),
    ("x-dead-letter-strategy", "at-least-once"),
    ("x-expires", 1000),
    ("x-delivery-limit", 3),
    ("x-overflow", "reject-publish"),
    ("x-overflow", "drop-head"),
    ("x-single-active-consumer", True),
    ("x-single-active-consumer", False),
    ("x-max-priority", 5),
    ("x-max-priority", 0),
    ("x-message-ttl", 1000),
    ("x-max-length", 10),
    ("x-max-in-memory-length", 5),
    ("x-max-in-memory-bytes", 5),
    ("x-quorum-initial-group-size", 1),
    ("x-queue-mode", "lazy"),
    ("x-queue-master-locator", "min-masters"),
])
def test_queue_arguments_refused_on_a_stream(conn, broker, names, arg, value):
    q = names.q("badarg")
    assert refused_on_channel(
        lambda: declare(conn.channel(), q, **{arg: value})) == (
        406, prefix(broker.vhost, q, arg) + " of queue type rabbit_stream_queue")


@pytest.mark.parametrize("arg,value", [
    ("x-max-length-bytes", 1000),
    ("x-max-length-bytes", 0),
    ("x-max-age", "7D"),
    ("x-max-age", "1h"),
    ("x-max-age", "30m"),
    ("x-max-age", "10s"),
    ("x-max-age", "1Y"),
    ("x-max-age", "1M"),
    ("x-max-age", "01h"),
    ("x-stream-max-segment-size-bytes", 1000),
    ("x-stream-max-segment-size-bytes", 0),
    ("x-stream-max-segment-size-bytes", 3_000_000_000),
    ("x-initial-cluster-size", 1),
    ("x-queue-leader-locator", "balanced"),
    # 3.13's filter size is not known to 3.10.8; unknown x-args are kept.
    ("x-stream-filter-size-bytes", 32),
    ("x-unknown-argument", 1),
])
def test_stream_arguments_accepted(conn, names, arg, value):
    ch = conn.channel()
    q = names.q("okarg")
    declare(ch, q, **{arg: value})
    # ... and a redeclaration with the same arguments is equivalent.
    declare(ch, q, **{arg: value})


@pytest.mark.parametrize("arg,value,reason", [
    ("x-max-age", "7X", "invalid_max_age"),
    ("x-max-age", "1d", "invalid_max_age"),
    ("x-max-age", "1H", "invalid_max_age"),
    ("x-max-age", "1S", "invalid_max_age"),
    ("x-max-age", "1.5h", "invalid_max_age"),
    ("x-max-age", "0s", "invalid_max_age"),
    ("x-max-age", "10", "invalid_max_age"),
    ("x-max-age", 5, "{unacceptable_type,signedint}"),
    ("x-max-length-bytes", -1, "{value_negative,-1}"),
    ("x-max-length-bytes", "big", '"expected integer, got longstr"'),
    ("x-stream-max-segment-size-bytes", -1, "{value_negative,-1}"),
    ("x-stream-max-segment-size-bytes", "big", '"expected integer, got longstr"'),
    ("x-initial-cluster-size", 0, "{value_zero,0}"),
    ("x-queue-leader-locator", "bogus", "invalid_queue_locator_arg"),
])
def test_invalid_stream_arguments(conn, broker, names, arg, value, reason):
    q = names.q("invalid")
    assert refused_on_channel(lambda: declare(conn.channel(), q, **{arg: value})) == (
        406, f"{prefix(broker.vhost, q, arg)}: {reason}")


@pytest.mark.parametrize("value", [3_000_000_001, 5_000_000_000, 2**62])
def test_segment_size_over_the_maximum(conn, names, value):
    q = names.q("bigseg")
    assert refused_on_channel(
        lambda: declare(conn.channel(), q, **{"x-stream-max-segment-size-bytes": value})) == (
        406, "PRECONDITION_FAILED - Exceeded max value for x-stream-max-segment-size-bytes")


@pytest.mark.parametrize("value", ["-1h", "h", "", " 1h"])
def test_malformed_max_age(connect, broker, names, value):
    """RabbitMQ 3.10.8 crashes on these (541 INTERNAL_ERROR, connection
    closed); Warren refuses them like "7X"."""
    conn = connect()
    q = names.q("badage")
    if broker.is_warren:
        assert refused_on_channel(
            lambda: declare(conn.channel(), q, **{"x-max-age": value})) == (
            406, f"{prefix(broker.vhost, q, 'x-max-age')}: invalid_max_age")
    else:
        assert refused_on_connection(
            conn, lambda: declare(conn.channel(), q, **{"x-max-age": value})) == (
            541, "INTERNAL_ERROR")


def test_redeclare_with_different_arguments(conn, broker, names):
    ch = conn.channel()
    q = names.q("redeclare")
    args = {"x-max-age": "1h", "x-max-length-bytes": 100000}
    declare(ch, q, **args)
    vh = broker.vhost
    head = f"PRECONDITION_FAILED - inequivalent arg '%s' for queue '{q}' in vhost '{vh}': "
    cases = [
        ({"x-max-age": "2h", "x-max-length-bytes": 100000}, True,
         head % "x-max-age" + "received '2h' but current is '1h'"),
        ({"x-max-age": "1h", "x-max-length-bytes": 5}, True,
         head % "x-max-length-bytes" + "received '5' but current is '100000'"),
        ({}, True, head % "x-max-length-bytes"
         + "received none but current is the value '100000' of type 'signedint'"),
        (dict(args, **{"x-stream-max-segment-size-bytes": 1000}), True,
         head % "x-stream-max-segment-size-bytes"
         + "received the value '1000' of type 'signedint' but current is none"),
        # x-queue-type is compared after x-max-length-bytes but before
        # x-max-age.
        ({"x-queue-type": "quorum"}, False, head % "x-max-length-bytes"
         + "received none but current is the value '100000' of type 'signedint'"),
        ({"x-queue-type": "quorum", "x-max-length-bytes": 100000}, False,
         head % "x-queue-type" + "received 'quorum' but current is 'stream'"),
        ({"x-max-age": "1h", "x-max-length-bytes": 100000}, False,
         head % "x-queue-type"
         + "received none but current is the value 'stream' of type 'longstr'"),
    ]
    for arguments, add_type, text in cases:
        full = dict(STREAM, **arguments) if add_type else arguments
        assert refused_on_channel(
            lambda: conn.channel().queue_declare(q, durable=True, arguments=full)) == (
            406, text), arguments
    for flags, text in [
        (dict(durable=False), head % "durable" + "received 'false' but current is 'true'"),
        (dict(durable=True, auto_delete=True),
         head % "auto_delete" + "received 'true' but current is 'false'"),
    ]:
        assert refused_on_channel(lambda: conn.channel().queue_declare(
            q, arguments=dict(STREAM, **args), **flags)) == (406, text)
    assert refused_on_channel(lambda: conn.channel().queue_declare(
        q, durable=True, exclusive=True, arguments=dict(STREAM, **args))) == (
        405, f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' "
             f"in vhost '{vh}'. It could be originally declared on another connection "
             f"or the exclusive property value does not match that of the original "
             f"declaration.")
    # Still there, unchanged.
    declare(conn.channel(), q, **args)


# ------------------------------------------------------------------ consume

def test_consume_needs_a_consumer_prefetch(conn, broker, names):
    ch = conn.channel()
    q = names.q("noqos")
    declare(ch, q)
    text = (f"PRECONDITION_FAILED - consumer prefetch count is not set for "
            f"'queue '{q}' in vhost '{broker.vhost}''")

    def consume(qos=None, **kw):
        c = conn.channel()
        if qos is not None:
            c.basic_qos(**qos)
        c.basic_consume(q, lambda *a: None, **kw)

    # No basic.qos, prefetch 0, or only a global (channel-wide) prefetch.
    assert refused_on_channel(lambda: consume()) == (406, text)
    assert refused_on_channel(lambda: consume(dict(prefetch_count=0))) == (406, text)
    assert refused_on_channel(
        lambda: consume(dict(prefetch_count=10, global_qos=True))) == (406, text)
    # The prefetch check comes before the auto-ack one.
    assert refused_on_channel(lambda: consume(auto_ack=True)) == (406, text)


def test_global_and_consumer_prefetch_together_are_accepted(conn, names):
    q = names.q("qos")
    declare(conn.channel(), q)
    publish(conn, q, msgs(3))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10, global_qos=True)
    got = []
    ch.basic_qos(prefetch_count=5)
    ch.basic_consume(q, lambda c, m, p, b: got.append(b),
                     arguments={"x-stream-offset": "first"})
    assert wait_until(conn, lambda: len(got) == 3)


def test_auto_ack_consume_closes_the_connection(connect, broker, names):
    conn = connect()
    q = names.q("autoack")
    declare(conn.channel(), q)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    assert refused_on_connection(
        conn, lambda: ch.basic_consume(q, lambda *a: None, auto_ack=True)) == (
        540, f"NOT_IMPLEMENTED - automatic acknowledgement not supported by stream "
             f"queues queue '{q}' in vhost '{broker.vhost}'")


def test_exclusive_consume_is_accepted_but_not_enforced(connect, names):
    conn, other = connect(), connect()
    q = names.q("excl")
    declare(conn.channel(), q)
    publish(conn, q, msgs(2))
    exclusive = Reader(conn, q, "first", exclusive=True, tag="ex")
    # Another consumer, on another connection, is still let in ...
    second = Reader(other, q, "first")
    # ... and so is a second exclusive one.
    third = Reader(other, q, "first", exclusive=True)
    exclusive.exactly(msgs(2))
    second.exactly(msgs(2))
    third.exactly(msgs(2))


def test_consumer_priority_is_refused(conn, broker, names):
    q = names.q("prio")
    declare(conn.channel(), q)
    assert refused_on_channel(lambda: Reader(conn, q, arguments={"x-priority": 5})) == (
        406, prefix(broker.vhost, q, "x-priority") + " of queue type rabbit_stream_queue")


@pytest.mark.parametrize("auto_ack", [False, True])
def test_basic_get_closes_the_connection(connect, broker, names, auto_ack):
    conn = connect()
    q = names.q("get")
    declare(conn.channel(), q)
    publish(conn, q, msgs(1))
    ch = conn.channel()
    assert refused_on_connection(conn, lambda: ch.basic_get(q, auto_ack=auto_ack)) == (
        540, f"NOT_IMPLEMENTED - basic.get not supported by stream queues queue '{q}' "
             f"in vhost '{broker.vhost}'")


def test_purge_closes_the_connection(connect, broker, names):
    conn = connect()
    q = names.q("purge")
    declare(conn.channel(), q)
    ch = conn.channel()
    assert refused_on_connection(conn, lambda: ch.queue_purge(q)) == (
        540, f"NOT_IMPLEMENTED - queue.purge not supported by stream queues queue '{q}' "
             f"in vhost '{broker.vhost}'")


def test_delete_with_consumers_ignores_if_unused_and_cancels_them(connect, names):
    conn, admin = connect(), connect()
    q = names.q("delete")
    declare(admin.channel(), q)
    publish(admin, q, msgs(3))
    readers = [Reader(conn, q, "first", tag=f"c{i}").wait(3) for i in range(2)]
    ok = admin.channel().queue_delete(q, if_unused=True).method
    assert ok.message_count == 0
    assert wait_until(conn, lambda: all(r.cancelled for r in readers), 3.0)
    for r in readers:
        assert r.cancelled[0].method.consumer_tag == r.tag
    with pytest.raises(ChannelClosedByBroker) as ei:
        admin.channel().queue_declare(q, passive=True)
    assert ei.value.reply_code == 404


# ------------------------------------------------------------------ offsets

def test_every_delivery_carries_its_offset(conn, names):
    q = names.q("offsets")
    declare(conn.channel(), q)
    props = pika.BasicProperties(
        content_type="text/plain", message_id="id-1", delivery_mode=1, priority=3,
        timestamp=1234, correlation_id="corr", reply_to="back", expiration="60000",
        type="kind", user_id="guest", app_id="app",
        # A publisher's own x-stream-offset is overwritten.
        headers={"x-stream-offset": "mine", "h": 1})
    publish(conn, q, [b"with properties"], props)
    publish(conn, q, msgs(9, 1))
    with offset_header_types() as types:
        r = Reader(conn, q, "first").exactly([b"with properties"] + msgs(9, 1))
        assert r.offsets() == list(range(10))
        assert types.kinds == [b"l"] * 10  # a signed 64-bit integer
    method, first, _ = r.items[0]
    assert (method.exchange, method.routing_key, method.redelivered) == ("", q, False)
    assert method.consumer_tag == r.tag
    assert first.headers == {"h": 1, "x-stream-offset": 0}
    assert (first.content_type, first.message_id, first.delivery_mode, first.priority,
            first.timestamp, first.correlation_id, first.reply_to, first.expiration,
            first.type, first.user_id, first.app_id) == (
        "text/plain", "id-1", 1, 3, 1234, "corr", "back", "60000", "kind", "guest", "app")
    # Without headers on publish, x-stream-offset is the only header.
    assert [p.headers for (_, p, _) in r.items[1:]] == [
        {"x-stream-offset": i} for i in range(1, 10)]
    assert [m.delivery_tag for (m, _, _) in r.items] == list(range(1, 11))
    assert not any(m.redelivered for (m, _, _) in r.items)

    # New messages reach the consumer at the tail, and a second read of the
    # same offsets (a new consumer) is not a redelivery.
    publish(conn, q, msgs(2, 10))
    r.exactly([b"with properties"] + msgs(11, 1))
    assert r.offsets() == list(range(12))
    again = Reader(conn, q, "first").wait(12)
    assert not any(m.redelivered for (m, _, _) in again.items)
    assert again.offsets() == list(range(12))


PAST = datetime.datetime(2000, 1, 1)
FUTURE = datetime.datetime(2100, 1, 1)


@pytest.mark.parametrize("spec,before,after", [
    ("first", range(0, 10), range(10, 14)),
    (None, [], range(10, 14)),  # the default is "next"
    ("next", [], range(10, 14)),
    ("last", [9], range(10, 14)),  # the last chunk: one message here
    (0, range(0, 10), range(10, 14)),
    (5, range(5, 10), range(10, 14)),
    (9, [9], range(10, 14)),
    (10, [], range(10, 14)),  # the end: like "next"
    (12, [], range(12, 14)),  # beyond the end: waits for offset 12 to exist
    (-1, range(0, 10), range(10, 14)),  # negative: from the first
    (2**40, [], []),  # a long, far beyond the end
    (PAST, range(0, 10), range(10, 14)),  # a timestamp before everything
    (FUTURE, [], range(10, 14)),  # a timestamp in the future: like "next"
    ("1h", range(0, 10), range(10, 14)),  # an interval: now - 1 hour
    ("7D", range(0, 10), range(10, 14)),
    ("1Y", range(0, 10), range(10, 14)),
], ids=lambda v: None if isinstance(v, (range, list)) else repr(v))
def test_offset_specification(conn, names, spec, before, after):
    """10 messages stored, one chunk each; a consumer at `spec` gets
    `before` at once and `after` of 4 more published once it consumes."""
    q = names.q("spec")
    declare(conn.channel(), q)
    publish(conn, q, msgs(10))
    r = Reader(conn, q, spec)
    r.exactly([f"m{i}".encode() for i in before])
    publish(conn, q, msgs(4, 10))
    want = [f"m{i}".encode() for i in list(before) + list(after)]
    r.exactly(want)
    assert r.offsets() == [int(b[1:]) for b in want]


def test_last_is_the_last_chunk(conn, names):
    """Published as a burst (no confirms in between), the messages share
    chunks; "last" starts at the first message of the last one: a non-empty
    run of messages ending with the newest."""
    q = names.q("lastchunk")
    declare(conn.channel(), q)
    burst = conn.channel()
    for body in msgs(50):
        burst.basic_publish("", q, body)
    read_all(conn, q, b"m49")
    r = Reader(conn, q, "last")
    assert wait_until(conn, lambda: b"m49" in r.bodies())
    r.quiet(0.1)
    got = r.bodies()
    assert got and got == msgs(50)[-len(got):]
    assert r.offsets() == list(range(50 - len(got), 50))


def test_timestamp_and_interval_offsets(conn, names):
    """A timestamp (AMQP timestamp, whole seconds) starts at the first
    message stored at or after it; an interval ("1s") at now minus it."""
    q = names.q("time")
    declare(conn.channel(), q)
    publish(conn, q, msgs(5, 0, "old"))
    # The next whole second, strictly after every "old" message.
    cut = int(time.time()) + 1
    time.sleep(max(0.0, cut + 1.2 - time.time()))
    publish(conn, q, msgs(5, 0, "new"))
    at = datetime.datetime.fromtimestamp(cut, datetime.timezone.utc).replace(tzinfo=None)
    Reader(conn, q, at).exactly(msgs(5, 0, "new"))
    Reader(conn, q, "1s").exactly(msgs(5, 0, "new"))
    Reader(conn, q, "10s").exactly(msgs(5, 0, "old") + msgs(5, 0, "new"))
    assert Reader(conn, q, at).exactly(msgs(5, 0, "new")).offsets() == list(range(5, 10))


@pytest.mark.parametrize("value", ["5", "10", "0s", "1x", "1X"])
def test_invalid_offset_strings(conn, broker, names, value):
    q = names.q("badoffset")
    declare(conn.channel(), q)
    assert refused_on_channel(lambda: Reader(conn, q, value)) == (
        406, f"{prefix(broker.vhost, q, 'x-stream-offset')}: "
             f'{{invalid_stream_offset_arg,{{longstr,<<"{value}">>}}}}')


@pytest.mark.parametrize("value", ["bogus", "FIRST", "Next", "last ", "", True, ["first"]],
                         ids=repr)
def test_malformed_offsets(connect, broker, names, value):
    """RabbitMQ 3.10.8 crashes on these (541 INTERNAL_ERROR, connection
    closed); Warren refuses them on the channel like "5"."""
    conn = connect()
    q = names.q("badoffset")
    declare(conn.channel(), q)
    if broker.is_warren:
        code, text = refused_on_channel(lambda: Reader(conn, q, value))
        assert code == 406
        head = prefix(broker.vhost, q, "x-stream-offset") + ": {invalid_stream_offset_arg,"
        assert text.startswith(head), text
        if isinstance(value, str):
            assert text == head + f'{{longstr,<<"{value}">>}}}}'
    else:
        assert refused_on_connection(conn, lambda: Reader(conn, q, value)) == (
            541, "INTERNAL_ERROR")


def test_twenty_consumers_at_different_offsets(connect, names):
    conn = connect()
    q = names.q("many")
    declare(conn.channel(), q)
    publish(conn, q, msgs(100))
    readers = {k: Reader(conn, q, k) for k in range(0, 100, 5)}
    for k, r in readers.items():
        r.wait(100 - k)
    pump(conn, 0.2)
    for k, r in readers.items():
        assert r.bodies() == msgs(100 - k, k), k
        assert r.offsets() == list(range(k, 100)), k
    publish(conn, q, msgs(5, 100))
    for k, r in readers.items():
        r.wait(105 - k)
    pump(conn, 0.1)
    for k, r in readers.items():
        assert r.bodies() == msgs(105 - k, k), k


# ------------------------------------------------------------------ acks

def test_ack_is_credit(conn, names):
    q = names.q("credit")
    declare(conn.channel(), q)
    publish(conn, q, msgs(8))
    one = Reader(conn, q, "first", prefetch=1, ack=False)
    one.exactly(msgs(1))
    one.ch.basic_ack(1)
    one.exactly(msgs(2))
    one.ch.basic_ack(2)
    one.exactly(msgs(3))

    three = Reader(conn, q, "first", prefetch=3, ack=False)
    three.exactly(msgs(3))
    three.ch.basic_ack(2, multiple=True)  # two more credits
    three.exactly(msgs(5))
    three.ch.basic_ack(0, multiple=True)  # everything outstanding: three more
    three.exactly(msgs(8))
    # Acking an unknown (or already acked) tag is the usual channel error.
    assert refused_on_channel(lambda: (three.ch.basic_ack(1), roundtrip(three.ch))) == (
        406, "PRECONDITION_FAILED - unknown delivery tag 1")


def test_cancelled_consumer_can_still_ack(conn, names):
    q = names.q("cancelack")
    declare(conn.channel(), q)
    publish(conn, q, msgs(3))
    r = Reader(conn, q, "first", ack=False).exactly(msgs(3))
    r.cancel()
    r.ch.basic_ack(3, multiple=True)
    roundtrip(r.ch)


@pytest.mark.parametrize("how", ["nack-requeue", "nack", "reject-requeue", "reject"])
def test_nack_and_reject_close_the_connection(connect, broker, names, how):
    """No requeue and no dead-lettering on a stream: RabbitMQ closes the
    connection (nothing is redelivered)."""
    conn = connect()
    q = names.q("nack")
    declare(conn.channel(), q)
    publish(conn, q, msgs(3))
    r = Reader(conn, q, "first", prefetch=3, ack=False).exactly(msgs(3))
    verb, _, requeue = how.partition("-")
    settle = r.ch.basic_nack if verb == "nack" else r.ch.basic_reject
    assert refused_on_connection(
        conn, lambda: (settle(2, requeue=bool(requeue)), roundtrip(r.ch))) == (
        540, f"NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream "
             f"queues queue '{q}' in vhost '{broker.vhost}'")


def test_basic_recover_on_a_stream_consumer(connect, broker, names):
    """RabbitMQ 3.10.8 crashes (541 INTERNAL_ERROR, connection closed);
    Warren refuses it as it refuses nack and reject (540 on the connection)."""
    conn = connect()
    q = names.q("recover")
    declare(conn.channel(), q)
    publish(conn, q, msgs(2))
    r = Reader(conn, q, "first", ack=False).exactly(msgs(2))
    code, text = refused_on_connection(conn, lambda: r.ch.basic_recover(requeue=True))
    if broker.is_warren:
        assert code == 540 and text.startswith("NOT_IMPLEMENTED - "), (code, text)
    else:
        assert (code, text) == (541, "INTERNAL_ERROR")


# ------------------------------------------------------------------ retention

def test_size_retention_drops_whole_segments(connect, names):
    """x-max-length-bytes 30000 over 10000-byte segments, 1000-byte
    messages: the first retained message moves forward a segment at a time
    (several messages per step, never one by one), what is left is an
    unbroken run up to the newest, and it fits the limit."""
    conn = connect()
    q = names.q("bysize")
    size, segment, limit = 1000, 10_000, 30_000
    declare(conn.channel(), q, **{"x-max-length-bytes": limit,
                                  "x-stream-max-segment-size-bytes": segment})
    pub = conn.channel()
    pub.confirm_delivery()
    firsts = []
    for i in range(100):
        pub.basic_publish("", q, b"%05d" % i + b"x" * (size - 5))
        if i >= 25:
            body = first_retained(conn, q)
            firsts.append(int(body[:5]))
    assert firsts == sorted(firsts)
    steps = [b - a for a, b in zip(firsts, firsts[1:]) if b != a]
    assert steps, "nothing was ever dropped"
    assert min(steps) >= segment // size // 2, steps
    r = read_all(conn, q, b"%05d" % 99 + b"x" * (size - 5))
    numbers = [int(b[:5]) for b in r.bodies()]
    assert numbers == list(range(numbers[0], 100))
    assert numbers[0] > 0
    assert len(numbers) * size <= limit + segment
    offsets = r.offsets()
    assert offsets == sorted(set(offsets))  # increasing (they skip at segment rolls)


def test_max_age_applies_when_segments_roll(connect, names):
    """x-max-age "1s" over small segments: after the old messages aged,
    publishing more (which rolls segments) drops the old segments; the new
    messages all stay."""
    conn = connect()
    q = names.q("byage")
    declare(conn.channel(), q, **{"x-max-age": "1s",
                                  "x-stream-max-segment-size-bytes": 2000})
    body = lambda i: b"%05d" % i + b"x" * 95  # noqa: E731
    publish(conn, q, [body(i) for i in range(30)])
    assert first_retained(conn, q) == body(0)
    time.sleep(1.5)
    publish(conn, q, [body(i) for i in range(30, 60)])
    until(lambda: int((first_retained(conn, q) or b"0")[:5]) > 0,
          "the aged segments dropped", 5.0)
    r = read_all(conn, q, body(59))
    numbers = [int(b[:5]) for b in r.bodies()]
    assert numbers == list(range(numbers[0], 60))
    assert 0 < numbers[0] <= 30


@warren_only
def test_max_age_shrinks_an_idle_stream(connect, names):
    """RabbitMQ 3.10.8 only applies retention when a segment rolls, so an
    idle stream keeps everything for ever (checked: after 5 s with
    x-max-age "2s", all 30 messages are still there). Warren also
    evaluates retention on a timer."""
    conn = connect()
    q = names.q("idleage")
    declare(conn.channel(), q, **{"x-max-age": "2s",
                                  "x-stream-max-segment-size-bytes": 2000})
    body = lambda i: b"%05d" % i + b"x" * 95  # noqa: E731
    publish(conn, q, [body(i) for i in range(30)])
    assert first_retained(conn, q) == body(0)
    deadline = time.monotonic() + 8.0
    while True:
        first = first_retained(conn, q, timeout=0.5)
        if first is None or first != body(0):
            break
        assert time.monotonic() < deadline, "nothing dropped within 8 s"
        time.sleep(0.25)
    if first is not None:
        r = read_all(conn, q, body(29))
        numbers = [int(b[:5]) for b in r.bodies()]
        assert numbers == list(range(numbers[0], 30)) and numbers[0] > 0


@rabbitmq_only
def test_rabbitmq_keeps_an_idle_stream_past_its_max_age(connect, names):
    """Several sealed segments, all older than x-max-age, stay while
    nothing is published."""
    conn = connect()
    q = names.q("idleage")
    declare(conn.channel(), q, **{"x-max-age": "1s",
                                  "x-stream-max-segment-size-bytes": 2000})
    bodies = [b"%05d" % i + b"x" * 95 for i in range(30)]
    publish(conn, q, bodies)
    time.sleep(2.5)
    assert read_all(conn, q, bodies[-1]).bodies() == bodies


# ------------------------------------------------------------------ filtering

@rabbitmq_only
def test_rabbitmq_3_10_ignores_stream_filters(conn, names):
    """x-stream-filter, x-stream-match-unfiltered (3.13+) mean nothing to
    3.10.8: every message is delivered, x-stream-filter-value stays an
    ordinary header."""
    q = names.q("nofilter")
    declare(conn.channel(), q)
    values = ["a", "b", None, "a", "c"]
    for v in values:
        publish(conn, q, [f"m-{v}".encode()],
                pika.BasicProperties(headers={"x-stream-filter-value": v} if v else None))
    everything = [f"m-{v}".encode() for v in values]
    for args in ({"x-stream-filter": "a"}, {"x-stream-filter": ["a", "b"]},
                 {"x-stream-filter": "a", "x-stream-match-unfiltered": True},
                 {"x-stream-filter": 5}, {"x-stream-match-unfiltered": "yes"}):
        r = Reader(conn, q, "first", arguments=args).exactly(everything)
        assert r.items[0][1].headers == {"x-stream-filter-value": "a", "x-stream-offset": 0}


def publish_filtered(conn, q, values):
    """One message per value, body "m<i>-<value>", with x-stream-filter-value
    set unless the value is None."""
    bodies = []
    ch = conn.channel()
    ch.confirm_delivery()
    for i, v in enumerate(values):
        body = f"m{i}-{v}".encode()
        headers = {"x-stream-filter-value": v} if v is not None else None
        ch.basic_publish("", q, body, pika.BasicProperties(headers=headers))
        bodies.append(body)
    ch.close()
    return bodies


@warren_only
def test_filter_delivers_exactly_the_matching_messages(conn, names):
    q = names.q("filter")
    declare(conn.channel(), q)
    values = ["a", "b", None, "a", "c"] + [f"v{i}" for i in range(200)] + ["a"]
    bodies = publish_filtered(conn, q, values)
    r = Reader(conn, q, "first", arguments={"x-stream-filter": "a"})
    want = [i for i, v in enumerate(values) if v == "a"]
    r.exactly([bodies[i] for i in want])
    assert r.offsets() == want
    # Exact, not a Bloom filter: one value among 200 others.
    one = Reader(conn, q, "first", arguments={"x-stream-filter": "v7"})
    one.exactly([bodies[values.index("v7")]])
    # Messages published after the consumer started are filtered too.
    more = publish_filtered(conn, q, ["b", "a", None, "ab", "A"])
    r.exactly([bodies[i] for i in want] + [more[1]])


@warren_only
def test_filter_with_a_list_of_values(conn, names):
    q = names.q("filterlist")
    declare(conn.channel(), q)
    values = ["a", "b", None, "a", "c", "d", "c"]
    bodies = publish_filtered(conn, q, values)
    r = Reader(conn, q, "first", arguments={"x-stream-filter": ["a", "c"]})
    r.exactly([b for b, v in zip(bodies, values) if v in ("a", "c")])
    assert r.offsets() == [0, 3, 4, 6]


@warren_only
def test_filter_match_unfiltered(conn, names):
    q = names.q("filterunf")
    declare(conn.channel(), q)
    values = ["a", "b", None, "a", None, "c"]
    bodies = publish_filtered(conn, q, values)
    r = Reader(conn, q, "first", arguments={"x-stream-filter": "a",
                                            "x-stream-match-unfiltered": True})
    r.exactly([b for b, v in zip(bodies, values) if v in ("a", None)])
    assert r.offsets() == [0, 2, 3, 4]
    # Without x-stream-match-unfiltered, messages without the header are not
    # delivered.
    Reader(conn, q, "first", arguments={"x-stream-filter": "a"}).exactly(
        [bodies[0], bodies[3]])


# ------------------------------------------------------------------ tracking

TRACKING = {"x-stream-automatic-offset-tracking": True}


@warren_only
def test_server_side_offset_tracking(connect, names):
    conn = connect()
    q = names.q("tracking")
    declare(conn.channel(), q)
    publish(conn, q, msgs(10))
    t1 = Reader(conn, q, "first", prefetch=3, ack=False, tag="t1", arguments=TRACKING)
    for n in range(1, 6):
        t1.wait(n)
        t1.ch.basic_ack(t1.items[n - 1][0].delivery_tag)
    t1.wait(8)  # 5 acked, 3 delivered and unacked
    assert t1.quiet(0.1)
    t1.cancel()

    # The same tag resumes after the last acked offset, whatever
    # x-stream-offset says; the unacked ones (5, 6, 7) are not skipped.
    for spec in ("first", "next", "last", 2):
        again = Reader(conn, q, spec, prefetch=3, ack=False, tag="t1", arguments=TRACKING)
        again.exactly(msgs(3, 5))
        assert again.offsets() == [5, 6, 7]
        again.ch.close()
    # Another tag starts where x-stream-offset says.
    t2 = Reader(conn, q, 7, tag="t2", arguments=TRACKING).exactly(msgs(3, 7))
    assert t2.offsets() == [7, 8, 9]

    # Acking with multiple moves the tracked offset too.
    t1 = Reader(conn, q, "first", prefetch=10, ack=False, tag="t1", arguments=TRACKING)
    t1.exactly(msgs(5, 5))
    t1.ch.basic_ack(t1.items[2][0].delivery_tag, multiple=True)  # offsets 5..7
    roundtrip(t1.ch)
    t1.cancel()
    Reader(conn, q, "first", tag="t1", arguments=TRACKING).exactly(msgs(2, 8))


@warren_only
def test_tracked_offsets_and_messages_survive_a_restart(tmp_path):
    store = ("--data-dir", str(tmp_path))
    own = start_warren(store_args=store)
    q = "tracked-restart"
    try:
        conn = pika.BlockingConnection(own.params())
        # One message a segment: their timestamps must survive the restart
        # (LavinMQ's x-max-age dropped all but the last segment after one).
        declare(conn.channel(), q, **{"x-max-age": "1h",
                                      "x-stream-max-segment-size-bytes": 100})
        publish(conn, q, [b + b"x" * 100 for b in msgs(10)])
        t = Reader(conn, q, "first", prefetch=10, ack=False, tag="keep", arguments=TRACKING)
        t.exactly([b + b"x" * 100 for b in msgs(10)])
        t.ch.basic_ack(t.items[3][0].delivery_tag, multiple=True)  # offsets 0..3
        roundtrip(t.ch)
        conn.close()
    finally:
        stop_warren(own)
    own = start_warren(store_args=store)
    try:
        conn = pika.BlockingConnection(own.params())
        time.sleep(1.0)  # a retention pass at startup or on the timer drops nothing
        padded = [b + b"x" * 100 for b in msgs(11)]
        everything = Reader(conn, q, "first").exactly(padded[:10])
        assert everything.offsets() == list(range(10))
        resumed = Reader(conn, q, "first", tag="keep", arguments=TRACKING)
        resumed.exactly(padded[4:10])
        publish(conn, q, padded[10:])
        everything.exactly(padded)
        assert everything.offsets() == list(range(11))
        conn.close()
    finally:
        stop_warren(own)


# ------------------------------------------------------------------ management

def test_management_api_queue_and_consumers(api, conn, broker, names):
    q = names.q("mgmt")
    declare(conn.channel(), q, **{"x-max-age": "1h"})
    publish(conn, q, msgs(5))
    r = Reader(conn, q, "first", prefetch=10, ack=False, tag="mgmt-tag").exactly(msgs(5))
    path = f"/api/queues/{segment(broker.vhost)}/{q}"

    def shown():
        body = api.json(path)
        assert body["messages"] == 5 and body["consumers"] == 1
        return body
    body = eventually(shown)
    assert body["type"] == "stream"
    assert (body["name"], body["vhost"], body["durable"], body["auto_delete"],
            body["exclusive"]) == (q, broker.vhost, True, False, False)
    assert body["arguments"] == {"x-queue-type": "stream", "x-max-age": "1h"}
    # Five delivered, none acked: RabbitMQ still counts them all as ready
    # and none unacknowledged; Warren counts the five it is waiting for.
    unacked = 5 if broker.is_warren else 0
    assert (body["messages_ready"], body["messages_unacknowledged"]) == (5, unacked)
    assert body["state"] == "running"
    assert isinstance(body["members"], list) and body["members"]
    assert isinstance(body["online"], list) and body["online"]
    (detail,) = body["consumer_details"]
    assert detail["consumer_tag"] == "mgmt-tag"
    assert detail["ack_required"] is True
    assert detail["exclusive"] is False
    assert detail["prefetch_count"] == 10
    assert detail["arguments"] == {"x-stream-offset": "first"}
    assert detail["queue"] == {"name": q, "vhost": broker.vhost}

    listed = [c for c in api.json(f"/api/consumers/{segment(broker.vhost)}")
              if c["queue"]["name"] == q]
    assert [(c["consumer_tag"], c["ack_required"], c["prefetch_count"], c["arguments"])
            for c in listed] == [("mgmt-tag", True, 10, {"x-stream-offset": "first"})]
    r.cancel()
