"""Shovel throughput on one broker: N persistent messages of SIZE bytes are
put in queue `shovel-src` (warren-perf, confirms), then a dynamic shovel
(ack-mode on-confirm, prefetch 1000) moves them to `shovel-dst` through the
broker's own AMQP listener. Reports the delivered rate: messages that
arrived in `shovel-dst` per second, from the shovel's creation to the last
one (counted with passive declares, not the management API's sampled
stats), and the broker's CPU over that time.

    .venv/bin/python bench/shovel.py --amqp-port 5673 --http-port 15673 \\
        --broker-pid PID [--messages 200000] [--size 16] \\
        [--dest-amqp-port 5674 --dest-pid PID2]

With --dest-amqp-port the destination queue is on a second broker (the
shovel runs in the first; CPU is the sum of both). Works against Warren and
against RabbitMQ with its shovel plugin."""

import argparse
import os
import subprocess
import sys
import time

import pika
import requests

AUTH = ("guest", "guest")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--amqp-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--broker-pid", type=int, required=True)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--dest-amqp-port", type=int)
    p.add_argument("--dest-pid", type=int)
    a = p.parse_args()
    uri = f"amqp://guest:guest@127.0.0.1:{a.amqp_port}/%2F"
    dest_port = a.dest_amqp_port or a.amqp_port
    dest_uri = f"amqp://guest:guest@127.0.0.1:{dest_port}/%2F"
    api = f"http://127.0.0.1:{a.http_port}/api"
    pids = [a.broker_pid] + ([a.dest_pid] if a.dest_pid else [])
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", a.amqp_port, heartbeat=0))
    ch = conn.channel()
    dconn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", dest_port, heartbeat=0))
    dch = dconn.channel()
    for c, q in ((ch, "shovel-src"), (dch, "shovel-dst")):
        c.queue_delete(q)
        c.queue_declare(q, durable=True)
    perf = os.path.join(os.path.dirname(__file__), "..", "target", "release", "warren-perf")
    subprocess.run([perf, "--uri", uri, "-x", "1", "-y", "0", "-f", "-s", str(a.size),
                    "-c", "1000", "-C", str(a.messages), "-u", "shovel-src",
                    "--keep-queues", "--quiet"], check=True, stdout=subprocess.DEVNULL)
    assert count(ch, "shovel-src") == a.messages, count(ch, "shovel-src")
    cpu0, t0 = sum(map(cpu_seconds, pids)), time.monotonic()
    r = requests.put(f"{api}/parameters/shovel/%2F/bench", auth=AUTH, timeout=10, json={
        "value": {"src-uri": uri, "src-queue": "shovel-src",
                  "dest-uri": dest_uri, "dest-queue": "shovel-dst",
                  "ack-mode": "on-confirm", "src-prefetch-count": 1000}})
    r.raise_for_status()
    while count(dch, "shovel-dst") < a.messages:
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    cpu = sum(map(cpu_seconds, pids)) - cpu0
    requests.delete(f"{api}/parameters/shovel/%2F/bench", auth=AUTH, timeout=10)
    ch.queue_delete("shovel-src")
    dch.queue_delete("shovel-dst")
    conn.close()
    dconn.close()
    print(f"{a.messages} x {a.size} B persistent: {a.messages / elapsed:,.0f} msg/s delivered "
          f"({elapsed:.2f} s), broker CPU {cpu:.2f} s "
          f"({cpu / a.messages * 1e6:.1f} µs/msg)")


if __name__ == "__main__":
    sys.exit(main())
