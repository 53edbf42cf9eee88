//! The node and its health: ping, status, await_startup, and the
//! rabbitmq-diagnostics checks, over `/api/overview`, `/api/nodes/{node}`
//! and `/api/health/checks/*`. A failed check exits 69, as there.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::api::{Api, seg};
use crate::error::{Exit, Failure};

/// A result sentence: a line, or `{"message": ...}` in JSON mode.
fn message(ctx: &mut Ctx, text: &str) -> Result<(), Failure> {
    if ctx.out.json() {
        ctx.out.json_value(&json!({ "message": text }))?;
    } else {
        ctx.out.line(text)?;
    }
    Ok(())
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn node_of(overview: &Value) -> String {
    str_at(overview, "node").unwrap_or("unknown").to_string()
}

pub fn ping(ctx: &mut Ctx) -> Result<(), Failure> {
    let t = ctx.timeout.unwrap_or(super::DEFAULT_TIMEOUT);
    let target = ctx
        .node
        .clone()
        .unwrap_or_else(|| ctx.api.base_url().to_string());
    ctx.out.banner(&format!(
        "Will ping {target}. This only checks if the management API answers. Timeout: {t}000 ms."
    ))?;
    ctx.api.get_json("/api/overview")?;
    message(ctx, "Ping succeeded")
}

pub fn await_startup(ctx: &mut Ctx) -> Result<(), Failure> {
    let limit = Duration::from_secs(ctx.timeout.unwrap_or(300));
    let deadline = Instant::now() + limit;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let api = Api::new(
            &ctx.target,
            remaining.clamp(Duration::from_millis(100), Duration::from_secs(5)),
        )?;
        let last = match api.get("/api/overview") {
            Ok(reply) if reply.is_success() => return ctx.done(),
            // Up but refusing us (bad credentials, no such route): waiting
            // longer will not help.
            Ok(reply) if reply.status < 500 => return Err(reply.failure(&api)),
            Ok(reply) => reply.failure(&api),
            Err(f) if f.exit == Exit::Unavailable => f,
            Err(f) => return Err(f),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::unavailable(format!(
                "The management API at {} did not answer within {} seconds; last error: {}",
                api.base_url(),
                limit.as_secs(),
                last.message
            )));
        }
        std::thread::sleep(remaining.min(Duration::from_millis(500)));
    }
}

pub fn check_running(ctx: &mut Ctx, is_running: bool) -> Result<(), Failure> {
    let overview = ctx.api.get_json("/api/overview")?;
    let node = node_of(&overview);
    ctx.out.banner(&if is_running {
        format!("Asking node {node} for its status ...")
    } else {
        format!("Checking if RabbitMQ is running on node {node} ...")
    })?;
    message(
        ctx,
        &format!("RabbitMQ on node {node} is fully booted and running"),
    )
}

/// The alarms listed in a failed health check's body.
fn alarm_list(body: &Value) -> Vec<Value> {
    match body.get("alarms") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

fn alarm_text(alarm: &Value) -> String {
    let resource = str_at(alarm, "resource").unwrap_or("resource");
    match str_at(alarm, "node") {
        Some(node) => format!("{resource} alarm on node {node}"),
        None => format!("{resource} alarm"),
    }
}

/// Fetch a health check: Ok(None) when it passed, Ok(Some(body)) when it
/// failed with 503, Err for anything else.
fn health(ctx: &Ctx, check: &str) -> Result<Option<Value>, Failure> {
    let reply = ctx.api.get(&format!("/api/health/checks/{check}"))?;
    if reply.is_success() {
        return Ok(None);
    }
    if reply.status == 503 {
        return Ok(Some(reply.json().unwrap_or(Value::Null)));
    }
    Err(reply.failure(&ctx.api))
}

pub fn check_alarms(ctx: &mut Ctx, local: bool) -> Result<(), Failure> {
    let node = ctx.node_name()?;
    ctx.out.banner(&format!(
        "Asking node {node} to report any local resource alarms ..."
    ))?;
    let check = if local { "local-alarms" } else { "alarms" };
    if let Some(body) = health(ctx, check)? {
        let lines: Vec<String> = alarm_list(&body).iter().map(alarm_text).collect();
        let scope = if local { "local alarms" } else { "alarms" };
        return Err(Failure::unavailable(format!(
            "Node {node} reported {scope}:\n{}",
            if lines.is_empty() {
                str_at(&body, "reason").unwrap_or("(unknown)").to_string()
            } else {
                lines.join("\n")
            }
        )));
    }
    if ctx.out.json() {
        ctx.out.json_value(&json!({"result": "ok"}))?;
        return Ok(());
    }
    ctx.out.line(&if local {
        format!("Node {node} reported no local alarms")
    } else {
        format!("Node {node} reported no alarms, local or clusterwide")
    })?;
    Ok(())
}

pub fn alarms(ctx: &mut Ctx) -> Result<(), Failure> {
    let node = ctx.node_name()?;
    ctx.out.banner(&format!(
        "Asking node {node} to report any known resource alarms ..."
    ))?;
    let alarms = health(ctx, "alarms")?
        .map(|b| alarm_list(&b))
        .unwrap_or_default();
    if ctx.out.json() {
        ctx.out
            .json_value(&json!({"alarms": alarms, "node": node, "result": "ok"}))?;
        return Ok(());
    }
    if alarms.is_empty() {
        ctx.out.line(&format!(
            "Node {node} reported no alarms, local or clusterwide"
        ))?;
    } else {
        for a in &alarms {
            ctx.out.line(&alarm_text(a))?;
        }
    }
    Ok(())
}

pub fn check_virtual_hosts(ctx: &mut Ctx) -> Result<(), Failure> {
    let node = ctx.node_name()?;
    ctx.out.banner(&format!(
        "Checking if all vhosts are running on node {node} ..."
    ))?;
    if let Some(body) = health(ctx, "virtual-hosts")? {
        return Err(Failure::unavailable(format!(
            "Some virtual hosts on node {node} are down: {}",
            str_at(&body, "reason").unwrap_or("(no reason given)")
        )));
    }
    if ctx.out.json() {
        ctx.out.json_value(&json!({"result": "ok"}))?;
        return Ok(());
    }
    ctx.out
        .line(&format!("Node {node} reported all vhosts as running"))?;
    Ok(())
}

pub fn check_port_listener(ctx: &mut Ctx, port: u16) -> Result<(), Failure> {
    let node = ctx.node_name()?;
    ctx.out.banner(&format!(
        "Asking node {node} if there's an active listener on port {port} ..."
    ))?;
    if let Some(body) = health(ctx, &format!("port-listener/{port}"))? {
        return Err(Failure::unavailable(
            str_at(&body, "reason")
                .map(String::from)
                .unwrap_or_else(|| {
                    format!("No listener for port {port} is active on node {node}.")
                }),
        ));
    }
    if ctx.out.json() {
        ctx.out
            .json_value(&json!({"node": node, "port": port.to_string(), "result": "ok"}))?;
        return Ok(());
    }
    ctx.out.line(&format!(
        "A listener for port {port} is running on node {node}."
    ))?;
    Ok(())
}

pub fn check_protocol_listener(ctx: &mut Ctx, protocol: &str) -> Result<(), Failure> {
    let node = ctx.node_name()?;
    ctx.out.banner(&format!(
        "Asking node {node} if there's an active listener for protocol {protocol} ..."
    ))?;
    if let Some(body) = health(ctx, &format!("protocol-listener/{}", seg(protocol)))? {
        return Err(Failure::unavailable(
            str_at(&body, "reason")
                .map(String::from)
                .unwrap_or_else(|| {
                    format!("No listener for protocol {protocol} is active on node {node}.")
                }),
        ));
    }
    if ctx.out.json() {
        ctx.out
            .json_value(&json!({"node": node, "protocol": protocol, "result": "ok"}))?;
        return Ok(());
    }
    ctx.out.line(&format!(
        "A listener for protocol {protocol} is running on node {node}."
    ))?;
    Ok(())
}

pub fn server_version(ctx: &mut Ctx) -> Result<(), Failure> {
    let overview = ctx.api.get_json("/api/overview")?;
    let node = node_of(&overview);
    let version = str_at(&overview, "rabbitmq_version").unwrap_or("unknown");
    ctx.out
        .banner(&format!("Asking node {node} for its RabbitMQ version..."))?;
    if ctx.out.json() {
        ctx.out
            .json_value(&json!({"result": "ok", "value": version}))?;
    } else {
        ctx.out.line(version)?;
    }
    Ok(())
}

/// What each protocol's listener is for, as rabbitmq-diagnostics says.
fn purpose(protocol: &str) -> &str {
    match protocol {
        "amqp" => "AMQP 0-9-1 and AMQP 1.0",
        "amqp/ssl" => "AMQP 0-9-1 and AMQP 1.0 over TLS",
        "http" => "HTTP API",
        "https" => "HTTP API over TLS (HTTPS)",
        "http/prometheus" => "Prometheus exporter API over HTTP",
        "https/prometheus" => "Prometheus exporter API over TLS (HTTPS)",
        "clustering" => "inter-node and CLI tool communication",
        "stream" => "stream",
        "stream/ssl" => "stream over TLS",
        "mqtt" => "MQTT",
        "stomp" => "STOMP",
        other => other,
    }
}

/// `[::]` for IPv6 addresses, as rabbitmq-diagnostics writes interfaces.
fn interface(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// The overview's listeners in rabbitmq-diagnostics' JSON shape.
fn listener_list(overview: &Value) -> Vec<Value> {
    let node = node_of(overview);
    let Some(Value::Array(listeners)) = overview.get("listeners") else {
        return Vec::new();
    };
    listeners
        .iter()
        .map(|l| {
            let protocol = str_at(l, "protocol").unwrap_or("");
            json!({
                "interface": interface(str_at(l, "ip_address").unwrap_or("")),
                "node": str_at(l, "node").unwrap_or(&node),
                "port": l.get("port").cloned().unwrap_or(Value::Null),
                "protocol": protocol,
                "purpose": purpose(protocol),
            })
        })
        .collect()
}

fn listener_text(l: &Value) -> String {
    format!(
        "Interface: {}, port: {}, protocol: {}, purpose: {}",
        str_at(l, "interface").unwrap_or(""),
        l.get("port").map(Value::to_string).unwrap_or_default(),
        str_at(l, "protocol").unwrap_or(""),
        str_at(l, "purpose").unwrap_or("")
    )
}

pub fn listeners(ctx: &mut Ctx) -> Result<(), Failure> {
    let overview = ctx.api.get_json("/api/overview")?;
    let node = node_of(&overview);
    ctx.out.banner(&format!(
        "Asking node {node} to report its protocol listeners ..."
    ))?;
    let list = listener_list(&overview);
    if ctx.out.json() {
        ctx.out
            .json_value(&json!({"listeners": list, "node": node, "result": "ok"}))?;
        return Ok(());
    }
    for l in &list {
        ctx.out.line(&listener_text(l))?;
    }
    Ok(())
}

pub fn check_port_connectivity(ctx: &mut Ctx) -> Result<(), Failure> {
    let overview = ctx.api.get_json("/api/overview")?;
    let node = node_of(&overview);
    ctx.out.banner(&format!(
        "Testing TCP connections to all active listeners on node {node} ..."
    ))?;
    let api_host = ctx.api.host();
    let timeout = Duration::from_secs(ctx.timeout.unwrap_or(5).clamp(1, 5));
    let Some(Value::Array(listeners)) = overview.get("listeners") else {
        return Err(Failure::data(
            "The management API did not list the node's listeners",
        ));
    };
    let mut ok = BTreeSet::new();
    let mut failed = Vec::new();
    for l in listeners {
        let Some(port) = l.get("port").and_then(Value::as_u64) else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        // A wildcard listener is reached where the API was.
        let host = match str_at(l, "ip_address").map(str::parse::<IpAddr>) {
            Some(Ok(ip)) if !ip.is_unspecified() => ip.to_string(),
            _ => api_host.clone(),
        };
        if connects(&host, port, timeout) {
            ok.insert(port);
        } else {
            failed.push(format!("{host}:{port}"));
        }
    }
    if !failed.is_empty() {
        return Err(Failure::unavailable(format!(
            "Connection to ports of the following listeners on node {node} failed: {}",
            failed.join(", ")
        )));
    }
    if ctx.out.json() {
        ctx.out.json_value(&json!({
            "listeners": listener_list(&overview), "node": node, "result": "ok"
        }))?;
        return Ok(());
    }
    let ports: Vec<String> = ok.iter().map(u16::to_string).collect();
    ctx.out.line(&format!(
        "Successfully connected to ports {} on node {node}.",
        ports.join(", ")
    ))?;
    Ok(())
}

fn connects(host: &str, port: u16, timeout: Duration) -> bool {
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return false,
    };
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, timeout).is_ok())
}

/// Bytes as rabbitmqctl's status writes them: gigabytes, 4 decimals.
fn gb(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_f64)
        .map(|b| format!("{:.4} gb", b / 1e9))
}

fn num(v: Option<&Value>) -> Option<String> {
    v.filter(|v| !v.is_null()).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The node's status, from the overview and the node object (either may
/// lack fields; what is missing is left out).
pub struct Status {
    pub overview: Value,
    pub node: Value,
    pub vhost_count: Option<usize>,
}

impl Status {
    fn name(&self) -> String {
        node_of(&self.overview)
    }

    fn alarms(&self) -> Vec<String> {
        let name = self.name();
        let mut out = Vec::new();
        if self.node.get("mem_alarm") == Some(&Value::Bool(true)) {
            out.push(format!("Memory alarm on node {name}"));
        }
        if self.node.get("disk_free_alarm") == Some(&Value::Bool(true)) {
            out.push(format!("Free disk space alarm on node {name}"));
        }
        out
    }

    /// rabbitmqctl status' sections.
    pub fn text(&self) -> String {
        let o = &self.overview;
        let n = &self.node;
        let mut s = String::new();
        let mut section = |title: &str, lines: Vec<String>| {
            s.push_str(title);
            s.push_str("\n\n");
            for l in lines {
                s.push_str(&l);
                s.push('\n');
            }
            s.push('\n');
        };
        let kv = |label: &str, v: Option<String>| v.map(|v| format!("{label}: {v}"));

        let uptime = n
            .get("uptime")
            .and_then(Value::as_u64)
            .map(|ms| (ms / 1000).to_string());
        let procs = match (num(n.get("proc_used")), num(n.get("proc_total"))) {
            (Some(u), Some(t)) => Some(format!("{u} used, {t} limit")),
            _ => None,
        };
        section(
            "Runtime",
            [
                kv("OS PID", num(n.get("os_pid"))),
                kv("Uptime (seconds)", uptime),
                Some("Is under maintenance?: false".to_string()),
                kv("RabbitMQ version", num(o.get("rabbitmq_version"))),
                kv("Product name", num(o.get("product_name"))),
                kv("Product version", num(o.get("product_version"))),
                kv("Node name", Some(self.name())),
                kv("Erlang configuration", num(o.get("erlang_full_version"))),
                kv("Erlang processes", procs),
                kv("Scheduler run queue", num(n.get("run_queue"))),
                kv(
                    "Cluster heartbeat timeout (net_ticktime)",
                    num(n.get("net_ticktime")),
                ),
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
        let mut plugins = vec!["Enabled plugins:".to_string(), String::new()];
        plugins.extend(
            strings(n.get("enabled_plugins"))
                .iter()
                .map(|p| format!(" * {p}")),
        );
        section("Plugins", plugins);
        section(
            "Data directory",
            kv("Node data directory", num(n.get("db_dir")))
                .into_iter()
                .collect(),
        );
        section(
            "Config files",
            strings(n.get("config_files"))
                .iter()
                .map(|f| format!(" * {f}"))
                .collect(),
        );
        section(
            "Log file(s)",
            strings(n.get("log_files"))
                .iter()
                .map(|f| format!(" * {f}"))
                .collect(),
        );
        let alarms = self.alarms();
        section(
            "Alarms",
            if alarms.is_empty() {
                vec!["(none)".to_string()]
            } else {
                alarms
            },
        );
        section(
            "Memory",
            [
                kv("Total memory used", gb(n.get("mem_used"))),
                kv(
                    "Calculation strategy",
                    num(n.get("mem_calculation_strategy")),
                ),
                kv("Memory high watermark, computed to", gb(n.get("mem_limit"))),
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
        let pair = |a: Option<String>, b: Option<String>, la: &str| match (a, b) {
            (Some(a), Some(b)) => Some(format!("{la}: {a}, limit: {b}")),
            _ => None,
        };
        section(
            "File Descriptors",
            [
                pair(num(n.get("fd_used")), num(n.get("fd_total")), "Total"),
                pair(
                    num(n.get("sockets_used")),
                    num(n.get("sockets_total")),
                    "Sockets",
                ),
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
        section(
            "Free Disk Space",
            [
                kv(
                    "Low free disk space watermark",
                    gb(n.get("disk_free_limit")),
                ),
                kv("Free disk space", gb(n.get("disk_free"))),
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
        let totals = o.get("object_totals");
        section(
            "Totals",
            [
                kv(
                    "Connection count",
                    num(totals.and_then(|t| t.get("connections"))),
                ),
                kv("Queue count", num(totals.and_then(|t| t.get("queues")))),
                kv(
                    "Virtual host count",
                    self.vhost_count.map(|c| c.to_string()),
                ),
            ]
            .into_iter()
            .flatten()
            .collect(),
        );
        section(
            "Listeners",
            listener_list(o).iter().map(listener_text).collect(),
        );
        // One blank line ends each section; the last needs none.
        while s.ends_with("\n\n") {
            s.pop();
        }
        s
    }

    /// rabbitmqctl status --formatter json (the keys scripts read).
    pub fn json(&self) -> Value {
        let o = &self.overview;
        let n = &self.node;
        let get = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
        let totals = o.get("object_totals");
        let mut m = Map::new();
        m.insert(
            "active_plugins".into(),
            Value::from(strings(n.get("enabled_plugins"))),
        );
        m.insert("alarms".into(), Value::from(self.alarms()));
        m.insert(
            "config_files".into(),
            Value::from(strings(n.get("config_files"))),
        );
        m.insert("data_directory".into(), get(n, "db_dir"));
        m.insert("disk_free".into(), get(n, "disk_free"));
        m.insert("disk_free_limit".into(), get(n, "disk_free_limit"));
        m.insert("erlang_version".into(), get(o, "erlang_full_version"));
        m.insert(
            "file_descriptors".into(),
            json!({
                "sockets_limit": get(n, "sockets_total"),
                "sockets_used": get(n, "sockets_used"),
                "total_limit": get(n, "fd_total"),
                "total_used": get(n, "fd_used"),
            }),
        );
        m.insert("is_under_maintenance".into(), Value::Bool(false));
        m.insert("listeners".into(), Value::from(listener_list(o)));
        m.insert("log_files".into(), Value::from(strings(n.get("log_files"))));
        m.insert(
            "memory".into(),
            json!({"strategy": get(n, "mem_calculation_strategy"), "total": {"rss": get(n, "mem_used")}}),
        );
        m.insert("net_ticktime".into(), get(n, "net_ticktime"));
        m.insert(
            "pid".into(),
            match n.get("os_pid") {
                Some(Value::String(s)) => s
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or(Value::from(s.as_str())),
                Some(v) => v.clone(),
                None => Value::Null,
            },
        );
        m.insert(
            "processes".into(),
            json!({"limit": get(n, "proc_total"), "used": get(n, "proc_used")}),
        );
        m.insert("product_name".into(), get(o, "product_name"));
        m.insert("product_version".into(), get(o, "product_version"));
        m.insert("rabbitmq_version".into(), get(o, "rabbitmq_version"));
        m.insert("run_queue".into(), get(n, "run_queue"));
        m.insert(
            "totals".into(),
            json!({
                "connection_count": totals.and_then(|t| t.get("connections")).cloned().unwrap_or(Value::Null),
                "queue_count": totals.and_then(|t| t.get("queues")).cloned().unwrap_or(Value::Null),
                "virtual_host_count": self.vhost_count,
            }),
        );
        m.insert(
            "uptime".into(),
            n.get("uptime")
                .and_then(Value::as_u64)
                .map(|ms| ms / 1000)
                .into(),
        );
        m.insert("vm_memory_high_watermark_limit".into(), get(n, "mem_limit"));
        Value::Object(m)
    }
}

pub fn status(ctx: &mut Ctx) -> Result<(), Failure> {
    let overview = ctx.api.get_json("/api/overview")?;
    let name = node_of(&overview);
    ctx.out.banner(&format!("Status of node {name} ..."))?;
    let node = ctx
        .api
        .get_json_opt(&format!("/api/nodes/{}", seg(&name)))?
        .unwrap_or(Value::Null);
    let vhost_count = ctx
        .api
        .get_json_opt("/api/vhosts")?
        .and_then(|v| v.as_array().map(Vec::len));
    let status = Status {
        overview,
        node,
        vhost_count,
    };
    if ctx.out.json() {
        ctx.out.json_value(&status.json())?;
    } else {
        ctx.out.raw(&status.text())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            overview: json!({
                "node": "rabbit@vm", "rabbitmq_version": "3.10.8",
                "erlang_full_version": "Erlang/OTP 25",
                "object_totals": {"connections": 1, "queues": 6},
                "listeners": [
                    {"node": "rabbit@vm", "protocol": "amqp", "ip_address": "::", "port": 5672},
                    {"node": "rabbit@vm", "protocol": "http", "ip_address": "127.0.0.1", "port": 15672}
                ]
            }),
            node: json!({"os_pid": "7776", "uptime": 351000, "proc_used": 457, "proc_total": 1048576,
                         "mem_used": 139_200_000, "mem_alarm": false, "disk_free_alarm": true,
                         "enabled_plugins": ["rabbitmq_management"], "fd_used": 7, "fd_total": 927}),
            vhost_count: Some(2),
        }
    }

    #[test]
    fn listeners_as_diagnostics_prints_them() {
        let s = sample();
        let l = listener_list(&s.overview);
        assert_eq!(
            listener_text(&l[0]),
            "Interface: [::], port: 5672, protocol: amqp, purpose: AMQP 0-9-1 and AMQP 1.0"
        );
        assert_eq!(
            listener_text(&l[1]),
            "Interface: 127.0.0.1, port: 15672, protocol: http, purpose: HTTP API"
        );
    }

    #[test]
    fn status_text_sections() {
        let text = sample().text();
        assert!(
            text.starts_with("Runtime\n\nOS PID: 7776\nUptime (seconds): 351\n"),
            "{text}"
        );
        assert!(text.contains("Erlang processes: 457 used, 1048576 limit\n"));
        assert!(text.contains("Enabled plugins:\n\n * rabbitmq_management\n"));
        assert!(text.contains("Alarms\n\nFree disk space alarm on node rabbit@vm\n"));
        assert!(text.contains("Total memory used: 0.1392 gb\n"));
        assert!(text.contains("Total: 7, limit: 927\n"));
        assert!(text.contains("Queue count: 6\nVirtual host count: 2\n"));
        assert!(text.ends_with("purpose: HTTP API\n"));
    }

    #[test]
    fn status_json_keys() {
        let j = sample().json();
        assert_eq!(j["rabbitmq_version"], "3.10.8");
        assert_eq!(j["pid"], 7776);
        assert_eq!(j["uptime"], 351);
        assert_eq!(j["totals"]["queue_count"], 6);
        assert_eq!(j["totals"]["virtual_host_count"], 2);
        assert_eq!(
            j["alarms"],
            json!(["Free disk space alarm on node rabbit@vm"])
        );
        assert_eq!(j["listeners"][0]["interface"], "[::]");
    }

    #[test]
    fn alarm_lines() {
        assert_eq!(
            alarm_text(&json!({"node": "rabbit@vm", "resource": "memory"})),
            "memory alarm on node rabbit@vm"
        );
    }
}
