"""How long an erasure by header takes (issue 19): fill a durable queue
(mostly kept only in the store: a 10,000-message memory window) and a
stream with MESSAGES persistent 256-byte messages each, one in EVERY
carrying the subject to erase, then time `POST /api/erasures/%2F`.
RabbitMQ has no such operation, so there is nothing to compare with.

    .venv/bin/python bench/erasure.py [--messages 200000] [--every 100]

Needs a release build (cargo build --release -p warren). Runs Warren on
5673/15673 with a temporary data directory.
"""

import argparse
import os
import subprocess
import tempfile
import time

import pika
import requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--every", type=int, default=100)
    a = ap.parse_args()
    data = tempfile.mkdtemp(prefix="warren-erasure-bench-")
    env = dict(os.environ, WARREN_STORAGE__QUEUE_MEMORY_MESSAGES="10000")
    broker = subprocess.Popen(
        ["target/release/warren", "--data-dir", data, "--amqp-port", "5673",
         "--admin-port", "15673", "--metrics-port", "15693"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5673))
        ch = conn.channel()
        ch.queue_declare("bench-erase-q", durable=True)
        ch.queue_declare("bench-erase-s", durable=True, arguments={"x-queue-type": "stream"})
        body = b"x" * 256
        for q in ("bench-erase-q", "bench-erase-s"):
            for i in range(a.messages):
                subject = "erase-me" if i % a.every == 0 else f"s{i % 997}"
                ch.basic_publish("", q, body, pika.BasicProperties(
                    delivery_mode=2, headers={"x-subject-id": subject}))
        # Everything is in (and synced) before the clock starts.
        api = "http://127.0.0.1:15673/api/queues/%2F/"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            counts = [requests.get(api + q, auth=("guest", "guest"), timeout=10).json()
                      .get("messages", 0) for q in ("bench-erase-q", "bench-erase-s")]
            if counts == [a.messages, a.messages]:
                break
            time.sleep(0.5)
        conn.close()
        started = time.monotonic()
        r = requests.post("http://127.0.0.1:15673/api/erasures/%2F", auth=("guest", "guest"),
                          json={"header": "x-subject-id", "value": "erase-me"}, timeout=600)
        took = time.monotonic() - started
        r.raise_for_status()
        report = r.json()
        per = {q["name"]: q["erased"] for q in report["queues"]}
        print(f"{a.messages} messages per queue, 1 in {a.every} erased: {per}; "
              f"{took:.2f} s ({2 * a.messages / took:,.0f} messages examined/s)")
    finally:
        broker.terminate()
        broker.wait()


if __name__ == "__main__":
    main()
