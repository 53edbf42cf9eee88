"""Logs: RabbitMQ's wording for the lines operators grep for, and JSON lines
(--log-format json / WARREN_LOG_FORMAT=json) with the connection's name,
vhost and user on every event about it. Warren only: these start a broker
of their own."""

import json
import re
import time

import pika
import pytest

from amqp_support import start_warren, stop_warren, warren_only

pytestmark = warren_only


def wait_for(broker, predicate, what, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(predicate(line) for line in list(broker.log)):
            return
        time.sleep(0.05)
    pytest.fail(f"no log line {what}:\n" + "\n".join(broker.log[-30:]))


def exercise(broker):
    """A connection that logs in, works and closes; a refused login."""
    conn = pika.BlockingConnection(broker.params())
    conn.channel().queue_declare("", exclusive=True)
    conn.close()
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(broker.params(
            credentials=pika.PlainCredentials("guest", "not-the-password")))


def test_json_logs_parse_line_by_line_and_name_the_connection():
    broker = start_warren({"WARREN_LOG_FORMAT": "json"})
    try:
        exercise(broker)
        wait_for(broker, lambda line: "closing AMQP connection" in line, "closing")
        wait_for(broker, lambda line: "login refused" in line, "login refused")
    finally:
        stop_warren(broker)
    events = []
    for line in broker.log:
        event = json.loads(line)  # every line is one JSON object
        assert {"timestamp", "level", "message"} <= event.keys(), event
        events.append(event)
    assert any(e["message"] == "Server startup complete; 0 plugins started." for e in events)

    def about(text):
        found = [e for e in events if text in e["message"]]
        assert found, text
        return found[0]

    accepting = about("accepting AMQP connection ")
    name = accepting["message"].removeprefix("accepting AMQP connection ")
    assert re.fullmatch(r"127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+", name), name
    assert accepting["span"]["connection"] == name
    granted = about("authenticated and granted access")
    assert granted["message"] == (
        f"connection {name}: user 'guest' authenticated and granted access to vhost '/'")
    assert granted["span"] == {"name": "connection", "connection": name,
                               "vhost": "/", "user": "guest"}
    assert granted["tls"] is False
    closing = about("closing AMQP connection")
    assert closing["message"] == f"closing AMQP connection ({name}, vhost: '/', user: 'guest')"
    assert closing["span"]["user"] == "guest"
    refused = about("login refused")
    assert refused["level"] == "WARN"
    assert refused["message"] == "PLAIN login refused: user 'guest' - invalid credentials"
    assert refused["span"]["connection"] != name


def test_text_logs_use_rabbitmqs_wording():
    broker = start_warren()
    try:
        exercise(broker)
        wait_for(broker, lambda line: "closing AMQP connection" in line, "closing")
    finally:
        stop_warren(broker)
    text = "\n".join(broker.log)
    assert re.search(r"accepting AMQP connection 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+", text)
    assert re.search(r"user 'guest' authenticated and granted access to vhost '/'", text)
    assert re.search(r"closing AMQP connection \(127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+, "
                     r"vhost: '/', user: 'guest'\)", text)
    assert "PLAIN login refused: user 'guest' - invalid credentials" in text
