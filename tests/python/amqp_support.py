"""What the pika suite shares: starting and stopping the Warren binary, and
small helpers for driving a pika BlockingConnection."""

import datetime
import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid

import pika
import pika.compat
import pika.exceptions
import pytest

RABBITMQ_URL = os.environ.get("WARREN_TEST_RABBITMQ")
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 5.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Broker:
    """Where a broker listens, and how to reach it."""

    def __init__(self, host, amqp_port, admin_port=None, metrics_port=None,
                 vhost="/", user="guest", password="guest", process=None,
                 log=None, amqps_port=None):
        self.host = host
        self.amqp_port = amqp_port
        self.amqps_port = amqps_port
        self.admin_port = admin_port
        self.metrics_port = metrics_port
        self.vhost = vhost
        self.user = user
        self.password = password
        self.process = process
        self.log = log if log is not None else []

    @property
    def is_warren(self):
        return self.process is not None

    def params(self, **overrides):
        kw = dict(
            host=self.host,
            port=self.amqp_port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password),
            connection_attempts=1,
            retry_delay=0,
            socket_timeout=5,
            blocked_connection_timeout=10,
        )
        kw.update(overrides)
        return pika.ConnectionParameters(**kw)


def _drain(stream, lines, found, starting):
    """Read the broker's stdout until it closes, so the pipe never fills.
    Lines go to `lines` (for failure messages) and, while the broker is
    starting, to the `found` queue too."""
    for raw in iter(stream.readline, b""):
        line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
        lines.append(line)
        del lines[:-500]
        if starting.is_set():
            found.put(line)
    found.put(None)


def start_warren(extra_env=None, store_args=("--ephemeral",), extra_args=(),
                 amqp_port=0, admin_port=0):
    """Start $WARREN_BIN on ephemeral ports (or the given ones, to restart
    a broker where its peers expect it; keeping nothing on disk unless
    `store_args` says otherwise, e.g. ("--data-dir", path); `extra_args`
    such as TLS flags); return a Broker once it logged 'Server startup
    complete'."""
    binary = os.environ.get("WARREN_BIN")
    if not binary:
        pytest.fail("set WARREN_BIN to the warren binary "
                    "(or WARREN_TEST_RABBITMQ to an AMQP URL)")
    env = dict(os.environ)
    env.update({"RUST_LOG": "info", "WARREN_AMQP__BIND": "127.0.0.1",
                "NO_COLOR": "1"})
    if extra_env:
        env.update(extra_env)
    proc = subprocess.Popen(
        [binary, *store_args, "--amqp-port", str(amqp_port), "--admin-port", str(admin_port),
         "--metrics-port", "0", *extra_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env)
    lines, found, starting = [], queue.Queue(), threading.Event()
    starting.set()
    threading.Thread(target=_drain, args=(proc.stdout, lines, found, starting),
                     daemon=True).start()
    ports = {}
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = found.get(timeout=max(remaining, 0.001))
        except queue.Empty:
            line = "<timeout>"
        if line is None or line == "<timeout>":
            proc.kill()
            proc.wait()
            pytest.fail("warren did not log 'Server startup complete' within "
                        f"{STARTUP_TIMEOUT} s ({line or 'it exited'}); output:\n"
                        + "\n".join(lines))
        m = re.search(r"started TCP listener on ([0-9.]+):(\d+)", line)
        if m:
            ports["amqp"] = (m.group(1), int(m.group(2)))
        m = re.search(r"started TLS \(SSL\) listener on ([0-9.]+):(\d+)", line)
        if m:
            ports["amqps"] = int(m.group(2))
        m = re.search(r"Management plugin: HTTP \(non-TLS\) listener started on port (\d+)", line)
        if m:
            ports["admin"] = int(m.group(1))
        m = re.search(r"Prometheus metrics: HTTP \(non-TLS\) listener started on port (\d+)", line)
        if m:
            ports["metrics"] = int(m.group(1))
        if "Server startup complete" in line:
            break
    assert "amqp" in ports, "no 'started TCP listener on' line:\n" + "\n".join(lines)
    host, port = ports["amqp"]
    starting.clear()
    return Broker(host, port, ports.get("admin"), ports.get("metrics"),
                  process=proc, log=lines, amqps_port=ports.get("amqps"))


@contextlib.contextmanager
def warren_on(data_dir, extra_env=None):
    """A Warren keeping its data in `data_dir`, stopped (SIGTERM, exit 0)
    when the block ends: run it twice for a restart."""
    broker = start_warren(extra_env, store_args=("--data-dir", str(data_dir)))
    try:
        yield broker
    finally:
        stop_warren(broker)


def stop_warren(broker, signalled=False):
    """SIGTERM the broker (unless already `signalled`); it must exit 0 within
    SHUTDOWN_TIMEOUT."""
    proc = broker.process
    if not signalled:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"warren did not exit within {SHUTDOWN_TIMEOUT} s of SIGTERM")
    assert code == 0, (f"warren exited with {code} after SIGTERM; output:\n"
                       + "\n".join(broker.log[-50:]))


def rabbitmq_broker(url):
    """The RabbitMQ at `url`; its management API and Prometheus endpoint on
    the same host, at $WARREN_TEST_RABBITMQ_ADMIN_PORT (15672) and
    $WARREN_TEST_RABBITMQ_METRICS_PORT (15692)."""
    p = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(p.path[1:]) if len(p.path) > 1 else "/"
    return Broker(p.hostname or "127.0.0.1", p.port or 5672,
                  admin_port=int(os.environ.get("WARREN_TEST_RABBITMQ_ADMIN_PORT", "15672")),
                  metrics_port=int(os.environ.get("WARREN_TEST_RABBITMQ_METRICS_PORT", "15692")),
                  vhost=vhost,
                  user=urllib.parse.unquote(p.username or "guest"),
                  password=urllib.parse.unquote(p.password or "guest"))


class Names:
    """Unique queue and exchange names for one test; whatever they name is
    deleted after the test (useful against a long-lived RabbitMQ)."""

    def __init__(self):
        self.tag = uuid.uuid4().hex[:10]
        self.queues = []
        self.exchanges = []

    def q(self, label="q"):
        name = f"pika-{label}-{self.tag}"
        self.queues.append(name)
        return name

    def x(self, label="x"):
        name = f"pika-{label}-{self.tag}"
        self.exchanges.append(name)
        return name


# ------------------------------------------------------------------ helpers

def pump(conn, seconds):
    """Run the connection's I/O loop for `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        conn.process_data_events(time_limit=min(remaining, 0.05))


def wait_until(conn, predicate, timeout=5.0):
    """Pump the connection until predicate() is true; return whether it was."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        conn.process_data_events(time_limit=0.02)
    return True


def depth(ch, q, expect=None, timeout=3.0):
    """Messages ready in queue q, from a passive declare.

    With `expect`, poll until the count equals it (or `timeout` passes) and
    return the last count: RabbitMQ answers a passive declare ahead of
    deliveries still on their way to the queue, so a count taken right after
    a publish may lag behind.
    """
    deadline = time.monotonic() + timeout
    while True:
        count = ch.queue_declare(q, passive=True).method.message_count
        if expect is None or count == expect or time.monotonic() >= deadline:
            return count
        time.sleep(0.02)


def channel_error(ch):
    """The broker closed `ch` (or is about to, because of something just
    sent): make a round trip on it and return the ChannelClosedByBroker."""
    try:
        ch.exchange_declare("amq.direct", exchange_type="direct", passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        return e
    except pika.exceptions.ChannelWrongStateError:
        reason = getattr(ch, "_closing_reason", None)
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            return reason
        raise
    pytest.fail("the broker did not close the channel")


class Deliveries:
    """A basic.consume whose deliveries are collected into a list."""

    def __init__(self, conn, ch, queue_name, **kwargs):
        self.conn = conn
        self.ch = ch
        self.items = []
        self.tag = ch.basic_consume(queue_name, self._on_message, **kwargs)

    def _on_message(self, ch, method, properties, body):
        self.items.append((method, properties, body))

    def wait(self, n, timeout=5.0):
        """Until at least n deliveries have arrived; returns them all."""
        ok = wait_until(self.conn, lambda: len(self.items) >= n, timeout)
        assert ok, f"expected {n} deliveries, got {len(self.items)}"
        return self.items

    def quiet(self, seconds=0.3):
        """True when nothing new arrives for `seconds`."""
        before = len(self.items)
        pump(self.conn, seconds)
        return len(self.items) == before

    def bodies(self):
        return [b for (_, _, b) in self.items]


# ------------------------------------------------- queue-feature helpers

# Tests of Warren features that RabbitMQ 3.10 classic queues do not have:
# skipped when the suite runs against a RabbitMQ (WARREN_TEST_RABBITMQ).
warren_only = pytest.mark.skipif(
    bool(RABBITMQ_URL),
    reason="a Warren feature that RabbitMQ 3.10 does not have")


class floats_in_tables:
    """A context manager: while it is active pika encodes Python floats in
    field tables as AMQP doubles ('d'); pika itself refuses floats."""

    def __enter__(self):
        import struct
        import pika.data
        self._module = pika.data
        self._orig = orig = pika.data.encode_value

        def encode_value(pieces, value):
            if isinstance(value, float):
                pieces.append(struct.pack(">cd", b"d", value))
                return 9
            return orig(pieces, value)

        pika.data.encode_value = encode_value
        return self

    def __exit__(self, *exc):
        self._module.encode_value = self._orig
        return False


def get_all(ch, q, auto_ack=True):
    """basic.get from q until get-empty; the (method, properties, body)
    triples, in order."""
    out = []
    while True:
        method, props, body = ch.basic_get(q, auto_ack=auto_ack)
        if method is None:
            return out
        out.append((method, props, body))


def get_one(ch, q, timeout=3.0, auto_ack=True):
    """basic.get from q, polling until a message is there (dead-lettered and
    expired messages arrive asynchronously); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(q, auto_ack=auto_ack)
        if method is not None:
            return method, props, body
        if time.monotonic() >= deadline:
            pytest.fail(f"nothing arrived in {q} within {timeout} s")
        time.sleep(0.02)


# ------------------------------------------------ dead-lettering headers
# (the format is described in test_dead_lettering.py)

class _Recent:
    """Equal to a naive datetime in whole seconds within a minute of now
    (UTC): what pika makes of the AMQP timestamp in x-death's `time`."""

    def __eq__(self, other):
        if not isinstance(other, datetime.datetime):
            return False
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        return (other.tzinfo is None and other.microsecond == 0
                and abs((other - now).total_seconds()) < 60)

    def __repr__(self):
        return "<a recent naive UTC datetime in whole seconds>"


RECENT = _Recent()


def death(reason, queue, exchange, routing_keys, count=1, original_expiration=None):
    """One x-death table as RabbitMQ 3.10 writes it."""
    entry = {"count": count, "reason": reason, "queue": queue, "time": RECENT,
             "exchange": exchange, "routing-keys": routing_keys}
    if original_expiration is not None:
        entry["original-expiration"] = original_expiration
    return entry


def first_death(reason, queue, exchange):
    return {"x-first-death-reason": reason, "x-first-death-queue": queue,
            "x-first-death-exchange": exchange}


def check_headers(props, expected):
    """props.headers equals `expected` exactly, and every x-death count is a
    long-long (pika.compat.long).

    Warren also writes `x-last-death-*` (RabbitMQ 3.13+ does; 3.10 does not):
    against Warren they must name the newest death."""
    if not RABBITMQ_URL:
        newest = expected["x-death"][0]
        expected = dict(expected)
        for field in ("reason", "queue", "exchange"):
            expected["x-last-death-" + field] = newest[field]
    assert props.headers == expected
    for entry in props.headers["x-death"]:
        assert type(entry["count"]) is pika.compat.long, entry
        assert type(entry["time"]) is datetime.datetime, entry
