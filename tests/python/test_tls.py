"""AMQPS with pika: certificates made at test time (trustme), a Warren of
its own with mutual TLS (client certificates required and verified)."""

import re
import signal
import ssl
import time

import pika
import pika.credentials
import pika.exceptions
import pytest
import trustme

from amqp_support import RABBITMQ_URL, start_warren, stop_warren

pytestmark = pytest.mark.skipif(bool(RABBITMQ_URL), reason="starts its own Warren")

USER, PASSWORD = "tls-user", "tls-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(d / "server.pem")
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(d / "server.pem", append=True)
    server.private_key_pem.write_to_path(d / "server.key")
    ca.cert_pem.write_to_path(d / "ca.pem")
    return {"dir": d, "ca": ca,
            "client": ca.issue_cert("tls-client", common_name=USER)}


@pytest.fixture(scope="module")
def tls_broker(pki):
    d = pki["dir"]
    b = start_warren(
        extra_env={"WARREN_AMQPS__BIND": "127.0.0.1", "WARREN_DEFAULT_USER": USER,
                   "WARREN_DEFAULT_PASS": PASSWORD,
                   "WARREN_AUTH__FAILED_LOGIN_DELAY_MS": "0"},
        extra_args=["--amqps-port", "0", "--tls-cert", str(d / "server.pem"),
                    "--tls-key", str(d / "server.key"), "--tls-ca", str(d / "ca.pem"),
                    "--tls-verify-peer"])
    assert b.amqps_port, "no 'started TLS (SSL) listener' line"
    yield b
    stop_warren(b)


def context(trust, client=None, version=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trust.configure_trust(ctx)
    if client is not None:
        client.configure_cert(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def params(broker, ctx, credentials=None):
    return pika.ConnectionParameters(
        host="127.0.0.1", port=broker.amqps_port,
        credentials=credentials or pika.PlainCredentials(USER, PASSWORD),
        ssl_options=pika.SSLOptions(ctx, server_hostname="127.0.0.1"),
        connection_attempts=1, socket_timeout=5)


def negotiated_version(conn):
    return conn._impl._transport._sock.version()


def test_tls_1_3_with_a_client_certificate(tls_broker, pki):
    ctx = context(pki["ca"], pki["client"], ssl.TLSVersion.TLSv1_3)
    conn = pika.BlockingConnection(params(tls_broker, ctx))
    try:
        assert negotiated_version(conn) == "TLSv1.3"
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"secret")
        _, _, body = ch.basic_get(q, auto_ack=True)
        assert body == b"secret"
    finally:
        conn.close()


def test_tls_1_2_is_offered_too(tls_broker, pki):
    ctx = context(pki["ca"], pki["client"], ssl.TLSVersion.TLSv1_2)
    conn = pika.BlockingConnection(params(tls_broker, ctx))
    assert negotiated_version(conn) == "TLSv1.2"
    conn.close()


def test_a_client_certificate_from_an_unknown_ca_is_refused(tls_broker, pki):
    stranger = trustme.CA().issue_cert("x", common_name=USER)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params(tls_broker, context(pki["ca"], stranger)))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params(tls_broker, context(pki["ca"])))


def test_external_logs_in_the_user_named_by_the_certificate(tls_broker, pki):
    ctx = context(pki["ca"], pki["client"])
    conn = pika.BlockingConnection(
        params(tls_broker, ctx, credentials=pika.credentials.ExternalCredentials()))
    try:
        conn.channel().queue_declare("", exclusive=True)
    finally:
        conn.close()
    assert any(re.search(rf"user '{USER}' authenticated and granted access.*tls=true", line)
               for line in tls_broker.log), "\n".join(tls_broker.log[-20:])


def test_a_wrong_password_is_refused_with_403_and_logged(tls_broker, pki):
    ctx = context(pki["ca"], pki["client"])
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as e:
        pika.BlockingConnection(
            params(tls_broker, ctx, credentials=pika.PlainCredentials(USER, "wrong")))
    assert "403" in str(e.value) and "Login was refused" in str(e.value)
    deadline = time.monotonic() + 5
    wanted = f"PLAIN login refused: user '{USER}' - invalid credentials"
    while not any(wanted in line for line in tls_broker.log):
        assert time.monotonic() < deadline, "\n".join(tls_broker.log[-20:])
        time.sleep(0.05)


def test_sighup_reloads_the_certificate_without_dropping_connections(tls_broker, pki):
    d = pki["dir"]
    before = pika.BlockingConnection(params(tls_broker, context(pki["ca"], pki["client"])))
    new_ca = trustme.CA()
    server = new_ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(d / "server.pem")
    server.private_key_pem.write_to_path(d / "server.key")
    tls_broker.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not any("TLS certificates reloaded" in line for line in tls_broker.log):
        assert time.monotonic() < deadline, "\n".join(tls_broker.log[-20:])
        time.sleep(0.05)
    # New handshakes present the new certificate (the client CA is unchanged).
    after = pika.BlockingConnection(params(tls_broker, context(new_ca, pki["client"])))
    after.close()
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        pika.BlockingConnection(params(tls_broker, context(pki["ca"], pki["client"])))
    # The connection made before the reload carries on.
    before.channel().queue_declare("", exclusive=True)
    before.close()
