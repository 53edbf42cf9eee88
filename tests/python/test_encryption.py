"""Encryption at rest (issue 19): with --encryption-key-file every stored
record's value is sealed, so a persistent message's body is in no file of
the data directory; it is delivered after a restart with the key; another
key, or none, is refused at start-up; after a rotation (new key, old key
kept) old messages still open. Warren only."""

import base64
import os
import pathlib
import subprocess
import time

import pika

from amqp_support import start_warren, stop_warren, warren_only
from stream_support import read_all

pytestmark = warren_only


def key_file(path, seed):
    path.write_text(base64.b64encode(bytes([seed]) * 32).decode() + "\n")
    return path


def start(data, *keys):
    args = ["--encryption-key-file", str(keys[0])]
    if len(keys) > 1:
        args += ["--encryption-old-key-file", str(keys[1])]
    return start_warren(store_args=("--data-dir", str(data)), extra_args=args)


def publish(broker, queue, body):
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, durable=True)
    ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    conn.close()


def take_all(broker, queue):
    conn = pika.BlockingConnection(broker.params())
    ch = conn.channel()
    got = []
    while True:
        m, _, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            break
        got.append(body)
    conn.close()
    return got


def files_containing(directory, marker):
    found = []
    for root, _, files in os.walk(directory):
        for f in files:
            p = pathlib.Path(root, f)
            try:
                if marker in p.read_bytes():
                    found.append(str(p))
            except OSError:
                pass
    return found


def refused_start(data, *args):
    binary = os.environ["WARREN_BIN"]
    r = subprocess.run([binary, "--data-dir", str(data), "--amqp-port", "0",
                        "--admin-port", "0", "--metrics-port", "0", *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_a_sealed_store_hides_bodies_and_needs_its_key(tmp_path):
    data = tmp_path / "data"
    key = key_file(tmp_path / "store.key", 7)
    marker = b"MARKER-6f1d0c9a-plaintext-must-not-be-on-disk"
    b = start(data, key)
    publish(b, "sealed", marker)
    stop_warren(b)
    assert files_containing(data, marker) == []
    # Control: the same without a key leaves the body readable on disk, so
    # the search above can find what is there.
    plain = tmp_path / "plain"
    p = start_warren(store_args=("--data-dir", str(plain)))
    publish(p, "plain", marker)
    stop_warren(p)
    assert files_containing(plain, marker) != []
    # Another key, or none, is refused with the reason.
    other = key_file(tmp_path / "other.key", 8)
    out = refused_start(data, "--encryption-key-file", str(other))
    assert "does not open it" in out, out
    out = refused_start(data)
    assert "is encrypted" in out and "--encryption-key-file" in out, out
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    out = refused_start(data, "--encryption-key-file", str(bad))
    assert "base64" in out, out
    # With its key, the message is there.
    b = start(data, key)
    assert take_all(b, "sealed") == [marker]
    stop_warren(b)


def test_rotation_keeps_old_records_readable(tmp_path):
    data = tmp_path / "data"
    old = key_file(tmp_path / "old.key", 1)
    new = key_file(tmp_path / "new.key", 2)
    b = start(data, old)
    publish(b, "rotated", b"sealed-with-the-old-key")
    stop_warren(b)
    b = start(data, new, old)
    publish(b, "rotated", b"sealed-with-the-new-key")
    # A background rewrite re-seals what the old key sealed.
    deadline = time.monotonic() + 30
    while not any("is retired" in line for line in b.log):
        assert time.monotonic() < deadline, "\n".join(b.log[-20:])
        time.sleep(0.1)
    stop_warren(b)
    assert files_containing(data, b"sealed-with-the-") == []
    # The old key is no longer needed.
    b = start(data, new)
    assert take_all(b, "rotated") == [b"sealed-with-the-old-key", b"sealed-with-the-new-key"]
    stop_warren(b)


def test_stream_segments_are_sealed_too(tmp_path):
    data = tmp_path / "data"
    key = key_file(tmp_path / "store.key", 9)
    marker = b"STREAM-MARKER-3c2e-plaintext-must-not-be-on-disk"
    b = start(data, key)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("sealed-stream", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(3):
        ch.basic_publish("", "sealed-stream", marker + str(i).encode(),
                         pika.BasicProperties(delivery_mode=2, headers={"n": i}))
    conn.close()
    stop_warren(b)
    assert any(pathlib.Path(data, "streams").rglob("*.seg")), "no segment files"
    assert files_containing(data, marker) == []
    b = start(data, key)
    conn = pika.BlockingConnection(b.params())
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume("sealed-stream", lambda c, m, p, body: (got.append((p.headers["n"], body)),
                                                             c.basic_ack(m.delivery_tag)),
                     arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        conn.process_data_events(0.05)
    conn.close()
    stop_warren(b)
    assert got == [(i, marker + str(i).encode()) for i in range(3)]


def test_rotation_with_streams_keeps_the_old_key_needed(tmp_path):
    """Stream segments are not re-sealed at a rotation: while they hold
    records the log says to keep the old key, the new key alone is
    refused, and with both every record reads back."""
    data = tmp_path / "data"
    old = key_file(tmp_path / "old.key", 3)
    new = key_file(tmp_path / "new.key", 4)

    def publish_to_stream(b, body):
        conn = pika.BlockingConnection(b.params())
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("rotated-stream", durable=True, arguments={"x-queue-type": "stream"})
        ch.basic_publish("", "rotated-stream", body, pika.BasicProperties(delivery_mode=2))
        conn.close()

    b = start(data, old)
    publish_to_stream(b, b"before-rotation")
    stop_warren(b)
    b = start(data, new, old)
    deadline = time.monotonic() + 30
    while not any("keep the old key file" in line for line in b.log):
        assert time.monotonic() < deadline, "\n".join(b.log[-20:])
        time.sleep(0.1)
    publish_to_stream(b, b"after-rotation")
    stop_warren(b)
    refused_start(data, "--encryption-key-file", str(new))
    b = start(data, new, old)
    conn = pika.BlockingConnection(b.params())
    got = read_all(conn, "rotated-stream", b"after-rotation").bodies()
    conn.close()
    stop_warren(b)
    assert got == [b"before-rotation", b"after-rotation"]
