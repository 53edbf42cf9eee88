"""Shovels and federation between Warren and a real RabbitMQ, both ways:
Warren's shovel and federation links pointed at RabbitMQ, and RabbitMQ's
shovel and federation plugins pointed at Warren. Needs a RabbitMQ with the
shovel and federation plugins at 127.0.0.1:5672 (management on 15672,
guest/guest; $WARREN_LINKS_RABBITMQ_HOST to change the host): skipped,
with the reason, where there is none."""

import os
import time
import uuid

import pika
import pytest
import requests

from amqp_support import warren_only
from link_support import AUTH, Node, drain, link_running, message_count, wait_for, warren_nodes

HOST = os.environ.get("WARREN_LINKS_RABBITMQ_HOST", "127.0.0.1")


def rabbitmq_with_link_plugins():
    try:
        r = requests.get(f"http://{HOST}:15672/api/overview", auth=AUTH, timeout=3)
        types = {t["name"] for t in r.json().get("exchange_types", [])}
    except (requests.RequestException, ValueError):
        return "no RabbitMQ management API at %s:15672" % HOST
    if "x-federation-upstream" not in types:
        return "RabbitMQ at %s has no federation plugin" % HOST
    try:
        requests.get(f"http://{HOST}:15672/api/shovels", auth=AUTH,
                     timeout=3).raise_for_status()
    except requests.RequestException:
        return "RabbitMQ at %s has no shovel management plugin" % HOST
    return None


_missing = rabbitmq_with_link_plugins()
pytestmark = [warren_only, pytest.mark.skipif(_missing is not None, reason=str(_missing))]


class _RabbitBroker:
    amqp_port = 5672
    admin_port = 15672


@pytest.fixture
def rabbit():
    """RabbitMQ, in a vhost of this test's own (deleted afterwards)."""
    node = Node(_RabbitBroker(), "rabbitmq", host=HOST)
    vhost = f"warren-links-{uuid.uuid4().hex[:8]}"
    node.vhost(vhost)
    node.test_vhost = vhost
    yield node
    node.delete(f"/vhosts/{vhost}")


def fill(node, vhost, queue, n, prefix):
    conn = node.connect(vhost)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    for i in range(n):
        ch.basic_publish("", queue, f"{prefix}-{i}".encode(),
                         pika.BasicProperties(delivery_mode=2))
    conn.close()


def test_warrens_shovel_moves_from_rabbitmq_and_back(rabbit):
    v = rabbit.test_vhost
    with warren_nodes("warren-a") as (w,):
        fill(rabbit, v, "r-src", 20, "r")
        w.parameter("shovel", "/", "in", {
            "src-uri": rabbit.uri(v), "src-queue": "r-src",
            "dest-uri": w.uri(), "dest-queue": "w-in",
            "add-forward-headers": True,
        })
        link_running(w, "/shovels", name="in")
        conn = w.connect()
        got = drain(conn, "w-in", 20)
        conn.close()
        assert [b for _, b in got] == [f"r-{i}".encode() for i in range(20)]
        assert got[0][0].headers["x-shovelled"][0]["src-queue"] == "r-src"
        fill(w, "/", "w-out", 20, "w")
        w.parameter("shovel", "/", "out", {
            "src-uri": w.uri(), "src-queue": "w-out",
            "dest-uri": rabbit.uri(v), "dest-queue": "r-in",
        })
        wait_for(lambda: message_count(rabbit, v, "r-in") == 20
                 if r_in_exists(rabbit, v) else False, "20 messages in RabbitMQ")
        assert message_count(w, "/", "w-out") == 0


def r_in_exists(rabbit, v):
    r = requests.get(f"{rabbit.api}/queues/{v}/r-in", auth=AUTH, timeout=5)
    return r.status_code == 200


def test_rabbitmqs_shovel_moves_from_warren(rabbit):
    v = rabbit.test_vhost
    with warren_nodes("warren-a") as (w,):
        fill(w, "/", "w-src", 20, "w")
        fill(rabbit, v, "r-dst", 0, "")
        rabbit.parameter("shovel", v, "from-warren", {
            "src-uri": w.uri(), "src-queue": "w-src",
            "dest-uri": rabbit.uri(v), "dest-queue": "r-dst",
            "add-forward-headers": True,
        })
        conn = rabbit.connect(v)
        got = drain(conn, "r-dst", 20, timeout=30)
        conn.close()
        assert [b for _, b in got] == [f"w-{i}".encode() for i in range(20)]
        assert got[0][0].headers["x-shovelled"][0]["shovelled-by"] == \
            rabbit.get("/cluster-name")["name"]
        assert message_count(w, "/", "w-src") == 0
        # RabbitMQ's shovel is a client Warren lists, named as RabbitMQ names it.
        names = [c["client_properties"].get("connection_name")
                 for c in w.get("/connections")]
        assert "Shovel from-warren" in names
        rabbit.delete(f"/parameters/shovel/{v}/from-warren")


def bind_local(node, vhost, exchange, queue, key):
    conn = node.connect(vhost)
    ch = conn.channel()
    ch.queue_declare(queue)
    ch.queue_bind(queue, exchange, key)
    return conn


def declare_exchange(node, vhost, exchange):
    conn = node.connect(vhost)
    conn.channel().exchange_declare(exchange, "topic", durable=True)
    conn.close()


def test_warren_federates_an_exchange_from_rabbitmq(rabbit):
    v = rabbit.test_vhost
    with warren_nodes("warren-down") as (w,):
        for node, vh in ((w, "/"), (rabbit, v)):
            declare_exchange(node, vh, "fed.interop")
        w.parameter("federation-upstream", "/", "rabbit", {"uri": rabbit.uri(v)})
        w.policy("/", "fed", "^fed\\.", {"federation-upstream": "rabbit"}, "exchanges")
        conn = bind_local(w, "/", "fed.interop", "w-copy", "a.*")
        link_running(w, "/federation-links", exchange="fed.interop")
        # RabbitMQ declared the x-federation-upstream exchange for us.
        wait_for(lambda: [b for b in rabbit.get(f"/bindings/{v}")
                          if b["source"] == "fed.interop"], "the binding at RabbitMQ")
        pub = rabbit.connect(v)
        pub.channel().basic_publish("fed.interop", "a.b", b"hello")
        pub.channel().basic_publish("fed.interop", "x.y", b"not bound")
        pub.close()
        got = drain(conn, "w-copy", 1)
        assert [b for _, b in got] == [b"hello"]
        [entry] = got[0][0].headers["x-received-from"]
        assert entry["cluster-name"] == rabbit.get("/cluster-name")["name"]
        assert entry["vhost"] == v
        time.sleep(0.3)
        assert drain(conn, "w-copy", 1, timeout=0.5) == []
        conn.close()


def test_rabbitmq_federates_an_exchange_from_warren(rabbit):
    v = rabbit.test_vhost
    with warren_nodes("warren-up") as (w,):
        for node, vh in ((w, "/"), (rabbit, v)):
            declare_exchange(node, vh, "fed.interop")
        rabbit.parameter("federation-upstream", v, "warren", {"uri": w.uri()})
        rabbit.policy(v, "fed", "^fed\\.", {"federation-upstream": "warren"}, "exchanges")
        conn = bind_local(rabbit, v, "fed.interop", "r-copy", "a.*")
        link_running(rabbit, f"/federation-links/{v}", exchange="fed.interop")
        # RabbitMQ's link declared Warren's x-federation-upstream exchange and
        # bound it with x-bound-from.
        def bound():
            return [b for b in w.get("/bindings/%2F")
                    if b["source"] == "fed.interop" and "x-bound-from" in b["arguments"]]
        [b] = wait_for(bound, "RabbitMQ's binding at Warren")
        internal = w.get("/exchanges/%2F/" + requests.utils.quote(b["destination"], safe=""))
        assert internal["type"] == "x-federation-upstream"
        pub = w.connect()
        pub.channel().basic_publish("fed.interop", "a.b", b"from warren")
        pub.channel().basic_publish("fed.interop", "x.y", b"not bound")
        pub.close()
        got = drain(conn, "r-copy", 1, timeout=20)
        assert [x for _, x in got] == [b"from warren"]
        [entry] = got[0][0].headers["x-received-from"]
        assert entry["cluster-name"] == "warren-up"
        conn.close()


def test_rabbitmq_federates_a_queue_from_warren(rabbit):
    v = rabbit.test_vhost
    with warren_nodes("warren-up") as (w,):
        for node, vh in ((w, "/"), (rabbit, v)):
            c = node.connect(vh)
            c.channel().queue_declare("fq.interop", durable=True)
            c.close()
        fill(w, "/", "fq.interop", 5, "job")
        rabbit.parameter("federation-upstream", v, "warren", {"uri": w.uri()})
        rabbit.policy(v, "fq", "^fq\\.", {"federation-upstream": "warren"}, "queues")
        link_running(rabbit, f"/federation-links/{v}", queue="fq.interop")
        conn = rabbit.connect(v)
        got = drain(conn, "fq.interop", 5, timeout=20)
        conn.close()
        assert sorted(b for _, b in got) == [f"job-{i}".encode() for i in range(5)]
        assert message_count(w, "/", "fq.interop") == 0
