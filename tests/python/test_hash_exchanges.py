"""Hash exchanges: x-consistent-hash (RabbitMQ's plugin: binding key =
weight; routing key, hash-header or hash-property hashed) and x-modulus-hash
(RabbitMQ 4.3: hash modulo the bound queues). The consistent-hash tests run
against RabbitMQ 3.10.8 with the plugin too; modulus hash is newer than it,
and keeping placement across a restart is Warren's."""

import collections

import pika
import pytest

from amqp_support import depth, get_all, warren_on, warren_only

KEYS = [f"key-{i}" for i in range(4000)]


def publish_keys(ch, exchange, keys, **props):
    for k in keys:
        ch.basic_publish(exchange, k, k.encode(), pika.BasicProperties(**props) if props else None)


def placement(ch, queues, expected):
    """{body: queue} for every message in `queues` (drained), once `expected`
    messages have arrived."""
    deadline_total = sum(depth(ch, q) for q in queues)
    for _ in range(100):
        if deadline_total >= expected:
            break
        ch.connection.sleep(0.05)
        deadline_total = sum(depth(ch, q) for q in queues)
    where = {}
    for q in queues:
        for _, _, body in get_all(ch, q):
            where[body.decode()] = q
    assert len(where) == expected, (len(where), expected)
    return where


def hash_exchange(ch, names, kind="x-consistent-hash", arguments=None):
    x = names.x("hash")
    ch.exchange_declare(x, kind, arguments=arguments)
    return x


def queues(ch, names, n):
    out = []
    for i in range(n):
        q = names.q(f"h{i}")
        ch.queue_declare(q)
        out.append(q)
    return out


def test_consistent_hash_spreads_by_weight(ch, names):
    x = hash_exchange(ch, names)
    qs = queues(ch, names, 3)
    for q, weight in zip(qs, ["1", "2", "1"]):
        ch.queue_bind(q, x, weight)
    publish_keys(ch, x, KEYS)
    where = placement(ch, qs, len(KEYS))
    counts = collections.Counter(where.values())
    for q, share in zip(qs, [0.25, 0.5, 0.25]):
        assert abs(counts[q] / len(KEYS) - share) < 0.04, counts


def test_consistent_hash_keeps_a_key_on_one_queue(ch, names):
    x = hash_exchange(ch, names)
    qs = queues(ch, names, 4)
    for q in qs:
        ch.queue_bind(q, x, "1")
    for _ in range(50):
        ch.basic_publish(x, "order-42", b"o")
    held = [depth(ch, q) for q in qs]
    for _ in range(50):
        if sum(held) == 50:
            break
        ch.connection.sleep(0.05)
        held = [depth(ch, q) for q in qs]
    assert sorted(held) == [0, 0, 0, 50], held


def test_adding_a_queue_moves_about_one_nth_of_the_keys_all_to_it(ch, names):
    x = hash_exchange(ch, names)
    qs = queues(ch, names, 4)
    for q in qs:
        ch.queue_bind(q, x, "1")
    publish_keys(ch, x, KEYS)
    before = placement(ch, qs, len(KEYS))
    new = names.q("h-new")
    ch.queue_declare(new)
    ch.queue_bind(new, x, "1")
    publish_keys(ch, x, KEYS)
    after = placement(ch, qs + [new], len(KEYS))
    moved = [k for k in KEYS if after[k] != before[k]]
    assert all(after[k] == new for k in moved), "a key moved between old queues"
    assert 0.15 < len(moved) / len(KEYS) < 0.25, len(moved)


def test_hash_header_and_hash_property(ch, names):
    by_header = hash_exchange(ch, names, arguments={"hash-header": "customer"})
    by_id = hash_exchange(ch, names, arguments={"hash-property": "message_id"})
    qs = queues(ch, names, 4)
    for q in qs:
        ch.queue_bind(q, by_header, "1")
        ch.queue_bind(q, by_id, "1")
    # Different routing keys, the same header: one queue.
    for i in range(40):
        ch.basic_publish(by_header, f"rk-{i}", b"h",
                         pika.BasicProperties(headers={"customer": "c-7"}))
    for i in range(40):
        ch.basic_publish(by_id, f"rk-{i}", b"p", pika.BasicProperties(message_id="m-1"))
    held = []
    for _ in range(60):
        held = [depth(ch, q) for q in qs]
        if sum(held) == 80:
            break
        ch.connection.sleep(0.05)
    assert sum(held) == 80
    bodies = {q: collections.Counter(b for _, _, b in get_all(ch, q)) for q in qs}
    assert sum(1 for c in bodies.values() if c[b"h"]) == 1, bodies
    assert sum(1 for c in bodies.values() if c[b"p"]) == 1, bodies
    # Many header values spread over the queues.
    for i in range(400):
        ch.basic_publish(by_header, "same", b"h",
                         pika.BasicProperties(headers={"customer": f"c-{i}"}))
    ch.connection.sleep(0.3)
    assert all(depth(ch, q) > 40 for q in qs)


@pytest.mark.parametrize("arguments, text", [
    ({"hash-header": "a", "hash-property": "message_id"},
     "hash-header and hash-property are mutually exclusive"),
    ({"hash-property": "app_id"}, "Unsupported property: app_id"),
])
def test_bad_exchange_arguments_are_refused_with_406(connect, names, arguments, text):
    ch = connect().channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(names.x("bad"), "x-consistent-hash", arguments=arguments)
    assert e.value.reply_code == 406
    assert e.value.reply_text == f"PRECONDITION_FAILED - {text}"


@pytest.mark.parametrize("key, text", [
    ("abc", 'The binding key must be an integer: <<"abc">>'),
    ("", "The binding key must be an integer: <<>>"),
    ("1.5", 'The binding key must be an integer: <<"1.5">>'),
    ("0", "The binding key must be greater than 0"),
    ("-3", "The binding key must be greater than 0"),
])
def test_a_binding_key_that_is_not_a_weight_is_refused_with_406(connect, names, key, text):
    ch = connect().channel()
    x = hash_exchange(ch, names)
    q = names.q()
    ch.queue_declare(q)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_bind(q, x, key)
    assert e.value.reply_code == 406
    assert e.value.reply_text == f"PRECONDITION_FAILED - {text}"


@warren_only
def test_modulus_hash_is_stable_and_spreads(ch, names):
    x = hash_exchange(ch, names, kind="x-modulus-hash")
    qs = queues(ch, names, 3)
    for q in qs:
        ch.queue_bind(q, x, "ignored")
    publish_keys(ch, x, KEYS)
    first = placement(ch, qs, len(KEYS))
    publish_keys(ch, x, KEYS)
    assert placement(ch, qs, len(KEYS)) == first
    counts = collections.Counter(first.values())
    assert all(abs(counts[q] / len(KEYS) - 1 / 3) < 0.04 for q in qs), counts


@warren_only
def test_placement_survives_a_restart(tmp_path):
    with warren_on(tmp_path) as broker:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        qs = [f"restart-h{i}" for i in range(3)]
        for q in qs:
            ch.queue_declare(q, durable=True)
        for kind in ("x-consistent-hash", "x-modulus-hash"):
            ch.exchange_declare(kind, kind, durable=True)
            for q in reversed(qs):
                ch.queue_bind(q, kind, "1")
        keys = KEYS[:600]
        before = {}
        for kind in ("x-consistent-hash", "x-modulus-hash"):
            publish_keys(ch, kind, keys)
            before[kind] = placement(ch, qs, len(keys))
        conn.close()
    with warren_on(tmp_path) as broker:
        conn = pika.BlockingConnection(broker.params())
        ch = conn.channel()
        for kind in ("x-consistent-hash", "x-modulus-hash"):
            publish_keys(ch, kind, keys)
            assert placement(ch, qs, len(keys)) == before[kind], kind
        conn.close()
