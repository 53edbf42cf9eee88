//! How a connection ends on the wire, in either direction.
//!
//! When the broker closes (a hard error, shutdown, a force-close), it sends
//! `connection.close` and discards input until `close-ok` arrives or a grace
//! period ends ([`linger_for_close_ok`]). When the client closes, the broker
//! answers `close-ok` and, as RabbitMQ does, leaves closing the socket to
//! the client ([`discard_until_hangup`]): a client may still be writing
//! frames it queued behind its `connection.close` (amqplib's muxer
//! interleaves them), and closing the socket under it resets the
//! connection, so its writes fail and it may never read `close-ok`.

use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, connection};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::codec::{self, Frame};
use super::outbox::Outbox;
use super::reader::{FrameReader, Transport};
use crate::error::AmqpError;

/// How long a peer has to answer our `connection.close`.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// The longest a client may keep a closed connection's socket open
/// (RabbitMQ's `?CLOSING_TIMEOUT`).
const CLOSED_LINGER_MAX: Duration = Duration::from_secs(30);

/// How long a client may keep the socket of a connection it closed: the
/// negotiated heartbeat interval, at most 30 s, or 30 s without heartbeats.
/// Measured on RabbitMQ 3.10.8: it resets the socket 4 s after `close-ok`
/// with a 4 s heartbeat, 30 s after it with none.
pub fn closed_linger(heartbeat: Duration) -> Duration {
    if heartbeat.is_zero() {
        CLOSED_LINGER_MAX
    } else {
        heartbeat.min(CLOSED_LINGER_MAX)
    }
}

pub fn send_connection_close(outbox: &Outbox, e: &AmqpError) {
    let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: e.code.code(),
        reply_text: e.reply_text().into(),
        class_id: e.class_id,
        method_id: e.method_id,
    }));
    outbox.send(|buf| codec::encode_method(buf, 0, &close));
}

pub fn send_close_ok(outbox: &Outbox) {
    let ok = AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
    outbox.send(|buf| codec::encode_method(buf, 0, &ok));
}

/// After sending `connection.close`, discard input until `close-ok` (or
/// `close`) arrives, the peer hangs up, or the grace period ends.
pub async fn linger_for_close_ok<R: Transport>(reader: &mut FrameReader<R>) {
    let deadline = Instant::now() + CLOSE_GRACE;
    loop {
        loop {
            match reader.next_frame() {
                Ok(Some(Frame::Method { channel: 0, method })) => {
                    if matches!(
                        *method,
                        AMQPClass::Connection(
                            connection::AMQPMethod::CloseOk(_) | connection::AMQPMethod::Close(_)
                        )
                    ) {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        match timeout_at(deadline, reader.fill()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// After answering the client's `connection.close` with `close-ok`: read
/// and drop whatever still arrives, without parsing it, until the client
/// hangs up, `linger` passes, or the broker shuts down. The write side stays
/// open meanwhile (a half-close would make Node's sockets, which do not
/// allow half-open connections, end their own writes with `EPIPE`).
pub async fn discard_until_hangup<R: Transport>(
    reader: &mut FrameReader<R>,
    linger: Duration,
    shutdown: &CancellationToken,
) {
    let deadline = Instant::now() + linger;
    loop {
        reader.discard_buffered();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            read = timeout_at(deadline, reader.fill()) => match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            },
        }
    }
}
