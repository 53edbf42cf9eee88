"""Dynamic shovels between two Warren brokers (separate processes on
ephemeral ports), configured and reported as RabbitMQ's shovel plugin:
runtime parameters, /api/shovels, x-shovelled headers, delete-after, and
nothing lost across a SIGKILL of either side."""

import signal
import threading
import time

import pika
import pytest

from amqp_support import stop_warren, warren_only
from link_support import (drain, link_running, message_count, wait_for,
                          warren_node, warren_nodes, warrenctl)

pytestmark = warren_only


def fill(node, queue, n, vhost="/", body=lambda i: f"m{i}".encode()):
    conn = node.connect(vhost)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    for i in range(n):
        ch.basic_publish("", queue, body(i),
                         pika.BasicProperties(delivery_mode=2,
                                              headers={"n": i}))
    conn.close()


def test_a_shovel_moves_messages_with_rabbitmqs_headers_and_status():
    with warren_nodes("src", "dst") as (a, b):
        fill(a, "from", 5)
        a.parameter("shovel", "/", "move", {
            "src-uri": a.uri(), "src-queue": "from",
            "dest-uri": b.uri(), "dest-queue": "to",
            "add-forward-headers": True, "dest-add-timestamp-header": True,
        })
        status = link_running(a, "/shovels", name="move")
        assert status["type"] == "dynamic"
        assert status["src_uri"] == f"amqp://127.0.0.1:{a.broker.amqp_port}/%2F"
        assert "guest" not in status["dest_uri"]
        assert (status["src_queue"], status["dest_queue"]) == ("from", "to")
        assert status["src_protocol"] == status["dest_protocol"] == "amqp091"
        conn = b.connect()
        got = drain(conn, "to", 5)
        conn.close()
        assert [body for _, body in got] == [f"m{i}".encode() for i in range(5)]
        props = got[0][0]
        assert props.delivery_mode == 2 and props.headers["n"] == 0
        [mark] = props.headers["x-shovelled"]
        assert mark["shovelled-by"] == "src"
        assert mark["shovel-type"] == "dynamic"
        assert (mark["shovel-name"], mark["shovel-vhost"]) == ("move", "/")
        assert (mark["src-queue"], mark["dest-queue"]) == ("from", "to")
        assert abs(props.headers["x-shovelled-timestamp"] - time.time()) < 60
        assert message_count(a, "/", "from") == 0
        # The two connections are named as RabbitMQ names them.
        names = [c["client_properties"].get("connection_name")
                 for c in b.get("/connections")]
        assert "Shovel move" in names
        wait_for(lambda: a.get("/shovels")[0]["forwarded"] == 5, "forwarded count")
        # warrenctl shovel_status, with rabbitmqctl's columns.
        [row] = warrenctl(a, "shovel_status")
        assert (row["name"], row["state"], row["source_queue"], row["destination_queue"]) == \
            ("move", "running", "from", "to")
        assert row["type"] == "dynamic" and row["vhost"] == "/"


def test_an_exchange_source_and_destination_keep_or_replace_the_key():
    with warren_nodes("src", "dst") as (a, b):
        conn = b.connect()
        ch = conn.channel()
        ch.queue_declare("landing")
        ch.queue_bind("landing", "amq.topic", "renamed")
        a.parameter("shovel", "/", "x2x", {
            "src-uri": a.uri(), "src-exchange": "amq.direct",
            "src-exchange-key": "k1",
            "dest-uri": b.uri(), "dest-exchange": "amq.topic",
            "dest-exchange-key": "renamed",
        })
        status = link_running(a, "/shovels", name="x2x")
        assert (status["src_exchange"], status["src_exchange_key"]) == ("amq.direct", "k1")
        pub = a.connect()
        pch = pub.channel()
        pch.basic_publish("amq.direct", "k1", b"yes")
        pch.basic_publish("amq.direct", "other", b"no")
        pub.close()
        got = drain(conn, "landing", 1)
        assert [body for _, body in got] == [b"yes"]
        conn.close()


def test_delete_after_queue_length_moves_what_was_there_then_deletes_itself():
    with warren_nodes("src", "dst") as (a, b):
        fill(a, "batch", 7)
        a.parameter("shovel", "/", "once", {
            "src-uri": a.uri(), "src-queue": "batch",
            "dest-uri": b.uri(), "dest-queue": "batch-copy",
            "src-delete-after": "queue-length",
        })
        wait_for(lambda: a.get("/parameters/shovel") == [] and a.get("/shovels") == [],
                 "the shovel to delete itself")
        assert message_count(b, "/", "batch-copy") == 7
        # A number moves that many.
        fill(a, "batch", 5)
        a.parameter("shovel", "/", "two", {
            "src-uri": a.uri(), "src-queue": "batch",
            "dest-uri": b.uri(), "dest-queue": "batch-copy",
            "src-delete-after": 2,
        })
        wait_for(lambda: a.get("/parameters/shovel") == [], "the shovel to delete itself")
        assert message_count(a, "/", "batch") == 3
        assert message_count(b, "/", "batch-copy") == 9


def test_shovel_parameters_are_checked_as_rabbitmq_checks_them():
    with warren_nodes("a") as (a,):
        base = {"src-uri": a.uri(), "src-queue": "q", "dest-uri": a.uri()}
        cases = [
            ({k: v for k, v in base.items() if k != "src-uri"},
             'Key "src-uri" not found in bad'),
            ({**base, "src-exchange": "x"},
             "Cannot specify 'src-exchange' and 'src-queue'"),
            ({**base, "ack-mode": "bogus"},
             'ack-mode should be one of [<<"no-ack">>,<<"on-publish">>,'
             '<<"on-confirm">>], actually was <<"bogus">>'),
            ({**base, "src-delete-after": -1},
             'src-delete-after should be a number greater than or equal to 0, '
             '"never" or "queue-length", actually was -1'),
            ({**base, "src-prefetch-count": "10"},
             'src-prefetch-count should be a number, actually was <<"10">>'),
            ({**base, "foo": 1}, 'Unrecognised terms [{<<"foo">>,1}] in bad'),
            ({**base, "src-uri": "foo://x"},
             '"foo://x" not a valid URI: {{unexpected_uri_scheme,"foo"},"foo://x"}'),
            ({**base, "ack-mode": "no-ack", "src-delete-after": 5},
             "Cannot specify 'no-ack' and numerical 'delete-after'"),
        ]
        for value, reason in cases:
            r = a.put("/parameters/shovel/%2F/bad", {"value": value})
            assert r.status_code == 400, (value, r.text)
            assert r.json()["reason"] == f"Validation failed\n\n{reason}\n", value
        assert a.get("/shovels") == []


def test_a_shovel_that_cannot_connect_stays_starting_and_restarts_on_request():
    with warren_nodes("a") as (a,):
        a.parameter("shovel", "/", "nowhere", {
            "src-uri": "amqp://guest:guest@127.0.0.1:1", "src-queue": "q",
            "dest-uri": a.uri(), "dest-queue": "d", "reconnect-delay": 0.2,
        })
        wait_for(lambda: a.get("/shovels"), "the shovel's status")
        [status] = a.get("/shovels")
        assert status["state"] == "starting" and "src_uri" not in status
        wait_for(lambda: a.get("/shovels")[0]["reconnects"] >= 2, "reconnects")
        assert a.delete("/shovels/vhost/%2F/nowhere/restart").status_code == 204
        assert a.delete("/shovels/vhost/%2F/missing/restart").status_code == 404
        # DELETE without /restart deletes the shovel, as RabbitMQ.
        assert a.delete("/shovels/vhost/%2F/nowhere").status_code == 204
        wait_for(lambda: a.get("/shovels") == [], "the shovel to go")
        assert a.get("/parameters/shovel") == []


def publish_confirmed(node, queue, bodies, stop):
    """Publish each body persistently with confirms, retrying (after a
    reconnect) any publish not confirmed; returns the confirmed bodies."""
    confirmed = []
    pending = list(bodies)
    while pending and not stop.is_set():
        try:
            conn = node.connect()
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare(queue, durable=True)
            while pending:
                ch.basic_publish("", queue, pending[0],
                                 pika.BasicProperties(delivery_mode=2))
                confirmed.append(pending.pop(0))
            conn.close()
        except (pika.exceptions.AMQPError, OSError):
            time.sleep(0.2)
    return confirmed


def where_they_are(a, b, lost):
    """For a failure message: the queues on both sides, the shovel, and
    whether the lost bodies are still at the source once the shovel is
    deleted (stuck unacknowledged) or gone."""
    def queue(node, name):
        qi = node.get(f"/queues/%2F/{name}")
        return {k: qi.get(k) for k in ("messages", "messages_ready",
                                        "messages_unacknowledged", "consumers")}
    facts = {"source": queue(a, "work"), "destination": queue(b, "safe-copy"),
             "shovel": a.get("/shovels")}
    a.delete("/parameters/shovel/%2F/safe")
    time.sleep(1)
    conn = a.connect()
    left = [body for _, body in drain(conn, "work", 10**9, timeout=2)]
    conn.close()
    facts["still at the source"] = [m for m in lost if m in left]
    facts["source log"] = a.broker.log[-30:]
    facts["destination log"] = b.broker.log[-30:]
    return repr(facts)


# Two kills and restarts, and a link that may need a confirm timeout (10 s)
# to notice a destination that went away: more than the suite's 60 s.
@pytest.mark.timeout(240)
def test_nothing_confirmed_is_lost_across_a_kill_of_the_destination_and_the_source(tmp_path):
    a = warren_node("src", store_args=("--data-dir", str(tmp_path / "a")))
    b = warren_node("dst", store_args=("--data-dir", str(tmp_path / "b")))
    try:
        a.parameter("shovel", "/", "safe", {
            "src-uri": a.uri(), "src-queue": "work",
            "dest-uri": b.uri(), "dest-queue": "safe-copy",
            "reconnect-delay": 0.3, "prefetch-count": 50,
        })
        link_running(a, "/shovels", name="safe")
        bodies = [f"msg-{i}".encode() for i in range(3000)]
        stop = threading.Event()
        result = {}
        t = threading.Thread(target=lambda: result.update(
            sent=publish_confirmed(a, "work", bodies, stop)))
        t.start()
        # Kill the destination while messages flow, then bring it back on
        # the same ports.
        wait_for(lambda: a.get("/shovels")[0]["forwarded"] > 300, "some forwarded")
        b.broker.process.send_signal(signal.SIGKILL)
        b.broker.process.wait()
        time.sleep(0.5)
        b = warren_node("dst", store_args=("--data-dir", str(tmp_path / "b")),
                        amqp_port=b.broker.amqp_port, admin_port=b.broker.admin_port)
        # Then the source (which runs the shovel).
        wait_for(lambda: a.get("/shovels")[0]["state"] == "running", "running again")
        a.broker.process.send_signal(signal.SIGKILL)
        a.broker.process.wait()
        stop.set()
        t.join(timeout=60)
        a = warren_node("src", store_args=("--data-dir", str(tmp_path / "a")),
                        amqp_port=a.broker.amqp_port, admin_port=a.broker.admin_port)
        # The publisher gave up on the dead source: finish what it did not
        # get confirmed.
        rest = [m for m in bodies if m not in set(result.get("sent", []))]
        sent = result.get("sent", []) + publish_confirmed(a, "work", rest, threading.Event())
        assert len(sent) == len(bodies)
        wait_for(lambda: message_count(a, "/", "work") == 0, "the source to drain", timeout=60)
        # Ready 0 at the source still leaves up to a prefetch in flight:
        # keep consuming until every confirmed body arrived (or two minutes
        # passed), counting duplicates as they come.
        conn = b.connect()
        got = []
        deadline = time.monotonic() + 120
        missing = set(sent)
        while missing and time.monotonic() < deadline:
            got += drain(conn, "safe-copy", 10**9, timeout=1)
            missing -= {body for _, body in got}
        got += drain(conn, "safe-copy", 10**9, timeout=0.5)
        conn.close()
        arrived = {body for _, body in got}
        lost = [m for m in sent if m not in arrived]
        assert lost == [], f"{len(lost)} confirmed messages lost: {lost[:5]}; " + \
            where_they_are(a, b, lost)
        assert len(got) - len(arrived) < 200, "duplicates beyond the in-flight window"
    finally:
        for n in (a, b):
            if n.broker.process.poll() is None:
                stop_warren(n.broker)


def test_a_shovel_reaches_its_destination_over_amqps_with_a_ca_file(tmp_path):
    import trustme
    from amqp_support import start_warren
    from link_support import Node
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(tmp_path / "server.pem")
    server.private_key_pem.write_to_path(tmp_path / "server.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    tls = start_warren(
        extra_env={"WARREN_AMQPS__BIND": "127.0.0.1"},
        extra_args=["--amqps-port", "0", "--tls-cert", str(tmp_path / "server.pem"),
                    "--tls-key", str(tmp_path / "server.key")])
    b = Node(tls, "tls-dst")
    try:
        with warren_nodes("src") as (a,):
            fill(a, "plain", 3)
            dest = (f"amqps://guest:guest@localhost:{tls.amqps_port}/%2F"
                    f"?cacertfile={tmp_path / 'ca.pem'}")
            a.parameter("shovel", "/", "secure", {
                "src-uri": a.uri(), "src-queue": "plain",
                "dest-uri": dest, "dest-queue": "arrived-over-tls",
            })
            status = link_running(a, "/shovels", name="secure")
            assert status["dest_uri"] == f"amqps://localhost:{tls.amqps_port}/%2F"
            conn = b.connect()
            assert len(drain(conn, "arrived-over-tls", 3)) == 3
            conn.close()
            # Without the CA file the server's certificate is not trusted.
            a.parameter("shovel", "/", "untrusted", {
                "src-uri": a.uri(), "src-queue": "plain",
                "dest-uri": dest.split("?")[0], "dest-queue": "never",
                "reconnect-delay": 0.2,
            })
            wait_for(lambda: any(s["name"] == "untrusted" and s["reconnects"] >= 1
                                 for s in a.get("/shovels")), "a failed attempt")
            [s] = [s for s in a.get("/shovels") if s["name"] == "untrusted"]
            assert s["state"] == "starting"
    finally:
        stop_warren(tls)


def test_shovel_status_changes_are_events():
    with warren_nodes("src", "dst") as (a, b):
        conn = a.connect()
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.rabbitmq.event", "shovel.#")
        fill(a, "evq", 1)
        a.parameter("shovel", "/", "ev", {
            "src-uri": a.uri(), "src-queue": "evq",
            "dest-uri": b.uri(), "dest-queue": "evq2",
        })
        link_running(a, "/shovels", name="ev")
        assert a.delete("/parameters/shovel/%2F/ev").status_code == 204
        events = []
        ch.basic_consume(q, lambda c, m, p, body: events.append(
            (m.routing_key, p.headers)), auto_ack=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                k == "shovel.worker.removed" for k, _ in events):
            conn.process_data_events(0.05)
        statuses = [h["status"] for k, h in events if k == "shovel.worker.status"]
        assert "running" in statuses
        [removed] = [h for k, h in events if k == "shovel.worker.removed"]
        assert (removed["name"], removed["vhost"]) == ("ev", "/")
        conn.close()


def test_what_the_destination_refuses_stays_at_the_source():
    with warren_nodes("src", "dst") as (a, b):
        conn = b.connect()
        conn.channel().queue_declare("small", durable=True, arguments={
            "x-max-length": 5, "x-overflow": "reject-publish"})
        fill(a, "big", 12)
        a.parameter("shovel", "/", "into-small", {
            "src-uri": a.uri(), "src-queue": "big",
            "dest-uri": b.uri(), "dest-queue": "small",
            "dest-queue-args": {"x-max-length": 5, "x-overflow": "reject-publish"},
        })
        link_running(a, "/shovels", name="into-small")
        wait_for(lambda: message_count(b, "/", "small") == 5, "the destination to fill")
        time.sleep(0.5)
        # Refused messages went back to the source (and keep being offered).
        assert message_count(b, "/", "small") == 5
        # Consuming makes room: every message arrives, none twice.
        got = drain(conn, "small", 12)
        conn.close()
        assert sorted(body for _, body in got) == sorted(f"m{i}".encode() for i in range(12))
        assert message_count(a, "/", "big") == 0
        assert a.get("/shovels")[0]["state"] == "running"
