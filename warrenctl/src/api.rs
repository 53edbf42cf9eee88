//! The management HTTP API client: blocking requests with HTTP Basic auth,
//! RabbitMQ's paths, and the mapping of transport failures and HTTP
//! statuses onto exit codes. Commands decide what a 404 means for them;
//! this module only says that one happened.

use std::time::Duration;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::error::Failure;

/// Everything but RFC 3986's unreserved characters is escaped, so the
/// default vhost `/` becomes `%2F` as the API expects.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment (a vhost, queue, user or policy name), escaped.
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Where the API is and who we are there.
pub struct Target {
    pub url: String,
    pub username: String,
    pub password: String,
}

pub struct Api {
    agent: ureq::Agent,
    base: String,
    username: String,
    auth: String,
    timeout: Duration,
}

/// An answer with any status; transport failures never get this far.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Api {
    pub fn new(target: &Target, timeout: Duration) -> Result<Api, Failure> {
        let base = target.url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(Failure::usage(format!(
                "--url {base}: only http:// URLs are supported (this build has no TLS)"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A proxy from the environment must not capture loopback calls.
            .proxy(None)
            .timeout_global(Some(timeout))
            .user_agent(concat!("warrenctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", target.username, target.password));
        Ok(Api {
            agent,
            base,
            username: target.username.clone(),
            auth: format!("Basic {token}"),
            timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The host part of the URL, for TCP checks of the broker's listeners.
    pub fn host(&self) -> String {
        let rest = self.base.trim_start_matches("http://");
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6).to_string();
        }
        authority.split(':').next().unwrap_or(authority).to_string()
    }

    pub fn get(&self, path: &str) -> Result<Reply, Failure> {
        self.send("GET", path, None, None)
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Reply, Failure> {
        self.send("PUT", path, Some(body.to_string()), None)
    }

    pub fn post_raw(&self, path: &str, body: String) -> Result<Reply, Failure> {
        self.send("POST", path, Some(body), None)
    }

    pub fn delete(&self, path: &str) -> Result<Reply, Failure> {
        self.send("DELETE", path, None, None)
    }

    /// DELETE with RabbitMQ's `X-Reason` header (connection close).
    pub fn delete_with_reason(&self, path: &str, reason: &str) -> Result<Reply, Failure> {
        self.send("DELETE", path, None, Some(reason))
    }

    /// GET that must succeed, parsed as JSON.
    pub fn get_json(&self, path: &str) -> Result<Value, Failure> {
        self.get(path)?.ok(self)?.json()
    }

    /// GET where 404 means "there is none".
    pub fn get_json_opt(&self, path: &str) -> Result<Option<Value>, Failure> {
        let reply = self.get(path)?;
        if reply.status == 404 {
            return Ok(None);
        }
        reply.ok(self)?.json().map(Some)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        reason: Option<&str>,
    ) -> Result<Reply, Failure> {
        let url = format!("{}{}", self.base, path);
        let result = match method {
            "GET" => self
                .agent
                .get(&url)
                .header("authorization", &self.auth)
                .call(),
            "DELETE" => {
                let mut req = self.agent.delete(&url).header("authorization", &self.auth);
                if let Some(r) = reason {
                    req = req.header("x-reason", r);
                }
                req.call()
            }
            _ => {
                let req = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                req.header("authorization", &self.auth)
                    .header("content-type", "application/json")
                    .send(body.unwrap_or_default())
            }
        };
        let mut response = result.map_err(|e| self.transport_failure(&e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_string()
            .map_err(|e| self.transport_failure(&e))?;
        Ok(Reply { status, body })
    }

    fn transport_failure(&self, e: &ureq::Error) -> Failure {
        match e {
            ureq::Error::Timeout(_) => Failure::unavailable(format!(
                "Timed out after {} seconds waiting for the management API at {}",
                self.timeout.as_secs_f64(),
                self.base
            )),
            ureq::Error::BadUri(u) => Failure::usage(format!("invalid --url: {u}")),
            ureq::Error::Io(io) => Failure::unavailable(format!(
                "Failed to connect to the management API at {}: {io}",
                self.base
            )),
            other => Failure::unavailable(format!(
                "Failed to talk to the management API at {}: {other}",
                self.base
            )),
        }
    }
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The reply if 2xx; otherwise the failure its status stands for.
    pub fn ok(self, api: &Api) -> Result<Reply, Failure> {
        if self.is_success() {
            return Ok(self);
        }
        Err(self.failure(api))
    }

    /// 401/403 → 77, 5xx → 69, any other error status → 65, with the
    /// API's `reason` as the message.
    pub fn failure(&self, api: &Api) -> Failure {
        let reason = self.reason();
        match self.status {
            401 => Failure::no_perm(format!(
                "Management API at {} refused user \"{}\": {reason}",
                api.base, api.username
            )),
            403 => Failure::no_perm(format!("Access refused: {reason}")),
            s if s >= 500 => Failure::unavailable(format!(
                "Management API at {} answered {s}: {reason}",
                api.base
            )),
            _ => Failure::data(reason),
        }
    }

    /// The `reason` of a `{"error","reason"}` body (HTML entities undone:
    /// RabbitMQ escapes `<` and `>` in it), else the body, else the status.
    pub fn reason(&self) -> String {
        let text = match serde_json::from_str::<Value>(&self.body) {
            Ok(v) => match (v.get("reason"), v.get("error")) {
                (Some(Value::String(r)), _) => r.clone(),
                (Some(r), _) if !r.is_null() => r.to_string(),
                (_, Some(Value::String(e))) => e.clone(),
                _ => self.body.trim().to_string(),
            },
            Err(_) => self.body.trim().to_string(),
        };
        if text.is_empty() {
            return format!("HTTP status {}", self.status);
        }
        unescape_html(text.trim_end())
    }

    pub fn json(&self) -> Result<Value, Failure> {
        serde_json::from_str(&self.body).map_err(|e| {
            Failure::data(format!(
                "The management API answered something that is not JSON: {e}"
            ))
        })
    }
}

fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_escape_everything_but_unreserved() {
        assert_eq!(seg("/"), "%2F");
        assert_eq!(seg("my vhost/a"), "my%20vhost%2Fa");
        assert_eq!(seg("amq.direct"), "amq.direct");
        assert_eq!(seg("a-b_c~d"), "a-b_c~d");
        assert_eq!(seg("é#?"), "%C3%A9%23%3F");
    }

    #[test]
    fn reason_from_error_bodies() {
        let r = Reply {
            status: 400,
            body: r#"{"error":"bad_request","reason":"Validation failed\n\n[{&lt;&lt;\"x\"&gt;&gt;,1}] are not recognised policy settings\n"}"#.into(),
        };
        assert_eq!(
            r.reason(),
            "Validation failed\n\n[{<<\"x\">>,1}] are not recognised policy settings"
        );
        let empty = Reply {
            status: 404,
            body: String::new(),
        };
        assert_eq!(empty.reason(), "HTTP status 404");
        let text = Reply {
            status: 502,
            body: "Bad gateway\n".into(),
        };
        assert_eq!(text.reason(), "Bad gateway");
    }

    #[test]
    fn status_classes_map_to_exit_codes() {
        let api = Api::new(
            &Target {
                url: "http://127.0.0.1:1/".into(),
                username: "guest".into(),
                password: "guest".into(),
            },
            Duration::from_secs(1),
        )
        .unwrap();
        let reply = |status| Reply {
            status,
            body: r#"{"error":"x","reason":"y"}"#.into(),
        };
        assert_eq!(reply(404).failure(&api).code(), 65);
        assert_eq!(reply(400).failure(&api).code(), 65);
        assert_eq!(reply(401).failure(&api).code(), 77);
        assert_eq!(reply(503).failure(&api).code(), 69);
        assert_eq!(api.base_url(), "http://127.0.0.1:1");
        assert_eq!(api.host(), "127.0.0.1");
    }

    #[test]
    fn host_of_various_urls() {
        let host = |url: &str| {
            Api::new(
                &Target {
                    url: url.into(),
                    username: String::new(),
                    password: String::new(),
                },
                Duration::from_secs(1),
            )
            .unwrap()
            .host()
        };
        assert_eq!(host("http://localhost:15672/prefix/"), "localhost");
        assert_eq!(host("http://[::1]:15672"), "::1");
        assert_eq!(host("http://u:p@h"), "h");
        assert!(
            Api::new(
                &Target {
                    url: "https://h".into(),
                    username: String::new(),
                    password: String::new(),
                },
                Duration::from_secs(1),
            )
            .is_err()
        );
    }
}
