//! The socket under a [`Conn`](crate::conn::Conn): plain TCP, or TLS
//! (`amqps://`, rustls with the ring provider) split into halves that the
//! per-message loops read and write concurrently.
//!
//! A TLS write can leave encrypted bytes inside rustls when the socket is
//! full: tokio-rustls then returns the plaintext as written and sends the
//! rest only when polled again. [`Writer`] remembers that (`needs_flush`),
//! so the loops keep polling [`Writer::write_some`] until it is out even when
//! they have nothing new to write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use anyhow::{Context as _, Result, anyhow};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::client::TlsStream;

use crate::uri::{AmqpUri, TlsOptions};

pub enum Reader {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

pub enum Writer {
    Plain(OwnedWriteHalf),
    Tls {
        inner: WriteHalf<TlsStream<TcpStream>>,
        /// Encrypted bytes are still inside rustls.
        dirty: bool,
    },
}

/// Connect to `uri`, over TLS for `amqps://`.
pub async fn connect(uri: &AmqpUri) -> Result<(Reader, Writer)> {
    let stream = TcpStream::connect(uri.address())
        .await
        .with_context(|| format!("cannot connect to {}", uri.address()))?;
    stream.set_nodelay(true)?;
    let Some(tls) = &uri.tls else {
        let (rd, wr) = stream.into_split();
        return Ok((Reader::Plain(rd), Writer::Plain(wr)));
    };
    let connector = tokio_rustls::TlsConnector::from(client_config(tls)?);
    let name = rustls::pki_types::ServerName::try_from(uri.host.clone())
        .map_err(|e| anyhow!("'{}' is not a TLS server name: {e}", uri.host))?;
    let stream = connector
        .connect(name, stream)
        .await
        .with_context(|| format!("TLS handshake with {}", uri.address()))?;
    let (rd, wr) = tokio::io::split(stream);
    Ok((
        Reader::Tls(rd),
        Writer::Tls {
            inner: wr,
            dirty: false,
        },
    ))
}

fn client_config(tls: &TlsOptions) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &tls.cacertfile else {
        anyhow::bail!("amqps:// needs ?cacertfile=PATH (the CA bundle to trust)");
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {ca}"))? {
        roots
            .add(cert.with_context(|| format!("reading {ca}"))?)
            .with_context(|| format!("a certificate in {ca}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let config = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {cert}"))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("reading {cert}"))?;
            let key =
                PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {key}"))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => anyhow::bail!("certfile and keyfile go together"),
    };
    Ok(Arc::new(config))
}

impl Reader {
    /// Whether the peer has closed or sent something, without waiting
    /// (plain TCP only; a TLS connection is taken to be open).
    pub fn looks_idle(&self) -> bool {
        match self {
            Reader::Plain(rd) => {
                let mut buf = [0u8; 64];
                matches!(rd.try_read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Reader::Tls(_) => true,
        }
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Reader::Plain(rd) => Pin::new(rd).poll_read(cx, buf),
            Reader::Tls(rd) => Pin::new(rd).poll_read(cx, buf),
        }
    }
}

impl Writer {
    /// TLS bytes wait inside rustls: keep polling [`Writer::write_some`].
    pub fn needs_flush(&self) -> bool {
        matches!(self, Writer::Tls { dirty: true, .. })
    }

    /// Write some of `buf`, or with nothing to write push out what rustls
    /// still holds (returning 0). Cancel-safe: all of it happens in one poll.
    pub async fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        use tokio::io::AsyncWriteExt;
        if buf.is_empty() {
            self.flush().await?;
            return Ok(0);
        }
        self.write(buf).await
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(wr) => Pin::new(wr).poll_write(cx, buf),
            Writer::Tls { inner, dirty } => {
                if *dirty {
                    ready!(Pin::new(&mut *inner).poll_flush(cx))?;
                    *dirty = false;
                }
                let n = ready!(Pin::new(&mut *inner).poll_write(cx, buf))?;
                match Pin::new(&mut *inner).poll_flush(cx) {
                    Poll::Ready(r) => r?,
                    Poll::Pending => *dirty = true,
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(wr) => Pin::new(wr).poll_flush(cx),
            Writer::Tls { inner, dirty } => {
                ready!(Pin::new(inner).poll_flush(cx))?;
                *dirty = false;
                Poll::Ready(Ok(()))
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(wr) => Pin::new(wr).poll_shutdown(cx),
            Writer::Tls { inner, .. } => Pin::new(inner).poll_shutdown(cx),
        }
    }
}
