"""Publisher confirms and transactions."""

import pytest
from pika.exceptions import ChannelClosedByBroker

from amqp_support import depth, pump, wait_until


def test_confirm_delivery_acks_every_publish(conn, names):
    ch = conn.channel()
    q = names.q("c")
    ch.queue_declare(q)
    ch.confirm_delivery()
    unroutable = names.q("unroutable")
    for i in range(200):
        # pika's confirming BlockingChannel waits for each publish's ack and
        # raises NackError on a nack.
        ch.basic_publish("", unroutable if i % 10 == 0 else q, str(i).encode())
    assert depth(ch, q, 180) == 180
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"1"


def test_confirms_cover_every_sequence_number_exactly_once(conn, names):
    """Publish without waiting: the acks, multiple or not, cover 1..N
    exactly once. (Not necessarily in order: RabbitMQ confirms an unroutable
    message at once and a routed one when its queue has it.)"""
    ch = conn.channel()
    q = names.q("seq")
    ch.queue_declare(q)
    acks, selected = [], []
    ch._impl.confirm_delivery(ack_nack_callback=lambda frame: acks.append(frame.method),
                              callback=lambda frame: selected.append(frame.method))
    assert wait_until(conn, lambda: selected, timeout=3)
    assert selected[0].NAME == "Confirm.SelectOk"
    n = 100
    for i in range(n):
        ch._impl.basic_publish("", q if i % 2 else names.q("nowhere"), b"x")
    pending = set(range(1, n + 1))

    def settle():
        while acks:
            a = acks.pop(0)
            assert a.NAME == "Basic.Ack", a
            if a.multiple:
                covered = {t for t in pending if t <= a.delivery_tag}
            else:
                assert a.delivery_tag in pending, f"tag {a.delivery_tag} confirmed twice"
                covered = {a.delivery_tag}
            pending.difference_update(covered)
        return not pending

    assert wait_until(conn, settle, timeout=5), f"never confirmed: {sorted(pending)}"
    # Nothing is confirmed twice.
    pump(conn, 0.1)
    assert acks == []
    assert depth(ch, q, n // 2) == n // 2


def test_tx_commit_and_rollback_apply_to_publishes(connect, names):
    conn = connect()
    ch = conn.channel()
    q = names.q("tx")
    ch.queue_declare(q)
    observer = connect().channel()
    ch.tx_select()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    # Not before the commit (wait a little for it to show up, wrongly).
    assert depth(observer, q, expect=1, timeout=0.3) == 0, "published before commit"
    ch.tx_commit()
    assert depth(observer, q, 2) == 2
    ch.basic_publish("", q, b"3")
    ch.tx_rollback()
    assert depth(observer, q, expect=3, timeout=0.3) == 2, "rolled-back publish enqueued"
    # The channel stays transactional: the next commit publishes only what
    # came after the rollback.
    ch.basic_publish("", q, b"4")
    ch.tx_commit()
    assert depth(observer, q, 3) == 3
    bodies = [observer.basic_get(q, auto_ack=True)[2] for _ in range(3)]
    assert bodies == [b"1", b"2", b"4"]


def test_tx_commit_and_rollback_apply_to_acks(connect, names):
    conn = connect()
    observer = connect().channel()
    q = names.q("txack")
    observer.queue_declare(q)
    observer.basic_publish("", q, b"m")

    # A rolled-back ack is undone: closing the channel requeues the message.
    ch = conn.channel()
    ch.tx_select()
    method, _, _ = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()
    ch.close()
    assert depth(observer, q, 1) == 1

    # A committed ack sticks.
    ch = conn.channel()
    ch.tx_select()
    method, _, body = ch.basic_get(q)
    assert (body, method.redelivered) == (b"m", True)
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert depth(observer, q, expect=1, timeout=0.3) == 0


def test_tx_ack_and_publish_commit_together(connect, names):
    conn = connect()
    observer = connect().channel()
    src, dst = names.q("src"), names.q("dst")
    observer.queue_declare(src)
    observer.queue_declare(dst)
    observer.basic_publish("", src, b"work")
    ch = conn.channel()
    ch.tx_select()
    method, _, body = ch.basic_get(src)
    ch.basic_publish("", dst, body + b" done")
    ch.basic_ack(method.delivery_tag)
    assert depth(observer, dst, expect=1, timeout=0.2) == 0
    ch.tx_commit()
    assert depth(observer, dst, 1) == 1
    ch.close()
    assert depth(observer, src, expect=1, timeout=0.2) == 0
    assert observer.basic_get(dst, auto_ack=True)[2] == b"work done"


def test_tx_and_confirm_modes_exclude_each_other(conn):
    ch = conn.channel()
    ch.tx_select()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.confirm_delivery()
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")

    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.tx_select()
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")

    for op in ("tx_commit", "tx_rollback"):
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as ei:
            getattr(ch, op)()
        assert (ei.value.reply_code, ei.value.reply_text) == (
            406, "PRECONDITION_FAILED - channel is not transactional"), op
    assert conn.is_open
