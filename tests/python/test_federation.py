"""Exchange and queue federation between Warren brokers (separate
processes on ephemeral ports, each with its own cluster name), configured
as RabbitMQ's federation plugin: federation-upstream parameters, upstream
sets and policies; what the link declares upstream; x-received-from;
binding propagation and loop prevention in a cycle of three."""

import time

import pika

from amqp_support import warren_only
from link_support import (drain, link_running, message_count, wait_for,
                          warren_nodes, warrenctl)

pytestmark = warren_only


def federate_exchange(down, up, exchange, kind="topic", max_hops=None,
                      upstream="up", vhost="/"):
    value = {"uri": up.uri(vhost)}
    if max_hops is not None:
        value["max-hops"] = max_hops
    down.parameter("federation-upstream", vhost, upstream, value)
    down.policy(vhost, "federate", "^fed\\.", {"federation-upstream": upstream},
                "exchanges")
    for node in (down, up):
        conn = node.connect(vhost)
        conn.channel().exchange_declare(exchange, kind, durable=True)
        conn.close()


def upstream_bindings(up, exchange, vhost="%2F"):
    return [b for b in up.get(f"/bindings/{vhost}")
            if b["source"] == exchange and b["destination_type"] == "exchange"]


def test_a_federated_exchange_gets_upstream_publishes_for_bound_keys_only():
    with warren_nodes("up-node", "down-node") as (up, down):
        federate_exchange(down, up, "fed.x")
        conn = down.connect()
        ch = conn.channel()
        ch.queue_declare("local")
        ch.queue_bind("local", "fed.x", "a.#")
        link = link_running(down, "/federation-links", exchange="fed.x")
        assert (link["type"], link["upstream"], link["upstream_exchange"]) == \
            ("exchange", "up", "fed.x")
        assert link["uri"] == f"amqp://127.0.0.1:{up.broker.amqp_port}/%2F"
        assert len(link["id"]) == 8
        [row] = warrenctl(down, "federation_status")
        assert (row["exchange"], row["status"], row["upstream"], row["id"]) == \
            ("fed.x", "running", "up", link["id"])
        # Upstream: RabbitMQ's queue, internal exchange and bindings.
        queue = "federation: fed.x -> down-node"
        [bound] = wait_for(lambda: upstream_bindings(up, "fed.x"), "the upstream binding")
        assert bound["routing_key"] == "a.#"
        assert bound["destination"] in (f"{queue} A", f"{queue} B")
        [hop] = bound["arguments"]["x-bound-from"]
        assert hop == {"cluster-name": "down-node", "vhost": "/",
                       "exchange": "/:fed.x " + bound["destination"][-1], "hops": 1}
        internal = up.get(f"/exchanges/%2F/{bound['destination'].replace(' ', '%20')}")
        assert internal["type"] == "x-federation-upstream"
        assert internal["internal"] and internal["auto_delete"]
        assert internal["arguments"]["x-downstream-name"] == "down-node"
        assert internal["arguments"]["x-max-hops"] == 1
        q = up.get(f"/queues/%2F/{queue.replace(' ', '%20').replace('>', '%3E')}")
        assert q["arguments"] == {"x-internal-purpose": "federation"}
        # Publish upstream: only the bound key arrives.
        pub = up.connect()
        pch = pub.channel()
        pch.basic_publish("fed.x", "a.b", b"wanted",
                          pika.BasicProperties(headers={"orig": "yes"}))
        pch.basic_publish("fed.x", "c.d", b"unwanted")
        pub.close()
        got = drain(conn, "local", 1)
        assert [b for _, b in got] == [b"wanted"]
        [entry] = got[0][0].headers["x-received-from"]
        assert entry == {"uri": f"amqp://127.0.0.1:{up.broker.amqp_port}/%2F",
                         "exchange": "fed.x", "redelivered": False,
                         "cluster-name": "up-node", "vhost": "/"}
        assert got[0][0].headers["orig"] == "yes"
        time.sleep(0.3)
        assert drain(conn, "local", 1, timeout=0.5) == []
        # Unbinding here unbinds upstream.
        ch.queue_unbind("local", "fed.x", "a.#")
        wait_for(lambda: upstream_bindings(up, "fed.x") == [], "the upstream unbinding")
        conn.close()
        # Removing the policy stops the link and cleans up upstream.
        assert down.delete("/policies/%2F/federate").status_code == 204
        wait_for(lambda: down.get("/federation-links") == [], "the link to stop")
        wait_for(lambda: not any(q["name"].startswith("federation:")
                                 for q in up.get("/queues")), "the upstream queue to go")


def test_a_cycle_of_three_brokers_delivers_each_message_once_everywhere():
    with warren_nodes("n0", "n1", "n2") as nodes:
        # n0 federates from n1, n1 from n2, n2 from n0: a ring.
        for i, node in enumerate(nodes):
            federate_exchange(node, nodes[(i + 1) % 3], "fed.ring", max_hops=10)
        conns = []
        for node in nodes:
            c = node.connect()
            ch = c.channel()
            ch.queue_declare("ring-copy")
            ch.queue_bind("ring-copy", "fed.ring", "#")
            conns.append(c)
        for node in nodes:
            link_running(node, "/federation-links", exchange="fed.ring")
        # Bindings went round until each had come back where it started.
        wait_for(lambda: all(len(upstream_bindings(n, "fed.ring")) >= 2 for n in nodes),
                 "bindings to propagate")
        for i, node in enumerate(nodes):
            pub = node.connect()
            pub.channel().basic_publish("fed.ring", "k", f"from-n{i}".encode())
            pub.close()
        for c in conns:
            got = drain(c, "ring-copy", 3)
            got += drain(c, "ring-copy", 100, timeout=1.0)
            assert sorted(b for _, b in got) == [b"from-n0", b"from-n1", b"from-n2"]
            c.close()


def test_max_hops_stops_messages_in_a_chain():
    with warren_nodes("a", "b", "c") as (a, b, c):
        # c <- b <- a with max-hops 1: what is published at a reaches b only.
        federate_exchange(b, a, "fed.chain", kind="fanout")
        federate_exchange(c, b, "fed.chain", kind="fanout")
        conns = {}
        for node in (b, c):
            conn = node.connect()
            ch = conn.channel()
            ch.queue_declare("chain-copy")
            ch.queue_bind("chain-copy", "fed.chain", "")
            conns[node.name] = conn
        link_running(b, "/federation-links", exchange="fed.chain")
        link_running(c, "/federation-links", exchange="fed.chain")
        wait_for(lambda: upstream_bindings(a, "fed.chain"), "b's binding at a")
        pub = a.connect()
        pub.channel().basic_publish("fed.chain", "", b"from-a")
        pub.close()
        pub = b.connect()
        pub.channel().basic_publish("fed.chain", "", b"from-b")
        pub.close()
        got_b = drain(conns["b"], "chain-copy", 2)
        got_c = drain(conns["c"], "chain-copy", 2, timeout=2)
        assert sorted(x for _, x in got_b) == [b"from-a", b"from-b"]
        assert [x for _, x in got_c] == [b"from-b"]
        for conn in conns.values():
            conn.close()


def test_a_federated_queue_moves_messages_to_where_the_consumers_are():
    with warren_nodes("up-node", "down-node") as (up, down):
        down.parameter("federation-upstream", "/", "up", {"uri": up.uri()})
        down.policy("/", "fq", "^fq\\.", {"federation-upstream": "up"}, "queues")
        for node in (up, down):
            conn = node.connect()
            conn.channel().queue_declare("fq.work", durable=True)
            conn.close()
        link = link_running(down, "/federation-links", queue="fq.work")
        assert (link["type"], link["upstream_queue"], link["consumer_tag"]) == \
            ("queue", "fq.work", "federation-link-up")
        pub = up.connect()
        pch = pub.channel()
        for i in range(5):
            pch.basic_publish("", "fq.work", f"job-{i}".encode())
        pub.close()
        # Nobody downstream: the messages stay upstream.
        time.sleep(1.0)
        assert message_count(up, "/", "fq.work") == 5
        conn = down.connect()
        got = drain(conn, "fq.work", 5)
        conn.close()
        assert sorted(b for _, b in got) == [f"job-{i}".encode() for i in range(5)]
        headers = got[0][0].headers
        [entry] = headers["x-received-from"]
        assert entry["queue"] == "fq.work" and entry["visit-count"] == 1
        assert (headers["x-original-exchange"], headers["x-original-routing-key"]) == \
            ("", "fq.work")
        assert message_count(up, "/", "fq.work") == 0


def test_a_federated_queue_pulls_nothing_while_it_holds_a_prefetchs_worth():
    with warren_nodes("up-node", "down-node") as (up, down):
        down.parameter("federation-upstream", "/", "up", {"uri": up.uri(), "prefetch-count": 5})
        down.policy("/", "fq", "^fq\\.", {"federation-upstream": "up"}, "queues")
        for node, n, prefix in ((down, 10, "local"), (up, 8, "remote")):
            conn = node.connect()
            ch = conn.channel()
            ch.queue_declare("fq.busy", durable=True)
            for i in range(n):
                ch.basic_publish("", "fq.busy", f"{prefix}-{i}".encode())
            conn.close()
        link_running(down, "/federation-links", queue="fq.busy")
        # A consumer holding one unacknowledged leaves 9 ready: more than a
        # prefetch's worth, so the link waits.
        conn = down.connect()
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)
        got = []
        ch.basic_consume("fq.busy", lambda c, m, p, b: got.append((m.delivery_tag, b)))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            conn.process_data_events(0.1)
        assert len(got) == 1
        assert message_count(up, "/", "fq.busy") == 8
        # Consumed down to under a prefetch's worth, it pulls again.
        acked, deadline = 0, time.monotonic() + 20
        while len(got) < 18 and time.monotonic() < deadline:
            for tag, _ in got[acked:]:
                ch.basic_ack(tag)
            acked = len(got)
            conn.process_data_events(0.05)
        assert sorted(b for _, b in got) == sorted(
            [f"local-{i}".encode() for i in range(10)] + [f"remote-{i}".encode() for i in range(8)])
        assert message_count(up, "/", "fq.busy") == 0
        conn.close()


def test_upstream_sets_and_prometheus_count_links():
    with warren_nodes("up-node", "down-node") as (up, down):
        down.parameter("federation-upstream", "/", "one", {"uri": up.uri()})
        down.parameter("federation-upstream-set", "/", "both",
                       [{"upstream": "one"}, {"upstream": "one-renamed"}])
        down.policy("/", "set", "^fed\\.", {"federation-upstream-set": "both"},
                    "exchanges")
        conn = down.connect()
        conn.channel().exchange_declare("fed.s", "direct", durable=True)
        conn.close()
        link_running(down, "/federation-links", exchange="fed.s", upstream="one")
        # A set naming an unknown upstream makes no link for it.
        assert len(down.get("/federation-links")) == 1
        import requests
        text = requests.get(
            f"http://127.0.0.1:{down.broker.metrics_port}/metrics", timeout=10).text
        assert 'rabbitmq_federation_links{status="running"} 1' in text
        assert 'rabbitmq_link_messages_forwarded_total{type="exchange",vhost="/",name="fed.s",upstream="one"} 0' in text


def test_user_id_is_dropped_unless_trusted_and_link_events_are_announced():
    with warren_nodes("up-node", "down-node") as (up, down):
        conn = down.connect()
        ch = conn.channel()
        events = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(events, "amq.rabbitmq.event", "federation.link.#")
        federate_exchange(down, up, "fed.u", kind="fanout")
        ch.queue_declare("users")
        ch.queue_bind("users", "fed.u", "")
        link_running(down, "/federation-links", exchange="fed.u")
        pub = up.connect()
        pch = pub.channel()
        # The upstream checked user_id (guest published it), but an
        # untrusted upstream's word is not taken: it is dropped.
        pch.basic_publish("fed.u", "", b"untrusted", pika.BasicProperties(user_id="guest"))
        [(props, body)] = drain(conn, "users", 1)
        assert body == b"untrusted" and props.user_id is None
        # Trusted: kept. Changing the upstream restarts the link.
        down.parameter("federation-upstream", "/", "up",
                       {"uri": up.uri(), "trust-user-id": True})

        def trusted():
            pch.basic_publish("fed.u", "", b"trusted", pika.BasicProperties(user_id="guest"))
            got = drain(conn, "users", 1, timeout=0.5)
            return any(p.user_id == "guest" for p, _ in got)
        wait_for(trusted, "a forwarded message keeping its user_id")
        pub.close()
        # Removing the policy removes the link: both announced.
        assert down.delete("/policies/%2F/federate").status_code == 204
        wait_for(lambda: down.get("/federation-links") == [], "the link to stop")

        seen = []

        def removal_announced():
            while True:
                m, props, _ = ch.basic_get(events, auto_ack=True)
                if m is None:
                    return any(key == "federation.link.removed" for key, _ in seen)
                seen.append((m.routing_key, props.headers))
        wait_for(removal_announced, "federation.link.removed")
        running = [h for key, h in seen if key == "federation.link.status"
                   and h["status"] == "running"]
        assert running and running[0]["exchange"] == "fed.u" and running[0]["upstream"] == "up"
        [removed] = [h for key, h in seen if key == "federation.link.removed"]
        assert (removed["type"], removed["exchange"], removed["upstream"], removed["vhost"]) == \
            ("exchange", "fed.u", "up", "/")
        conn.close()
