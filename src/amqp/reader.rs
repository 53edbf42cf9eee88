//! The read side of a connection: [`FrameReader`] reads the socket (any
//! [`Transport`]) into one buffer whose read size adapts to the traffic,
//! holds no buffer while idle, and cuts frames off it; [`End`] says why
//! reading stopped.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::tcp::OwnedReadHalf;

use super::codec::{self, Frame};
use crate::broker::connections::{RECV_CNT, RECV_OCT, Traffic};
use crate::error::AmqpError;

/// Frame size accepted before `tune-ok` (RabbitMQ's pre-auth limit is 8 KiB;
/// this is lenient for clients with large client-properties).
const HANDSHAKE_FRAME_MAX: u32 = 131_072;

/// Why the reader stopped.
#[derive(Debug)]
pub enum End {
    /// The socket closed or failed; nothing more to say.
    Closed,
    /// The peer sent `connection.close`; `close-ok` is sent once the
    /// connection's resources are released.
    ClosedByPeer,
    /// A hard error: send `connection.close` and wait for `close-ok`.
    Protocol(AmqpError),
}

/// Smallest and largest read size. Idle connections hold no buffer at all
/// while they wait (memory per connection matters with thousands of them);
/// a connection whose reads keep filling the buffer gets a larger one, so a
/// busy publisher needs few syscalls.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 256 * 1024;

/// The read side of a connection's transport: it can say whether anything
/// is there to read, so an idle reader need not hold a buffer while it waits.
pub trait Transport: Unpin + Send {
    /// Read what is there into `buf` without waiting; `WouldBlock` if
    /// nothing is.
    fn try_read_into(&mut self, buf: &mut BytesMut) -> std::io::Result<usize>;

    /// Wait until something can be read.
    fn readable(&mut self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Transport for OwnedReadHalf {
    fn try_read_into(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        self.try_read_buf(buf)
    }

    fn readable(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        OwnedReadHalf::readable(self)
    }
}

/// The read half of an AMQPS connection. A TLS stream cannot say whether
/// plaintext is waiting without decrypting it, so waiting for input reads
/// the first of it into a small stash, handed over by the next read.
pub struct TlsRead<S> {
    inner: tokio::io::ReadHalf<S>,
    stash: BytesMut,
}

impl<S> TlsRead<S> {
    pub fn new(inner: tokio::io::ReadHalf<S>) -> TlsRead<S> {
        TlsRead {
            inner,
            stash: BytesMut::new(),
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin + Send> Transport for TlsRead<S> {
    fn try_read_into(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        if !self.stash.is_empty() {
            let n = self.stash.len();
            buf.extend_from_slice(&self.stash);
            // Hold no stash while idle.
            self.stash = BytesMut::new();
            return Ok(n);
        }
        // One poll without a waker of ours: `readable` registers a real one
        // before the task sleeps.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match poll_read_into(&mut self.inner, &mut cx, buf) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    fn readable(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
        std::future::poll_fn(move |cx| {
            if !self.stash.is_empty() {
                return std::task::Poll::Ready(Ok(()));
            }
            self.stash.reserve(READ_MIN);
            match poll_read_into(&mut self.inner, cx, &mut self.stash) {
                std::task::Poll::Ready(Ok(0)) => {
                    std::task::Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()))
                }
                std::task::Poll::Ready(Ok(_)) => std::task::Poll::Ready(Ok(())),
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
    }
}

fn poll_read_into<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    cx: &mut std::task::Context<'_>,
    buf: &mut BytesMut,
) -> std::task::Poll<std::io::Result<usize>> {
    tokio_util::io::poll_read_buf(std::pin::Pin::new(reader), cx, buf)
}

/// Reads frames off a socket through one growing buffer.
pub struct FrameReader<R> {
    socket: R,
    buf: BytesMut,
    /// Current read size, adapted between READ_MIN and READ_MAX.
    read_size: usize,
    pub frame_max: u32,
    /// Where bytes read are counted (the connection's, once it has one).
    pub traffic: Arc<Traffic>,
}

impl<R: Transport> FrameReader<R> {
    pub fn new(socket: R) -> FrameReader<R> {
        FrameReader {
            socket,
            buf: BytesMut::new(),
            read_size: READ_MIN,
            frame_max: HANDSHAKE_FRAME_MAX,
            traffic: Arc::default(),
        }
    }

    /// Read whatever the socket has; `Ok(0)` means the peer closed.
    pub(super) async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.is_empty() && self.buf.capacity() > 4 * self.read_size {
            // A burst is over: give back its memory.
            self.buf = BytesMut::new();
        }
        loop {
            if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
                self.buf.reserve(self.read_size);
            }
            let room = self.buf.capacity() - self.buf.len();
            match self.socket.try_read_into(&mut self.buf) {
                Ok(n) => {
                    self.traffic.add(RECV_OCT, n as u64);
                    self.traffic.add(RECV_CNT, 1);
                    if n == room {
                        self.read_size = (self.read_size * 2).min(READ_MAX);
                    } else if n < self.read_size / 8 {
                        self.read_size = (self.read_size / 2).max(READ_MIN);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Nothing to read: hold no buffer while waiting.
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    self.socket.readable().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Drop whatever is buffered, unparsed.
    pub(super) fn discard_buffered(&mut self) {
        self.buf.clear();
    }

    pub(super) fn next_frame(&mut self) -> Result<Option<Frame>, AmqpError> {
        codec::decode(&mut self.buf, self.frame_max)
    }

    pub async fn read_exact_header(&mut self) -> Result<[u8; 8], End> {
        while self.buf.len() < 8 {
            if self.fill().await.map_err(|_| End::Closed)? == 0 {
                return Err(End::Closed);
            }
            // Anything that is clearly not AMQP can be answered right away.
            if !b"AMQP".starts_with(&self.buf[..self.buf.len().min(4)]) {
                break;
            }
        }
        let mut header = [0u8; 8];
        let n = self.buf.len().min(8);
        header[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(header)
    }

    pub async fn read_frame(&mut self) -> Result<Frame, End> {
        loop {
            if let Some(frame) = self.next_frame().map_err(End::Protocol)? {
                return Ok(frame);
            }
            if self.fill().await.map_err(|_| End::Closed)? == 0 {
                return Err(End::Closed);
            }
        }
    }
}
