//! `/api/bindings` in every form RabbitMQ has: all, per vhost, between an
//! exchange and a queue (`…/e/{source}/q/{queue}`) or two exchanges
//! (`…/e/{source}/e/{destination}`), one binding by its `properties_key`,
//! and the views from an exchange (`bindings/source`,
//! `bindings/destination`) and from a queue.
//!
//! A binding's `properties_key` is RabbitMQ's: `~` for an empty routing
//! key without arguments, else the percent-encoded key, plus `~` and a
//! hash of the arguments when there are any. The implicit binding of every
//! queue to the default exchange is listed, as RabbitMQ lists it.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::body::JsonBody;
use super::exchanges::path_name;
use super::listing::ListParams;
use super::queues::arguments;
use super::{ApiError, durable, short_name};
use crate::broker::Broker;
use crate::broker::VHost;
use crate::broker::auth::Access;
use crate::broker::bindings::{Binding, DestinationName};
use crate::fields;
use crate::fields::json::table_to_json;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/bindings", get(list_all))
        .route("/api/bindings/", get(list_all))
        .route("/api/bindings/{vhost}", get(list_vhost))
        .route(
            "/api/bindings/{vhost}/e/{source}/q/{destination}",
            get(between_queue).post(bind_queue),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/q/{destination}/{props}",
            get(show_queue).delete(unbind_queue),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/e/{destination}",
            get(between_exchange).post(bind_exchange),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/e/{destination}/{props}",
            get(show_exchange).delete(unbind_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(from_exchange),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(to_exchange),
        )
        .route("/api/queues/{vhost}/{name}/bindings", get(to_queue))
}

/// RabbitMQ quotes a properties key as a form value (a space is `+`),
/// so `~` is escaped and separates the key from the arguments' hash.
/// A path segment: RFC 3986's unreserved characters stay.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn quote(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// RabbitMQ's `properties_key` of a binding.
pub fn properties_key(b: &Binding) -> String {
    let key = b.routing_key.as_str();
    if b.arguments.inner().is_empty() {
        if key.is_empty() {
            return "~".into();
        }
        return quote(key);
    }
    let wire =
        fields::generate(|ctx| amq_protocol::types::generation::gen_field_table(&b.arguments)(ctx));
    let hash = URL_SAFE_NO_PAD.encode(md5::compute(&wire).0);
    format!("{}~{hash}", quote(key))
}

/// Whether a path's `props` segment (decoded once by the router, and
/// maybe once more by the client's own encoding) names `b`.
fn matches_props(b: &Binding, props: &str) -> bool {
    let key = properties_key(b);
    let decoded: String = form_urlencoded::parse(format!("k={key}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .collect();
    key == props || decoded == props
}

fn binding_json(vhost: &str, b: &Binding) -> Value {
    let (destination_type, destination) = match &b.destination {
        DestinationName::Queue(q) => ("queue", q.as_str()),
        DestinationName::Exchange(x) => ("exchange", x.as_str()),
    };
    json!({
        "source": b.source.as_str(),
        "vhost": vhost,
        "destination": destination,
        "destination_type": destination_type,
        "routing_key": b.routing_key.as_str(),
        "arguments": table_to_json(&b.arguments),
        "properties_key": properties_key(b),
    })
}

/// Every binding of a vhost, the default exchange's implicit ones first,
/// in RabbitMQ's order (source, destination type, destination, key).
fn bindings_of(v: &VHost) -> Vec<Binding> {
    let mut explicit = v.bindings();
    explicit.sort_by(|a, b| {
        (a.source.as_str(), &a.destination, a.routing_key.as_str()).cmp(&(
            b.source.as_str(),
            &b.destination,
            b.routing_key.as_str(),
        ))
    });
    let mut all: Vec<Binding> = v
        .queues_sorted()
        .iter()
        .map(|q| Binding {
            source: "".into(),
            destination: DestinationName::Queue(q.config.name.clone()),
            routing_key: q.config.name.clone(),
            arguments: Default::default(),
        })
        .collect();
    all.extend(explicit);
    all
}

type Row = (Arc<VHost>, Binding);

fn respond(params: ListParams, rows: Vec<Row>) -> Result<Response, ApiError> {
    params.check()?.list(
        rows,
        "source",
        |(_, b)| b.source.as_str(),
        |(v, b)| Some(binding_json(&v.name, b)),
    )
}

fn rows(v: &Arc<VHost>, keep: impl Fn(&Binding) -> bool) -> Vec<Row> {
    bindings_of(v)
        .into_iter()
        .filter(|b| keep(b))
        .map(|b| (v.clone(), b))
        .collect()
}

async fn list_all(caller: Caller, Query(params): Query<ListParams>) -> Result<Response, ApiError> {
    let rows: Vec<Row> = caller
        .visible_vhosts()
        .iter()
        .flat_map(|v| rows(v, |_| true))
        .collect();
    respond(params, rows)
}

async fn list_vhost(
    caller: Caller,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let v = caller.vhost(&vhost)?;
    respond(params, rows(&v, |_| true))
}

fn is_queue(b: &Binding, name: &str) -> bool {
    matches!(&b.destination, DestinationName::Queue(q) if q.as_str() == name)
}

fn is_exchange(b: &Binding, name: &str) -> bool {
    matches!(&b.destination, DestinationName::Exchange(x) if x.as_str() == name)
}

/// The source exchange and destination a binding route names, both
/// existing: 404 otherwise.
fn ends(
    caller: &Caller,
    vhost: &str,
    source: &str,
    destination: &str,
    to_queue: bool,
) -> Result<Arc<VHost>, ApiError> {
    let v = caller.vhost(vhost)?;
    match missing_end(&v, source, destination, to_queue) {
        Some(_) => Err(ApiError::not_found()),
        None => Ok(v),
    }
}

/// What a binding's ends lack, in RabbitMQ's words.
fn missing_end(v: &VHost, source: &str, destination: &str, to_queue: bool) -> Option<String> {
    if v.exchange(path_name(source)).is_none() {
        return Some(format!(
            "no exchange '{}' in vhost '{}'",
            path_name(source),
            v.name
        ));
    }
    if to_queue && v.find_queue(destination).is_none() {
        return Some(format!("no queue '{destination}' in vhost '{}'", v.name));
    }
    if !to_queue && v.exchange(path_name(destination)).is_none() {
        return Some(format!(
            "no exchange '{}' in vhost '{}'",
            path_name(destination),
            v.name
        ));
    }
    None
}

async fn between_queue(
    caller: Caller,
    Path((vhost, source, destination)): Path<(String, String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let v = ends(&caller, &vhost, &source, &destination, true)?;
    let source = path_name(&source);
    respond(
        params,
        rows(&v, |b| {
            b.source.as_str() == source && is_queue(b, &destination)
        }),
    )
}

async fn between_exchange(
    caller: Caller,
    Path((vhost, source, destination)): Path<(String, String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let v = ends(&caller, &vhost, &source, &destination, false)?;
    let (source, destination) = (path_name(&source), path_name(&destination));
    respond(
        params,
        rows(&v, |b| {
            b.source.as_str() == source && is_exchange(b, destination)
        }),
    )
}

fn show(
    caller: &Caller,
    params: ListParams,
    (vhost, source, destination, props): (String, String, String, String),
    to_queue: bool,
) -> Result<Response, ApiError> {
    let v = ends(caller, &vhost, &source, &destination, to_queue)?;
    let (source, dest) = (path_name(&source), path_name(&destination));
    let found = rows(&v, |b| {
        b.source.as_str() == source
            && if to_queue {
                is_queue(b, dest)
            } else {
                is_exchange(b, dest)
            }
            && matches_props(b, &props)
    })
    .pop()
    .ok_or_else(ApiError::not_found)?;
    Ok(params.check()?.one(binding_json(&v.name, &found.1)))
}

async fn show_queue(
    caller: Caller,
    Path(p): Path<(String, String, String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    show(&caller, params, p, true)
}

async fn show_exchange(
    caller: Caller,
    Path(p): Path<(String, String, String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    show(&caller, params, p, false)
}

/// The body of a binding `POST`.
#[derive(Debug, Default, Deserialize)]
struct BindBody {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Value,
}

/// Bind, with the checks `queue.bind` / `exchange.bind` make; answers 201
/// with the new binding's `Location` (`{destination}/{properties_key}`).
async fn bind(
    caller: Caller,
    b: Arc<Broker>,
    (vhost, source, destination): (String, String, String),
    body: BindBody,
    to_queue: bool,
) -> Result<Response, ApiError> {
    // Binding runs on a channel: a missing end is its 404 `not_found`.
    let v = caller.vhost(&vhost)?;
    if let Some(missing) = missing_end(&v, &source, &destination, to_queue) {
        return Err(ApiError::Missing(missing));
    }
    let (source, dest) = (path_name(&source), path_name(&destination));
    let kind = if to_queue { "queue" } else { "exchange" };
    let key = short_name(&body.routing_key, "routing key")?;
    let args = arguments(&body.arguments)?;
    caller.check(&vhost, Access::Write, kind, dest)?;
    caller.check(&vhost, Access::Read, "exchange", source)?;
    if let Some(x) = v.exchange(source) {
        caller.check_topic(&vhost, &x, Access::Read, key.as_str())?;
    }
    let durability = if to_queue {
        v.bind_queue(0, dest, source, key.as_str(), &args, &caller.user.name)?
    } else {
        v.bind_exchange(dest, source, key.as_str(), &args, &caller.user.name)?
    };
    durable(&b, durability).await?;
    let binding = Binding {
        source: source.into(),
        destination: if to_queue {
            DestinationName::Queue(short_name(dest, "destination")?)
        } else {
            DestinationName::Exchange(short_name(dest, "destination")?)
        },
        routing_key: key,
        arguments: args,
    };
    // Each part percent-quoted; the key was quoted already, so `%23` is
    // `%2523` here, as RabbitMQ writes it.
    let location = format!(
        "{}/{}",
        utf8_percent_encode(dest, SEGMENT),
        utf8_percent_encode(&properties_key(&binding), SEGMENT)
    );
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(h) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, h);
    }
    Ok(r)
}

async fn bind_queue(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(p): Path<(String, String, String)>,
    JsonBody(body): JsonBody<BindBody>,
) -> Result<Response, ApiError> {
    bind(caller, b, p, body, true).await
}

async fn bind_exchange(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(p): Path<(String, String, String)>,
    JsonBody(body): JsonBody<BindBody>,
) -> Result<Response, ApiError> {
    bind(caller, b, p, body, false).await
}

async fn unbind(
    caller: Caller,
    b: Arc<Broker>,
    (vhost, source, destination, props): (String, String, String, String),
    to_queue: bool,
) -> Result<StatusCode, ApiError> {
    let v = ends(&caller, &vhost, &source, &destination, to_queue)?;
    let (source, dest) = (path_name(&source), path_name(&destination));
    let found = v
        .bindings()
        .into_iter()
        .find(|bd| {
            bd.source.as_str() == source
                && if to_queue {
                    is_queue(bd, dest)
                } else {
                    is_exchange(bd, dest)
                }
                && matches_props(bd, &props)
        })
        .ok_or_else(ApiError::not_found)?;
    let kind = if to_queue { "queue" } else { "exchange" };
    caller.check(&vhost, Access::Write, kind, dest)?;
    caller.check(&vhost, Access::Read, "exchange", source)?;
    let key = found.routing_key.as_str();
    let durability = if to_queue {
        v.unbind_queue(0, dest, source, key, &found.arguments, &caller.user.name)?
    } else {
        v.unbind_exchange(dest, source, key, &found.arguments, &caller.user.name)?
    };
    durable(&b, durability).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unbind_queue(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(p): Path<(String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    unbind(caller, b, p, true).await
}

async fn unbind_exchange(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path(p): Path<(String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    unbind(caller, b, p, false).await
}

async fn from_exchange(
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let v = caller.vhost(&vhost)?;
    let name = path_name(&name);
    v.exchange(name).ok_or_else(ApiError::not_found)?;
    respond(params, rows(&v, |b| b.source.as_str() == name))
}

async fn to_exchange(
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let v = caller.vhost(&vhost)?;
    let name = path_name(&name);
    v.exchange(name).ok_or_else(ApiError::not_found)?;
    respond(params, rows(&v, |b| is_exchange(b, name)))
}

async fn to_queue(
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let v = caller.vhost(&vhost)?;
    let q = v.find_queue(&name).ok_or_else(ApiError::not_found)?;
    // Only this queue's: not the default bindings of every queue.
    let mut found = vec![(
        v.clone(),
        Binding {
            source: "".into(),
            destination: DestinationName::Queue(q.config.name.clone()),
            routing_key: q.config.name.clone(),
            arguments: Default::default(),
        },
    )];
    let mut explicit: Vec<Binding> = v
        .bindings()
        .into_iter()
        .filter(|b| is_queue(b, &name))
        .collect();
    explicit.sort_by(|a, b| {
        (a.source.as_str(), a.routing_key.as_str())
            .cmp(&(b.source.as_str(), b.routing_key.as_str()))
    });
    found.extend(explicit.into_iter().map(|b| (v.clone(), b)));
    respond(params, found)
}
