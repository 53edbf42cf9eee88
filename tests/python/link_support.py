"""Helpers for tests of links between brokers (shovels, federation):
brokers started here, each with a cluster name of its own, and their
management APIs."""

import contextlib
import time
import urllib.parse

import pika
import requests

from amqp_support import start_warren, stop_warren

AUTH = ("guest", "guest")


class Node:
    """A broker a test links to others: its AMQP URI and HTTP API."""

    def __init__(self, broker, name, host="127.0.0.1"):
        self.broker = broker
        self.name = name
        self.host = host
        self.api = f"http://{host}:{broker.admin_port}/api"

    def uri(self, vhost="/", user="guest", password="guest"):
        v = urllib.parse.quote(vhost, safe="")
        return f"amqp://{user}:{password}@{self.host}:{self.broker.amqp_port}/{v}"

    def connect(self, vhost="/"):
        return pika.BlockingConnection(pika.ConnectionParameters(
            host=self.host, port=self.broker.amqp_port, virtual_host=vhost,
            credentials=pika.PlainCredentials(*AUTH), heartbeat=0))

    def get(self, path):
        r = requests.get(self.api + path, auth=AUTH, timeout=10)
        r.raise_for_status()
        return r.json()

    def put(self, path, body):
        return requests.put(self.api + path, json=body, auth=AUTH, timeout=10)

    def delete(self, path):
        return requests.delete(self.api + path, auth=AUTH, timeout=10)

    def parameter(self, component, vhost, name, value):
        r = self.put(f"/parameters/{component}/{q(vhost)}/{q(name)}",
                     {"value": value})
        assert r.status_code in (201, 204), (r.status_code, r.text)

    def policy(self, vhost, name, pattern, definition, apply_to):
        r = self.put(f"/policies/{q(vhost)}/{q(name)}",
                     {"pattern": pattern, "definition": definition,
                      "apply-to": apply_to})
        assert r.status_code in (201, 204), (r.status_code, r.text)

    def vhost(self, name):
        r = self.put(f"/vhosts/{q(name)}", {})
        assert r.status_code in (201, 204), r.text
        r = self.put(f"/permissions/{q(name)}/guest",
                     {"configure": ".*", "write": ".*", "read": ".*"})
        assert r.status_code in (201, 204), r.text


def warrenctl(node, *args):
    """Run $WARRENCTL_BIN against `node`; the parsed JSON output."""
    import json
    import os
    import subprocess
    binary = os.environ.get("WARRENCTL_BIN")
    assert binary, "set WARRENCTL_BIN to the warrenctl binary"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARRENCTL_")}
    r = subprocess.run([binary, "--url", f"http://{node.host}:{node.broker.admin_port}",
                        "--username", "guest", "--password", "guest", *args,
                        "--formatter", "json"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def q(s):
    return urllib.parse.quote(s, safe="")


def warren_node(name, store_args=("--ephemeral",), amqp_port=0, admin_port=0):
    broker = start_warren(store_args=store_args, amqp_port=amqp_port,
                          admin_port=admin_port)
    node = Node(broker, name)
    r = node.put("/cluster-name", {"name": name})
    assert r.status_code == 204, r.text
    return node


@contextlib.contextmanager
def warren_nodes(*names):
    nodes = [warren_node(n) for n in names]
    try:
        yield nodes
    finally:
        for n in nodes:
            stop_warren(n.broker)


def wait_for(predicate, what, timeout=20.0, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def link_running(node, path, **match):
    """Wait until an entry of `path` (/shovels or /federation-links)
    matching `match` is running; return it."""
    def running():
        for item in node.get(path):
            if all(item.get(k) == v for k, v in match.items()) and \
                    item.get("state", item.get("status")) == "running":
                return item
        return None
    return wait_for(running, f"a running link {match} in {path}")


def drain(conn, queue, n, timeout=20.0):
    """Consume until n messages arrived; [(properties, body)]. Each is
    acknowledged as it is taken: what was on its way when the count was
    reached goes back to the queue when the channel closes."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=100)
    got = []

    def take(c, m, p, b):
        if len(got) < n:
            got.append((p, b))
            c.basic_ack(m.delivery_tag)

    ch.basic_consume(queue, take)
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(0.05)
    ch.close()
    return got


def message_count(node, vhost, queue):
    conn = node.connect(vhost)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()
