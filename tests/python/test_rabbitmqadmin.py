"""rabbitmqadmin v2 (the Rust CLI from crates.io, crate `rabbitmqadmin`)
against the broker's management HTTP API.

The binary comes from $RABBITMQADMIN_BIN (scripts/install-rabbitmqadmin
installs the pinned version into .tools/rabbitmqadmin/bin). Every run passes
host, port and credentials explicitly, with HOME pointed at an empty
directory and RABBITMQADMIN_* variables dropped, so no ~/.rabbitmqadmin.conf
and no environment of the machine can change what is tested.

Output is read as markdown tables (--table-style markdown), which keep empty
cells in place. Effects are checked through rabbitmqadmin itself and, where
it matters, through AMQP (pika): a declared queue must really exist, a
declared user must really log in, a deleted binding must really stop routing.

Names are unique per test and everything is deleted afterwards, since the
same tests run against a long-lived RabbitMQ (WARREN_TEST_RABBITMQ).
"""

import base64
import json
import os
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

import pika
import pika.exceptions
import pytest

RUN_TIMEOUT = 30


@pytest.fixture(scope="module")
def rabbitmqadmin_bin():
    path = os.environ.get("RABBITMQADMIN_BIN")
    if not path:
        pytest.fail("set RABBITMQADMIN_BIN to the rabbitmqadmin v2 binary "
                    "(scripts/install-rabbitmqadmin installs it into "
                    ".tools/rabbitmqadmin/bin/rabbitmqadmin)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"RABBITMQADMIN_BIN={path} is not an executable file")
    return path


@pytest.fixture(scope="module")
def empty_home():
    with tempfile.TemporaryDirectory(prefix="rabbitmqadmin-home-") as d:
        yield d


class Admin:
    """Runs rabbitmqadmin against the broker; remembers what a test created
    so that cleanup() can delete it."""

    def __init__(self, binary, broker, home):
        self.binary = binary
        self.broker = broker
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("RABBITMQADMIN_")}
        self.env.update({"HOME": home, "NO_COLOR": "1"})
        self.tag = uuid.uuid4().hex[:10]
        self.created = []  # (kind, vhost, name), deleted in reverse order

    def name(self, label):
        return f"rmqadmin-{label}-{self.tag}"

    def run(self, *args, vhost=None, user=None, password=None, check=True,
            markdown=True):
        cmd = [self.binary,
               "--host", self.broker.host,
               "--port", str(self.broker.admin_port),
               "--username", user if user is not None else self.broker.user,
               "--password", password if password is not None else self.broker.password,
               "--vhost", vhost if vhost is not None else self.broker.vhost,
               "--timeout", "20"]
        if markdown:
            cmd += ["--table-style", "markdown"]
        cmd += list(args)
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
        if check:
            assert p.returncode == 0, (
                f"rabbitmqadmin {' '.join(args)} exited {p.returncode}\n"
                f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def table(self, *args, **kw):
        return parse_table(self.run(*args, **kw).stdout)

    # Declarations that are undone after the test.
    def declare_vhost(self, label="vh"):
        v = self.name(label)
        self.created.append(("vhost", None, v))
        self.run("declare", "vhost", "--name", v)
        return v

    def declare_queue(self, label="q", vhost=None, durable=True):
        q = self.name(label)
        self.created.append(("queue", vhost, q))
        self.run("declare", "queue", "--name", q,
                 "--durable", "true" if durable else "false", vhost=vhost)
        return q

    def declare_exchange(self, label="x", kind="direct", vhost=None):
        x = self.name(label)
        self.created.append(("exchange", vhost, x))
        self.run("declare", "exchange", "--name", x, "--type", kind,
                 "--durable", "true", vhost=vhost)
        return x

    def declare_user(self, label, password, tags):
        u = self.name(label)
        self.created.append(("user", None, u))
        self.run("declare", "user", "--name", u, "--password", password,
                 "--tags", tags)
        return u

    def cleanup(self):
        for kind, vhost, name in reversed(self.created):
            self.run("delete", kind, "--name", name, "--idempotently",
                     vhost=vhost, check=False)


def parse_table(out):
    """A markdown table printed by rabbitmqadmin -> list of dicts keyed by
    the header row. A title row (one cell, as `show overview` prints) is
    skipped. A multi-line cell (message properties, several arguments) is
    printed on continuation rows whose key cell (vhost when there is such a
    column, else the first one) is empty: they are joined to their row."""
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if all(c and set(c) <= set("-:") for c in cells):
            continue
        rows.append(cells)
    while rows and len(rows[0]) == 1:
        rows.pop(0)
    if not rows:
        return []
    header = rows[0]
    key = header.index("vhost") if "vhost" in header else 0
    result = []
    for r in rows[1:]:
        if len(r) != len(header):
            continue
        if r[key] == "" and result:
            last = result[-1]
            for h, c in zip(header, r):
                if c:
                    last[h] = f"{last[h]}\n{c}" if last[h] else c
            continue
        result.append(dict(zip(header, r)))
    return result


def http_get_json(broker, path):
    req = urllib.request.Request(f"http://{broker.host}:{broker.admin_port}/api/{path}")
    token = base64.b64encode(f"{broker.user}:{broker.password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def names_in(rows, key="name"):
    return [r[key] for r in rows]


@pytest.fixture
def admin(rabbitmqadmin_bin, broker, empty_home):
    if not broker.admin_port:
        pytest.fail("the broker has no management (admin) port")
    a = Admin(rabbitmqadmin_bin, broker, empty_home)
    yield a
    a.cleanup()


def amqp(broker, **overrides):
    return pika.BlockingConnection(broker.params(**overrides))


# ------------------------------------------------------------------ overview

def test_version_of_the_binary(admin):
    p = subprocess.run([admin.binary, "--version"], capture_output=True,
                       text=True, timeout=RUN_TIMEOUT, env=admin.env)
    assert p.returncode == 0
    assert p.stdout.startswith("rabbitmqadmin 2."), p.stdout


def test_show_overview(admin, broker):
    rows = parse_table(admin.run("show", "overview").stdout)
    kv = {r["key"]: r["value"] for r in rows}
    raw = http_get_json(broker, "overview")
    assert kv["RabbitMQ version"] == raw["rabbitmq_version"] != ""
    assert kv["Product name"] == raw.get("product_name", "")
    assert kv["Product version"] == raw.get("product_version", "")
    for total in ("Connections (total)", "Queues and streams (total)",
                  "Messages (total)"):
        assert kv[total].isdigit(), (total, kv[total])


# ------------------------------------------------------------------ lists

def test_list_vhosts_shows_the_default_one(admin, broker):
    assert broker.vhost in names_in(admin.table("list", "vhosts"))


def test_list_users_shows_the_default_administrator(admin, broker):
    users = {r["name"]: r for r in admin.table("list", "users")}
    assert broker.user in users
    assert "administrator" in users[broker.user]["tags"].split(",")


def test_list_exchanges_shows_the_predeclared_ones(admin, broker):
    rows = admin.table("list", "exchanges")
    kinds = {r["name"]: r["exchange_type"] for r in rows if r["vhost"] == broker.vhost}
    assert kinds[""] == "direct"
    for name, kind in (("amq.direct", "direct"), ("amq.fanout", "fanout"),
                       ("amq.topic", "topic"), ("amq.headers", "headers"),
                       ("amq.match", "headers")):
        assert kinds.get(name) == kind, (name, kinds)


def test_list_bindings_shows_the_default_exchange_binding(admin, broker):
    q = admin.declare_queue()
    rows = [r for r in admin.table("list", "bindings")
            if r["vhost"] == broker.vhost and r["destination"] == q]
    assert rows == [{"vhost": broker.vhost, "source": "", "destination": q,
                     "destination_type": "queue", "routing_key": q,
                     "arguments": "", "properties_key": q}]


def test_list_connections_shows_an_amqp_client(admin, broker):
    conn = amqp(broker, client_properties={"connection_name": admin.name("conn")})
    try:
        port = conn._impl._transport._sock.getsockname()[1]
        # RabbitMQ lists a connection once its stats are emitted (~5 s).
        deadline = time.monotonic() + 15
        while True:
            rows = [r for r in admin.table("list", "connections")
                    if r["client_port"] == str(port)]
            if rows or time.monotonic() > deadline:
                break
            conn.process_data_events(time_limit=0.5)
        assert len(rows) == 1, f"no connection with client port {port}"
        row = rows[0]
        assert row["username"] == broker.user
        assert "0-9-1" in row["protocol"]
        assert row["server_port"] == str(broker.amqp_port)
        assert row["connected_at"].isdigit()
    finally:
        conn.close()


# ------------------------------------------------------------------ queues

def test_declare_and_delete_queue(admin, broker):
    q = admin.declare_queue()
    rows = [r for r in admin.table("list", "queues") if r["name"] == q]
    assert len(rows) == 1
    assert rows[0]["vhost"] == broker.vhost
    assert rows[0]["queue_type"] == "classic"
    assert rows[0]["durable"] == "true"
    assert rows[0]["auto_delete"] == "false"
    conn = amqp(broker)
    try:
        assert conn.channel().queue_declare(q, passive=True).method.queue == q
        admin.run("delete", "queue", "--name", q)
        assert q not in names_in(admin.table("list", "queues"))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().queue_declare(q, passive=True)
        assert e.value.reply_code == 404
    finally:
        conn.close()


def test_delete_missing_queue_fails_unless_idempotently(admin):
    q = admin.name("missing")
    p = admin.run("delete", "queue", "--name", q, check=False)
    assert p.returncode != 0
    assert "404" in p.stdout + p.stderr
    admin.run("delete", "queue", "--name", q, "--idempotently")


# ------------------------------------------------------------------ exchanges

def test_declare_and_delete_exchange(admin, broker):
    x = admin.declare_exchange(kind="topic")
    rows = [r for r in admin.table("list", "exchanges") if r["name"] == x]
    assert len(rows) == 1
    assert rows[0]["vhost"] == broker.vhost
    assert rows[0]["exchange_type"] == "topic"
    assert rows[0]["durable"] == "true"
    conn = amqp(broker)
    try:
        conn.channel().exchange_declare(x, exchange_type="topic", passive=True)
        admin.run("delete", "exchange", "--name", x)
        assert x not in names_in(admin.table("list", "exchanges"))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().exchange_declare(x, passive=True)
        assert e.value.reply_code == 404
    finally:
        conn.close()


# ------------------------------------------------------------------ bindings

def test_declare_and_delete_binding(admin, broker):
    x = admin.declare_exchange(kind="direct")
    q = admin.declare_queue()
    admin.run("declare", "binding", "--source", x, "--destination-type", "queue",
              "--destination", q, "--routing-key", "rk.1")

    def bindings():
        return [r for r in admin.table("list", "bindings")
                if r["vhost"] == broker.vhost and r["source"] == x]

    rows = bindings()
    assert len(rows) == 1
    assert rows[0]["destination"] == q
    assert rows[0]["destination_type"] == "queue"
    assert rows[0]["routing_key"] == "rk.1"

    out = admin.run("publish", "message", "--exchange", x, "--routing-key", "rk.1",
                    "--payload", "through the binding").stdout
    assert "routed successfully" in out
    conn = amqp(broker)
    try:
        ch = conn.channel()
        method, _, body = ch.basic_get(q, auto_ack=True)
        assert method is not None and body == b"through the binding"

        admin.run("delete", "binding", "--source", x, "--destination-type", "queue",
                  "--destination", q, "--routing-key", "rk.1")
        assert bindings() == []
        out = admin.run("publish", "message", "--exchange", x, "--routing-key", "rk.1",
                        "--payload", "nowhere").stdout
        assert "NOT routed" in out
        assert ch.queue_declare(q, passive=True).method.message_count == 0
    finally:
        conn.close()


# ------------------------------------------------------------------ messages

def test_publish_and_get_message(admin, broker):
    q = admin.declare_queue()
    payload = f"hello from rabbitmqadmin {admin.tag}"
    out = admin.run("publish", "message", "--routing-key", q,
                    "--payload", payload).stdout
    assert "routed successfully" in out

    rows = admin.table("get", "messages", "--queue", q)
    assert len(rows) == 1
    msg = rows[0]
    assert msg["payload"] == payload
    assert msg["payload_bytes"] == str(len(payload))
    assert msg["routing_key"] == q
    assert msg["exchange"] == ""
    assert msg["redelivered"] == "false"
    assert msg["payload_encoding"] == "string"
    assert msg["message_count"] == "0"
    # ack_requeue_false (the default) took it off the queue.
    assert admin.table("get", "messages", "--queue", q) == []


def test_get_shows_a_message_published_over_amqp(admin, broker):
    q = admin.declare_queue()
    conn = amqp(broker)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", q, b"from pika",
                         pika.BasicProperties(content_type="text/plain"))
    finally:
        conn.close()
    rows = admin.table("get", "messages", "--queue", q, "--count", "5",
                       "--ack-mode", "ack_requeue_true")
    assert [r["payload"] for r in rows] == ["from pika"]
    assert "text/plain" in rows[0]["properties"]
    # requeued: AMQP gets it, now redelivered.
    conn = amqp(broker)
    try:
        method, props, body = conn.channel().basic_get(q, auto_ack=True)
        assert body == b"from pika"
        assert method.redelivered
    finally:
        conn.close()


# ------------------------------------------------------------------ vhosts

def test_declare_and_delete_vhost(admin, broker):
    v = admin.declare_vhost()
    assert v in names_in(admin.table("list", "vhosts"))
    # RabbitMQ gives the user that created a vhost full permissions on it.
    perms = [r for r in admin.table("list", "permissions")
             if r["vhost"] == v and r["user"] == broker.user]
    assert perms == [{"user": broker.user, "vhost": v, "configure": ".*",
                      "read": ".*", "write": ".*"}]
    conn = amqp(broker, virtual_host=v)
    conn.close()
    admin.run("delete", "vhost", "--name", v)
    assert v not in names_in(admin.table("list", "vhosts"))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, virtual_host=v).close()


def test_queue_in_another_vhost(admin, broker):
    v = admin.declare_vhost()
    q = admin.declare_queue(vhost=v)
    assert q in names_in(admin.table("list", "queues", vhost=v))
    assert q not in names_in(admin.table("list", "queues"))


# ------------------------------------------------------------------ users and permissions

def test_declare_user_and_permissions(admin, broker):
    v = admin.declare_vhost()
    password = "pw-" + admin.tag
    u = admin.declare_user("user", password, "management")

    users = {r["name"]: r for r in admin.table("list", "users")}
    assert u in users
    assert users[u]["tags"] == "management"

    creds = pika.PlainCredentials(u, password)
    # No permissions yet: AMQP access to the vhost is refused.
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, virtual_host=v, credentials=creds).close()

    admin.run("declare", "permissions", "--vhost", v, "--username", u,
              "--configure", "^rmqadmin-", "--read", ".*", "--write", ".*")
    perms = [r for r in admin.table("list", "permissions") if r["user"] == u]
    assert perms == [{"user": u, "vhost": v, "configure": "^rmqadmin-",
                      "read": ".*", "write": ".*"}]

    # The password rabbitmqadmin hashed works, over AMQP and the HTTP API.
    amqp(broker, virtual_host=v, credentials=creds).close()
    assert names_in(admin.table("list", "vhosts", user=u, password=password)) == [v]
    bad = admin.run("list", "vhosts", user=u, password="wrong", check=False)
    assert bad.returncode != 0

    admin.run("delete", "permissions", "--vhost", v, "--username", u)
    assert [r for r in admin.table("list", "permissions") if r["user"] == u] == []
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, virtual_host=v, credentials=creds).close()

    admin.run("delete", "user", "--name", u)
    assert u not in names_in(admin.table("list", "users"))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        amqp(broker, credentials=creds).close()


# ------------------------------------------------------------------ definitions

def _declare_topology(admin):
    v = admin.declare_vhost()
    q = admin.declare_queue(vhost=v)
    x = admin.declare_exchange(kind="fanout", vhost=v)
    admin.run("declare", "binding", "--source", x, "--destination-type", "queue",
              "--destination", q, "--routing-key", "", vhost=v)
    return v, q, x


def _assert_topology(admin, v, q, x):
    queues = [r for r in admin.table("list", "queues", vhost=v) if r["name"] == q]
    assert len(queues) == 1 and queues[0]["durable"] == "true"
    assert x in names_in(admin.table("list", "exchanges", vhost=v))
    bindings = [r for r in admin.table("list", "bindings")
                if r["vhost"] == v and r["source"] == x]
    assert [(b["destination"], b["destination_type"]) for b in bindings] == [(q, "queue")]


def test_definitions_export_and_import(admin, broker, tmp_path):
    v, q, x = _declare_topology(admin)
    exported = tmp_path / "definitions.json"
    admin.run("definitions", "export", "--file", str(exported))
    defs = json.loads(exported.read_text())
    assert {"name": v} in [{"name": h["name"]} for h in defs["vhosts"]]
    assert [d["durable"] for d in defs["queues"]
            if d["vhost"] == v and d["name"] == q] == [True]
    assert [d["type"] for d in defs["exchanges"]
            if d["vhost"] == v and d["name"] == x] == ["fanout"]
    assert [(b["source"], b["destination"]) for b in defs["bindings"]
            if b["vhost"] == v] == [(x, q)]

    # Import only this test's vhost: the rest of a shared, long-lived broker
    # must not be brought back to what it was at export time.
    mine = dict(defs)
    for key, items in defs.items():
        if isinstance(items, list):
            mine[key] = [i for i in items
                         if isinstance(i, dict) and (i.get("vhost") == v or
                                                     (key == "vhosts" and i.get("name") == v))]
    mine["users"] = []
    to_import = tmp_path / "mine.json"
    to_import.write_text(json.dumps(mine))

    admin.run("delete", "queue", "--name", q, vhost=v)
    assert q not in names_in(admin.table("list", "queues", vhost=v))
    admin.run("definitions", "import", "--file", str(to_import))
    _assert_topology(admin, v, q, x)


def test_vhost_definitions_export_and_import(admin, broker, tmp_path):
    v, q, x = _declare_topology(admin)
    exported = tmp_path / "vhost-definitions.json"
    admin.run("definitions", "export_from_vhost", "--file", str(exported), vhost=v)
    defs = json.loads(exported.read_text())
    assert [d["name"] for d in defs["queues"]] == [q]
    assert [d["name"] for d in defs["exchanges"]] == [x]

    admin.run("delete", "queue", "--name", q, vhost=v)
    admin.run("delete", "exchange", "--name", x, vhost=v)
    assert q not in names_in(admin.table("list", "queues", vhost=v))
    admin.run("definitions", "import_into_vhost", "--file", str(exported), vhost=v)
    _assert_topology(admin, v, q, x)
