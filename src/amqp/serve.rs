//! Serving an accepted socket: plain TCP or TLS (the TLS handshake with the
//! certificates current at that moment), the AMQP handshake, then the
//! connection's reader loop, and what happens when any of them ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::closing::{
    CLOSE_GRACE, closed_linger, discard_until_hangup, linger_for_close_ok, send_close_ok,
    send_connection_close,
};
use super::connection::Connection;
use super::handshake::{self, Link};
use super::outbox::Outbox;
use super::reader::{End, FrameReader, TlsRead, Transport};
use crate::broker::Broker;
use crate::broker::connections::ConnectionDetails;
use crate::tls::TlsInfo;

/// Serve one accepted TCP connection until it ends.
pub async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    watch_the_peer(&stream, &broker);
    let local = local_address(&stream);
    let (rd, wr) = stream.into_split();
    let link = Link {
        peer,
        local,
        tls: None,
    };
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
    watch_the_peer(&stream, &broker);
    let local = local_address(&stream);
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
        local,
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

/// Serve one connection over any transport until it ends: a socket, a TLS
/// stream, or the fuzz targets' in-memory input (`fuzzing::ConnectionHarness`).
///
/// Everything logged meanwhile is inside the connection's span, which names
/// it as RabbitMQ does (`127.0.0.1:45912 -> 127.0.0.1:5672`) and, once the
/// client has logged in, its vhost and user.
pub async fn serve<R: Transport, W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    reader: FrameReader<R>,
    wr: W,
    link: Link,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let name = ConnectionDetails::name_of(link.peer, link.local);
    let span = tracing::info_span!(
        "connection",
        connection = %name,
        vhost = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    serve_in(reader, wr, link, broker, shutdown, name, span.clone())
        .instrument(span)
        .await
}

async fn serve_in<R: Transport, W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut reader: FrameReader<R>,
    wr: W,
    link: Link,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    name: String,
    span: tracing::Span,
) {
    let peer = link.peer;
    tracing::info!("accepting AMQP connection {name}");
    let write_timeout = Duration::from_millis(broker.config.limits.write_timeout_ms);
    let outbox = Outbox::new(broker.config.limits.connection_buffer_bytes, write_timeout);
    reader.traffic = outbox.traffic.clone();
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
            discard_until_hangup(&mut reader, closed_linger(Duration::ZERO), &shutdown).await;
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
        let (user, vhost) = (conn.session.user.clone(), conn.session.vhost.name.clone());
        span.record("vhost", vhost.as_str());
        span.record("user", user.as_str());
        tracing::info!(
            tls = link.tls.is_some(),
            "connection {name}: user '{user}' authenticated and granted access to vhost '{vhost}'"
        );
        let closed_by_peer = conn.run(&mut reader, &shutdown).await;
        conn.teardown();
        broker.unregister_connection(conn.client.id);
        tracing::info!("closing AMQP connection ({name}, vhost: '{vhost}', user: '{user}')");
        if closed_by_peer {
            // As RabbitMQ: close-ok once the connection's channels and
            // exclusive queues are gone, then the client closes the socket.
            send_close_ok(&outbox);
            discard_until_hangup(&mut reader, closed_linger(conn.heartbeat), &shutdown).await;
        }
    }
    outbox.finish();
    let _ = timeout(CLOSE_GRACE, writer).await;
}

fn local_address(stream: &TcpStream) -> SocketAddr {
    stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Let the kernel notice a peer that is gone: TCP keepalive for an idle
/// one, and (Linux) a bound on how long sent data may stay unacknowledged
/// for one that vanished mid-transfer.
fn watch_the_peer(stream: &TcpStream, broker: &Broker) {
    let write_timeout = Duration::from_millis(broker.config.limits.write_timeout_ms);
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(5);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = socket.set_tcp_user_timeout(Some(write_timeout)) {
        tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = write_timeout;
}
