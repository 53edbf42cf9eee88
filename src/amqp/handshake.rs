//! Opening a connection: protocol header, `connection.start`/`start-ok`
//! (SASL PLAIN, AMQPLAIN, or EXTERNAL with a client certificate),
//! `tune`/`tune-ok`, and `open` of a vhost, where the connection limits
//! are checked and the connection registered.
//!
//! A refused login follows RabbitMQ: 403 ACCESS_REFUSED ("Login was
//! refused…") for clients with `authentication_failure_close`, the reason
//! in the log (`PLAIN login refused: user 'x' - invalid credentials`), and
//! the socket closed only after a while. On top, an address that keeps
//! failing is answered ever later and, past a cap per minute, refused
//! unchecked (`broker::login_guard`).
//!
//! Negotiation follows RabbitMQ's rules: the client's `tune-ok` values are
//! final but may not exceed what the server offered, and a heartbeat of 0
//! disables heartbeats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BufMut;

use super::codec::{self, Frame, PROTOCOL_HEADER};
use super::open_channels::OpenChannels;
use super::outbox::Outbox;
use super::reader::{End, FrameReader, Transport};
use crate::broker::connections::ConnectionDetails;
use crate::broker::events::Login;
use crate::broker::{Broker, ClientConnection, RABBITMQ_VERSION, VHost};
use crate::error::AmqpError;
use crate::tls::TlsInfo;
use crate::tls::identity::{LoginFrom, login_name};
use tokio_util::sync::CancellationToken;

/// The transport a connection came in on.
#[derive(Clone, Debug)]
pub struct Link {
    pub peer: SocketAddr,
    /// Our end of the socket.
    pub local: SocketAddr,
    /// Set for AMQPS.
    pub tls: Option<TlsInfo>,
}

impl Link {
    /// A login attempt over this link, as events tell it.
    fn login<'a>(&self, user: &'a str, mechanism: &'a str) -> Login<'a> {
        Login {
            user,
            mechanism,
            peer: self.peer,
            local: self.local,
            tls: self.tls.is_some(),
        }
    }
}

/// What the client and server agreed on.
#[derive(Debug)]
pub struct Negotiated {
    pub user: String,
    pub vhost: Arc<VHost>,
    /// Registered with the broker (the connection limits let it in).
    pub client: Arc<ClientConnection>,
    /// Its channels, as the broker inspects them.
    pub open_channels: Arc<OpenChannels>,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
    pub client_properties: FieldTable,
    pub capabilities: ClientCapabilities,
}

/// Features the client said it understands (`capabilities` in its
/// client-properties).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientCapabilities {
    pub consumer_cancel_notify: bool,
    pub connection_blocked: bool,
    pub authentication_failure_close: bool,
}

impl ClientCapabilities {
    fn from_properties(props: &FieldTable) -> ClientCapabilities {
        let Some(AMQPValue::FieldTable(caps)) = props.inner().get("capabilities") else {
            return ClientCapabilities::default();
        };
        let flag = |name: &str| matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)));
        ClientCapabilities {
            consumer_cancel_notify: flag("consumer_cancel_notify"),
            connection_blocked: flag("connection.blocked"),
            authentication_failure_close: flag("authentication_failure_close"),
        }
    }
}

/// RabbitMQ closes a connection whose handshake failed only after this
/// (`?SILENT_CLOSE_DELAY`), so failed logins cannot be retried at full speed.
const SILENT_CLOSE_DELAY: Duration = Duration::from_secs(3);

/// The protocol header, then the connection-class handshake.
pub async fn run<R: Transport>(
    reader: &mut FrameReader<R>,
    outbox: &Arc<Outbox>,
    broker: &Broker,
    link: &Link,
) -> Result<Negotiated, End> {
    let header = reader.read_exact_header().await?;
    // RabbitMQ also serves 0-9-1 to clients that announce 0-9 the old way.
    if &header != PROTOCOL_HEADER && &header != b"AMQP\x01\x01\x00\x09" {
        // Tell the client which protocol we speak, then hang up.
        outbox.send(|buf| buf.put_slice(PROTOCOL_HEADER));
        return Err(End::Closed);
    }
    let mechanisms = offered_mechanisms(broker, link);
    outbox.send(|buf| codec::encode_method(buf, 0, &start(broker, &mechanisms)));

    let start_ok = match expect_connection_method(reader).await? {
        connection::AMQPMethod::StartOk(s) => s,
        other => return Err(unexpected(&other, "connection.start-ok")),
    };
    let capabilities = ClientCapabilities::from_properties(&start_ok.client_properties);
    let mechanism = start_ok.mechanism.as_str().to_string();
    let user = match login(broker, &start_ok, link, &mechanisms) {
        Ok(user) => user,
        Err(Refusal::Protocol(e)) => return Err(End::Protocol(e)),
        Err(Refusal::Login { user, reason }) => {
            return Err(refuse_login(broker, link, &mechanism, &user, &reason, capabilities).await);
        }
    };

    let limits = &broker.config.limits;
    let tune = connection::Tune {
        channel_max: limits.channel_max,
        frame_max: limits.frame_max,
        heartbeat: limits.heartbeat,
    };
    outbox.send(|buf| {
        codec::encode_method(
            buf,
            0,
            &AMQPClass::Connection(connection::AMQPMethod::Tune(tune.clone())),
        )
    });
    let tune_ok = match expect_connection_method(reader).await? {
        connection::AMQPMethod::TuneOk(t) => t,
        other => return Err(unexpected(&other, "connection.tune-ok")),
    };
    check_negotiated(
        "frame_max",
        4096,
        tune.frame_max.into(),
        tune_ok.frame_max.into(),
    )?;
    check_negotiated(
        "channel_max",
        1,
        tune.channel_max.into(),
        tune_ok.channel_max.into(),
    )?;
    reader.frame_max = frame_limit(tune_ok.frame_max, limits.max_message_size);

    let open = match expect_connection_method(reader).await? {
        connection::AMQPMethod::Open(o) => o,
        other => return Err(unexpected(&other, "connection.open")),
    };
    let vhost_name = open.virtual_host.as_str();
    let details = ConnectionDetails {
        name: ConnectionDetails::name_of(link.peer, link.local),
        local: link.local,
        client_properties: start_ok.client_properties.clone(),
        auth_mechanism: mechanism.clone(),
        frame_max: tune_ok.frame_max,
        channel_max: tune_ok.channel_max,
        heartbeat: tune_ok.heartbeat,
        tls: link
            .tls
            .as_ref()
            .map(|t| (t.protocol.clone(), t.cipher.clone())),
    };
    let admitted = admit(broker, link, outbox, &user, vhost_name, details);
    let Admitted {
        vhost,
        client,
        open_channels,
    } = match admitted {
        Ok(ok) => ok,
        Err(e) => {
            tracing::error!(peer = %link.peer, user = %user, "Error on AMQP connection: {}", e.detail);
            broker.audit.login(
                false,
                &user,
                link.peer,
                &mechanism,
                link.tls.is_some(),
                Some(vhost_name),
                Some(&e.detail),
            );
            return Err(End::Protocol(e.caused_by(10, 40)));
        }
    };
    broker.audit.login(
        true,
        &user,
        link.peer,
        &mechanism,
        link.tls.is_some(),
        Some(vhost_name),
        None,
    );
    outbox.send(|buf| {
        codec::encode_method(
            buf,
            0,
            &AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        )
    });
    Ok(Negotiated {
        user,
        vhost,
        client,
        open_channels,
        channel_max: tune_ok.channel_max,
        frame_max: tune_ok.frame_max,
        heartbeat: tune_ok.heartbeat,
        client_properties: start_ok.client_properties,
        capabilities,
    })
}

/// The largest frame the reader accepts. With `frame_max` 0 ("no limit")
/// a frame is still bounded by the largest message allowed.
fn frame_limit(negotiated: u32, max_message_size: u64) -> u32 {
    if negotiated != 0 {
        return negotiated;
    }
    u32::try_from(max_message_size.saturating_add(4096)).unwrap_or(u32::MAX)
}

/// `connection.open`: the vhost must exist and the user have permissions
/// on it, then the connection limits must let it in (registering it).
fn admit(
    broker: &Broker,
    link: &Link,
    outbox: &Arc<Outbox>,
    user: &str,
    vhost_name: &str,
    details: ConnectionDetails,
) -> Result<Admitted, AmqpError> {
    let vhost = broker
        .vhost(vhost_name)
        .ok_or_else(|| AmqpError::not_allowed(format!("vhost {vhost_name} not found")))?;
    if !broker.users.can_access_vhost(user, vhost_name) {
        return Err(AmqpError::not_allowed(format!(
            "access to vhost '{vhost_name}' refused for user '{user}'"
        )));
    }
    let open_channels = OpenChannels::new(outbox.clone());
    let client = Arc::new(ClientConnection {
        id: broker.next_id(),
        peer: link.peer,
        user: user.to_string(),
        vhost: vhost.name.clone(),
        connected_at: SystemTime::now(),
        tls: link.tls.is_some(),
        close: CancellationToken::new(),
        close_reason: Default::default(),
        flow: Default::default(),
        probe: open_channels.clone(),
        late_acks: Default::default(),
        details,
        traffic: outbox.traffic.clone(),
    });
    broker.admit_connection(client.clone())?;
    Ok(Admitted {
        vhost,
        client,
        open_channels,
    })
}

/// What `connection.open` let in.
struct Admitted {
    vhost: Arc<VHost>,
    client: Arc<ClientConnection>,
    open_channels: Arc<OpenChannels>,
}

/// Why `start-ok` did not log anyone in.
enum Refusal {
    /// A protocol error (unknown mechanism, unreadable response).
    Protocol(AmqpError),
    /// The credentials were refused: RabbitMQ's `auth_fail`.
    Login { user: String, reason: String },
}

/// Log, count and delay a refused login, then end the handshake as
/// RabbitMQ does: `connection.close` 403 for clients that understand
/// `authentication_failure_close`, a silent close after 3 s for others.
async fn refuse_login(
    broker: &Broker,
    link: &Link,
    mechanism: &str,
    user: &str,
    reason: &str,
    capabilities: ClientCapabilities,
) -> End {
    tracing::warn!(peer = %link.peer, "{mechanism} login refused: {reason}");
    broker.metrics.auth_attempt(link.peer.ip(), user, false);
    broker
        .events
        .authentication(&link.login(user, mechanism), Some(reason));
    broker.audit.login(
        false,
        user,
        link.peer,
        mechanism,
        link.tls.is_some(),
        None,
        Some(reason),
    );
    let step = Duration::from_millis(broker.config.auth.failed_login_delay_ms);
    let delay = broker.logins.failed(link.peer.ip().to_canonical(), step);
    tokio::time::sleep(delay).await;
    if capabilities.authentication_failure_close {
        // RabbitMQ names no method (0/0) in this close.
        End::Protocol(AmqpError::access_refused(format!(
            "Login was refused using authentication mechanism {mechanism}. For details see the \
             broker logfile."
        )))
    } else {
        tokio::time::sleep(SILENT_CLOSE_DELAY).await;
        End::Closed
    }
}

async fn expect_connection_method<R: Transport>(
    reader: &mut FrameReader<R>,
) -> Result<connection::AMQPMethod, End> {
    loop {
        match reader.read_frame().await? {
            Frame::Heartbeat { .. } => continue,
            Frame::Method { channel: 0, method } => match *method {
                AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                    return Err(End::ClosedByPeer);
                }
                AMQPClass::Connection(m) => return Ok(m),
                other => {
                    return Err(End::Protocol(
                        AmqpError::command_invalid("expected a connection method during handshake")
                            .caused_by(other.get_amqp_class_id(), other.get_amqp_method_id()),
                    ));
                }
            },
            _ => {
                return Err(End::Protocol(AmqpError::unexpected_frame(
                    "expected a method frame on channel 0 during handshake",
                )));
            }
        }
    }
}

fn unexpected(got: &connection::AMQPMethod, expected: &str) -> End {
    let class = AMQPClass::Connection(got.clone());
    End::Protocol(
        AmqpError::command_invalid(format!("expected '{expected}'"))
            .caused_by(class.get_amqp_class_id(), class.get_amqp_method_id()),
    )
}

/// RabbitMQ's rule: the client may lower a limit but not exceed it, and may
/// not ask for "unlimited" (0) when the server has a limit.
fn check_negotiated(field: &str, min: u64, server: u64, client: u64) -> Result<(), End> {
    let fail = |relation: &str, bound: &str, value: u64| {
        End::Protocol(
            AmqpError::not_allowed(format!(
                "negotiated {field} = {client} is {relation} than the {bound} allowed value ({value})"
            ))
            .caused_by(10, 31),
        )
    };
    if client != 0 && client < min {
        return Err(fail("lower", "minimum", min));
    }
    if server != 0 && (client == 0 || client > server) {
        return Err(fail("higher", "maximum", server));
    }
    Ok(())
}

/// The mechanisms offered on this link: the configured ones, EXTERNAL
/// only when the client presented a verified certificate.
fn offered_mechanisms(broker: &Broker, link: &Link) -> Vec<&'static str> {
    let has_cert = link
        .tls
        .as_ref()
        .is_some_and(|t| t.peer_certificate.is_some());
    ["PLAIN", "AMQPLAIN", "EXTERNAL"]
        .into_iter()
        .filter(|m| broker.config.auth.mechanisms.iter().any(|c| c == m))
        .filter(|m| *m != "EXTERNAL" || has_cert)
        .collect()
}

/// Check the credentials in `start-ok`; returns the user name.
fn login(
    broker: &Broker,
    start_ok: &connection::StartOk,
    link: &Link,
    offered: &[&str],
) -> Result<String, Refusal> {
    let mechanism = start_ok.mechanism.as_str();
    if !offered.contains(&mechanism) {
        let known = ["PLAIN", "AMQPLAIN", "EXTERNAL"].contains(&mechanism);
        let adjective = if known { "invalid" } else { "unknown" };
        return Err(Refusal::Protocol(
            AmqpError::command_invalid(format!(
                "{adjective} authentication mechanism '{mechanism}'"
            ))
            .caused_by(10, 11),
        ));
    }
    let ip = link.peer.ip().to_canonical();
    let cap = broker.config.auth.max_failed_logins_per_minute;
    let blocked = cap != 0 && broker.logins.recent_failures(ip) >= cap as usize;
    let user = if mechanism == "EXTERNAL" {
        let cert = link
            .tls
            .as_ref()
            .and_then(|t| t.peer_certificate.as_deref());
        let auth = &broker.config.auth;
        let how = LoginFrom {
            from: auth.ssl_cert_login_from.clone(),
            san_type: auth.ssl_cert_login_san_type.clone(),
            san_index: auth.ssl_cert_login_san_index,
        };
        let Some(name) = cert.and_then(|c| login_name(c, &how)) else {
            return Err(Refusal::Login {
                user: String::new(),
                reason: "no user name found in the client certificate".into(),
            });
        };
        if blocked {
            return Err(too_many(name, ip));
        }
        if broker.users.user(&name).is_none() {
            return Err(Refusal::Login {
                reason: format!("user '{name}' - invalid credentials"),
                user: name,
            });
        }
        name
    } else {
        let parsed = match mechanism {
            "PLAIN" => parse_plain(start_ok.response.as_bytes()),
            _ => parse_amqplain(start_ok.response.as_bytes()),
        };
        let (user, pass) = parsed.ok_or_else(|| {
            Refusal::Protocol(
                AmqpError::syntax_error(format!("{mechanism} response invalid")).caused_by(10, 11),
            )
        })?;
        if blocked {
            return Err(too_many(user, ip));
        }
        if broker.users.authenticate(&user, &pass).is_none() {
            return Err(Refusal::Login {
                reason: format!("user '{user}' - invalid credentials"),
                user,
            });
        }
        user
    };
    if !broker.allowed_from(&user, &link.peer) {
        return Err(Refusal::Login {
            reason: format!("user '{user}' can only connect via localhost"),
            user,
        });
    }
    broker.metrics.auth_attempt(link.peer.ip(), &user, true);
    broker
        .events
        .authentication(&link.login(&user, start_ok.mechanism.as_str()), None);
    Ok(user)
}

fn too_many(user: String, ip: std::net::IpAddr) -> Refusal {
    Refusal::Login {
        reason: format!(
            "user '{user}' - too many failed logins from {ip} in the last minute, not checked"
        ),
        user,
    }
}

/// SASL PLAIN: `authzid \0 user \0 password`.
fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.splitn(3, |b| *b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, pass))
}

/// AMQPLAIN: a field table without its length prefix, holding LOGIN and
/// PASSWORD.
fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    let mut framed = Vec::with_capacity(response.len() + 4);
    framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
    framed.extend_from_slice(response);
    if !crate::fields::nesting::table_depth_ok(&framed) {
        return None;
    }
    let (_, table) = parse_field_table(framed.as_slice()).ok()?;
    let text = |k: &str| match table.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

fn start(broker: &Broker, mechanisms: &[&str]) -> AMQPClass {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props.insert("cluster_name".into(), text(&broker.cluster_name()));
    props.insert("copyright".into(), text("Copyright (c) the Warren authors"));
    props.insert(
        "information".into(),
        text(&format!(
            "Warren {}, an AMQP 0-9-1 broker compatible with RabbitMQ {RABBITMQ_VERSION}",
            env!("CARGO_PKG_VERSION")
        )),
    );
    props.insert("platform".into(), text("Rust"));
    let advertised = &broker.config.server_properties;
    props.insert("product".into(), text(&advertised.product));
    props.insert("version".into(), text(&advertised.version));
    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: LongString::from(mechanisms.join(" ")),
        locales: LongString::from("en_US"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_responses_parse() {
        assert_eq!(
            parse_plain(b"\0guest\0secret"),
            Some(("guest".into(), "secret".into()))
        );
        assert_eq!(parse_plain(b"guest"), None);
        let amqplain = b"\x05LOGINS\x00\x00\x00\x05guest\x08PASSWORDS\x00\x00\x00\x05guest";
        assert_eq!(
            parse_amqplain(amqplain),
            Some(("guest".into(), "guest".into()))
        );
    }

    #[test]
    fn the_advertised_version_is_the_one_warren_follows() {
        let c = crate::config::Config::defaults();
        assert_eq!(c.server_properties.version, RABBITMQ_VERSION);
    }

    #[test]
    fn negotiation_follows_rabbitmq() {
        assert!(check_negotiated("frame_max", 4096, 131072, 131072).is_ok());
        assert!(check_negotiated("frame_max", 4096, 131072, 8192).is_ok());
        assert!(check_negotiated("frame_max", 4096, 131072, 0).is_err());
        assert!(check_negotiated("frame_max", 4096, 131072, 200_000).is_err());
        assert!(check_negotiated("frame_max", 4096, 131072, 100).is_err());
        assert!(check_negotiated("channel_max", 1, 0, 0).is_ok());
    }
}
