"""warrenctl, the rabbitmqctl-compatible CLI, against the broker's management
HTTP API.

The binary comes from $WARRENCTL_BIN. Every run passes --url, --username and
--password explicitly with the WARRENCTL_* variables dropped, so nothing of
the machine's environment changes what is tested.

Effects are checked through warrenctl's own list commands and, where it
matters, through AMQP (pika): a user given permissions must really be able
to declare what its pattern allows and nothing else, a policy must really
cap a queue, a closed connection must really be closed.

Names are unique per test and everything made is deleted afterwards (through
the HTTP API directly, not through the tool under test), since the same tests
run against a long-lived RabbitMQ (WARREN_TEST_RABBITMQ). RabbitMQ reports
queue depths, consumers and connections after its statistics interval (5 s),
so values that lag are polled for.
"""

import base64
import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pika
import pika.exceptions
import pytest

from amqp_support import depth

RUN_TIMEOUT = 30
# RabbitMQ's collect_statistics_interval is 5 s; Warren answers at once.
STATS_TIMEOUT = 15.0


def seg(s):
    return urllib.parse.quote(s, safe="")


def unique(label):
    return f"ctl-{label}-{uuid.uuid4().hex[:10]}"


def eventually(fn, timeout=STATS_TIMEOUT, interval=0.2):
    """fn() until it stops raising AssertionError; its result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def rabbit_sha256(password, salt=b"\x01\x02\x03\x04"):
    """RabbitMQ's rabbit_password_hashing_sha256 hash of `password`."""
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def closed_port():
    """A TCP port on 127.0.0.1 nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def ctl_bin():
    path = os.environ.get("WARRENCTL_BIN")
    if not path:
        pytest.fail("set WARRENCTL_BIN to the warrenctl binary "
                    "(cargo build -p warrenctl; target/debug/warrenctl)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"WARRENCTL_BIN={path} is not an executable file")
    return path


@pytest.fixture
def api_url(broker):
    if not broker.admin_port:
        pytest.fail("the broker has no management (admin) port")
    return f"http://{broker.host}:{broker.admin_port}"


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("WARRENCTL_")}


@pytest.fixture
def ctl(ctl_bin, broker, api_url):
    """ctl(*args, input=None, binary=None) -> CompletedProcess (text), run
    against the broker as its default user."""

    def run(*args, input=None, binary=None, url=None):
        cmd = [binary or ctl_bin, "--url", url or api_url,
               "--username", broker.user, "--password", broker.password, *args]
        return subprocess.run(cmd, capture_output=True, text=True, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              timeout=RUN_TIMEOUT, env=clean_env())

    return run


@pytest.fixture
def made(broker, api_url):
    """Paths under /api to DELETE after the test (users, vhosts, policies)."""
    paths = []
    yield paths
    token = base64.b64encode(f"{broker.user}:{broker.password}".encode()).decode()
    for path in reversed(paths):
        req = urllib.request.Request(api_url + path, method="DELETE",
                                     headers={"Authorization": f"Basic {token}"})
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except (urllib.error.URLError, OSError):
            pass


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


def rows(stdout):
    """Tab-separated rows of -s output."""
    return [line.split("\t") for line in stdout.splitlines()]


def json_list(stdout):
    return json.loads(stdout)


def listed_with(ctl, vhost, queue, messages):
    """Assert that list_queues shows `queue` with this many messages."""
    out = ok(ctl("-s", "list_queues", "-p", vhost, "name", "messages"))
    assert [queue, str(messages)] in rows(out), out


# ---------------------------------------------------------------- basics

def test_ping_quiet_silent_and_json(ctl):
    out = ok(ctl("ping"))
    assert out.splitlines()[-1] == "Ping succeeded"
    assert len(out.splitlines()) == 2, "a banner, then the result"
    assert ok(ctl("-q", "ping")) == "Ping succeeded\n"
    assert ok(ctl("-s", "ping")) == "Ping succeeded\n"
    assert json.loads(ok(ctl("ping", "--formatter", "json"))) == {"message": "Ping succeeded"}


def test_unreachable_api_exits_69(ctl):
    url = f"http://127.0.0.1:{closed_port()}"
    for args in (["ping"], ["-q", "list_queues"], ["add_user", "x", "y"]):
        r = ctl(*args, url=url)
        assert r.returncode == 69, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("Error:\n"), r.stderr
    started = time.monotonic()
    r = ctl("await_startup", "--timeout", "1", url=url)
    assert r.returncode == 69, r.stderr
    assert time.monotonic() - started < 10


def test_await_startup_returns_at_once_when_up(ctl):
    r = ctl("await_startup", "-t", "10")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""


def test_wrong_credentials_exit_77(ctl_bin, api_url):
    r = subprocess.run([ctl_bin, "--url", api_url, "-u", "guest", "--password",
                        "not-the-password", "list_users"],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT,
                       stdin=subprocess.DEVNULL, env=clean_env())
    assert r.returncode == 77, (r.stdout, r.stderr)
    assert r.stderr.startswith("Error:\n")


def test_connection_settings_from_environment(ctl_bin, broker, api_url):
    env = clean_env()
    env.update({"WARRENCTL_URL": api_url, "WARRENCTL_USERNAME": broker.user,
                "WARRENCTL_PASSWORD": broker.password})
    r = subprocess.run([ctl_bin, "-q", "ping"], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL, env=env)
    assert r.returncode == 0, r.stderr
    env["WARRENCTL_URL"] = f"http://127.0.0.1:{closed_port()}"
    r = subprocess.run([ctl_bin, "-q", "ping"], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL, env=env)
    assert r.returncode == 69


def test_usage_errors_exit_64(ctl):
    r = ctl("no_such_command")
    assert r.returncode == 64 and r.stdout == ""
    assert ctl("add_vhost").returncode == 64, "missing argument"
    assert ctl("set_permissions", "u", ".*").returncode == 64, "missing arguments"
    assert ctl("list_users", "--formatter", "xml").returncode == 64
    r = ctl("list_queues", "name", "nosuchcol")
    assert r.returncode == 64
    assert "Info key(s) nosuchcol are not supported" in r.stderr
    assert ctl().returncode == 64, "no command at all"
    r = ctl("--help")
    assert r.returncode == 0 and "list_queues" in r.stdout


# ---------------------------------------------------------------- users

def test_add_user_then_list_users(ctl, made):
    user = unique("user")
    made.append(f"/api/users/{seg(user)}")
    out = ok(ctl("add_user", user, "s3cret"))
    assert out.splitlines()[0] == f'Adding user "{user}" ...'
    assert ok(ctl("-q", "list_users")).splitlines()[0] == "user\ttags"
    assert [user, "[]"] in rows(ok(ctl("-s", "list_users")))

    # A second add_user fails as a data error and leaves the user alone.
    r = ctl("add_user", user, "other")
    assert r.returncode == 65
    assert r.stderr == f'Error:\nUser "{user}" already exists\n'
    assert ok(ctl("-q", "authenticate_user", user, "s3cret")) == "Success\n"
    r = ctl("authenticate_user", user, "other")
    assert r.returncode == 65

    out = ok(ctl("set_user_tags", user, "management", "monitoring"))
    assert out == f'Setting tags for user "{user}" to [management, monitoring] ...\n'
    assert [user, "[management, monitoring]"] in rows(ok(ctl("-s", "list_users")))
    listed = json_list(ok(ctl("list_users", "--formatter", "json")))
    assert {"user": user, "tags": ["management", "monitoring"]} in listed
    # Tags were changed without touching the password.
    assert ctl("-q", "authenticate_user", user, "s3cret").returncode == 0

    ok(ctl("-q", "change_password", user, "n3w"))
    assert ctl("-q", "authenticate_user", user, "n3w").returncode == 0
    assert ctl("-q", "authenticate_user", user, "s3cret").returncode == 65
    assert [user, "[management, monitoring]"] in rows(ok(ctl("-s", "list_users")))

    assert ok(ctl("-q", "delete_user", user)) == ""
    assert user not in [r[0] for r in rows(ok(ctl("-s", "list_users")))]
    r = ctl("delete_user", user)
    assert r.returncode == 65
    assert r.stderr == f'Error:\nUser "{user}" does not exist\n'
    assert ctl("change_password", user, "x").returncode == 65
    assert ctl("set_user_tags", user, "management").returncode == 65


def test_add_user_reads_password_from_stdin(ctl, made):
    user = unique("stdin")
    made.append(f"/api/users/{seg(user)}")
    ok(ctl("-q", "add_user", user, input="from-stdin\n"))
    assert ctl("-q", "authenticate_user", user, "from-stdin").returncode == 0
    r = ctl("add_user", unique("nopw"), input="")
    assert r.returncode == 65
    assert "Password is not provided" in r.stderr


# --------------------------------------------------- vhosts and permissions

def test_set_permissions_then_list_permissions(ctl, made, broker):
    vhost, user = unique("vh"), unique("perm")
    made.append(f"/api/users/{seg(user)}")
    made.append(f"/api/vhosts/{seg(vhost)}")
    assert ok(ctl("add_vhost", vhost)) == f'Adding vhost "{vhost}" ...\n'
    assert [vhost] in rows(ok(ctl("-s", "list_vhosts")))
    assert {"name": vhost} in json_list(ok(ctl("list_vhosts", "name", "--formatter", "json")))
    ok(ctl("-q", "add_user", user, "pw"))

    out = ok(ctl("set_permissions", "-p", vhost, user, "^ctl-ok", ".*", ".*"))
    assert out == f'Setting permissions for user "{user}" in vhost "{vhost}" ...\n'
    out = ok(ctl("list_permissions", "-p", vhost))
    assert out.splitlines()[0] == f'Listing permissions for vhost "{vhost}" ...'
    assert out.splitlines()[1] == "user\tconfigure\twrite\tread"
    assert [user, "^ctl-ok", ".*", ".*"] in rows(ok(ctl("-s", "list_permissions", "-p", vhost)))
    listed = json_list(ok(ctl("list_permissions", "-p", vhost, "--formatter", "json")))
    assert {"user": user, "configure": "^ctl-ok", "write": ".*", "read": ".*"} in listed

    # The permissions are real: the configure pattern decides what it may declare.
    conn = pika.BlockingConnection(broker.params(
        virtual_host=vhost, credentials=pika.PlainCredentials(user, "pw")))
    try:
        ch = conn.channel()
        ch.queue_declare("ctl-ok-q", auto_delete=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare("ctl-denied-q", auto_delete=True)
        assert e.value.reply_code == 403
    finally:
        conn.close()

    ok(ctl("-q", "clear_permissions", "-p", vhost, user))
    assert user not in [r[0] for r in rows(ok(ctl("-s", "list_permissions", "-p", vhost)))]

    r = ctl("set_permissions", "-p", vhost, unique("nobody"), ".*", ".*", ".*")
    assert r.returncode == 65 and "does not exist" in r.stderr
    missing = unique("novh")
    r = ctl("set_permissions", "-p", missing, user, ".*", ".*", ".*")
    assert r.returncode == 65 and f"Virtual host {missing} does not exist" in r.stderr
    r = ctl("list_permissions", "-p", missing)
    assert r.returncode == 65

    assert ok(ctl("delete_vhost", vhost)) == f'Deleting vhost "{vhost}" ...\n'
    assert vhost not in [r[0] for r in rows(ok(ctl("-s", "list_vhosts")))]
    r = ctl("delete_vhost", vhost)
    assert r.returncode == 65
    assert r.stderr == f"Error:\nVirtual host '{vhost}' does not exist\n"


# ---------------------------------------------------------------- queues

def test_list_queues_shows_messages(ctl, ch, names, broker):
    q = names.q("ctl")
    ch.queue_declare(q, durable=True, arguments={"x-max-length": 10})
    for _ in range(3):
        ch.basic_publish("", q, b"m")
    vh = broker.vhost

    eventually(lambda: listed_with(ctl, vh, q, 3))
    out = ok(ctl("-q", "list_queues", "-p", vh, "name", "messages"))
    assert out.splitlines()[0] == "name\tmessages"
    assert [q, "3"] in rows(out)
    out = ok(ctl("list_queues", "-p", vh))
    assert out.splitlines()[:3] == ["Timeout: 60.0 seconds ...",
                                    f"Listing queues for vhost {vh} ...",
                                    "name\tmessages"]
    assert ok(ctl("-t", "5", "list_queues", "-p", vh)).startswith("Timeout: 5.0 seconds ...\n")
    silent = ok(ctl("-s", "list_queues", "-p", vh, "name,durable,arguments,auto_delete"))
    assert "name" not in silent.splitlines()[0]
    assert [q, "true", '[{"x-max-length",10}]', "false"] in rows(silent)

    listed = json_list(ok(ctl("list_queues", "-p", vh, "name", "messages", "durable",
                              "arguments", "--formatter", "json")))
    mine = [x for x in listed if x["name"] == q]
    assert mine == [{"name": q, "messages": 3, "durable": True,
                     "arguments": [["x-max-length", "signedint", 10]]}]
    assert list(mine[0]) == ["name", "messages", "durable", "arguments"], "column order"

    # An unknown vhost lists nothing, as rabbitmqctl does.
    r = ctl("-q", "list_queues", "-p", unique("novh"))
    assert r.returncode == 0 and r.stdout == ""


def test_purge_and_delete_queue(ctl, ch, names, broker):
    q = names.q("purge")
    vh = broker.vhost
    ch.queue_declare(q)
    for _ in range(2):
        ch.basic_publish("", q, b"m")
    assert depth(ch, q, expect=2) == 2
    out = ok(ctl("purge_queue", "-p", vh, q))
    assert out == f"Purging queue '{q}' in vhost '{vh}' ...\n"
    assert depth(ch, q) == 0

    ch.basic_publish("", q, b"m")
    assert depth(ch, q, expect=1) == 1
    # delete_queue reports the depth the API shows; let RabbitMQ's stats catch up.
    eventually(lambda: listed_with(ctl, vh, q, 1))
    r = ctl("delete_queue", "-p", vh, q, "--if-empty")
    assert r.returncode == 65, (r.stdout, r.stderr)
    assert "Queue is not empty" in r.stderr
    assert depth(ch, q) == 1, "--if-empty kept the queue"

    out = ok(ctl("delete_queue", "-p", vh, q))
    assert out.splitlines() == [f"Deleting queue '{q}' on vhost '{vh}' ...",
                                "Queue was successfully deleted with 1 ready messages"]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(q, passive=True)
    assert e.value.reply_code == 404

    assert ctl("purge_queue", "-p", vh, q).returncode == 65
    assert ctl("delete_queue", "-p", vh, q).returncode == 65


def test_exchanges_and_bindings(ctl, ch, names, broker):
    q, x = names.q("bound"), names.x("topic")
    vh = broker.vhost
    ch.queue_declare(q)
    ch.exchange_declare(x, "topic", durable=True)
    ch.queue_bind(q, x, "a.#", arguments={"k": "v"})

    exchanges = rows(ok(ctl("-s", "list_exchanges", "-p", vh, "name", "type", "durable")))
    assert [x, "topic", "true"] in exchanges
    assert ["", "direct", "true"] in exchanges, "the default exchange is named ''"
    out = ok(ctl("list_exchanges", "-p", vh))
    assert out.splitlines()[:2] == [f"Listing exchanges for vhost {vh} ...", "name\ttype"]

    out = ok(ctl("list_bindings", "-p", vh))
    assert out.splitlines()[:2] == [
        f"Listing bindings for vhost {vh}...",
        "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments"]
    bindings = rows(ok(ctl("-s", "list_bindings", "-p", vh)))
    assert [x, "exchange", q, "queue", "a.#", '[{"k","v"}]'] in bindings
    assert ["", "exchange", q, "queue", q, "[]"] in bindings
    listed = json_list(ok(ctl("list_bindings", "-p", vh, "--formatter", "json")))
    assert {"source_name": x, "source_kind": "exchange", "destination_name": q,
            "destination_kind": "queue", "routing_key": "a.#",
            "arguments": [["k", "longstr", "v"]]} in listed


def test_connections_consumers_and_close_connection(ctl, connect, names, broker):
    label = unique("conn")
    conn = connect(client_properties={"connection_name": label})
    ch = conn.channel()
    q = names.q("consumed")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=7)
    ch.basic_consume(q, lambda *a: None, consumer_tag=label)
    vh = broker.vhost

    def consumer_listed():
        conn.process_data_events(time_limit=0)
        found = [r for r in rows(ok(ctl("-s", "list_consumers", "-p", vh))) if r[0] == q]
        assert len(found) == 1
        return found[0]

    row = eventually(consumer_listed)
    assert row[2:6] == [label, "true", "7", "true"]
    listed = json_list(ok(ctl("list_consumers", "-p", vh, "queue_name", "consumer_tag",
                              "ack_required", "--formatter", "json")))
    assert {"queue_name": q, "consumer_tag": label, "ack_required": True} in listed

    def connection_name():
        conn.process_data_events(time_limit=0)
        listed = json_list(ok(ctl("list_connections", "name", "user", "vhost",
                                  "client_properties", "--formatter", "json")))
        mine = [c for c in listed
                if ["connection_name", "longstr", label] in c["client_properties"]]
        assert len(mine) == 1
        assert mine[0]["user"] == broker.user and mine[0]["vhost"] == vh
        return mine[0]["name"]

    name = eventually(connection_name)
    assert [name, broker.user] in rows(ok(ctl("-s", "list_connections", "name", "user")))
    out = ok(ctl("list_connections"))
    assert out.splitlines()[:2] == ["Listing connections ...", "user\tpeer_host\tpeer_port\tstate"]

    out = ok(ctl("close_connection", name, "closed by test_warrenctl"))
    assert out == f"Closing connection {name}, reason: closed by test_warrenctl...\n"
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
    assert e.value.reply_code == 320
    assert "closed by test_warrenctl" in e.value.reply_text

    r = ctl("close_connection", "no such connection", "bye")
    assert r.returncode == 65


# ---------------------------------------------------------------- policies

def test_set_policy_caps_queues_and_clear_policy(ctl, ch, names, made, broker):
    vh = broker.vhost
    policy = unique("pol")
    made.append(f"/api/policies/{seg(vh)}/{seg(policy)}")
    prefix = f"{policy}-q"
    out = ok(ctl("set_policy", "-p", vh, "--priority", "7", "--apply-to", "queues",
                 policy, f"^{prefix}", '{"max-length": 1}'))
    assert out == (f'Setting policy "{policy}" for pattern "^{prefix}" to '
                   f'"{{"max-length": 1}}" with priority "7" for vhost "{vh}" ...\n')
    listed = [r for r in rows(ok(ctl("-s", "list_policies", "-p", vh))) if r[1] == policy]
    assert listed == [[vh, policy, f"^{prefix}", "queues", '{"max-length":1}', "7"]]

    # The policy is real: the broker caps a matching queue at one message.
    q = prefix + "1"
    names.queues.append(q)
    ch.queue_declare(q)
    for _ in range(3):
        ch.basic_publish("", q, b"m")
    assert depth(ch, q, expect=1) == 1

    assert ok(ctl("clear_policy", "-p", vh, policy)) == \
        f'Clearing policy "{policy}" on vhost "{vh}" ...\n'
    assert policy not in [r[1] for r in rows(ok(ctl("-s", "list_policies", "-p", vh)))]
    r = ctl("clear_policy", "-p", vh, policy)
    assert r.returncode == 65

    r = ctl("set_policy", "-p", vh, policy, "^x", '{"max-length": ')
    assert r.returncode == 65 and "JSON" in r.stderr
    r = ctl("set_policy", "-p", unique("novh"), policy, "^x", '{"max-length": 1}')
    assert r.returncode == 65 and "does not exist" in r.stderr


# ------------------------------------------------------------- definitions

def test_export_then_import_definitions_round_trip(ctl, made, tmp_path):
    vhost, user, q, x = unique("defvh"), unique("defuser"), unique("defq"), unique("defx")
    made.append(f"/api/users/{seg(user)}")
    made.append(f"/api/vhosts/{seg(vhost)}")
    pw_hash = rabbit_sha256("def-pw")
    mine = {
        "users": [{"name": user, "password_hash": pw_hash,
                   "hashing_algorithm": "rabbit_password_hashing_sha256",
                   "tags": ["monitoring"], "limits": {}}],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": user, "vhost": vhost, "configure": ".*",
                         "write": ".*", "read": ".*"}],
        "policies": [{"vhost": vhost, "name": "cap", "pattern": "^defq",
                      "apply-to": "queues", "definition": {"max-length": 5}, "priority": 1}],
        "queues": [{"name": q, "vhost": vhost, "durable": True, "auto_delete": False,
                    "arguments": {"x-max-length": 9, "x-queue-type": "classic"}}],
        "exchanges": [{"name": x, "vhost": vhost, "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "bindings": [{"source": x, "vhost": vhost, "destination": q,
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
    }
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(mine))
    out = ok(ctl("import_definitions", str(seed)))
    assert out.splitlines()[0] == f'Importing definitions in JSON from a file at "{seed}" ...'

    def imported():
        assert [q, "true", '[{"x-max-length",9},{"x-queue-type","classic"}]'] in rows(
            ok(ctl("-s", "list_queues", "-p", vhost, "name", "durable", "arguments")))

    imported()
    assert [x, "fanout"] in rows(ok(ctl("-s", "list_exchanges", "-p", vhost)))
    assert [x, "exchange", q, "queue", "", "[]"] in rows(ok(ctl("-s", "list_bindings", "-p", vhost)))
    assert ctl("-q", "authenticate_user", user, "def-pw").returncode == 0

    # Export (to a file and to stdout), keep only what this test made.
    exported_file = tmp_path / "export.json"
    assert ok(ctl("-q", "export_definitions", str(exported_file))) == ""
    exported = json.loads(exported_file.read_text())
    from_stdout = json.loads(ok(ctl("export_definitions", "-")))
    assert vhost in [v["name"] for v in from_stdout["vhosts"]]
    for key in ("users", "vhosts", "permissions", "queues", "exchanges", "bindings", "policies"):
        assert isinstance(exported.get(key), list), key
    subset = {
        "users": [u for u in exported["users"] if u["name"] == user],
        "vhosts": [v for v in exported["vhosts"] if v["name"] == vhost],
        "permissions": [p for p in exported["permissions"] if p["vhost"] == vhost and p["user"] == user],
        "policies": [p for p in exported["policies"] if p["vhost"] == vhost],
        "queues": [e for e in exported["queues"] if e["vhost"] == vhost],
        "exchanges": [e for e in exported["exchanges"] if e["vhost"] == vhost],
        "bindings": [b for b in exported["bindings"] if b["vhost"] == vhost],
    }
    assert subset["users"][0]["password_hash"] == pw_hash
    assert [p["name"] for p in subset["policies"]] == ["cap"]
    assert len(subset["queues"]) == 1 and len(subset["bindings"]) == 1

    # Gone, then back from the export, through stdin.
    ok(ctl("-q", "delete_vhost", vhost))
    ok(ctl("-q", "delete_user", user))
    assert ctl("-q", "authenticate_user", user, "def-pw").returncode == 65
    out = ok(ctl("import_definitions", "-", input=json.dumps(subset)))
    assert out.splitlines()[0] == "Importing definitions in JSON from standard input ..."
    imported()
    assert ctl("-q", "authenticate_user", user, "def-pw").returncode == 0
    assert [user, ".*", ".*", ".*"] in rows(ok(ctl("-s", "list_permissions", "-p", vhost)))
    assert [vhost, "cap", "^defq", "queues", '{"max-length":5}', "1"] in rows(
        ok(ctl("-s", "list_policies", "-p", vhost)))

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = ctl("import_definitions", str(bad))
    assert r.returncode == 65 and r.stderr.startswith("Error:\n")
    assert ctl("import_definitions", str(tmp_path / "missing.json")).returncode == 64


def test_export_definitions_to_stdout(ctl):
    r = ctl("export_definitions", "-")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "rabbitmq_version" in doc
    assert {"name": "/"} in [{"name": v["name"]} for v in doc["vhosts"]]


# ------------------------------------------------------- node and health

def test_status(ctl):
    out = ok(ctl("status"))
    lines = out.splitlines()
    assert lines[0].startswith("Status of node ") and lines[0].endswith(" ...")
    for section in ("Runtime", "Alarms", "Totals", "Listeners"):
        assert section in lines, section
    assert any(line.startswith("RabbitMQ version: ") for line in lines)
    assert any("protocol: amqp" in line for line in lines)
    assert not ok(ctl("-q", "status")).startswith("Status of node")
    doc = json.loads(ok(ctl("status", "--formatter", "json")))
    assert isinstance(doc["rabbitmq_version"], str)
    assert doc["alarms"] == []
    assert any(listener["protocol"] == "amqp" for listener in doc["listeners"])


def test_answers_as_rabbitmq_diagnostics_and_rabbitmqctl(ctl, ctl_bin, tmp_path):
    diag = tmp_path / "rabbitmq-diagnostics"
    rctl = tmp_path / "rabbitmqctl"
    diag.symlink_to(ctl_bin)
    rctl.symlink_to(ctl_bin)

    assert ok(ctl("-q", "ping", binary=str(diag))) == "Ping succeeded\n"
    out = ok(ctl("-q", "check_running", binary=str(diag)))
    assert out.startswith("RabbitMQ on node ") and out.endswith(" is fully booted and running\n")
    out = ok(ctl("check_running", binary=str(diag)))
    assert out.splitlines()[0].startswith("Checking if RabbitMQ is running on node ")
    out = ok(ctl("-q", "check_local_alarms", binary=str(diag)))
    assert out.startswith("Node ") and out.endswith(" reported no local alarms\n")
    out = ok(ctl("-q", "alarms", binary=str(diag)))
    assert out.endswith(" reported no alarms, local or clusterwide\n")
    doc = json.loads(ok(ctl("alarms", "--formatter", "json", binary=str(diag))))
    assert doc["alarms"] == [] and doc["result"] == "ok"
    assert json.loads(ok(ctl("check_local_alarms", "--formatter", "json",
                             binary=str(diag)))) == {"result": "ok"}
    out = ok(ctl("-q", "check_port_connectivity", binary=str(diag)))
    assert out.startswith("Successfully connected to ports ")
    assert ok(ctl("-q", "status", binary=str(diag)))

    r = ctl("no_such_command", binary=str(diag))
    assert r.returncode == 64 and "rabbitmq-diagnostics" in r.stderr
    assert ok(ctl("-q", "list_users", binary=str(rctl))).splitlines()[0] == "user\ttags"
    assert "Usage: rabbitmqctl" in ok(ctl("--help", binary=str(rctl)))


def test_trace_on_and_trace_off(ctl, made, broker):
    vhost = unique("vh")
    made.append(f"/api/vhosts/{seg(vhost)}")
    ok(ctl("-q", "add_vhost", vhost, "--description", "kept"))
    assert ok(ctl("trace_on", "-p", vhost)) == f'Starting tracing for vhost "{vhost}" ...\n'
    listed = json_list(ok(ctl("list_vhosts", "name", "tracing", "--formatter", "json")))
    assert {"name": vhost, "tracing": True} in listed
    assert ok(ctl("trace_off", "-p", vhost)) == f'Stopping tracing for vhost "{vhost}" ...\n'
    listed = json_list(ok(ctl("list_vhosts", "name", "tracing", "--formatter", "json")))
    assert {"name": vhost, "tracing": False} in listed
    described = json_list(ok(ctl("list_vhosts", "name", "description", "--formatter", "json")))
    assert {"name": vhost, "description": "kept"} in described
    missing = ctl("trace_on", "-p", unique("nowhere"))
    assert missing.returncode != 0


def test_pause_resume_and_move_messages(ctl, broker):
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    dlq, work = unique("dlq"), unique("work")
    for q in (dlq, work):
        ch.queue_declare(q)
    for i in range(5):
        ch.basic_publish("", dlq, f"d{i}".encode(),
                         pika.BasicProperties(headers={"x-death": [{"count": 1}]}))
    assert ok(ctl("pause_queue", work)) == f"Pausing deliveries from queue '{work}' in vhost '/' ...\n"
    browsed = rows(ok(ctl("-s", "browse_queue", dlq, "--count", "2")))
    assert browsed == [[dlq, "false", "d0"], [dlq, "false", "d1"]]
    assert ch.queue_declare(dlq, passive=True).method.message_count == 5  # untouched
    listed = json_list(ok(ctl("list_queues", "name", "state", "--formatter", "json")))
    assert {"name": work, "state": "paused"} in listed
    out = ok(ctl("move_messages", dlq, work, "--count", "3"))
    assert out.endswith("Moved 3 messages\n"), out
    assert ch.basic_get(work)[0] is None  # paused: basic.get finds nothing
    ok(ctl("resume_queue", work))
    bodies = []
    for _ in range(3):
        _, props, body = ch.basic_get(work, auto_ack=True)
        bodies.append(body)
        assert props.headers["x-death"] == [{"count": 1}]
    assert bodies == [b"d0", b"d1", b"d2"]
    assert ch.queue_declare(dlq, passive=True).method.message_count == 2
    assert ctl("pause_queue", unique("missing")).returncode != 0
    for q in (dlq, work):
        ch.queue_delete(q)
    conn.close()
