//! `/api/exchanges`: exchanges with their publish counts; declared,
//! deleted and published to over HTTP with the caller's permissions. The
//! default exchange is `""` in lists and `amq.default` in paths.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::body::JsonBody;
use super::format::message_stats;
use super::listing::{ListParams, Listing};
use super::message_json::{payload, properties_from_json};
use super::queues::arguments;
use super::{ApiError, created_or_updated, durable, short_name};
use crate::broker::auth::Access;
use crate::broker::enqueue::Routed;
use crate::broker::super_stream::partition_names;
use crate::broker::vhost::ExchangeDeclare;
use crate::broker::{Broker, VHost};
use crate::exchange::{Exchange, RouteHeaders};
use crate::fields::json::table_to_json;
use crate::message::{self, Message};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/exchanges", get(list_all))
        .route("/api/exchanges/", get(list_all))
        .route("/api/exchanges/{vhost}", get(list_vhost))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(show).put(put).delete(delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        // rabbitmqadmin names the default exchange with an empty segment.
        .route("/api/exchanges/{vhost}//publish", post(publish_default))
}

/// The exchange a path names (`amq.default` is the default exchange).
pub fn path_name(name: &str) -> &str {
    if name == "amq.default" { "" } else { name }
}

pub fn exchange_json(x: &Exchange, vhost: &str, listing: &Listing) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), x.name.as_str().into());
    out.insert("vhost".into(), vhost.into());
    out.insert("type".into(), x.kind.as_str().into());
    out.insert("durable".into(), x.durable.into());
    out.insert("auto_delete".into(), x.auto_delete.into());
    out.insert("internal".into(), x.internal.into());
    out.insert("arguments".into(), table_to_json(&x.arguments));
    out.insert("user_who_performed_action".into(), "rmq-internal".into());
    out.insert(
        "policy".into(),
        x.policy_name().map_or(Value::Null, Value::from),
    );
    if let Some(held) = x.delayed.get() {
        // Warren's: messages waiting for their x-delay.
        out.insert("messages_delayed".into(), held.len().into());
    }
    if !listing.disable_stats {
        let (counts, rates) = x.stats.snapshot();
        out.insert(
            "message_stats".into(),
            Value::Object(message_stats(
                &["publish_in", "publish_out"],
                &counts,
                &rates,
            )),
        );
    }
    Value::Object(out)
}

fn list_exchanges(vhosts: Vec<Arc<VHost>>, listing: Listing) -> Result<Response, ApiError> {
    let default_sort = if vhosts.len() == 1 { "name" } else { "vhost" };
    let keys: Vec<(Arc<VHost>, Arc<Exchange>)> = vhosts
        .iter()
        .flat_map(|v| {
            let mut xs = v.exchanges();
            xs.sort_by(|a, b| a.name.cmp(&b.name));
            xs.into_iter().map(move |x| (v.clone(), x))
        })
        .collect();
    listing.list(
        keys,
        default_sort,
        |(_, x)| x.name.as_str(),
        |(v, x)| Some(exchange_json(x, &v.name, &listing)),
    )
}

async fn list_all(caller: Caller, Query(params): Query<ListParams>) -> Result<Response, ApiError> {
    list_exchanges(caller.visible_vhosts(), params.check()?)
}

async fn list_vhost(
    caller: Caller,
    Path(vhost): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    list_exchanges(vec![caller.vhost(&vhost)?], params.check()?)
}

/// An exchange of a vhost the caller may see: 404 if there is none.
pub fn find(
    caller: &Caller,
    vhost: &str,
    name: &str,
) -> Result<(Arc<VHost>, Arc<Exchange>), ApiError> {
    let v = caller.vhost(vhost)?;
    let x = v
        .exchange(path_name(name))
        .ok_or_else(ApiError::not_found)?;
    Ok((v, x))
}

async fn show(
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let (v, x) = find(&caller, &vhost, &name)?;
    let listing = params.check()?;
    Ok(listing.one(exchange_json(&x, &v.name, &listing)))
}

/// The body of `PUT /api/exchanges/{vhost}/{name}`.
#[derive(Debug, Deserialize)]
struct PutExchange {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: Value,
}

fn yes() -> bool {
    true
}

async fn put(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<PutExchange>,
) -> Result<StatusCode, ApiError> {
    let v = caller.vhost_to_change(&vhost)?;
    let name = path_name(&name).to_string();
    let exchange_name = short_name(&name, "exchange name")?;
    caller.check(&vhost, Access::Configure, "exchange", &name)?;
    let kind = body
        .kind
        .ok_or_else(|| ApiError::BadRequest("the exchange type is required".into()))?;
    // RabbitMQ's HTTP answer for any type it does not have.
    if crate::exchange::ExchangeKind::parse(&kind).is_none()
        && v.exchange(&name).is_none()
        && !name.starts_with("amq.")
    {
        return Err(ApiError::BadRequest(format!(
            "unknown exchange type '{kind}'"
        )));
    }
    let arguments = arguments(&body.arguments)?;
    let alternate = arguments
        .inner()
        .get("alternate-exchange")
        .map(crate::fields::value_text);
    let declare = ExchangeDeclare {
        name: exchange_name,
        kind,
        passive: false,
        durable: body.durable,
        auto_delete: body.auto_delete,
        internal: body.internal,
        arguments,
    };
    let (durability, created) = v.declare_exchange(
        &declare,
        || {
            let check = |access, kind, resource: &str| {
                b.users
                    .check(&caller.user.name, &vhost, access, kind, resource)
            };
            if let Some(ae) = &alternate {
                check(Access::Read, "exchange", &name)?;
                check(Access::Write, "exchange", ae)?;
            }
            // A super stream's partitions are declared and bound with it.
            let partitions = partition_names(&name, &declare.kind, &declare.arguments)?;
            if !partitions.is_empty() {
                check(Access::Read, "exchange", &name)?;
            }
            for p in &partitions {
                check(Access::Configure, "queue", p)?;
                check(Access::Write, "queue", p)?;
            }
            Ok(())
        },
        &caller.user.name,
    )?;
    if created {
        b.audit.record(
            "exchange.created",
            Some(&caller.actor()),
            json!({"vhost": vhost, "name": name, "type": declare.kind}),
        );
    }
    durable(&b, durability).await?;
    Ok(created_or_updated(created))
}

#[derive(Debug, Default, Deserialize)]
struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
}

async fn delete_exchange(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let (v, x) = find(&caller, &vhost, &name)?;
    caller.check(&vhost, Access::Configure, "exchange", x.name.as_str())?;
    let durability = v.delete_exchange(
        x.name.as_str(),
        q.if_unused.as_deref() == Some("true"),
        &caller.user.name,
    )?;
    b.audit.record(
        "exchange.deleted",
        Some(&caller.actor()),
        json!({"vhost": vhost, "name": x.name.as_str()}),
    );
    durable(&b, durability).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST …/publish`.
#[derive(Debug, Deserialize)]
struct PublishBody {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    payload: String,
    payload_encoding: Option<String>,
    #[serde(default)]
    properties: Value,
}

async fn publish_default(
    caller: Caller,
    state: State<Arc<Broker>>,
    Path(vhost): Path<String>,
    body: JsonBody<PublishBody>,
) -> Result<Json<Value>, ApiError> {
    publish(caller, state, Path((vhost, String::new())), body).await
}

async fn publish(
    caller: Caller,
    State(b): State<Arc<Broker>>,
    Path((vhost, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<Json<Value>, ApiError> {
    // An HTTP publish runs on a channel: a missing exchange is its 404,
    // which RabbitMQ reports as a 400 with the AMQP text.
    let v = caller.vhost(&vhost)?;
    let x = v.exchange(path_name(&name)).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "404 NOT_FOUND - no exchange '{}' in vhost '{vhost}'",
            path_name(&name)
        ))
    })?;
    caller.check(&vhost, Access::Write, "exchange", x.name.as_str())?;
    caller.check_topic(&vhost, &x, Access::Write, &body.routing_key)?;
    if x.internal {
        return Err(ApiError::NotAuthorised(format!(
            "cannot publish to internal exchange '{}' in vhost '{vhost}'",
            x.name
        )));
    }
    let routing_key = short_name(&body.routing_key, "routing key")?;
    let props = properties_from_json(&body.properties)?;
    let expiration = props.expiration().as_ref().map(|e| e.as_str().to_string());
    message::validate(*props.delivery_mode(), expiration.as_deref())
        .map_err(ApiError::BadRequest)?;
    if let Some(user_id) = props.user_id()
        && user_id.as_str() != caller.user.name
    {
        return Err(ApiError::BadRequest(format!(
            "user_id property set to '{user_id}' but authenticated user was '{}'",
            caller.user.name
        )));
    }
    let bytes = payload(
        &body.payload,
        body.payload_encoding.as_deref().unwrap_or("string"),
    )?;
    if bytes.len() as u64 > b.config.limits.max_message_size {
        return Err(ApiError::BadRequest(format!(
            "message size {} is larger than configured max size {}",
            bytes.len(),
            b.config.limits.max_message_size
        )));
    }
    let message = Arc::new(Message {
        exchange: x.name.clone(),
        routing_key: routing_key.clone(),
        persistent: *props.delivery_mode() == Some(2),
        priority: props.priority().unwrap_or(0),
        expiration_ms: expiration.and_then(|e| message::expiration_ms(&e).ok()),
        received_ms: crate::queue::now_ms(),
        properties: message::encode(&props),
        body: bytes.into(),
    });
    let headers = RouteHeaders::decoded(props.headers().clone());
    let outcome = b.publish_local(&v, &x, &message, &headers);
    // Published with confirms: a refused message is an error.
    if outcome.is_refused() {
        return Err(ApiError::BadRequest(
            "rejected Unable to publish message. Check queue limits.".into(),
        ));
    }
    let routed = !matches!(outcome, Routed::Unroutable);
    if outcome == Routed::Stored {
        b.store
            .synced()
            .await
            .map_err(|_| ApiError::Internal("the store stopped".into()))?
            .map_err(|e| ApiError::Internal(format!("cannot store the message: {e}")))?;
    }
    Ok(Json(json!({ "routed": routed })))
}
