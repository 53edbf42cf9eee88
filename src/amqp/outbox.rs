//! A connection's outbound byte buffer and the task that writes it.
//!
//! Anyone may append complete frames to a connection's [`Outbox`]: its own
//! reader task (method replies, confirms) and queues delivering to its
//! consumers from other tasks. The writer task swaps the whole buffer out and
//! writes it with one syscall, so many frames share a `write`, and frames
//! queued while a write is in progress go out together in the next one.
//!
//! Back-pressure: once more than `limit` bytes wait, the outbox reports
//! itself congested; queues stop delivering to it and register to be poked,
//! and the reader stops reading new input from the client. When the writer
//! drains the buffer it pokes the waiting queues and wakes the reader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::codec;
use crate::broker::connections::{SEND_CNT, SEND_OCT, Traffic};
use crate::queue::Queue;

/// A written buffer is kept for reuse only up to this capacity, so one
/// burst (or one huge message) does not pin its memory for the life of the
/// connection.
const KEEP_AT_MOST: usize = 256 * 1024;

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Bytes buffered or in flight, as of the last change: read without the
    /// lock once per frame by the connection's reader.
    buffered_hint: AtomicUsize,
    wake_writer: Notify,
    drained: Notify,
    limit: usize,
    /// Heartbeat interval in milliseconds; 0 disables heartbeats.
    heartbeat_ms: AtomicU64,
    /// How long one write may take before the peer is given up on, without
    /// heartbeats (with them: two intervals, as RabbitMQ's deadline).
    write_timeout: Duration,
    /// Bytes and writes, for operators (the reader counts its side here
    /// too).
    pub traffic: Arc<Traffic>,
}

#[derive(Debug, Default)]
struct State {
    buf: BytesMut,
    /// Bytes handed to the socket but not yet written.
    in_flight: usize,
    /// Queues that found this connection congested and wait for room.
    waiting: Vec<Arc<Queue>>,
    /// Write what is buffered, then close the socket.
    finish: bool,
    /// The socket is gone: appends are dropped.
    dead: bool,
}

impl Outbox {
    pub fn new(limit: usize, write_timeout: Duration) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State::default()),
            buffered_hint: AtomicUsize::new(0),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            limit,
            heartbeat_ms: AtomicU64::new(0),
            write_timeout,
            traffic: Arc::default(),
        })
    }

    /// Append frames without waking the writer; the caller calls
    /// [`Outbox::flush`] when its batch is complete.
    pub fn append<R>(&self, f: impl FnOnce(&mut BytesMut) -> R) -> R {
        let mut st = self.state.lock();
        let r = f(&mut st.buf);
        if st.dead {
            // Nobody will write this; the connection is being torn down.
            st.buf.clear();
        }
        self.buffered_hint
            .store(st.buf.len() + st.in_flight, Ordering::Relaxed);
        r
    }

    /// Append frames and wake the writer.
    pub fn send<R>(&self, f: impl FnOnce(&mut BytesMut) -> R) -> R {
        let r = self.append(f);
        self.wake_writer.notify_one();
        r
    }

    /// Wake the writer if anything is waiting to be written.
    pub fn flush(&self) {
        if !self.state.lock().buf.is_empty() {
            self.wake_writer.notify_one();
        }
    }

    /// Whether the output is past its limit, as of its last change (no
    /// lock: cheap enough to ask after every frame).
    pub fn looks_congested(&self) -> bool {
        self.buffered_hint.load(Ordering::Relaxed) > self.limit
    }

    /// Bytes waiting to be written.
    pub fn buffered(&self) -> usize {
        let st = self.state.lock();
        st.buf.len() + st.in_flight
    }

    /// The writer has stopped: the socket failed or the peer stopped
    /// reading past its deadline.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    pub fn is_congested(&self) -> bool {
        let st = self.state.lock();
        !st.dead && st.buf.len() + st.in_flight > self.limit
    }

    /// Whether a queue may deliver more now. If not, remember the queue and
    /// poke it once the writer has drained the buffer.
    pub fn has_room_for(&self, queue: &Arc<Queue>) -> bool {
        let mut st = self.state.lock();
        if st.dead {
            return true; // deliveries go to the ledger and are requeued on close
        }
        if st.buf.len() + st.in_flight <= self.limit {
            return true;
        }
        if !st.waiting.iter().any(|q| Arc::ptr_eq(q, queue)) {
            st.waiting.push(queue.clone());
        }
        false
    }

    /// Wait until the buffer is below its limit.
    pub async fn room(&self) {
        loop {
            let notified = self.drained.notified();
            if !self.is_congested() {
                return;
            }
            notified.await;
        }
    }

    pub fn set_heartbeat(&self, interval: Duration) {
        self.heartbeat_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    /// Write what is buffered, then close the socket.
    pub fn finish(&self) {
        self.state.lock().finish = true;
        self.wake_writer.notify_one();
    }

    /// Write everything buffered to `socket` until [`Outbox::finish`] is
    /// called or the socket fails. Sends heartbeats when idle.
    pub async fn run_writer<W: AsyncWrite + Unpin>(self: Arc<Self>, mut socket: W) {
        let mut spare = BytesMut::new();
        let mut last_write = Instant::now();
        loop {
            let (mut batch, finish) = {
                let mut st = self.state.lock();
                std::mem::swap(&mut st.buf, &mut spare);
                st.in_flight = spare.len();
                (std::mem::take(&mut spare), st.finish)
            };
            if batch.is_empty() {
                if finish {
                    break;
                }
                self.drained.notify_waiters();
                // Going idle: hold no buffers while waiting (an idle
                // connection's memory is mostly what it keeps around).
                spare = BytesMut::new();
                {
                    let mut st = self.state.lock();
                    if st.buf.is_empty() {
                        st.buf = BytesMut::new();
                    }
                }
                let hb = self.heartbeat_ms.load(Ordering::Relaxed);
                if hb == 0 {
                    self.wake_writer.notified().await;
                    continue;
                }
                // Heartbeat when nothing has been *written* for half an
                // interval, however busy the inbound side is.
                let due = last_write + Duration::from_millis(hb / 2);
                tokio::select! {
                    _ = self.wake_writer.notified() => {}
                    _ = tokio::time::sleep_until(due) => {
                        self.append(codec::encode_heartbeat);
                    }
                }
                continue;
            }
            // A peer that stops reading stalls the write: past the
            // deadline it is given up on, as one that stops sending
            // heartbeats is.
            let hb = self.heartbeat_ms.load(Ordering::Relaxed);
            let deadline = if hb == 0 {
                self.write_timeout
            } else {
                Duration::from_millis(hb * 2)
            };
            // A TLS stream may keep encrypted bytes until flushed (for TCP
            // the flush is a no-op).
            let write = async {
                socket.write_all(&batch).await?;
                socket.flush().await
            };
            match tokio::time::timeout(deadline, write).await {
                Ok(Ok(())) => {
                    self.traffic.add(SEND_OCT, batch.len() as u64);
                    self.traffic.add(SEND_CNT, 1);
                }
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::debug!("a write stalled for {deadline:?}: giving the peer up");
                    break;
                }
            }
            last_write = Instant::now();
            batch.clear();
            if batch.capacity() > KEEP_AT_MOST {
                batch = BytesMut::new();
            }
            spare = batch;
            let pokes = {
                let mut st = self.state.lock();
                st.in_flight = 0;
                self.buffered_hint.store(st.buf.len(), Ordering::Relaxed);
                if st.buf.len() <= self.limit {
                    std::mem::take(&mut st.waiting)
                } else {
                    Vec::new()
                }
            };
            for q in pokes {
                q.dispatch();
            }
            self.drained.notify_waiters();
        }
        let _ = socket.flush().await;
        let _ = socket.shutdown().await;
        let mut st = self.state.lock();
        st.dead = true;
        st.buf = BytesMut::new();
        self.buffered_hint.store(0, Ordering::Relaxed);
        st.waiting.clear();
        drop(st);
        self.drained.notify_waiters();
    }
}
