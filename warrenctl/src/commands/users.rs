//! Users and their permissions: add_user, delete_user, change_password,
//! set_user_tags, authenticate_user, set_permissions, clear_permissions.
//!
//! The API's `PUT /api/users/{name}` both creates and replaces a user, and
//! a PUT without a password clears it. So add_user checks first that the
//! user is new, and set_user_tags sends the user's password hash back.

use std::io::BufRead;
use std::time::Duration;

use serde_json::{Value, json};

use super::Ctx;
use crate::api::{Api, Target, seg};
use crate::error::Failure;
use crate::render::atom_list_text;

fn user_path(user: &str) -> String {
    format!("/api/users/{}", seg(user))
}

fn no_such_user(user: &str) -> Failure {
    Failure::data(format!("User \"{user}\" does not exist"))
}

/// The password given, else the first line of stdin, as rabbitmqctl does.
fn password_or_stdin(given: Option<String>) -> Result<String, Failure> {
    if let Some(p) = given {
        return Ok(p);
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line).unwrap_or(0);
    if read == 0 {
        return Err(Failure::data(
            "Password is not provided via argument or stdin",
        ));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The tags of a user object, as the comma-separated string PUT takes.
fn tags_of(user: &Value) -> String {
    match user.get("tags") {
        Some(Value::Array(tags)) => tags
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// A user body with this password: empty means "no password login", as
/// rabbitmqctl documents for add_user.
fn with_password(password: &str, tags: &str) -> Value {
    if password.is_empty() {
        json!({"password_hash": "", "tags": tags})
    } else {
        json!({"password": password, "tags": tags})
    }
}

pub fn add_user(ctx: &mut Ctx, user: &str, pass: Option<String>) -> Result<(), Failure> {
    ctx.out.banner(&format!("Adding user \"{user}\" ..."))?;
    let password = password_or_stdin(pass)?;
    let path = user_path(user);
    if ctx.api.get_json_opt(&path)?.is_some() {
        return Err(Failure::data(format!("User \"{user}\" already exists")));
    }
    ctx.api
        .put(&path, &with_password(&password, ""))?
        .ok(&ctx.api)?;
    ctx.out.banner(
        "Done. Don't forget to grant the user permissions to some virtual hosts! \
         See 'rabbitmqctl help set_permissions' to learn more.",
    )?;
    ctx.done()
}

pub fn delete_user(ctx: &mut Ctx, user: &str) -> Result<(), Failure> {
    ctx.out.banner(&format!("Deleting user \"{user}\" ..."))?;
    let reply = ctx.api.delete(&user_path(user))?;
    if reply.status == 404 {
        return Err(no_such_user(user));
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

pub fn change_password(ctx: &mut Ctx, user: &str, pass: Option<String>) -> Result<(), Failure> {
    ctx.out
        .banner(&format!("Changing password for user \"{user}\" ..."))?;
    let password = password_or_stdin(pass)?;
    let path = user_path(user);
    let Some(existing) = ctx.api.get_json_opt(&path)? else {
        return Err(no_such_user(user));
    };
    let body = with_password(&password, &tags_of(&existing));
    ctx.api.put(&path, &body)?.ok(&ctx.api)?;
    ctx.done()
}

pub fn set_user_tags(ctx: &mut Ctx, user: &str, tags: &[String]) -> Result<(), Failure> {
    ctx.out.banner(&format!(
        "Setting tags for user \"{user}\" to {} ...",
        atom_list_text(tags)
    ))?;
    let path = user_path(user);
    let Some(existing) = ctx.api.get_json_opt(&path)? else {
        return Err(no_such_user(user));
    };
    // Without its hash, the PUT would clear the user's password.
    let Some(hash) = existing.get("password_hash").and_then(Value::as_str) else {
        return Err(Failure::data(format!(
            "The management API did not return the password hash of user \"{user}\"; \
             not changing its tags, as that would clear its password"
        )));
    };
    let mut body = json!({"password_hash": hash, "tags": tags.join(",")});
    if let Some(alg) = existing.get("hashing_algorithm") {
        body["hashing_algorithm"] = alg.clone();
    }
    ctx.api.put(&path, &body)?.ok(&ctx.api)?;
    ctx.done()
}

pub fn authenticate_user(ctx: &mut Ctx, user: &str, pass: Option<String>) -> Result<(), Failure> {
    ctx.out
        .banner(&format!("Authenticating user \"{user}\" ..."))?;
    let password = password_or_stdin(pass)?;
    let as_user = Api::new(
        &Target {
            url: ctx.target.url.clone(),
            username: user.to_string(),
            password,
        },
        Duration::from_secs(ctx.timeout.unwrap_or(super::DEFAULT_TIMEOUT).max(1)),
    )?;
    let reply = as_user.get("/api/whoami")?;
    // "Login failed" is a wrong password; any other refusal ("Not
    // management user") means the credentials were good.
    if reply.is_success() || (reply.status == 401 && reply.reason() != "Login failed") {
        ctx.out.line("Success")?;
        return ctx.done();
    }
    if reply.status == 401 {
        return Err(Failure::data(format!(
            "failed to authenticate user \"{user}\"\nuser '{user}' - invalid credentials"
        )));
    }
    Err(reply.failure(&as_user))
}

/// Why a permissions call found nothing: the user, or else the vhost.
fn missing_user_or_vhost(ctx: &Ctx, user: &str) -> Result<Failure, Failure> {
    if ctx.api.get_json_opt(&user_path(user))?.is_none() {
        return Ok(Failure::data(format!("User {user} does not exist")));
    }
    let vh = &ctx.vhost;
    Ok(Failure::data(format!("Virtual host {vh} does not exist")))
}

pub fn set_permissions(
    ctx: &mut Ctx,
    user: &str,
    [conf, write, read]: [&str; 3],
) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out.banner(&format!(
        "Setting permissions for user \"{user}\" in vhost \"{vh}\" ..."
    ))?;
    let path = format!("/api/permissions/{}/{}", seg(&vh), seg(user));
    let body = json!({"configure": conf, "write": write, "read": read});
    let reply = ctx.api.put(&path, &body)?;
    // RabbitMQ answers 400 "vhost_or_user_not_found"; others may say 404.
    if reply.status == 404 || (reply.status == 400 && reply.reason().contains("not_found")) {
        return Err(missing_user_or_vhost(ctx, user)?);
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

pub fn clear_permissions(ctx: &mut Ctx, user: &str) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    ctx.out.banner(&format!(
        "Clearing permissions for user \"{user}\" in vhost \"{vh}\" ..."
    ))?;
    let path = format!("/api/permissions/{}/{}", seg(&vh), seg(user));
    let reply = ctx.api.delete(&path)?;
    if reply.status == 404 {
        // No permissions to clear is fine; a missing user or vhost is not.
        if ctx.api.get_json_opt(&user_path(user))?.is_none()
            || ctx
                .api
                .get_json_opt(&format!("/api/vhosts/{}", seg(&vh)))?
                .is_none()
        {
            return Err(missing_user_or_vhost(ctx, user)?);
        }
        return ctx.done();
    }
    reply.ok(&ctx.api)?;
    ctx.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_bodies() {
        assert_eq!(
            with_password("pw", "a,b"),
            json!({"password": "pw", "tags": "a,b"})
        );
        assert_eq!(
            with_password("", ""),
            json!({"password_hash": "", "tags": ""})
        );
        assert_eq!(
            tags_of(&json!({"tags": ["administrator", "monitoring"]})),
            "administrator,monitoring"
        );
        assert_eq!(tags_of(&json!({"tags": "management"})), "management");
        assert_eq!(tags_of(&json!({})), "");
    }
}
