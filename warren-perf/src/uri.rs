//! `amqp://user:pass@host:port/vhost` URIs, as RabbitMQ's clients read them,
//! and `amqps://…?cacertfile=PATH[&certfile=PATH&keyfile=PATH]` for TLS
//! (RabbitMQ's URI query parameters for the CA bundle and a client
//! certificate).

use anyhow::{Context, Result, anyhow, bail};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpUri {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
    /// Set for `amqps://`.
    pub tls: Option<TlsOptions>,
}

/// TLS settings from an `amqps://` URI's query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub cacertfile: Option<String>,
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
}

impl AmqpUri {
    /// The URI without the password, for reports.
    pub fn redacted(&self) -> String {
        let vhost: String = self
            .vhost
            .bytes()
            .map(|b| match b {
                b'/' | b'%' | b'?' | b'#' | b'@' | b' ' => format!("%{b:02x}"),
                _ => (b as char).to_string(),
            })
            .collect();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.tls.is_some() { "amqps" } else { "amqp" };
        format!("{scheme}://{}@{}:{}/{}", self.user, host, self.port, vhost)
    }

    /// `host:port`, with IPv6 literals bracketed, for `TcpStream::connect`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parse an AMQP URI. Missing parts default to `guest`/`guest`, port 5672 and
/// vhost `/`; user, password and vhost are percent-decoded (`%2f` is `/`).
pub fn parse(uri: &str) -> Result<AmqpUri> {
    let (rest, tls) = match uri.split_once("://") {
        Some(("amqp", rest)) => (rest, false),
        Some(("amqps", rest)) => (rest, true),
        Some((scheme, _)) => bail!("unsupported URI scheme '{scheme}' (expected amqp or amqps)"),
        None => bail!("invalid URI '{uri}' (expected amqp://user:pass@host:port/vhost)"),
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    // Other query parameters (heartbeat=…, etc.): not supported, not an error.
    let mut options = TlsOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = Some(decode(v)?);
        match k {
            "cacertfile" => options.cacertfile = v,
            "certfile" => options.certfile = v,
            "keyfile" => options.keyfile = v,
            _ => {}
        }
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => ("guest".to_string(), "guest".to_string()),
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (decode(u)?, decode(p)?),
            None => (decode(info)?, String::new()),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("unterminated IPv6 literal in '{uri}'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => bail!("invalid host in '{uri}'"),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .with_context(|| format!("invalid port '{p}' in '{uri}'"))?,
        None if tls => 5671,
        None => 5672,
    };
    let host = if host.is_empty() {
        "127.0.0.1".to_string()
    } else {
        host
    };
    // RabbitMQ's clients treat a missing or empty path as the default vhost.
    let vhost = match path {
        None | Some("") => "/".to_string(),
        Some(p) => decode(p)?,
    };
    Ok(AmqpUri {
        user,
        password,
        host,
        port,
        vhost,
        tls: tls.then_some(options),
    })
}

fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| anyhow!("bad percent-escape in '{s}'"))?;
            let v = u8::from_str_radix(hex, 16)
                .map_err(|_| anyhow!("bad percent-escape '%{hex}' in '{s}'"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("'{s}' is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri() {
        let u = parse("amqp://alice:s%40cret@broker.local:5673/%2f").unwrap();
        assert_eq!(u.user, "alice");
        assert_eq!(u.password, "s@cret");
        assert_eq!(u.host, "broker.local");
        assert_eq!(u.port, 5673);
        assert_eq!(u.vhost, "/");
        assert_eq!(u.address(), "broker.local:5673");
        assert_eq!(u.redacted(), "amqp://alice@broker.local:5673/%2f");
    }

    #[test]
    fn defaults() {
        let u = parse("amqp://localhost").unwrap();
        assert_eq!(
            (
                u.user.as_str(),
                u.password.as_str(),
                u.port,
                u.vhost.as_str()
            ),
            ("guest", "guest", 5672, "/")
        );
        let u = parse("amqp://u:p@h/staging").unwrap();
        assert_eq!(u.vhost, "staging");
        let u = parse("amqp://[::1]:5000/").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.address(), "[::1]:5000");
    }

    #[test]
    fn amqps_takes_its_certificates_from_the_query() {
        let u = parse("amqps://u:p@127.0.0.1/%2f?cacertfile=%2Ftmp%2Fca.pem&heartbeat=5").unwrap();
        assert_eq!(u.port, 5671);
        let tls = u.tls.clone().unwrap();
        assert_eq!(tls.cacertfile.as_deref(), Some("/tmp/ca.pem"));
        assert_eq!(tls.certfile, None);
        assert_eq!(u.redacted(), "amqps://u@127.0.0.1:5671/%2f");
        assert!(parse("amqp://h").unwrap().tls.is_none());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse("http://h").is_err());
        assert!(parse("localhost:5672").is_err());
        assert!(parse("amqp://h:notaport").is_err());
        assert!(parse("amqp://h/%zz").is_err());
    }
}
