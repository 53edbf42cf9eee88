//! `GET /api/openapi.json`: an OpenAPI 3 description of every route this
//! API serves, built from the table below. `tests/it/openapi.rs` reads the
//! `.route(...)` calls in `src/admin/` and fails when the table and the
//! routers disagree, so the description stays true.

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Map, Value, json};

use std::sync::Arc;

use crate::broker::Broker;

/// Who may call a route (RabbitMQ's user tags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    None,
    Management,
    Policymaker,
    Monitoring,
    Administrator,
}

impl Access {
    fn tag(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::Management => "management",
            Access::Policymaker => "policymaker",
            Access::Monitoring => "monitoring",
            Access::Administrator => "administrator",
        }
    }
}

/// One path and the methods it answers.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub summary: &'static str,
    pub access: Access,
}

/// Every route of the management API and the metrics endpoint.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    Route { path: "/", methods: &["GET"], summary: "The web page", access: Access::None },
    Route { path: "/api/aliveness-test/{vhost}", methods: &["GET"], summary: "Deprecated liveness check of a vhost (always ok if it exists)", access: Access::Management },
    Route { path: "/api/auth", methods: &["GET"], summary: "What the web page needs before login", access: Access::None },
    Route { path: "/api/bindings", methods: &["GET"], summary: "All bindings", access: Access::Management },
    Route { path: "/api/bindings/", methods: &["GET"], summary: "All bindings", access: Access::Management },
    Route { path: "/api/bindings/{vhost}", methods: &["GET"], summary: "Bindings of a vhost", access: Access::Management },
    Route { path: "/api/bindings/{vhost}/e/{source}/e/{destination}", methods: &["GET", "POST"], summary: "Bindings between two exchanges; POST binds them (201, Location)", access: Access::Management },
    Route { path: "/api/bindings/{vhost}/e/{source}/e/{destination}/{props}", methods: &["DELETE", "GET"], summary: "One exchange-to-exchange binding by properties_key; DELETE unbinds", access: Access::Management },
    Route { path: "/api/bindings/{vhost}/e/{source}/q/{destination}", methods: &["GET", "POST"], summary: "Bindings between an exchange and a queue; POST binds them (201, Location)", access: Access::Management },
    Route { path: "/api/bindings/{vhost}/e/{source}/q/{destination}/{props}", methods: &["DELETE", "GET"], summary: "One exchange-to-queue binding by properties_key; DELETE unbinds", access: Access::Management },
    Route { path: "/api/channels", methods: &["GET"], summary: "Open channels", access: Access::Management },
    Route { path: "/api/channels/", methods: &["GET"], summary: "Open channels", access: Access::Management },
    Route { path: "/api/channels/{name}", methods: &["GET"], summary: "One channel", access: Access::Management },
    Route { path: "/api/cluster-name", methods: &["GET", "PUT"], summary: "The cluster's name (PUT: administrators)", access: Access::Management },
    Route { path: "/api/connections", methods: &["GET"], summary: "Open connections", access: Access::Management },
    Route { path: "/api/connections/", methods: &["GET"], summary: "Open connections", access: Access::Management },
    Route { path: "/api/connections/username/{user}", methods: &["DELETE", "GET"], summary: "A user's connections; DELETE closes them all (320)", access: Access::Management },
    Route { path: "/api/connections/{name}", methods: &["DELETE", "GET"], summary: "One connection; DELETE closes it (320, X-Reason header as reason)", access: Access::Management },
    Route { path: "/api/connections/{name}/channels", methods: &["GET"], summary: "A connection's channels", access: Access::Management },
    Route { path: "/api/consumers", methods: &["GET"], summary: "All consumers", access: Access::Management },
    Route { path: "/api/consumers/", methods: &["GET"], summary: "All consumers", access: Access::Management },
    Route { path: "/api/consumers/{vhost}", methods: &["GET"], summary: "Consumers in a vhost", access: Access::Management },
    Route { path: "/api/definitions", methods: &["GET", "POST"], summary: "Export (GET) or import (POST, all or nothing) the broker's definitions", access: Access::Administrator },
    Route { path: "/api/definitions/", methods: &["GET", "POST"], summary: "Export (GET) or import (POST) the broker's definitions", access: Access::Administrator },
    Route { path: "/api/definitions/{vhost}", methods: &["GET", "POST"], summary: "Export (GET) or import (POST) one vhost's definitions", access: Access::Administrator },
    Route { path: "/api/erasures/{vhost}", methods: &["POST"], summary: "Warren: erase every message whose header equals a value, from every queue and stream of the vhost", access: Access::Administrator },
    Route { path: "/api/exchanges", methods: &["GET"], summary: "All exchanges", access: Access::Management },
    Route { path: "/api/exchanges/", methods: &["GET"], summary: "All exchanges", access: Access::Management },
    Route { path: "/api/exchanges/{vhost}", methods: &["GET"], summary: "Exchanges of a vhost", access: Access::Management },
    Route { path: "/api/exchanges/{vhost}//publish", methods: &["POST"], summary: "Publish to the default exchange (empty name)", access: Access::Management },
    Route { path: "/api/exchanges/{vhost}/{name}", methods: &["DELETE", "GET", "PUT"], summary: "One exchange (amq.default: the default); PUT declares (201/204), DELETE deletes (?if-unused=true)", access: Access::Management },
    Route { path: "/api/exchanges/{vhost}/{name}/bindings/destination", methods: &["GET"], summary: "Bindings to an exchange", access: Access::Management },
    Route { path: "/api/exchanges/{vhost}/{name}/bindings/source", methods: &["GET"], summary: "Bindings from an exchange", access: Access::Management },
    Route { path: "/api/exchanges/{vhost}/{name}/publish", methods: &["POST"], summary: "Publish a message; answers {\"routed\": bool}", access: Access::Management },
    Route { path: "/api/extensions", methods: &["GET"], summary: "Management UI extensions (none)", access: Access::Management },
    Route { path: "/api/federation-links", methods: &["GET"], summary: "Federation links and how they are doing", access: Access::Management },
    Route { path: "/api/federation-links/state/down", methods: &["GET"], summary: "Federation links neither running nor starting", access: Access::Management },
    Route { path: "/api/federation-links/state/down/", methods: &["GET"], summary: "Federation links neither running nor starting", access: Access::Management },
    Route { path: "/api/federation-links/vhost/{vhost}/{id}/{node}/restart", methods: &["DELETE"], summary: "Restart a federation link", access: Access::Policymaker },
    Route { path: "/api/federation-links/{vhost}", methods: &["GET"], summary: "Federation links of a vhost", access: Access::Management },
    Route { path: "/api/federation-links/{vhost}/state/down", methods: &["GET"], summary: "A vhost's federation links neither running nor starting", access: Access::Management },
    Route { path: "/api/global-parameters", methods: &["GET"], summary: "Global parameters", access: Access::Administrator },
    Route { path: "/api/global-parameters/", methods: &["GET"], summary: "Global parameters", access: Access::Administrator },
    Route { path: "/api/global-parameters/{name}", methods: &["DELETE", "GET", "PUT"], summary: "One global parameter; PUT sets, DELETE clears", access: Access::Administrator },
    Route { path: "/api/health/checks/alarms", methods: &["GET"], summary: "503 if a resource alarm is in effect", access: Access::Management },
    Route { path: "/api/health/checks/below-node-connection-limit", methods: &["GET"], summary: "503 if the node's connection limit is reached", access: Access::Management },
    Route { path: "/api/health/checks/certificate-expiration/{within}/{unit}", methods: &["GET"], summary: "Certificate expiry check", access: Access::Management },
    Route { path: "/api/health/checks/is-in-service", methods: &["GET"], summary: "The broker is up (no credentials needed)", access: Access::None },
    Route { path: "/api/health/checks/local-alarms", methods: &["GET"], summary: "503 if a resource alarm is in effect on this node", access: Access::Management },
    Route { path: "/api/health/checks/metadata-store/initialized", methods: &["GET"], summary: "The definitions store is open", access: Access::Management },
    Route { path: "/api/health/checks/node-is-mirror-sync-critical", methods: &["GET"], summary: "Always ok on a single node", access: Access::Management },
    Route { path: "/api/health/checks/node-is-quorum-critical", methods: &["GET"], summary: "Always ok on a single node", access: Access::Management },
    Route { path: "/api/health/checks/port-listener/{port}", methods: &["GET"], summary: "503 unless a listener is bound to the port", access: Access::Management },
    Route { path: "/api/health/checks/protocol-listener/{protocol}", methods: &["GET"], summary: "503 unless a listener speaks the protocol", access: Access::Management },
    Route { path: "/api/health/checks/reached-target-cluster-size", methods: &["GET"], summary: "Always ok on a single node (no credentials needed)", access: Access::None },
    Route { path: "/api/health/checks/ready-to-serve-clients", methods: &["GET"], summary: "The broker accepts clients (no credentials needed)", access: Access::None },
    Route { path: "/api/health/checks/virtual-hosts", methods: &["GET"], summary: "Every vhost is running", access: Access::Management },
    Route { path: "/api/healthchecks/node", methods: &["GET"], summary: "Deprecated node health check", access: Access::Management },
    Route { path: "/api/healthchecks/node/{node}", methods: &["GET"], summary: "Deprecated node health check", access: Access::Management },
    Route { path: "/api/nodes", methods: &["GET"], summary: "The node, with its memory, file descriptors, disk and alarms", access: Access::Monitoring },
    Route { path: "/api/nodes/{node}", methods: &["GET"], summary: "One node", access: Access::Monitoring },
    Route { path: "/api/nodes/{node}/memory", methods: &["GET"], summary: "The node's memory", access: Access::Monitoring },
    Route { path: "/api/operator-policies", methods: &["GET"], summary: "Operator policies", access: Access::Administrator },
    Route { path: "/api/operator-policies/", methods: &["GET"], summary: "Operator policies", access: Access::Administrator },
    Route { path: "/api/operator-policies/{vhost}", methods: &["GET"], summary: "Operator policies of a vhost", access: Access::Administrator },
    Route { path: "/api/operator-policies/{vhost}/{name}", methods: &["DELETE", "GET", "PUT"], summary: "One operator policy; PUT sets (limits and TTLs only), DELETE clears", access: Access::Administrator },
    Route { path: "/api/overview", methods: &["GET"], summary: "Versions, totals, message rates, churn and listeners", access: Access::Management },
    Route { path: "/api/parameters", methods: &["GET"], summary: "Runtime parameters", access: Access::Policymaker },
    Route { path: "/api/parameters/", methods: &["GET"], summary: "Runtime parameters", access: Access::Policymaker },
    Route { path: "/api/parameters/{component}", methods: &["GET"], summary: "Runtime parameters of a component", access: Access::Policymaker },
    Route { path: "/api/parameters/{component}/{vhost}", methods: &["GET"], summary: "Runtime parameters of a component in a vhost", access: Access::Policymaker },
    Route { path: "/api/parameters/{component}/{vhost}/{name}", methods: &["DELETE", "GET", "PUT"], summary: "One runtime parameter; PUT sets {\"value\": …}, DELETE clears", access: Access::Policymaker },
    Route { path: "/api/permissions", methods: &["GET"], summary: "All permissions", access: Access::Administrator },
    Route { path: "/api/permissions/", methods: &["GET"], summary: "All permissions", access: Access::Administrator },
    Route { path: "/api/permissions/{vhost}/{user}", methods: &["DELETE", "GET", "PUT"], summary: "A user's permissions on a vhost; PUT sets configure/write/read, DELETE clears", access: Access::Administrator },
    Route { path: "/api/policies", methods: &["GET"], summary: "Policies", access: Access::Policymaker },
    Route { path: "/api/policies/", methods: &["GET"], summary: "Policies", access: Access::Policymaker },
    Route { path: "/api/policies/{vhost}", methods: &["GET"], summary: "Policies of a vhost", access: Access::Policymaker },
    Route { path: "/api/policies/{vhost}/{name}", methods: &["DELETE", "GET", "PUT"], summary: "One policy; PUT sets, DELETE clears", access: Access::Policymaker },
    Route { path: "/api/queues", methods: &["GET"], summary: "All queues", access: Access::Management },
    Route { path: "/api/queues/", methods: &["GET"], summary: "All queues", access: Access::Management },
    Route { path: "/api/queues/{vhost}", methods: &["GET"], summary: "Queues of a vhost", access: Access::Management },
    Route { path: "/api/queues/{vhost}/{name}", methods: &["DELETE", "GET", "PUT"], summary: "One queue with its consumers; PUT declares (201/204), DELETE deletes (?if-empty, ?if-unused)", access: Access::Management },
    Route { path: "/api/queues/{vhost}/{name}/bindings", methods: &["GET"], summary: "Bindings to a queue, its default binding included", access: Access::Management },
    Route { path: "/api/queues/{vhost}/{name}/contents", methods: &["DELETE"], summary: "DELETE purges the queue", access: Access::Management },
    Route { path: "/api/queues/{vhost}/{name}/get", methods: &["POST"], summary: "Take messages as basic.get does, then ack, requeue or reject them (ackmode)", access: Access::Management },
    Route { path: "/api/queues/{vhost}/{name}/messages", methods: &["GET"], summary: "Warren: browse the first ?count=N ready messages without taking them (no redelivery, order unchanged)", access: Access::Management },
    Route { path: "/api/queues/{vhost}/{name}/move", methods: &["POST"], summary: "Warren: move messages to another queue of the vhost ({\"destination\", \"count\"}; dead-letter redrive)", access: Access::Management },
    Route { path: "/api/queues/{vhost}/{name}/pause", methods: &["PUT"], summary: "Warren: pause deliveries from the queue (204; kept across restarts; basic.get finds it empty)", access: Access::Management },
    Route { path: "/api/queues/{vhost}/{name}/resume", methods: &["PUT"], summary: "Warren: resume deliveries from a paused queue (204)", access: Access::Management },
    Route { path: "/api/schemas", methods: &["GET"], summary: "Warren: the schema catalogue (subjects, versions, where bound)", access: Access::Management },
    Route { path: "/api/schemas/ids/{id}", methods: &["GET"], summary: "Warren: a schema by its global id", access: Access::Management },
    Route { path: "/api/schemas/{vhost}", methods: &["GET"], summary: "Warren: a vhost's schema catalogue", access: Access::Management },
    Route { path: "/api/schemas/{vhost}/{subject}", methods: &["DELETE", "GET", "PUT"], summary: "Warren: a subject's versions; PUT registers one (409 if incompatible)", access: Access::Management },
    Route { path: "/api/schemas/{vhost}/{subject}/config", methods: &["GET", "PUT"], summary: "Warren: a subject's compatibility level", access: Access::Management },
    Route { path: "/api/schemas/{vhost}/{subject}/versions/{version}", methods: &["GET"], summary: "Warren: one version of a subject (or latest)", access: Access::Management },
    Route { path: "/api/shovels", methods: &["GET"], summary: "Dynamic shovels and how they are doing", access: Access::Management },
    Route { path: "/api/shovels/vhost/{vhost}/{name}", methods: &["DELETE", "GET"], summary: "A vhost's shovels if this one exists; DELETE deletes it", access: Access::Policymaker },
    Route { path: "/api/shovels/vhost/{vhost}/{name}/restart", methods: &["DELETE"], summary: "Restart a shovel", access: Access::Policymaker },
    Route { path: "/api/shovels/{vhost}", methods: &["GET"], summary: "Dynamic shovels of a vhost", access: Access::Management },
    Route { path: "/api/topic-permissions", methods: &["GET"], summary: "All topic permissions", access: Access::Administrator },
    Route { path: "/api/topic-permissions/", methods: &["GET"], summary: "All topic permissions", access: Access::Administrator },
    Route { path: "/api/topic-permissions/{vhost}/{user}", methods: &["DELETE", "GET", "PUT"], summary: "A user's topic permissions in a vhost; PUT sets one exchange's, DELETE clears all", access: Access::Administrator },
    Route { path: "/api/user-limits", methods: &["GET"], summary: "Users' limits", access: Access::Administrator },
    Route { path: "/api/user-limits/{user}", methods: &["GET"], summary: "A user's limits", access: Access::Administrator },
    Route { path: "/api/user-limits/{user}/{name}", methods: &["DELETE", "PUT"], summary: "One user limit (max-connections, max-channels); PUT {\"value\": n}, DELETE clears", access: Access::Administrator },
    Route { path: "/api/users", methods: &["GET"], summary: "Users", access: Access::Administrator },
    Route { path: "/api/users/", methods: &["GET"], summary: "Users", access: Access::Administrator },
    Route { path: "/api/users/bulk-delete", methods: &["POST"], summary: "Delete several users ({\"users\": [...]})", access: Access::Administrator },
    Route { path: "/api/users/without-permissions", methods: &["GET"], summary: "Users with no permissions anywhere", access: Access::Administrator },
    Route { path: "/api/users/{user}", methods: &["DELETE", "GET", "PUT"], summary: "One user; PUT creates or updates (password, or password_hash + hashing_algorithm; tags), DELETE deletes", access: Access::Administrator },
    Route { path: "/api/users/{user}/permissions", methods: &["GET"], summary: "A user's permissions", access: Access::Administrator },
    Route { path: "/api/users/{user}/topic-permissions", methods: &["GET"], summary: "A user's topic permissions", access: Access::Administrator },
    Route { path: "/api/version", methods: &["GET"], summary: "The RabbitMQ version Warren follows (no credentials needed)", access: Access::None },
    Route { path: "/api/vhost-limits", methods: &["GET"], summary: "Vhosts' limits", access: Access::Management },
    Route { path: "/api/vhost-limits/{vhost}", methods: &["GET"], summary: "A vhost's limits", access: Access::Management },
    Route { path: "/api/vhost-limits/{vhost}/{name}", methods: &["DELETE", "PUT"], summary: "One vhost limit (max-connections, max-queues); PUT {\"value\": n}, DELETE clears", access: Access::Management },
    Route { path: "/api/vhosts", methods: &["GET"], summary: "Vhosts with their message totals", access: Access::Management },
    Route { path: "/api/vhosts/", methods: &["GET"], summary: "Vhosts", access: Access::Management },
    Route { path: "/api/vhosts/{vhost}", methods: &["DELETE", "GET", "PUT"], summary: "One vhost; PUT creates (the creator gets full permissions), DELETE deletes it and everything in it", access: Access::Management },
    Route { path: "/api/vhosts/{vhost}/channels", methods: &["GET"], summary: "Channels in a vhost", access: Access::Management },
    Route { path: "/api/vhosts/{vhost}/connections", methods: &["GET"], summary: "Connections to a vhost", access: Access::Management },
    Route { path: "/api/vhosts/{vhost}/permissions", methods: &["GET"], summary: "Permissions on a vhost", access: Access::Administrator },
    Route { path: "/api/vhosts/{vhost}/topic-permissions", methods: &["GET"], summary: "Topic permissions in a vhost", access: Access::Administrator },
    Route { path: "/api/whoami", methods: &["GET"], summary: "The caller's name and tags", access: Access::Management },
    Route { path: "/healthz", methods: &["GET"], summary: "Liveness: the process answers", access: Access::None },
    Route { path: "/index.html", methods: &["GET"], summary: "The web page", access: Access::None },
    Route { path: "/metrics", methods: &["GET"], summary: "Prometheus metrics, per-object families summed (metrics port)", access: Access::None },
    Route { path: "/metrics/detailed", methods: &["GET"], summary: "Prometheus metrics of the families (`family=`) and vhosts (`vhost=`) asked for (metrics port)", access: Access::None },
    Route { path: "/metrics/per-object", methods: &["GET"], summary: "Prometheus metrics, one sample per queue, channel and connection (metrics port)", access: Access::None },
    Route { path: "/readyz", methods: &["GET"], summary: "Readiness: listeners bound, definitions applied", access: Access::None },
    Route { path: "/ui/app.js", methods: &["GET"], summary: "The web page's script", access: Access::None },
    Route { path: "/ui/style.css", methods: &["GET"], summary: "The web page's style sheet", access: Access::None },
];

pub fn routes() -> Router<Arc<Broker>> {
    Router::new().route("/api/openapi.json", get(openapi))
}

async fn openapi() -> Json<Value> {
    Json(document())
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES.iter().chain(std::iter::once(&SELF)) {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut ops = Map::new();
        for m in r.methods {
            let mut op = json!({
                "summary": r.summary,
                "tags": [r.path.trim_start_matches("/api/").split('/').next().unwrap_or("")],
                "x-rabbitmq-user-tag": r.access.tag(),
                "responses": responses(m),
            });
            if r.access == Access::None {
                op["security"] = json!([]);
            }
            if !params.is_empty() {
                op["parameters"] = Value::Array(params.clone());
            }
            ops.insert(m.to_ascii_lowercase(), op);
        }
        paths.insert(r.path.to_string(), Value::Object(ops));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Warren management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "RabbitMQ's management HTTP API (same paths, verbs and JSON fields), \
                plus Warren's own routes marked as such. The vhost `/` is `%2F` in paths; the \
                default exchange is `amq.default` in paths. List routes take page, page_size, \
                name, use_regex, sort, sort_reverse, columns and disable_stats. The /metrics \
                routes are served on the metrics port.",
        },
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
        "security": [{"basic": []}],
        "paths": paths,
    })
}

const SELF: Route = Route {
    path: "/api/openapi.json",
    methods: &["GET"],
    summary: "This description",
    access: Access::None,
};

fn responses(method: &str) -> Value {
    let ok = match method {
        "PUT" => json!({"201": {"description": "Created"}, "204": {"description": "Updated"}}),
        "DELETE" => json!({"204": {"description": "Deleted"}}),
        "POST" => {
            json!({"200": {"description": "Done"}, "201": {"description": "Created"}, "204": {"description": "Done"}})
        }
        _ => json!({"200": {"description": "OK"}}),
    };
    let mut r = ok;
    for (code, what) in [
        (
            "400",
            "Bad request: {\"error\": \"bad_request\", \"reason\": …}",
        ),
        ("401", "No or wrong credentials, or a missing user tag"),
        (
            "404",
            "No such object: {\"error\": \"Object Not Found\", \"reason\": …}",
        ),
    ] {
        r[code] = json!({"description": what});
    }
    r
}
