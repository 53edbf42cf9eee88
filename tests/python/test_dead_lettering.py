"""Dead-lettering: x-dead-letter-exchange / x-dead-letter-routing-key, the
reasons (rejected, expired, maxlen), and the x-death / x-first-death-*
headers exactly as RabbitMQ 3.10 writes them.

What RabbitMQ 3.10 puts on a dead-lettered message (as pika decodes it):

* `x-death`: an array of tables, newest death first, one table per
  (queue, reason) pair. A table has `count` (a long-long, which pika decodes
  as pika.compat.long), `reason` ("rejected", "expired", "maxlen" or, on
  quorum queues, "delivery_limit"), `queue`, `time` (an AMQP timestamp in
  whole seconds, which pika decodes as a naive UTC datetime), `exchange` (the
  exchange the message had been published to, "" for the default exchange),
  `routing-keys` (an array: the routing key then the CC keys; BCC keys are
  not listed) and, only when the message had an `expiration` property,
  `original-expiration` (that property, a string). Dying again in the same
  queue for the same reason increments that table's count (the other fields
  stay as they were) and moves it to the front.
* `x-first-death-reason`, `x-first-death-queue`, `x-first-death-exchange`:
  strings, set at the first death and never changed.
* No `x-last-death-*` headers (those came with later RabbitMQ versions).
* Field order (not asserted here: pika gives dicts, compared unordered): the
  first death's table is count, reason, queue, time, exchange,
  routing-keys[, original-expiration]; tables written by later deaths
  (new or merged) have their keys sorted (count, exchange,
  original-expiration, queue, reason, routing-keys, time). The whole headers
  table of a dead-lettered message comes out sorted by key.
* The `expiration` property is removed; the other properties and headers
  stay.
"""

import pika

from amqp_support import (Deliveries, check_headers, death, depth, first_death,
                          get_all, get_one, pump)


def dead_letter_target(ch, names):
    """A fanout exchange with one queue bound to it: (exchange, queue)."""
    dlx, dlq = names.x("dlx"), names.q("dlq")
    ch.exchange_declare(dlx, exchange_type="fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    return dlx, dlq


def test_rejected_and_nacked_messages_are_dead_lettered(conn, names):
    ch = conn.channel()
    dlx, dlq = dead_letter_target(ch, names)
    src = names.q("src")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx})
    props = pika.BasicProperties(
        content_type="text/plain", correlation_id="c-1", message_id="m-1",
        delivery_mode=2, priority=3, expiration="60000", headers={"h": 1})
    ch.basic_publish("", src, b"rejected", props)
    ch.basic_publish("", src, b"nacked")
    assert depth(ch, src, 2) == 2

    # Requeued: not dead-lettered.
    method, _, body = ch.basic_get(src)
    assert body == b"rejected"
    ch.basic_reject(method.delivery_tag, requeue=True)
    method, _, body = ch.basic_get(src)
    assert (body, method.redelivered) == (b"rejected", True)
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, _, body = ch.basic_get(src)
    assert body == b"nacked"
    ch.basic_nack(method.delivery_tag, requeue=False)

    got = Deliveries(conn, ch, dlq, auto_ack=True)
    got.wait(2)
    assert got.quiet(0.2)
    (m1, p1, b1), (m2, p2, b2) = got.items
    assert (b1, m1.exchange, m1.routing_key, m1.redelivered) == (
        b"rejected", dlx, src, False)
    # The expiration property is gone; the other properties are kept.
    assert p1.expiration is None
    assert (p1.content_type, p1.correlation_id, p1.message_id, p1.delivery_mode,
            p1.priority) == ("text/plain", "c-1", "m-1", 2, 3)
    check_headers(p1, {
        "h": 1,
        "x-death": [death("rejected", src, "", [src], original_expiration="60000")],
        **first_death("rejected", src, ""),
    })
    assert (b2, m2.exchange, m2.routing_key) == (b"nacked", dlx, src)
    check_headers(p2, {
        "x-death": [death("rejected", src, "", [src])],
        **first_death("rejected", src, ""),
    })
    assert depth(ch, src) == 0


def test_expired_messages_are_dead_lettered(conn, names):
    ch = conn.channel()
    dlx, dlq = dead_letter_target(ch, names)
    src = names.q("ttl")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx,
                                     "x-message-ttl": 100})
    # The message's expiration wins when lower than the queue's TTL, the
    # queue's TTL when lower than the message's expiration.
    ch.basic_publish("", src, b"own", pika.BasicProperties(expiration="50"))
    ch.basic_publish("", src, b"queue's")
    ch.basic_publish("", src, b"long", pika.BasicProperties(expiration="60000"))
    got = Deliveries(conn, ch, dlq, auto_ack=True)
    got.wait(3, timeout=2)
    assert got.bodies() == [b"own", b"queue's", b"long"]
    expected_exp = ["50", None, "60000"]
    for (method, props, _), exp in zip(got.items, expected_exp):
        assert (method.exchange, method.routing_key) == (dlx, src)
        assert props.expiration is None
        check_headers(props, {
            "x-death": [death("expired", src, "", [src], original_expiration=exp)],
            **first_death("expired", src, ""),
        })
    assert depth(ch, src) == 0


def test_maxlen_drop_head_dead_letters_the_head(conn, names):
    ch = conn.channel()
    dlx, dlq = dead_letter_target(ch, names)
    src = names.q("maxlen")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx,
                                     "x-max-length": 2})
    for i in range(4):
        ch.basic_publish("", src, str(i).encode())
    assert depth(ch, src, 2) == 2
    got = Deliveries(conn, ch, dlq, auto_ack=True)
    got.wait(2)
    assert got.quiet(0.2)
    assert got.bodies() == [b"0", b"1"]
    for method, props, _ in got.items:
        assert (method.exchange, method.routing_key) == (dlx, src)
        check_headers(props, {
            "x-death": [death("maxlen", src, "", [src])],
            **first_death("maxlen", src, ""),
        })
    assert [b for (_, _, b) in get_all(ch, src)] == [b"2", b"3"]


def test_x_death_merges_per_queue_and_reason_newest_first(conn, names):
    """q1 dead-letters (on reject) to q2, q2 dead-letters (on expiry) back to
    q1: a cycle with a rejection in it, which RabbitMQ lets go on."""
    ch = conn.channel()
    q1, q2 = names.q("one"), names.q("two")
    ch.queue_declare(q1, arguments={"x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": q2})
    ch.queue_declare(q2, arguments={"x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": q1,
                                    "x-message-ttl": 100})
    ch.basic_publish("", q1, b"m", pika.BasicProperties(expiration="60000"))

    method, props, _ = get_one(ch, q1, auto_ack=False)
    assert props.headers is None
    assert props.expiration == "60000"
    ch.basic_reject(method.delivery_tag, requeue=False)
    # In q2 it expires after 100 ms and comes back to q1.
    method, props, body = get_one(ch, q1, auto_ack=False)
    assert (body, method.exchange, method.routing_key) == (b"m", "", q1)
    assert props.expiration is None
    check_headers(props, {
        "x-death": [
            death("expired", q2, "", [q2]),
            death("rejected", q1, "", [q1], original_expiration="60000"),
        ],
        **first_death("rejected", q1, ""),
    })

    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get_one(ch, q1, auto_ack=False)
    assert body == b"m"
    check_headers(props, {
        "x-death": [
            death("expired", q2, "", [q2], count=2),
            death("rejected", q1, "", [q1], count=2, original_expiration="60000"),
        ],
        **first_death("rejected", q1, ""),
    })
    ch.basic_ack(method.delivery_tag)
    assert depth(ch, q1) == 0 and depth(ch, q2) == 0


def test_a_cycle_through_a_rejection_goes_on(conn, names):
    ch = conn.channel()
    q = names.q("loop")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": q})
    ch.basic_publish("", q, b"again")
    for n in range(1, 4):
        method, _, _ = get_one(ch, q, auto_ack=False)
        ch.basic_reject(method.delivery_tag, requeue=False)
        method, props, body = get_one(ch, q, auto_ack=False)
        assert body == b"again"
        check_headers(props, {
            "x-death": [death("rejected", q, "", [q], count=n)],
            **first_death("rejected", q, ""),
        })
        ch.basic_reject(method.delivery_tag, requeue=True)


def test_a_dead_letter_cycle_without_rejection_is_dropped(conn, names):
    """a dead-letters (on expiry) to a fanout exchange bound to a itself and
    to a monitor queue: the monitor gets its copy, a does not get the message
    back (RabbitMQ logs the cycle and drops it)."""
    ch = conn.channel()
    fx, a, monitor = names.x("cycle"), names.q("a"), names.q("monitor")
    ch.exchange_declare(fx, exchange_type="fanout")
    ch.queue_declare(a, arguments={"x-dead-letter-exchange": fx,
                                   "x-message-ttl": 100})
    ch.queue_declare(monitor)
    ch.queue_bind(a, fx)
    ch.queue_bind(monitor, fx)
    ch.basic_publish("", a, b"round")
    method, props, body = get_one(ch, monitor)
    assert (body, method.exchange, method.routing_key) == (b"round", fx, a)
    check_headers(props, {
        "x-death": [death("expired", a, "", [a])],
        **first_death("expired", a, ""),
    })
    pump(conn, 0.3)
    assert depth(ch, a) == 0
    assert depth(ch, monitor) == 0


def test_routing_keys_and_cc_are_kept_unless_a_dead_letter_routing_key_is_set(
        conn, names):
    ch = conn.channel()
    x, dx = names.x("main"), names.x("dlx")
    ch.exchange_declare(x, exchange_type="direct")
    ch.exchange_declare(dx, exchange_type="direct")
    keep, replace = names.q("keep"), names.q("replace")
    ch.queue_declare(keep, arguments={"x-dead-letter-exchange": dx})
    ch.queue_declare(replace, arguments={"x-dead-letter-exchange": dx,
                                         "x-dead-letter-routing-key": "dk"})
    ch.queue_bind(keep, x, routing_key="k")
    ch.queue_bind(replace, x, routing_key="k2")
    by_key, by_cc, by_dk = names.q("by-k"), names.q("by-cc"), names.q("by-dk")
    for q, keys in ((by_key, ["k", "k2"]), (by_cc, ["c1", "c2"]), (by_dk, ["dk"])):
        ch.queue_declare(q)
        for key in keys:
            ch.queue_bind(q, dx, routing_key=key)

    ch.basic_publish(x, "k", b"keep", pika.BasicProperties(headers={"CC": ["c1"]}))
    ch.basic_publish(x, "k2", b"replace", pika.BasicProperties(headers={"CC": ["c2"]}))
    for q in (keep, replace):
        method, _, _ = get_one(ch, q, auto_ack=False)
        ch.basic_reject(method.delivery_tag, requeue=False)

    # Without a dead-letter routing key: routed by the routing key and the CC
    # keys again (one copy per queue), and the CC header stays.
    for q in (by_key, by_cc):
        method, props, body = get_one(ch, q)
        assert (body, method.exchange, method.routing_key) == (b"keep", dx, "k")
        check_headers(props, {
            "CC": ["c1"],
            "x-death": [death("rejected", keep, x, ["k", "c1"])],
            **first_death("rejected", keep, x),
        })
    # With one: routed by that key only, and the CC header is removed (but
    # x-death still lists the original keys).
    method, props, body = get_one(ch, by_dk)
    assert (body, method.exchange, method.routing_key) == (b"replace", dx, "dk")
    check_headers(props, {
        "x-death": [death("rejected", replace, x, ["k2", "c2"])],
        **first_death("rejected", replace, x),
    })
    pump(conn, 0.2)
    assert [depth(ch, q) for q in (by_key, by_cc, by_dk)] == [0, 0, 0]


def test_dead_lettering_to_a_missing_exchange_drops_the_message(conn, names):
    ch = conn.channel()
    q = names.q("src")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": names.x("missing")})
    ch.basic_publish("", q, b"lost")
    method, _, _ = get_one(ch, q, auto_ack=False)
    ch.basic_reject(method.delivery_tag, requeue=False)
    pump(conn, 0.1)
    assert ch.is_open
    assert depth(ch, q) == 0
