//! `/api/connections`, `/api/channels` and `/api/consumers`: live client
//! connections with their traffic, their channels, and every consumer.
//! Monitors see everyone's; other users see their own. `DELETE` on a
//! connection closes it with 320 CONNECTION_FORCED and the `X-Reason`
//! header as the reason.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::ApiError;
use super::auth::Caller;
use super::format::{add_deliver_get, counter, epoch_ms, message_stats};
use super::listing::{ListParams, Listing};
use super::queues::consumer_json;
use crate::broker::connections::{ChannelInfo, RECV_CNT, RECV_OCT, SEND_CNT, SEND_OCT};
use crate::broker::{Broker, ClientConnection};
use crate::fields::json::table_to_json;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/connections", get(list))
        .route("/api/connections/", get(list))
        .route("/api/vhosts/{vhost}/connections", get(list_vhost))
        .route(
            "/api/connections/username/{user}",
            get(list_user).delete(close_user),
        )
        .route("/api/connections/{name}", get(show).delete(close))
        .route("/api/connections/{name}/channels", get(channels_of))
        .route("/api/channels", get(channels))
        .route("/api/channels/", get(channels))
        .route("/api/vhosts/{vhost}/channels", get(channels_vhost))
        .route("/api/channels/{name}", get(channel))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/", get(consumers))
        .route("/api/consumers/{vhost}", get(consumers_vhost))
}

fn visible(
    caller: &Caller,
    b: &Broker,
    keep: impl Fn(&ClientConnection) -> bool,
) -> Vec<Arc<ClientConnection>> {
    let mut conns: Vec<Arc<ClientConnection>> = b
        .connections()
        .into_iter()
        .filter(|c| caller.sees_user(&c.user) && keep(c))
        .collect();
    conns.sort_by(|a, c| a.details.name.cmp(&c.details.name));
    conns
}

fn connection_json(b: &Broker, c: &ClientConnection) -> Value {
    let d = &c.details;
    let mut out = Map::new();
    let (counts, rates) = c.traffic.snapshot();
    let user_provided = d
        .client_properties
        .inner()
        .get("connection_name")
        .map(crate::fields::value_text);
    let state = if b.alarms.active().is_empty() {
        if c.flow.load(std::sync::atomic::Ordering::Relaxed) {
            "flow"
        } else {
            "running"
        }
    } else {
        "blocked"
    };
    let fields = json!({
        "name": d.name,
        "node": b.node_name,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": d.auth_mechanism,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "host": d.local.ip().to_canonical().to_string(),
        "port": d.local.port(),
        "peer_host": c.peer.ip().to_canonical().to_string(),
        "peer_port": c.peer.port(),
        "ssl": d.tls.is_some(),
        "ssl_protocol": d.tls.as_ref().map(|t| t.0.clone()),
        "ssl_cipher": d.tls.as_ref().map(|t| t.1.clone()),
        "ssl_hash": Value::Null,
        "ssl_key_exchange": Value::Null,
        "peer_cert_issuer": Value::Null,
        "peer_cert_subject": Value::Null,
        "peer_cert_validity": Value::Null,
        "client_properties": table_to_json(&d.client_properties),
        "user_provided_name": user_provided,
        "connected_at": epoch_ms(c.connected_at),
        "channel_max": d.channel_max,
        "frame_max": d.frame_max,
        "timeout": d.heartbeat,
        "channels": c.probe.channels().len(),
        "state": state,
        "send_pend": 0,
    });
    if let Value::Object(m) = fields {
        out = m;
    }
    counter(&mut out, "recv_oct", counts[RECV_OCT], rates[RECV_OCT]);
    counter(&mut out, "recv_cnt", counts[RECV_CNT], rates[RECV_CNT]);
    counter(&mut out, "send_oct", counts[SEND_OCT], rates[SEND_OCT]);
    counter(&mut out, "send_cnt", counts[SEND_CNT], rates[SEND_CNT]);
    Value::Object(out)
}

fn respond(
    b: &Broker,
    listing: Listing,
    conns: Vec<Arc<ClientConnection>>,
) -> Result<Response, ApiError> {
    listing.list(
        conns,
        "name",
        |c| &c.details.name,
        |c| Some(connection_json(b, c)),
    )
}

async fn list(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    respond(&b, params.check()?, visible(&caller, &b, |_| true))
}

async fn list_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.vhost(&vhost)?;
    respond(
        &b,
        params.check()?,
        visible(&caller, &b, |c| c.vhost == vhost),
    )
}

async fn list_user(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(user): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    respond(
        &b,
        params.check()?,
        visible(&caller, &b, |c| c.user == user),
    )
}

fn find(caller: &Caller, b: &Broker, name: &str) -> Result<Arc<ClientConnection>, ApiError> {
    visible(caller, b, |c| c.details.name == name)
        .pop()
        .ok_or_else(ApiError::not_found)
}

async fn show(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let c = find(&caller, &b, &name)?;
    Ok(params.check()?.one(connection_json(&b, &c)))
}

fn reason(headers: &HeaderMap) -> String {
    headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty())
        .unwrap_or("Closed via management plugin")
        .to_string()
}

async fn close(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let c = find(&caller, &b, &name)?;
    if !caller.is_admin() && c.user != caller.user.name {
        return Err(ApiError::NotAuthorised("Not administrator user".into()));
    }
    c.force_close(&reason(&headers));
    Ok(StatusCode::NO_CONTENT)
}

async fn close_user(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    if !caller.is_admin() && user != caller.user.name {
        return Err(ApiError::NotAuthorised("Not administrator user".into()));
    }
    let why = reason(&headers);
    for c in visible(&caller, &b, |c| c.user == user) {
        c.force_close(&why);
    }
    Ok(StatusCode::NO_CONTENT)
}

fn channel_json(b: &Broker, c: &ClientConnection, ch: &ChannelInfo) -> Value {
    let names: Vec<&str> = ch.stats.iter().map(|s| s.0).collect();
    let counts: Vec<u64> = ch.stats.iter().map(|s| s.1).collect();
    let rates: Vec<f64> = ch.stats.iter().map(|s| s.2).collect();
    let mut stats = message_stats(&names, &counts, &rates);
    add_deliver_get(&mut stats);
    let state = if ch.flow_stopped || c.flow.load(std::sync::atomic::Ordering::Relaxed) {
        "flow"
    } else {
        "running"
    };
    json!({
        "name": format!("{} ({})", c.details.name, ch.number),
        "number": ch.number,
        "node": b.node_name,
        "connection_details": {
            "name": c.details.name,
            "peer_host": c.peer.ip().to_canonical().to_string(),
            "peer_port": c.peer.port(),
        },
        "vhost": c.vhost,
        "user": c.user,
        "user_who_performed_action": c.user,
        "state": state,
        "consumer_count": ch.consumer_count,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "messages_unacknowledged": ch.messages_unacknowledged,
        "messages_unconfirmed": ch.messages_unconfirmed,
        "messages_uncommitted": ch.messages_uncommitted,
        "acks_uncommitted": ch.acks_uncommitted,
        "pending_raft_commands": 0,
        "message_stats": stats,
    })
}

type ChannelRow = (Arc<ClientConnection>, ChannelInfo, String);

fn channel_rows(conns: Vec<Arc<ClientConnection>>) -> Vec<ChannelRow> {
    conns
        .into_iter()
        .flat_map(|c| {
            c.probe
                .channels()
                .into_iter()
                .map(|ch| {
                    let name = format!("{} ({})", c.details.name, ch.number);
                    (c.clone(), ch, name)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn respond_channels(
    b: &Broker,
    params: ListParams,
    rows: Vec<ChannelRow>,
) -> Result<Response, ApiError> {
    params.check()?.list(
        rows,
        "name",
        |r| &r.2,
        |(c, ch, _)| Some(channel_json(b, c, ch)),
    )
}

async fn channels(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    respond_channels(&b, params, channel_rows(visible(&caller, &b, |_| true)))
}

async fn channels_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    caller.vhost(&vhost)?;
    let conns = visible(&caller, &b, |c| c.vhost == vhost);
    respond_channels(&b, params, channel_rows(conns))
}

async fn channels_of(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let c = find(&caller, &b, &name)?;
    respond_channels(&b, params, channel_rows(vec![c]))
}

async fn channel(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let row = channel_rows(visible(&caller, &b, |_| true))
        .into_iter()
        .find(|r| r.2 == name)
        .ok_or_else(ApiError::not_found)?;
    Ok(params.check()?.one(channel_json(&b, &row.0, &row.1)))
}

fn respond_consumers(
    caller: &Caller,
    b: &Broker,
    params: ListParams,
    vhost: Option<&str>,
) -> Result<Response, ApiError> {
    let mut rows: Vec<(String, Value)> = Vec::new();
    for v in caller.vhosts_for(vhost)? {
        for q in v.queues_sorted() {
            for c in q.view().consumers {
                rows.push((c.tag.as_str().to_string(), consumer_json(b, &q, &c)));
            }
        }
    }
    params
        .check()?
        .list(rows, "consumer_tag", |r| &r.0, |r| Some(r.1.clone()))
}

async fn consumers(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    respond_consumers(&caller, &b, params, None)
}

async fn consumers_vhost(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    respond_consumers(&caller, &b, params, Some(&vhost))
}
