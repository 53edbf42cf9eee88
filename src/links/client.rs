//! Opening a link's AMQP connection: the first of its URIs that answers
//! (starting after the one that failed last), named so operators can find
//! it, and the far broker's cluster name, which federation marks messages
//! with.

use std::str::FromStr;
use std::time::Duration;

use amq_protocol::frame::{AMQPFrame, parse_frame};
use amq_protocol::protocol::{AMQPClass, connection};
use lapin::types::{AMQPValue, LongString};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection to one of a link's URIs.
pub struct Linked {
    pub connection: Connection,
    /// The URI used, without its password.
    pub shown_uri: String,
    /// Its vhost.
    pub vhost: String,
    /// The far broker's `cluster_name` server property, when it was read.
    pub cluster_name: Option<String>,
    /// Which of the URIs it is.
    pub index: usize,
}

/// A URI as RabbitMQ shows link URIs: without user, password or query
/// (`amqp://host:5672/vhost`).
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let rest = rest.split('?').next().unwrap_or("");
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{tail}")
}

/// Connect to the first of `uris` that answers, trying them from
/// `start`; the error names each failure.
pub async fn connect(uris: &[String], start: usize, name: &str) -> Result<Linked, String> {
    let mut failures = Vec::new();
    for i in 0..uris.len() {
        let index = (start + i) % uris.len();
        let uri = &uris[index];
        match connect_one(uri, name).await {
            Ok((connection, vhost, cluster_name)) => {
                return Ok(Linked {
                    connection,
                    shown_uri: redact(uri),
                    vhost,
                    cluster_name,
                    index,
                });
            }
            Err(e) => failures.push(format!("{}: {e}", redact(uri))),
        }
    }
    Err(failures.join("; "))
}

async fn connect_one(
    uri: &str,
    name: &str,
) -> Result<(Connection, String, Option<String>), String> {
    let parsed = AMQPUri::from_str(uri).map_err(|e| format!("bad URI: {e}"))?;
    if parsed.authority.host.is_empty() {
        return Err(
            "a URI without a host (a local direct connection) is not supported; \
                    give the broker's address"
                .into(),
        );
    }
    let vhost = parsed.vhost.clone();
    let tls = tls_config(uri)?;
    let cluster_name = match parsed.scheme {
        lapin::uri::AMQPScheme::AMQP => cluster_name_of(&parsed).await,
        // Read over TLS by lapin only; without it, cycle detection by name
        // is off for this link (max-hops still applies).
        lapin::uri::AMQPScheme::AMQPS => None,
    };
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let connecting = Connection::connect_with_config(uri, properties, tls, runtime);
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| e.to_string())?;
    Ok((connection, vhost, cluster_name))
}

/// TLS settings from RabbitMQ's URI query keys: `cacertfile` (PEM CAs
/// the server's certificate is checked against; the system's web roots
/// otherwise).
fn tls_config(uri: &str) -> Result<lapin::tcp::OwnedTLSConfig, String> {
    let mut config = lapin::tcp::OwnedTLSConfig::default();
    let Some((_, query)) = uri.split_once('?') else {
        return Ok(config);
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == "cacertfile" {
            let pem = std::fs::read_to_string(value.as_ref())
                .map_err(|e| format!("cannot read cacertfile {value}: {e}"))?;
            config.cert_chain = Some(pem);
        }
    }
    Ok(config)
}

/// The broker's `cluster_name`, read from its `connection.start` on a
/// connection of its own (lapin does not keep the server's properties).
async fn cluster_name_of(uri: &AMQPUri) -> Option<String> {
    let read = async {
        let addr = (uri.authority.host.as_str(), uri.authority.port);
        let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
        socket.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        // A frame: type (1), channel (2), size (4), payload, end (1).
        let mut buffer = Vec::with_capacity(4096);
        loop {
            if buffer.len() >= 7 {
                let size =
                    u32::from_be_bytes([buffer[3], buffer[4], buffer[5], buffer[6]]) as usize;
                if size > 1 << 20 {
                    return None;
                }
                if buffer.len() > 7 + size {
                    break;
                }
            }
            if socket.read_buf(&mut buffer).await.ok()? == 0 {
                return None;
            }
        }
        match parse_frame(buffer.as_slice()) {
            Ok((
                _,
                AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Start(start))),
            )) => match start.server_properties.inner().get("cluster_name") {
                Some(AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            },
            _ => None,
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f?heartbeat=5"),
            "amqp://host:5672/%2f"
        );
        assert_eq!(redact("amqp://host"), "amqp://host");
        assert_eq!(redact("amqps://u@h/v"), "amqps://h/v");
    }
}
