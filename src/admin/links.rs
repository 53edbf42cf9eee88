//! `/api/shovels` and `/api/federation-links`: how each link is doing,
//! with the fields of RabbitMQ's shovel and federation management plugins,
//! and their restart calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::ApiError;
use super::auth::Caller;
use crate::broker::Broker;
use crate::broker::link_specs::{ShovelSource, ShovelSpec};
use crate::broker::link_status::{LinkKey, LinkStatus};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/shovels", get(all_shovels))
        .route("/api/shovels/{vhost}", get(vhost_shovels))
        .route(
            "/api/shovels/vhost/{vhost}/{name}",
            get(one_shovel).delete(delete_shovel),
        )
        .route(
            "/api/shovels/vhost/{vhost}/{name}/restart",
            delete(restart_shovel),
        )
        .route("/api/federation-links", get(all_federation_links))
        .route("/api/federation-links/{vhost}", get(vhost_federation_links))
        .route("/api/federation-links/state/down", get(all_links_down))
        .route("/api/federation-links/state/down/", get(all_links_down))
        .route(
            "/api/federation-links/{vhost}/state/down",
            get(vhost_links_down),
        )
        .route(
            "/api/federation-links/vhost/{vhost}/{id}/{node}/restart",
            delete(restart_federation_link),
        )
}

/// RabbitMQ's link timestamps: `2026-12-05 15:04:05` (UTC here).
fn timestamp(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

fn visible(
    caller: &Caller,
    b: &Broker,
    vhost: Option<&str>,
    shovels: bool,
) -> Vec<Arc<LinkStatus>> {
    b.links
        .all()
        .into_iter()
        .filter(|l| l.key.is_shovel() == shovels)
        .filter(|l| vhost.is_none_or(|v| l.key.vhost() == v))
        .filter(|l| caller.sees_vhost(l.key.vhost()))
        .collect()
}

fn shovel_json(b: &Broker, link: &LinkStatus) -> Value {
    let LinkKey::Shovel { vhost, name } = &link.key else {
        return Value::Null;
    };
    let state = link.state();
    let mut o = Map::new();
    o.insert("node".into(), json!(b.node_name));
    o.insert("timestamp".into(), json!(timestamp(state.since)));
    o.insert("name".into(), json!(name));
    o.insert("vhost".into(), json!(vhost));
    o.insert("type".into(), json!("dynamic"));
    o.insert("state".into(), json!(state.state));
    if state.state == "terminated"
        && let Some(reason) = &state.reason
    {
        o.insert("reason".into(), json!(reason));
    }
    let spec = b
        .parameters()
        .into_iter()
        .find(|p| p.component == "shovel" && &p.vhost == vhost && &p.name == name)
        .and_then(|p| ShovelSpec::parse(&p.value).ok());
    if state.state == "running"
        && let Some(spec) = spec
    {
        let (src, dest) = link.uris();
        o.insert("src_uri".into(), json!(src));
        o.insert("src_protocol".into(), json!("amqp091"));
        o.insert("dest_protocol".into(), json!("amqp091"));
        o.insert("dest_uri".into(), json!(dest));
        match &spec.source {
            ShovelSource::Queue { name, .. } => {
                o.insert("src_queue".into(), json!(name));
            }
            ShovelSource::Exchange { name, key } => {
                o.insert("src_exchange".into(), json!(name));
                o.insert("src_exchange_key".into(), json!(key));
            }
        }
        if let Some(q) = &spec.dest_queue {
            o.insert("dest_queue".into(), json!(q));
        }
        if let Some(x) = &spec.dest_exchange {
            o.insert("dest_exchange".into(), json!(x));
        }
        if let Some(k) = &spec.dest_exchange_key {
            o.insert("dest_exchange_key".into(), json!(k));
        }
    }
    with_counts(o, link)
}

/// Warren's counts, after RabbitMQ's fields.
fn with_counts(mut o: Map<String, Value>, link: &LinkStatus) -> Value {
    o.insert(
        "forwarded".into(),
        json!(link.forwarded.load(Ordering::Relaxed)),
    );
    o.insert(
        "reconnects".into(),
        json!(link.reconnects.load(Ordering::Relaxed)),
    );
    Value::Object(o)
}

/// The shovels (or federation links) the caller sees, in `vhost` or all.
fn list(caller: &Caller, b: &Broker, vhost: Option<&str>, shovels: bool) -> Json<Value> {
    let render = if shovels {
        shovel_json
    } else {
        federation_json
    };
    let items = visible(caller, b, vhost, shovels);
    Json(Value::Array(items.iter().map(|l| render(b, l)).collect()))
}

async fn all_shovels(caller: Caller, State(b): State<Arc<Broker>>) -> Json<Value> {
    list(&caller, &b, None, true)
}

async fn vhost_shovels(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.vhost(&vhost)?;
    Ok(list(&caller, &b, Some(&vhost), true))
}

fn find_shovel(
    caller: &Caller,
    b: &Broker,
    vhost: &str,
    name: &str,
) -> Result<Arc<LinkStatus>, ApiError> {
    caller.vhost(vhost)?;
    b.links
        .get(&LinkKey::Shovel {
            vhost: vhost.to_string(),
            name: name.to_string(),
        })
        .ok_or(ApiError::NotFound(None))
}

/// As RabbitMQ: the vhost's shovels, if this one exists.
async fn one_shovel(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    find_shovel(&caller, &b, &vhost, &name)?;
    Ok(list(&caller, &b, Some(&vhost), true))
}

/// Deletes the shovel's parameter (it stops).
async fn delete_shovel(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.policymaker(&vhost)?;
    find_shovel(&caller, &b, &vhost, &name)?;
    b.clear_parameter("shovel", &vhost, &name, &caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart_shovel(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.policymaker(&vhost)?;
    let link = find_shovel(&caller, &b, &vhost, &name)?;
    b.links.request_restart(&link.key);
    Ok(StatusCode::NO_CONTENT)
}

/// A link's id: stable for its vhost, federated object and upstream.
fn link_id(key: &LinkKey) -> String {
    let digest = sha2::Sha256::digest(format!("{key:?}").as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn federation_json(b: &Broker, link: &LinkStatus) -> Value {
    let state = link.state();
    let (uri, _) = link.uris();
    let mut o = Map::new();
    o.insert("node".into(), json!(b.node_name));
    match &link.key {
        LinkKey::Exchange {
            exchange, upstream, ..
        } => {
            o.insert("exchange".into(), json!(exchange));
            o.insert("upstream_exchange".into(), json!(link.upstream_name));
            o.insert("type".into(), json!("exchange"));
            o.insert("upstream".into(), json!(upstream));
        }
        LinkKey::Queue {
            queue, upstream, ..
        } => {
            o.insert("queue".into(), json!(queue));
            o.insert("upstream_queue".into(), json!(link.upstream_name));
            o.insert(
                "consumer_tag".into(),
                json!(format!("federation-link-{upstream}")),
            );
            o.insert("type".into(), json!("queue"));
            o.insert("upstream".into(), json!(upstream));
        }
        LinkKey::Shovel { .. } => return Value::Null,
    }
    o.insert("vhost".into(), json!(link.key.vhost()));
    o.insert("id".into(), json!(link_id(&link.key)));
    o.insert("status".into(), json!(state.state));
    if let Some(reason) = &state.reason {
        o.insert("error".into(), json!(reason));
    }
    o.insert("uri".into(), json!(uri));
    o.insert("timestamp".into(), json!(timestamp(state.since)));
    with_counts(o, link)
}

async fn all_federation_links(caller: Caller, State(b): State<Arc<Broker>>) -> Json<Value> {
    list(&caller, &b, None, false)
}

async fn vhost_federation_links(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.vhost(&vhost)?;
    Ok(list(&caller, &b, Some(&vhost), false))
}

/// Links neither running nor starting.
fn down(links: Vec<Arc<LinkStatus>>, b: &Broker) -> Json<Value> {
    Json(Value::Array(
        links
            .iter()
            .filter(|l| !matches!(l.state().state, "running" | "starting"))
            .map(|l| federation_json(b, l))
            .collect(),
    ))
}

async fn all_links_down(caller: Caller, State(b): State<Arc<Broker>>) -> Json<Value> {
    down(visible(&caller, &b, None, false), &b)
}

async fn vhost_links_down(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.vhost(&vhost)?;
    Ok(down(visible(&caller, &b, Some(&vhost), false), &b))
}

async fn restart_federation_link(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, id, node)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.policymaker(&vhost)?;
    if node != b.node_name {
        return Err(ApiError::NotFound(None));
    }
    let link = visible(&caller, &b, Some(&vhost), false)
        .into_iter()
        .find(|l| link_id(&l.key) == id)
        .ok_or(ApiError::NotFound(None))?;
    b.links.request_restart(&link.key);
    Ok(StatusCode::NO_CONTENT)
}
