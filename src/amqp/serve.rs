//! Serving an accepted socket: plain TCP or TLS (the TLS handshake with the
//! certificates current at that moment), the AMQP handshake, then the
//! connection's reader loop, and what happens when any of them ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::connection::{
    CLOSE_GRACE, Connection, linger_for_close_ok, send_close_ok, send_connection_close,
};
use super::handshake::{self, Link};
use super::outbox::Outbox;
use super::reader::{End, FrameReader, TlsRead, Transport};
use crate::broker::Broker;
use crate::tls::TlsInfo;

/// Serve one accepted TCP connection until it ends.
pub async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let link = Link { peer, tls: None };
    serve(FrameReader::new(rd), wr, link, broker, shutdown).await
}

/// Serve one accepted AMQPS connection: the TLS handshake (with the
/// certificates current now), then AMQP over it.
pub async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let handshake_timeout = Duration::from_millis(broker.config.limits.handshake_timeout_ms);
    let tls = match timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let info = TlsInfo::of(tls.get_ref().1);
    let link = Link {
        peer,
        tls: Some(info),
    };
    let (rd, wr) = tokio::io::split(tls);
    serve(
        FrameReader::new(TlsRead::new(rd)),
        wr,
        link,
        broker,
        shutdown,
    )
    .await
}

async fn serve<R: Transport, W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut reader: FrameReader<R>,
    wr: W,
    link: Link,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let peer = link.peer;
    let outbox = Outbox::new(broker.config.limits.connection_buffer_bytes);
    let writer = tokio::spawn(outbox.clone().run_writer(wr));

    let handshake_timeout = Duration::from_millis(broker.config.limits.handshake_timeout_ms);
    let negotiated = match timeout(
        handshake_timeout,
        handshake::run(&mut reader, &outbox, &broker, &link),
    )
    .await
    {
        Ok(Ok(n)) => Some(n),
        Ok(Err(End::Protocol(e))) => {
            send_connection_close(&outbox, &e);
            linger_for_close_ok(&mut reader).await;
            None
        }
        Ok(Err(End::ClosedByPeer)) => {
            send_close_ok(&outbox);
            None
        }
        Ok(Err(End::Closed)) => None,
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            None
        }
    };
    if let Some(negotiated) = negotiated {
        let mut conn = Connection::new(broker.clone(), peer, outbox.clone(), negotiated);
        tracing::info!(%peer, user = %conn.session.user, vhost = %conn.session.vhost.name, tls = link.tls.is_some(), "connection opened");
        conn.run(&mut reader, shutdown).await;
        conn.teardown();
        broker.unregister_connection(conn.client.id);
        tracing::info!(%peer, "connection closed");
    }
    outbox.finish();
    let _ = timeout(CLOSE_GRACE, writer).await;
}
