"""Fixtures for the pika suite.

By default a real Warren binary ($WARREN_BIN) is started once per session on
ephemeral ports and stopped with SIGTERM at the end (it must exit 0 within
5 s). Set WARREN_TEST_RABBITMQ to an AMQP URL (for example
amqp://guest:guest@127.0.0.1:5672/%2f) to run the very same tests against a
running RabbitMQ instead, to check what the reference broker does.

Every test uses its own uniquely named queues and exchanges (see the `names`
fixture), so tests are independent although they share one broker.
"""

import pika
import pika.exceptions
import pytest

# Plain asserts in the shared helpers get pytest's detailed failure messages.
pytest.register_assert_rewrite("amqp_support")

from amqp_support import (RABBITMQ_URL, Names, rabbitmq_broker, start_warren,  # noqa: E402
                          stop_warren)


@pytest.fixture(scope="session")
def broker():
    if RABBITMQ_URL:
        yield rabbitmq_broker(RABBITMQ_URL)
        return
    b = start_warren()
    yield b
    stop_warren(b)


@pytest.fixture
def connect(broker):
    """A factory: connect(**ConnectionParameters overrides) -> an open
    pika.BlockingConnection, closed again after the test."""
    opened = []

    def _connect(**overrides):
        c = pika.BlockingConnection(broker.params(**overrides))
        opened.append(c)
        return c

    yield _connect
    for c in opened:
        if c.is_open:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def conn(connect):
    """A connected pika.BlockingConnection (guest/guest, vhost "/")."""
    return connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def names(broker):
    n = Names()
    yield n
    if not (n.queues or n.exchanges):
        return
    try:
        c = pika.BlockingConnection(broker.params())
    except Exception:
        return
    try:
        for kind, items in (("q", n.queues), ("x", n.exchanges)):
            for name in items:
                try:
                    chan = c.channel()
                    if kind == "q":
                        chan.queue_delete(name)
                    else:
                        chan.exchange_delete(name)
                    chan.close()
                except pika.exceptions.AMQPChannelError:
                    pass
    finally:
        if c.is_open:
            c.close()


# ------------------------------------------------ management HTTP API tests
# (test_http_*.py and test_prometheus.py; helpers in http_support.py)

pytest.register_assert_rewrite("http_support")

from http_support import Api  # noqa: E402


@pytest.fixture
def api(broker):
    """The management API as the broker's default user (guest, an
    administrator). Users, vhosts, queues, exchanges, policies and
    parameters made through its create_* helpers or registered with
    api.track(path) are deleted after the test."""
    if not broker.admin_port:
        pytest.fail("the broker has no management (admin) port")
    a = Api(broker)
    yield a
    a.cleanup()
