"""Queue features: message TTL and queue expiry, priorities, length limits
and overflow, argument validation, quorum queues, delivery limits and
delayed retry.

Everything not marked @warren_only is what RabbitMQ 3.10 does (run the suite
with WARREN_TEST_RABBITMQ to check); @warren_only tests are Warren features
RabbitMQ 3.10 (classic queues) does not have. Dead-lettering is in
test_dead_lettering.py, consumer features in test_consumer_features.py.
"""

import decimal
import time

import pika
import pika.compat
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError

from amqp_support import (Deliveries, check_headers, death, depth, first_death,
                          floats_in_tables, get_all, get_one, pump, wait_until,
                          warren_only)

EMPTY = (None, None, None)


def bodies(triples):
    return [body for (_, _, body) in triples]


def props(**kw):
    return pika.BasicProperties(**kw)


# ---------------------------------------------------------------- TTL

def test_the_lower_of_queue_ttl_and_message_expiration_wins(ch, names):
    msg_lower, queue_lower = names.q("msg-lower"), names.q("queue-lower")
    ch.queue_declare(msg_lower, arguments={"x-message-ttl": 600})
    ch.queue_declare(queue_lower, arguments={"x-message-ttl": 150})
    ch.basic_publish("", msg_lower, b"expires after 100 ms", props(expiration="100"))
    ch.basic_publish("", msg_lower, b"expires after 600 ms")
    ch.basic_publish("", queue_lower, b"expires after 150 ms", props(expiration="60000"))
    time.sleep(0.35)
    method, properties, body = ch.basic_get(msg_lower, auto_ack=True)
    assert body == b"expires after 600 ms"
    assert method.message_count == 0
    # The queue's TTL does not show as an expiration property.
    assert properties.expiration is None
    assert ch.basic_get(msg_lower, auto_ack=True) == EMPTY
    assert ch.basic_get(queue_lower, auto_ack=True) == EMPTY
    assert depth(ch, queue_lower) == 0


def test_expired_messages_are_never_delivered(conn, names):
    ch = conn.channel()
    q = names.q("ttl")
    ch.queue_declare(q, arguments={"x-message-ttl": 100})
    for i in range(3):
        ch.basic_publish("", q, f"old {i}".encode())
    ch.basic_publish("", q, b"old too", props(expiration="50"))
    time.sleep(0.25)
    got = Deliveries(conn, ch, q, auto_ack=True)
    assert got.quiet(0.2), f"expired messages delivered: {got.bodies()}"
    # Fresh messages still go through.
    ch.basic_publish("", q, b"fresh")
    got.wait(1)
    assert got.bodies() == [b"fresh"]
    assert got.items[0][1].expiration is None


def test_expiration_zero_only_reaches_a_waiting_consumer(conn, names):
    ch = conn.channel()
    q = names.q("now-or-never")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"nobody waiting", props(expiration="0"))
    ch.basic_publish("", q, b"marker")
    method, _, body = get_one(ch, q)
    assert (body, method.message_count) == (b"marker", 0)

    got = Deliveries(conn, ch, q, auto_ack=True)
    ch.basic_publish("", q, b"consumer waiting", props(expiration="0"))
    got.wait(1)
    assert got.quiet(0.1)
    (_, properties, body), = got.items
    assert (body, properties.expiration) == (b"consumer waiting", "0")


def test_x_expires_deletes_an_unused_queue_but_not_a_consumed_one(conn, broker, names):
    ch = conn.channel()
    idle, used = names.q("idle"), names.q("used")
    ch.queue_declare(idle, arguments={"x-expires": 200})
    ch.queue_declare(used, arguments={"x-expires": 200})
    # Messages do not keep a queue alive; a consumer does.
    ch.basic_publish("", idle, b"not enough")
    assert depth(ch, idle, 1) == 1
    ch.basic_consume(used, lambda *args: None, consumer_tag="keeper")
    # Do not touch the queues meanwhile: a declare would count as a use.
    pump(conn, 0.5)
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(idle, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no queue '{idle}' in vhost '{broker.vhost}'")
    ok = conn.channel().queue_declare(used, passive=True)
    assert (ok.method.message_count, ok.method.consumer_count) == (0, 1)


@warren_only
def test_a_short_lived_message_behind_a_long_lived_head_expires_on_time(conn, names):
    """RabbitMQ only expires messages at the head of a queue; Warren expires
    each message at its deadline, and dead-letters it then."""
    ch = conn.channel()
    dlq = names.q("dlq")
    ch.queue_declare(dlq)
    q = names.q("ttl")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": dlq})
    got = Deliveries(conn, ch, dlq, auto_ack=True)
    start = time.monotonic()
    ch.basic_publish("", q, b"head", props(expiration="60000"))
    ch.basic_publish("", q, b"short", props(expiration="150"))
    got.wait(1, timeout=2)
    elapsed = time.monotonic() - start
    assert 0.13 <= elapsed < 0.8, f"dead-lettered after {elapsed:.3f} s"
    (method, properties, body), = got.items
    assert (body, method.routing_key) == (b"short", dlq)
    check_headers(properties, {
        "x-death": [death("expired", q, "", [q], original_expiration="150")],
        **first_death("expired", q, ""),
    })
    method, properties, body = ch.basic_get(q, auto_ack=True)
    assert (body, method.message_count, properties.expiration) == (b"head", 0, "60000")


# ---------------------------------------------------------- priorities

def test_priority_queue_delivers_higher_priorities_first(conn, names):
    ch = conn.channel()
    q = names.q("prio")
    ch.queue_declare(q, arguments={"x-max-priority": 10})
    # (priority property, body); above the maximum counts as the maximum,
    # no priority counts as 0.
    sent = [(None, b"a"), (5, b"b"), (20, b"c"), (10, b"d"), (0, b"e"),
            (5, b"f"), (None, b"g"), (11, b"h"), (1, b"i")]
    for priority, body in sent:
        ch.basic_publish("", q, body, props(priority=priority))
    assert depth(ch, q, len(sent)) == len(sent)
    got = Deliveries(conn, ch, q, auto_ack=True)
    got.wait(len(sent))
    assert got.bodies() == [b"c", b"d", b"h", b"b", b"f", b"i", b"a", b"e", b"g"]
    # The priority property itself is delivered as published.
    assert [p.priority for (_, p, _) in got.items] == [20, 10, 11, 5, 5, 1, None, 0, None]


def test_a_queue_without_max_priority_ignores_priorities(ch, names):
    q = names.q("fifo")
    ch.queue_declare(q)
    for priority, body in ((1, b"a"), (9, b"b"), (None, b"c"), (5, b"d")):
        ch.basic_publish("", q, body, props(priority=priority))
    assert depth(ch, q, 4) == 4
    assert bodies(get_all(ch, q)) == [b"a", b"b", b"c", b"d"]


# ------------------------------------------------------- length limits

def test_max_length_drops_the_oldest_messages(ch, names):
    q = names.q("maxlen")
    ch.queue_declare(q, arguments={"x-max-length": 3})
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    assert depth(ch, q, 3) == 3
    assert bodies(get_all(ch, q)) == [b"2", b"3", b"4"]
    # A limit of 0 keeps nothing.
    zero = names.q("zero")
    ch.queue_declare(zero, arguments={"x-max-length": 0})
    ch.basic_publish("", zero, b"gone")
    ch.basic_publish("", zero, b"gone too")
    pump(ch.connection, 0.05)
    assert depth(ch, zero) == 0


def test_max_length_bytes_counts_body_bytes(ch, names):
    q = names.q("maxbytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10})
    big_headers = props(headers={"padding": "x" * 100}, content_type="text/plain")
    for i in range(4):
        ch.basic_publish("", q, f"abcd{i}".encode(), big_headers)
    assert depth(ch, q, 2) == 2
    assert bodies(get_all(ch, q)) == [b"abcd2", b"abcd3"]


def test_only_ready_messages_count_towards_the_limit(ch, names):
    q = names.q("ready")
    ch.queue_declare(q, arguments={"x-max-length": 2})
    ch.basic_publish("", q, b"0")
    ch.basic_publish("", q, b"1")
    unacked = [get_one(ch, q, auto_ack=False)[0].delivery_tag for _ in range(2)]
    ch.basic_publish("", q, b"2")
    ch.basic_publish("", q, b"3")
    assert depth(ch, q, 2) == 2
    ch.basic_publish("", q, b"4")
    pump(ch.connection, 0.05)
    for tag in unacked:
        ch.basic_ack(tag)
    assert bodies(get_all(ch, q)) == [b"3", b"4"]


def test_reject_publish_nacks_confirmed_publishes_and_drops_others(conn, names):
    ch = conn.channel()
    dlq = names.q("dlq")
    ch.queue_declare(dlq)
    q = names.q("full")
    ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "reject-publish",
                                   "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": dlq})
    confirming = conn.channel()
    confirming.confirm_delivery()
    confirming.basic_publish("", q, b"first")
    with pytest.raises(NackError):
        confirming.basic_publish("", q, b"nacked")
    # Without confirms the publish is dropped silently.
    ch.basic_publish("", q, b"dropped")
    pump(conn, 0.05)
    assert ch.is_open and confirming.is_open
    assert depth(ch, q) == 1
    # Rejected publishes are not dead-lettered (that is reject-publish-dlx).
    assert depth(ch, dlq) == 0
    method, _, body = ch.basic_get(q)
    assert (body, method.message_count) == (b"first", 0)
    # An unacknowledged message does not count: there is room again.
    confirming.basic_publish("", q, b"second")
    ch.basic_ack(method.delivery_tag)
    assert bodies(get_all(ch, q)) == [b"second"]


def test_reject_publish_dlx_nacks_and_dead_letters(conn, names):
    ch = conn.channel()
    dlq = names.q("dlq")
    ch.queue_declare(dlq)
    q = names.q("full")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 5,
                                   "x-overflow": "reject-publish-dlx",
                                   "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": dlq})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"12345")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"6", props(expiration="10000", headers={"h": "v"}))
    method, properties, body = get_one(ch, dlq)
    assert (body, method.exchange, method.routing_key) == (b"6", "", dlq)
    assert properties.expiration is None
    check_headers(properties, {
        "h": "v",
        "x-death": [death("maxlen", q, "", [q], original_expiration="10000")],
        **first_death("maxlen", q, ""),
    })
    assert bodies(get_all(ch, q)) == [b"12345"]


# -------------------------------------------------- argument validation

def invalid(arg, q, vhost, detail):
    return (f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' "
            f"in vhost '{vhost}': {detail}")


INVALID_ARGUMENTS = [
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-message-ttl", "1000", '"expected integer, got longstr"'),
    ("x-message-ttl", 1.5, '"expected integer, got double"'),
    ("x-message-ttl", decimal.Decimal("1.5"), '"expected integer, got decimal"'),
    ("x-message-ttl", 4294967296000, "{value_too_large,4294967296000}"),
    ("x-max-length", -1, "{value_negative,-1}"),
    ("x-max-length", "abc", '"expected integer, got longstr"'),
    ("x-max-length-bytes", -1, "{value_negative,-1}"),
    ("x-overflow", "foo", "invalid_overflow"),
    ("x-overflow", 1, "{unacceptable_type,signedint}"),
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", -1, "{value_negative,-1}"),
    ("x-expires", "10", '"expected integer, got longstr"'),
    ("x-single-active-consumer", "yes", "{unacceptable_type,longstr}"),
    ("x-queue-type", "foo", "\"unsupported queue type 'foo'\""),
    ("x-max-priority", 256, "{max_value_exceeded,256}"),
    ("x-max-priority", -1, "{value_negative,-1}"),
]


@pytest.mark.parametrize("arg,value,detail", INVALID_ARGUMENTS,
                         ids=[f"{a}={v!r}" for (a, v, _) in INVALID_ARGUMENTS])
def test_invalid_queue_arguments_are_refused(conn, broker, names, arg, value, detail):
    ch = conn.channel()
    q = names.q("invalid")
    with floats_in_tables(), pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(q, arguments={arg: value})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, invalid(arg, q, broker.vhost, detail))


def test_dead_letter_arguments_are_validated(conn, broker, names):
    q = names.q("invalid")
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(q, arguments={"x-dead-letter-exchange": 1})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid type 'signedint' for arg "
             f"'x-dead-letter-exchange' in queue '{q}' in vhost '{broker.vhost}'")
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(q, arguments={"x-dead-letter-routing-key": "rk"})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, invalid("x-dead-letter-routing-key", q, broker.vhost,
                     "routing_key_but_no_dlx_defined"))
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(q, arguments={"x-dead-letter-exchange": "dlx",
                                                   "x-dead-letter-routing-key": 1})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, invalid("x-dead-letter-routing-key", q, broker.vhost,
                     "{unacceptable_type,signedint}"))
    # The dead-letter exchange need not exist.
    conn.channel().queue_declare(q, arguments={"x-dead-letter-exchange": names.x("later")})


@pytest.mark.parametrize("queue_type,flags,prop", [
    ("quorum", dict(durable=True, exclusive=True), "exclusive-owner"),
    ("quorum", dict(durable=True, auto_delete=True), "auto-delete"),
    ("quorum", dict(durable=False), "non-durable"),
    ("stream", dict(durable=False), "non-durable"),
])
def test_quorum_and_stream_queues_refuse_transient_properties(
        conn, broker, names, queue_type, flags, prop):
    ch = conn.channel()
    q = names.q(queue_type)
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(q, arguments={"x-queue-type": queue_type}, **flags)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid property '{prop}' for queue '{q}' "
             f"in vhost '{broker.vhost}'")


@warren_only
def test_max_priority_zero_is_refused(ch, names):
    """RabbitMQ 3.10 accepts x-max-priority 0 (a priority queue with one
    level); Warren refuses it."""
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(names.q("prio0"), arguments={"x-max-priority": 0})
    assert ei.value.reply_code == 406
    assert ei.value.reply_text.startswith("PRECONDITION_FAILED - ")
    assert "x-max-priority" in ei.value.reply_text


@warren_only
# ------------------------------------------------------- quorum queues

def test_quorum_queue_declaration_and_type_equivalence(conn, broker, names):
    ch = conn.channel()
    q = names.q("qq")
    ok = ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 0, 0)
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare(q, passive=True)
    ch.basic_publish("", q, b"kept")
    assert depth(ch, q, 1) == 1
    prefix = f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' " \
             f"in vhost '{broker.vhost}': "
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(q, durable=True, arguments={"x-queue-type": "classic"})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, prefix + "received 'classic' but current is 'quorum'")
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(q, durable=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, prefix + "received none but current is the value 'quorum' of type 'longstr'")

    # A classic queue declared without x-queue-type is "classic" ...
    c = names.q("classic")
    ch.queue_declare(c, durable=True)
    ch.queue_declare(c, durable=True, arguments={"x-queue-type": "classic"})
    # ... and not quorum.
    with pytest.raises(ChannelClosedByBroker) as ei:
        conn.channel().queue_declare(c, durable=True, arguments={"x-queue-type": "quorum"})
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{c}' "
             f"in vhost '{broker.vhost}': received the value 'quorum' of type "
             f"'longstr' but current is none")
    assert get_one(ch, q)[2] == b"kept"


def reject_until_dead_lettered(conn, names, queue_args, durable, deliveries):
    """Declare a queue with `queue_args` dead-lettering into a fresh queue,
    publish one message, reject (requeue) every delivery; check there are
    `deliveries` of them, with x-delivery-count on redeliveries, then the
    message dead-lettered with reason delivery_limit."""
    ch = conn.channel()
    dlq = names.q("dlq")
    ch.queue_declare(dlq)
    q = names.q("limited")
    ch.queue_declare(q, durable=durable, arguments={
        **queue_args, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", q, b"poison", props(headers={"h": 1}, expiration="60000"))

    seen = []

    def on_message(chan, method, properties, body):
        seen.append((method.redelivered, properties.headers))
        chan.basic_reject(method.delivery_tag, requeue=True)

    ch.basic_consume(q, on_message)
    dead = Deliveries(conn, conn.channel(), dlq, auto_ack=True)
    dead.wait(1, timeout=5)
    assert seen == [(False, {"h": 1})] + [
        (True, {"h": 1, "x-delivery-count": n}) for n in range(1, deliveries)]
    assert all(type(h["x-delivery-count"]) is pika.compat.long for (_, h) in seen[1:])
    (method, properties, body), = dead.items
    assert (body, method.exchange, method.routing_key) == (b"poison", "", dlq)
    assert properties.expiration is None
    # x-delivery-count is not carried over to the dead-lettered message.
    check_headers(properties, {
        "h": 1,
        "x-death": [death("delivery_limit", q, "", [q], original_expiration="60000")],
        **first_death("delivery_limit", q, ""),
    })
    assert dead.quiet(0.1)
    assert depth(ch, q) == 0


def test_quorum_queue_delivery_limit_dead_letters(conn, names):
    """x-delivery-limit 2: delivered 3 times (x-delivery-count absent, 1,
    2), dead-lettered on the third reject with reason delivery_limit."""
    reject_until_dead_lettered(
        conn, names, {"x-queue-type": "quorum", "x-delivery-limit": 2},
        durable=True, deliveries=3)


def test_quorum_queue_redeliveries_carry_x_delivery_count(conn, names):
    ch = conn.channel()
    q = names.q("qq")
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_publish("", q, b"m")
    seen = []

    def on_message(chan, method, properties, body):
        seen.append((method.redelivered, properties.headers))
        if len(seen) == 2:
            chan.basic_nack(method.delivery_tag, requeue=True)
        elif len(seen) < 4:
            chan.basic_reject(method.delivery_tag, requeue=True)
        else:
            chan.basic_ack(method.delivery_tag)

    ch.basic_consume(q, on_message)
    assert wait_until(conn, lambda: len(seen) >= 4)
    pump(conn, 0.1)
    assert seen == [(False, None)] + [
        (True, {"x-delivery-count": n}) for n in (1, 2, 3)]
    assert depth(ch, q) == 0


@warren_only
def test_classic_queue_delivery_limit(conn, names):
    """RabbitMQ 3.10 refuses x-delivery-limit on a classic queue (406
    "invalid arg 'x-delivery-limit' ... of queue type rabbit_classic_queue");
    Warren supports it as on quorum queues."""
    reject_until_dead_lettered(conn, names, {"x-delivery-limit": 2},
                               durable=False, deliveries=3)


@warren_only
def test_quorum_queue_default_delivery_limit_is_20(conn, names):
    """RabbitMQ 3.10 quorum queues have no default delivery limit; Warren's
    (like RabbitMQ 4's) is 20."""
    reject_until_dead_lettered(conn, names, {"x-queue-type": "quorum"},
                               durable=True, deliveries=21)


def redelivery_gaps(conn, names, queue_type, retry_args, retries, interloper=False):
    """Publish one message to a queue with delayed retry, reject (requeue)
    it `retries` times; return the gaps between deliveries in seconds."""
    ch = conn.channel()
    q = names.q("retry")
    args = {"x-delivery-limit": retries + 5, **retry_args}
    if queue_type == "quorum":
        args["x-queue-type"] = "quorum"
    ch.queue_declare(q, durable=queue_type == "quorum", arguments=args)
    ch.basic_publish("", q, b"retry me")
    times, others = [], []

    def on_message(chan, method, properties, body):
        if body != b"retry me":
            others.append((time.monotonic(), body))
            chan.basic_ack(method.delivery_tag)
            return
        times.append(time.monotonic())
        if len(times) <= retries:
            chan.basic_reject(method.delivery_tag, requeue=True)
            if interloper and len(times) == 1:
                chan.basic_publish("", q, b"not delayed")
        else:
            chan.basic_ack(method.delivery_tag)

    ch.basic_consume(q, on_message)
    assert wait_until(conn, lambda: len(times) > retries, timeout=10), times
    if interloper:
        # The delayed message does not hold up the queue.
        assert [b for (_, b) in others] == [b"not delayed"]
        assert others[0][0] < times[1]
    return [b - a for (a, b) in zip(times, times[1:])]


EARLY, LATE = 0.02, 0.25


@warren_only
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_delayed_retry_waits_min_times_delivery_count(conn, names, queue_type):
    gaps = redelivery_gaps(conn, names, queue_type, {
        "x-delayed-retry-type": "all", "x-delayed-retry-min": 200,
        "x-delayed-retry-max": 500}, retries=3, interloper=True)
    # 200 ms x delivery count, at most 500 ms.
    for gap, expected in zip(gaps, (0.2, 0.4, 0.5)):
        assert expected - EARLY <= gap < expected + LATE, gaps


@warren_only
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_delayed_retry_exponential_backoff(conn, names, queue_type):
    gaps = redelivery_gaps(conn, names, queue_type, {
        "x-delayed-retry-type": "all", "x-delayed-retry-min": 100,
        "x-delayed-retry-max": 500, "x-delayed-retry-backoff": "exponential"},
        retries=4)
    # 100 ms doubled each time, at most 500 ms.
    for gap, expected in zip(gaps, (0.1, 0.2, 0.4, 0.5)):
        assert expected - EARLY <= gap < expected + LATE, gaps
