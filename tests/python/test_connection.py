"""Connection lifecycle through pika: the server's properties, login and
vhost refusals, heartbeat negotiation, clean close, and shutdown."""

import base64
import json
import re
import select
import signal
import socket
import time
import urllib.error
import urllib.request

import pika
import pika.exceptions
import pytest

from amqp_support import pump, start_warren, stop_warren, wait_until

CAPABILITIES = [
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "authentication_failure_close",
    "per_consumer_qos",
    "direct_reply_to",
]

TCP_ESTABLISHED = 1


def tcp_state(conn):
    """The kernel's TCP state of a pika connection's socket (Linux)."""
    sock = conn._impl._transport._sock
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return info[0]


def test_server_properties_name_the_product_and_every_capability(conn, broker):
    props = conn._impl.server_properties
    # Warren advertises product = RabbitMQ by default and names itself in
    # `information` (docs/compatibility.md).
    assert props["product"] == "RabbitMQ"
    if broker.is_warren:
        assert props["information"].startswith("Warren ")
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["version"]), props["version"]
    assert props["platform"]
    assert props["cluster_name"]
    caps = props["capabilities"]
    for cap in CAPABILITIES:
        assert caps.get(cap) is True, f"capability {cap}: {caps.get(cap)!r}"


def test_wrong_password_is_refused_with_403(broker):
    params = broker.params(credentials=pika.PlainCredentials(broker.user, "nope"))
    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.ConnectionClosedByBroker)) as ei:
        pika.BlockingConnection(params)
    text = ("ACCESS_REFUSED - Login was refused using authentication mechanism "
            "PLAIN. For details see the broker logfile.")
    e = ei.value
    if isinstance(e, pika.exceptions.ConnectionClosedByBroker):
        assert (e.reply_code, e.reply_text) == (403, text)
    else:
        # pika wraps the broker's connection.close in the message.
        assert "(403)" in str(e) and text in str(e), str(e)


def test_unknown_vhost_is_refused_with_530(broker):
    params = broker.params(virtual_host="nosuchvhost")
    with pytest.raises((pika.exceptions.ProbableAccessDeniedError,
                        pika.exceptions.ConnectionClosedByBroker)) as ei:
        pika.BlockingConnection(params)
    text = "NOT_ALLOWED - vhost nosuchvhost not found"
    e = ei.value
    if isinstance(e, pika.exceptions.ConnectionClosedByBroker):
        assert (e.reply_code, e.reply_text) == (530, text)
    else:
        assert "(530)" in str(e) and text in str(e), str(e)


def test_heartbeat_negotiation_is_honoured(connect):
    """heartbeat=1 is applied: a client that goes silent is dropped within
    seconds (not after the broker's default 60 s). heartbeat=0 is applied
    too: the broker sends nothing and never drops an idle client."""
    beating = connect(heartbeat=1)
    silent = connect(heartbeat=0)
    assert beating._impl.params.heartbeat == 1
    assert silent._impl.params.heartbeat == 0
    assert silent._impl._heartbeat_checker is None

    # Neither connection runs its I/O loop from here on, so pika sends no
    # heartbeats: the broker must close `beating` after about two intervals.
    started = time.monotonic()
    while tcp_state(beating) == TCP_ESTABLISHED and time.monotonic() - started < 6:
        time.sleep(0.05)
    assert tcp_state(beating) != TCP_ESTABLISHED, "silent client was not dropped"
    assert time.monotonic() - started >= 1, "dropped before one interval passed"
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        for _ in range(50):
            beating.process_data_events(time_limit=0.1)
    assert beating.is_closed

    # The heartbeat=0 connection, idle as long, received nothing at all and
    # still works.
    sock = silent._impl._transport._sock
    readable, _, _ = select.select([sock], [], [], 0)
    assert not readable, "the broker sent something on a heartbeat=0 connection"
    assert tcp_state(silent) == TCP_ESTABLISHED
    assert silent.channel().is_open


def test_broker_heartbeats_a_client_that_keeps_sending(connect):
    """The broker must send a heartbeat whenever it has sent nothing for a
    while, whatever the client sends. A pika publisher (which gets no
    replies without confirms) relies on those heartbeats: pika closes a
    connection on which it received nothing for its heartbeat timeout plus
    5 s (AMQPHeartbeatTimeout)."""
    c = connect(heartbeat=1)
    ch = c.channel()
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        ch.basic_publish("amq.direct", "nobody-is-bound-to-this", b"tick")
        pump(c, 0.1)
    checker = c._impl._heartbeat_checker
    assert checker._heartbeat_frames_sent >= 2
    assert checker._heartbeat_frames_received >= 2, (
        f"the broker sent {checker._heartbeat_frames_received} heartbeats in "
        f"2.5 s on a heartbeat=1 connection it otherwise sent nothing on")
    assert c.is_open


def test_clean_close(connect, broker):
    c = connect()
    chan = c.channel()
    q = chan.queue_declare("", exclusive=True).method.queue
    chan.close()
    assert chan.is_closed
    c.close()
    assert c.is_closed
    with pytest.raises(pika.exceptions.ConnectionWrongStateError):
        c.channel()
    # The broker saw the close: the connection's exclusive queue is gone.
    other = connect()

    def gone():
        probe = other.channel()
        try:
            probe.queue_declare(q, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return True
        probe.close()
        return False

    assert wait_until(other, gone, timeout=3)


def test_many_channels_on_one_connection(conn):
    chans = [conn.channel() for _ in range(20)]
    numbers = [c.channel_number for c in chans]
    assert len(set(numbers)) == 20
    for c in chans[::2]:
        c.close()
    for c in chans[1::2]:
        assert c.is_open
        q = c.queue_declare("", exclusive=True).method.queue
        assert q.startswith("amq.gen-")


def _http_get(port, path, auth=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_admin_and_metrics_listen_on_the_logged_ports(broker):
    if not broker.is_warren:
        pytest.skip("the admin and metrics ports are only known for Warren")
    assert broker.admin_port and broker.metrics_port
    status, _ = _http_get(broker.admin_port, "/api/health/checks/alarms")
    assert status == 401
    status, body = _http_get(broker.admin_port, "/api/health/checks/alarms",
                             "guest:guest")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    status, body = _http_get(broker.metrics_port, "/metrics")
    assert status == 200
    assert "rabbitmq_identity_info{" in body


def test_sigterm_closes_clients_with_320_and_exits_0(broker):
    """A broker of its own: on SIGTERM it tells connected clients 320, and
    exits 0 once they have answered."""
    if not broker.is_warren:
        pytest.skip("needs a Warren binary to stop")
    own = start_warren()
    signalled = False
    try:
        c = pika.BlockingConnection(own.params())
        c.channel()
        own.process.send_signal(signal.SIGTERM)
        signalled = True
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as ei:
            for _ in range(50):
                c.process_data_events(time_limit=0.1)
        assert ei.value.reply_code == 320
        assert ei.value.reply_text == (
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
    finally:
        stop_warren(own, signalled)  # must exit 0 within 5 s
