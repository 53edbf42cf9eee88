"""Erasure by header (issue 19): `POST /api/erasures/{vhost}` (and
`warrenctl erase_messages`) removes every message whose header equals a
value from every queue and stream of the vhost — ready in memory, kept
only in the store, waiting with a consumer unacknowledged — reports how
many from where, is audited, and holds across a SIGKILL and restart.
Erased messages are never dead-lettered and never come back. Warren only."""

import json
import os
import signal
import subprocess
import time

import pika
import requests

from amqp_support import get_all, start_warren, stop_warren, warren_only
from stream_support import read_all
from test_encryption import files_containing

pytestmark = warren_only

SUBJECT = "x-subject-id"
# Message i carries subject "1234" (a string), 1234 (an integer) or "77":
# an erasure of 1234 takes the first two kinds.
KINDS = ["1234", 1234, "77"]


def erased(i):
    return i % 3 != 2


def body(queue, i):
    tag = "ERASE-ME" if erased(i) else "keep"
    return f"{queue}-{i:03d}-{tag}".encode()


def start(data, audit):
    env = {
        # A small memory window: most of each queue lives only in the store.
        "WARREN_STORAGE__QUEUE_MEMORY_MESSAGES": "8",
        "WARREN_AUDIT__ENABLED": "true",
        "WARREN_AUDIT__PATH": str(audit),
    }
    return start_warren(extra_env=env, store_args=("--data-dir", str(data)))


def api(b, path):
    return f"http://127.0.0.1:{b.admin_port}{path}"


def erase(b, value, vhost="%2F", auth=("guest", "guest"), header=SUBJECT):
    return requests.post(api(b, f"/api/erasures/{vhost}"), auth=auth, timeout=60,
                         json={"header": header, "value": value})


def fill(ch, queue, n, persistent=True, priority=False):
    for i in range(n):
        props = pika.BasicProperties(
            delivery_mode=2 if persistent else 1,
            headers={SUBJECT: KINDS[i % 3], "n": i},
            priority=(i % 4) if priority else None)
        ch.basic_publish("", queue, body(queue, i), props)


def bodies_in(ch, queue):
    return [b for _, _, b in get_all(ch, queue)]


def killed_and_restarted(b, data, audit):
    """SIGKILL the broker, start it again on the same data."""
    b.process.send_signal(signal.SIGKILL)
    b.process.wait()
    return start(data, audit)


def test_erasure_removes_exactly_the_matching_messages_everywhere_and_durably(tmp_path):
    data, audit = tmp_path / "data", tmp_path / "audit.jsonl"
    b = start(data, audit)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("orders", durable=True)
    ch.queue_declare("prio-dlq", durable=True)
    ch.queue_declare("prio", durable=True, arguments={
        "x-max-priority": 3, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "prio-dlq"})
    ch.queue_declare("events", durable=True, arguments={"x-queue-type": "stream"})
    ch.queue_declare("scratch", durable=False)
    fill(ch, "orders", 40)
    fill(ch, "prio", 40, priority=True)
    fill(ch, "events", 30)
    fill(ch, "scratch", 20, persistent=False)

    # Consumers hold messages unacknowledged across the erasure.
    holder = pika.BlockingConnection(b.params())
    hch = holder.channel()
    hch.basic_qos(prefetch_count=3)
    held = {"orders": [], "prio": []}
    for q in held:
        hch.basic_consume(q, lambda c, m, p, bd, q=q: held[q].append((m.delivery_tag, bd)))
    deadline = time.monotonic() + 10
    while sum(map(len, held.values())) < 6 and time.monotonic() < deadline:
        holder.process_data_events(time_limit=0.1)
    assert [len(v) for v in held.values()] == [3, 3], held

    r = erase(b, 1234)
    assert r.status_code == 200, r.text
    report = r.json()
    expected = {"orders": 27, "prio": 27, "events": 20, "scratch": 14}
    assert report["erased"] == sum(expected.values()), report
    assert {q["name"]: q["erased"] for q in report["queues"]} == expected, report
    assert {q["name"]: q["type"] for q in report["queues"]}["events"] == "stream"
    assert report["header"] == SUBJECT and report["value"] == "1234"

    # Held messages come back: the erased ones do not, to the queue or to
    # a dead-letter queue; the others do.
    for tag, _ in held["orders"]:
        hch.basic_nack(tag, requeue=True)
    for tag, _ in held["prio"]:
        hch.basic_reject(tag, requeue=False)
    holder.close()
    rejected = [bd for _, bd in held["prio"] if b"keep" in bd]
    scratch = bodies_in(ch, "scratch")
    assert scratch == [body("scratch", i) for i in range(20) if not erased(i)]
    # Erasing again finds nothing.
    assert erase(b, "1234").json()["erased"] == 0

    # Kill the broker outright: the erasure was durable before the reply.
    conn.close()
    b = killed_and_restarted(b, data, audit)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    orders = bodies_in(ch, "orders")
    assert sorted(orders) == [body("orders", i) for i in range(40) if not erased(i)]
    prio = bodies_in(ch, "prio")
    assert sorted(prio) == sorted(body("prio", i) for i in range(40)
                                  if not erased(i) and body("prio", i) not in rejected)
    assert bodies_in(ch, "prio-dlq") == rejected
    events = read_all(conn, "events", body("events", 29)).bodies()
    assert events == [body("events", i) for i in range(30) if not erased(i)]
    conn.close()
    stop_warren(b)

    # Stream records are rewritten in place: the erased bodies are in no
    # stream segment.
    assert files_containing(data / "streams", b"events-000-ERASE-ME") == []
    assert files_containing(data / "streams", b"events-002-keep") != []
    # Audited: who, and what went from where.
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    audited = [rec for rec in lines if rec["event"] == "messages.erased"]
    assert audited[0]["user"] == "guest" and audited[0]["via"] == "http"
    assert audited[0]["what"]["erased"] == 88
    assert audited[0]["what"]["header"] == SUBJECT


def test_erasure_through_warrenctl_and_its_refusals(tmp_path):
    b = start(tmp_path / "data", tmp_path / "audit.jsonl")
    try:
        conn = pika.BlockingConnection(b.params())
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("inbox", durable=True)
        fill(ch, "inbox", 6)
        cmd = [os.environ["WARRENCTL_BIN"], "--url", api(b, ""), "--username", "guest",
               "--password", "guest"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARRENCTL_")}
        out = subprocess.run([*cmd, "erase_messages", SUBJECT, "77"], capture_output=True,
                             text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        assert "Erased 2 messages" in out.stdout and "inbox\tclassic\t2" in out.stdout, out.stdout
        out = subprocess.run([*cmd, "--formatter", "json", "erase_messages", SUBJECT, "77"],
                             capture_output=True, text=True, timeout=60, env=env)
        assert json.loads(out.stdout)["erased"] == 0
        assert sorted(bodies_in(ch, "inbox")) == [body("inbox", i) for i in range(6) if erased(i)]
        conn.close()
        # Refusals: an unknown vhost, a non-administrator, no header, a
        # value that is not text.
        assert erase(b, "1", vhost="nowhere").status_code == 404
        requests.put(api(b, "/api/users/mo"), auth=("guest", "guest"), timeout=10,
                     json={"password": "pw", "tags": "monitoring"}).raise_for_status()
        assert erase(b, "1", auth=("mo", "pw")).status_code == 401
        assert erase(b, "1", header="").status_code == 400
        assert erase(b, {"a": 1}).status_code == 400
    finally:
        stop_warren(b)


def test_erasure_in_an_encrypted_store(tmp_path):
    """Sealed queue entries and stream records are opened to be matched."""
    from test_encryption import key_file
    data, key = tmp_path / "data", key_file(tmp_path / "store.key", 5)
    args = ["--encryption-key-file", str(key)]
    b = start_warren(store_args=("--data-dir", str(data)), extra_args=args)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("sealed-q", durable=True)
    ch.queue_declare("sealed-s", durable=True, arguments={"x-queue-type": "stream"})
    fill(ch, "sealed-q", 6)
    fill(ch, "sealed-s", 6)
    conn.close()
    report = erase(b, "1234").json()
    assert {q["name"]: q["erased"] for q in report["queues"]} == {"sealed-q": 4, "sealed-s": 4}
    stop_warren(b)
    b = start_warren(store_args=("--data-dir", str(data)), extra_args=args)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    assert bodies_in(ch, "sealed-q") == [body("sealed-q", i) for i in (2, 5)]
    assert read_all(conn, "sealed-s", body("sealed-s", 5)).bodies() == \
        [body("sealed-s", i) for i in (2, 5)]
    conn.close()
    stop_warren(b)


def test_erasure_reaches_messages_a_delayed_exchange_holds(tmp_path):
    data, audit = tmp_path / "data", tmp_path / "audit.jsonl"
    b = start(data, audit)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("later", "x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    ch.queue_declare("later-q", durable=True)
    ch.queue_bind("later-q", "later", "k")
    for i in range(6):
        ch.basic_publish("later", "k", body("later", i), pika.BasicProperties(
            delivery_mode=2, headers={SUBJECT: KINDS[i % 3], "x-delay": 4000}))
    published = time.monotonic()
    conn.close()
    report = erase(b, "1234").json()
    assert report["exchanges"] == [{"name": "later", "type": "x-delayed-message", "erased": 4}]
    assert report["queues"] == []
    b = killed_and_restarted(b, data, audit)
    time.sleep(max(0.0, published + 5.5 - time.monotonic()))
    conn = pika.BlockingConnection(b.params())
    got = bodies_in(conn.channel(), "later-q")
    assert got == [body("later", i) for i in (2, 5)]
    conn.close()
    stop_warren(b)


def test_a_stream_consumer_reading_ahead_gets_no_erased_record(tmp_path):
    """After a restart a consumer reads a stream from its segment files a
    chunk at a time; what it read ahead of its credit before the erasure
    is read again, without the erased records."""
    data, audit = tmp_path / "data", tmp_path / "audit.jsonl"
    b = start(data, audit)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    ch.queue_declare("ahead", durable=True, arguments={"x-queue-type": "stream"})
    fill(ch, "ahead", 12)  # no confirms: one burst, few chunks
    deadline = time.monotonic() + 10
    while requests.get(api(b, "/api/queues/%2F/ahead"), auth=("guest", "guest"),
                       timeout=10).json().get("messages") != 12:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    conn.close()
    stop_warren(b)
    b = start(data, audit)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1)
    got = []
    ch.basic_consume("ahead", lambda c, m, p, bd: got.append((m.delivery_tag, bd)),
                     arguments={"x-stream-offset": "first"})
    while not got:
        conn.process_data_events(time_limit=0.1)
    assert got[0][1] == body("ahead", 0)
    assert erase(b, "1234").json()["erased"] == 8
    acked, deadline = 0, time.monotonic() + 5
    while len(got) < 5 and time.monotonic() < deadline:
        for tag, _ in got[acked:]:
            ch.basic_ack(tag)
        acked = len(got)
        conn.process_data_events(time_limit=0.2)
    conn.process_data_events(time_limit=0.5)
    assert [bd for _, bd in got[1:]] == [body("ahead", i) for i in (2, 5, 8, 11)]
    conn.close()
    stop_warren(b)
