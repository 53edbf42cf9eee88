//! Opening a connection: protocol header, `connection.start`/`start-ok`
//! (SASL PLAIN or AMQPLAIN), `tune`/`tune-ok`, and `open` of a vhost.
//!
//! Negotiation follows RabbitMQ's rules: the client's `tune-ok` values are
//! final but may not exceed what the server offered, and a heartbeat of 0
//! disables heartbeats.

use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BufMut;

use super::codec::{self, Frame, PROTOCOL_HEADER};
use super::outbox::Outbox;
use super::reader::{End, FrameReader, Transport};
use crate::broker::{Broker, RABBITMQ_VERSION, VHost};
use crate::error::AmqpError;

/// What the client and server agreed on.
#[derive(Debug)]
pub struct Negotiated {
    pub user: String,
    pub vhost: Arc<VHost>,
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

/// The protocol header, then the connection-class handshake.
pub async fn run<R: Transport>(
    reader: &mut FrameReader<R>,
    outbox: &Outbox,
    broker: &Broker,
    peer: SocketAddr,
) -> Result<Negotiated, End> {
    let header = reader.read_exact_header().await?;
    // RabbitMQ also serves 0-9-1 to clients that announce 0-9 the old way.
    if &header != PROTOCOL_HEADER && &header != b"AMQP\x01\x01\x00\x09" {
        // Tell the client which protocol we speak, then hang up.
        outbox.send(|buf| buf.put_slice(PROTOCOL_HEADER));
        return Err(End::Closed);
    }
    outbox.send(|buf| codec::encode_method(buf, 0, &start(broker)));

    let start_ok = match expect_connection_method(reader).await? {
        connection::AMQPMethod::StartOk(s) => s,
        other => return Err(unexpected(&other, "connection.start-ok")),
    };
    let capabilities = ClientCapabilities::from_properties(&start_ok.client_properties);
    let user = authenticate(broker, &start_ok, peer).map_err(|refusal| {
        tracing::warn!(%peer, "{}", refusal.detail);
        if capabilities.authentication_failure_close {
            End::Protocol(refusal)
        } else {
            End::Closed
        }
    })?;

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
    reader.frame_max = tune_ok.frame_max;

    let open = match expect_connection_method(reader).await? {
        connection::AMQPMethod::Open(o) => o,
        other => return Err(unexpected(&other, "connection.open")),
    };
    let vhost_name = open.virtual_host.as_str();
    let vhost = broker.vhost(vhost_name).ok_or_else(|| {
        End::Protocol(
            AmqpError::not_allowed(format!("vhost {vhost_name} not found")).caused_by(10, 40),
        )
    })?;
    if !broker.users.can_access_vhost(&user, vhost_name) {
        return Err(End::Protocol(
            AmqpError::not_allowed(format!(
                "access to vhost '{vhost_name}' refused for user '{user}'"
            ))
            .caused_by(10, 40),
        ));
    }
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
        channel_max: tune_ok.channel_max,
        frame_max: tune_ok.frame_max,
        heartbeat: tune_ok.heartbeat,
        client_properties: start_ok.client_properties,
        capabilities,
    })
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

/// Check the credentials in `start-ok`; returns the user name.
fn authenticate(
    broker: &Broker,
    start_ok: &connection::StartOk,
    peer: SocketAddr,
) -> Result<String, AmqpError> {
    let mechanism = start_ok.mechanism.as_str();
    let (user, pass) = match mechanism {
        "PLAIN" => parse_plain(start_ok.response.as_bytes()),
        "AMQPLAIN" => parse_amqplain(start_ok.response.as_bytes()),
        other => {
            return Err(AmqpError::access_refused(format!(
                "unsupported authentication mechanism '{other}'"
            ))
            .caused_by(10, 11));
        }
    }
    .ok_or_else(|| {
        AmqpError::access_refused(format!("malformed {mechanism} authentication response"))
            .caused_by(10, 11)
    })?;
    if broker.users.authenticate(&user, &pass).is_none() {
        // RabbitMQ names no method (0/0) in this close.
        return Err(AmqpError::access_refused(format!(
            "Login was refused using authentication mechanism {mechanism}. For details see the \
             broker logfile."
        )));
    }
    if !broker.allowed_from(&user, &peer) {
        return Err(AmqpError::access_refused(format!(
            "User '{user}' can only connect via localhost"
        ))
        .caused_by(10, 11));
    }
    Ok(user)
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

fn start(broker: &Broker) -> AMQPClass {
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
    props.insert("cluster_name".into(), text(&broker.cluster_name));
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
        mechanisms: LongString::from("PLAIN AMQPLAIN"),
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
