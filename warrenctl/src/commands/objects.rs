//! Virtual hosts, policies, queues and connections: add_vhost,
//! delete_vhost, set_policy, clear_policy, purge_queue, delete_queue,
//! close_connection.

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::api::seg;
use crate::error::Failure;

fn no_such_vhost(vh: &str) -> Failure {
    Failure::data(format!("Virtual host '{vh}' does not exist"))
}

pub fn add_vhost(
    ctx: &mut Ctx,
    name: &str,
    description: Option<String>,
    tags: Option<String>,
    default_queue_type: Option<String>,
) -> Result<(), Failure> {
    ctx.out.banner(&format!("Adding vhost \"{name}\" ..."))?;
    let mut body = Map::new();
    if let Some(d) = description {
        body.insert("description".into(), d.into());
    }
    if let Some(t) = tags {
        body.insert("tags".into(), t.into());
    }
    if let Some(q) = default_queue_type {
        body.insert("default_queue_type".into(), q.into());
    }
    ctx.api
        .put(&format!("/api/vhosts/{}", seg(name)), &Value::Object(body))?
        .ok(&ctx.api)?;
    ctx.done()
}

/// `trace_on` / `trace_off` in the `-p` vhost, as rabbitmqctl words them.
pub fn trace(ctx: &mut Ctx, on: bool) -> Result<(), Failure> {
    let vhost = ctx.vhost.clone();
    let verb = if on { "Starting" } else { "Stopping" };
    ctx.out
        .banner(&format!("{verb} tracing for vhost \"{vhost}\" ..."))?;
    let path = format!("/api/vhosts/{}", seg(&vhost));
    if ctx.api.get(&path)?.status == 404 {
        return Err(no_such_vhost(&vhost));
    }
    ctx.api
        .put(&path, &serde_json::json!({ "tracing": on }))?
        .ok(&ctx.api)?;
    ctx.done()
}

pub fn delete_vhost(ctx: &mut Ctx, name: &str) -> Result<(), Failure> {
    ctx.out.banner(&format!("Deleting vhost \"{name}\" ..."))?;
    let reply = ctx.api.delete(&format!("/api/vhosts/{}", seg(name)))?;
    if reply.status == 404 {
        return Err(no_such_vhost(name));
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

pub fn set_policy(
    ctx: &mut Ctx,
    name: &str,
    pattern: &str,
    definition: &str,
    priority: i64,
    apply_to: &str,
) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out.banner(&format!(
        "Setting policy \"{name}\" for pattern \"{pattern}\" to \"{definition}\" \
         with priority \"{priority}\" for vhost \"{vh}\" ..."
    ))?;
    let definition: Value = serde_json::from_str(definition)
        .map_err(|e| Failure::data(format!("JSON decoding error. Reason: {e}")))?;
    if !definition.is_object() {
        return Err(Failure::data(
            "JSON decoding error. Reason: the definition must be a JSON object",
        ));
    }
    let body = json!({
        "pattern": pattern,
        "definition": definition,
        "priority": priority,
        "apply-to": apply_to,
    });
    let reply = ctx
        .api
        .put(&format!("/api/policies/{}/{}", seg(&vh), seg(name)), &body)?;
    if reply.status == 404 {
        return Err(no_such_vhost(&vh));
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

pub fn clear_policy(ctx: &mut Ctx, name: &str) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out
        .banner(&format!("Clearing policy \"{name}\" on vhost \"{vh}\" ..."))?;
    let reply = ctx
        .api
        .delete(&format!("/api/policies/{}/{}", seg(&vh), seg(name)))?;
    if reply.status == 404 {
        return Err(Failure::data("Parameter does not exist"));
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

fn queue_path(vh: &str, queue: &str) -> String {
    format!("/api/queues/{}/{}", seg(vh), seg(queue))
}

fn no_such_queue(vh: &str, queue: &str) -> Failure {
    Failure::data(format!("Queue '{queue}' in vhost '{vh}' not found"))
}

pub fn purge_queue(ctx: &mut Ctx, queue: &str) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out
        .banner(&format!("Purging queue '{queue}' in vhost '{vh}' ..."))?;
    let reply = ctx
        .api
        .delete(&format!("{}/contents", queue_path(&vh, queue)))?;
    if reply.status == 404 {
        return Err(no_such_queue(&vh, queue));
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

pub fn pause_queue(ctx: &mut Ctx, queue: &str, pause: bool) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    let (verb, what) = if pause {
        ("Pausing", "pause")
    } else {
        ("Resuming", "resume")
    };
    ctx.out.banner(&format!(
        "{verb} deliveries from queue '{queue}' in vhost '{vh}' ..."
    ))?;
    let path = format!("{}/{what}", queue_path(&vh, queue));
    let reply = ctx.api.put(&path, &serde_json::json!({}))?;
    if reply.status == 404 {
        return Err(no_such_queue(&vh, queue));
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

pub fn browse_queue(ctx: &mut Ctx, queue: &str, count: u64) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out.banner(&format!(
        "Browsing the first {count} messages of queue '{queue}' in vhost '{vh}' ..."
    ))?;
    let reply = ctx.api.get(&format!(
        "{}/messages?count={count}",
        queue_path(&vh, queue)
    ))?;
    if reply.status == 404 {
        return Err(no_such_queue(&vh, queue));
    }
    let items = reply.ok(&ctx.api)?.json()?;
    let columns = ["routing_key", "redelivered", "payload"];
    let mut text_rows = Vec::new();
    let mut json_rows = Vec::new();
    for m in items.as_array().into_iter().flatten() {
        let row: Vec<serde_json::Value> = columns.iter().map(|c| m[*c].clone()).collect();
        text_rows.push(
            row.iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        );
        json_rows.push(row);
    }
    ctx.out.list(&columns, &text_rows, &json_rows)?;
    Ok(())
}

pub fn move_messages(
    ctx: &mut Ctx,
    queue: &str,
    destination: &str,
    count: Option<u64>,
) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out.banner(&format!(
        "Moving messages from queue '{queue}' to '{destination}' in vhost '{vh}' ..."
    ))?;
    let mut body = serde_json::json!({ "destination": destination });
    if let Some(n) = count {
        body["count"] = n.into();
    }
    let reply = ctx.api.post_raw(
        &format!("{}/move", queue_path(&vh, queue)),
        body.to_string(),
    )?;
    if reply.status == 404 {
        return Err(Failure::data(format!(
            "Queue '{queue}' or '{destination}' in vhost '{vh}' not found"
        )));
    }
    let moved = reply.ok(&ctx.api)?.json()?["moved"].as_u64().unwrap_or(0);
    if ctx.out.json() {
        ctx.out.json_value(&serde_json::json!({ "moved": moved }))?;
        return Ok(());
    }
    ctx.out.line(&format!("Moved {moved} messages"))?;
    Ok(())
}

/// `POST /api/erasures/{vhost}`: every message whose header equals the
/// value, from every queue and stream.
pub fn erase_messages(ctx: &mut Ctx, header: &str, value: &str) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out.banner(&format!(
        "Erasing messages with header '{header}' = '{value}' in vhost '{vh}' ..."
    ))?;
    let body = serde_json::json!({ "header": header, "value": value });
    let reply = ctx
        .api
        .post_raw(&format!("/api/erasures/{}", seg(&vh)), body.to_string())?;
    if reply.status == 404 {
        return Err(no_such_vhost(&vh));
    }
    let report = reply.ok(&ctx.api)?.json()?;
    if ctx.out.json() {
        ctx.out.json_value(&report)?;
        return Ok(());
    }
    let erased = report["erased"].as_u64().unwrap_or(0);
    ctx.out.line(&format!("Erased {erased} messages"))?;
    for q in report["queues"].as_array().into_iter().flatten() {
        ctx.out.line(&format!(
            "{}\t{}\t{}",
            q["name"].as_str().unwrap_or(""),
            q["type"].as_str().unwrap_or(""),
            q["erased"].as_u64().unwrap_or(0)
        ))?;
    }
    Ok(())
}

/// rabbitmqctl's delete_queue banner, conditions joined with "and".
fn delete_banner(queue: &str, vh: &str, if_empty: bool, if_unused: bool) -> String {
    let mut conditions = Vec::new();
    if if_empty {
        conditions.push("if queue is empty ");
    }
    if if_unused {
        conditions.push("if queue is unused ");
    }
    format!(
        "Deleting queue '{queue}' on vhost '{vh}' {}...",
        conditions.join("and ")
    )
}

pub fn delete_queue(
    ctx: &mut Ctx,
    queue: &str,
    if_empty: bool,
    if_unused: bool,
) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out
        .banner(&delete_banner(queue, &vh, if_empty, if_unused))?;
    let path = queue_path(&vh, queue);
    // The API's DELETE does not say how many messages went with the queue;
    // the queue's own count (as fresh as the broker's stats) stands in.
    let Some(info) = ctx.api.get_json_opt(&path)? else {
        return Err(no_such_queue(&vh, queue));
    };
    let ready = info
        .get("messages_ready")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut query = Vec::new();
    if if_empty {
        query.push("if-empty=true");
    }
    if if_unused {
        query.push("if-unused=true");
    }
    let full = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let reply = ctx.api.delete(&full)?;
    match reply.status {
        404 => return Err(no_such_queue(&vh, queue)),
        400 | 406 | 409 | 412 => {
            let reason = reply.reason();
            return Err(Failure::data(if reason.contains("not empty") {
                "Queue is not empty".to_string()
            } else if reason.contains("in use") || reason.contains("unused") {
                "Queue is in use".to_string()
            } else {
                reason
            }));
        }
        _ => {}
    }
    reply.ok(&ctx.api)?;
    let message = format!("Queue was successfully deleted with {ready} ready messages");
    if ctx.out.json() {
        ctx.out.json_value(&json!({ "message": message }))?;
    } else {
        ctx.out.line(&message)?;
    }
    Ok(())
}

pub fn close_connection(ctx: &mut Ctx, name: &str, reason: &str) -> Result<(), Failure> {
    ctx.out
        .banner(&format!("Closing connection {name}, reason: {reason}..."))?;
    let reply = ctx
        .api
        .delete_with_reason(&format!("/api/connections/{}", seg(name)), reason)?;
    if reply.status == 404 {
        return Err(Failure::data(format!("Connection '{name}' not found")));
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_queue_banners_as_rabbitmqctl() {
        assert_eq!(
            delete_banner("q", "/", false, false),
            "Deleting queue 'q' on vhost '/' ..."
        );
        assert_eq!(
            delete_banner("q", "/", true, false),
            "Deleting queue 'q' on vhost '/' if queue is empty ..."
        );
        assert_eq!(
            delete_banner("q", "/", true, true),
            "Deleting queue 'q' on vhost '/' if queue is empty and if queue is unused ..."
        );
    }
}
