//! Configuration: one annotated `config.toml`, layered.
//!
//! The shipped `config.toml` is embedded and is the lowest layer, so defaults
//! and the documented sample cannot drift apart. Over it, in order: the file
//! named by `--config`, `WARREN_<SECTION>__<KEY>` environment variables, then
//! the named variables and flags of [`Overrides`] (what scripts and CI use:
//! `--amqp-port`, `WARREN_DATA_DIR`, `RABBITMQ_DEFAULT_USER`, …).
//! Layers are merged as TOML tables and deserialised once at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod layers;

use serde::Deserialize;
use toml::Value;

use crate::startup::StartupError;

/// The shipped, annotated configuration file.
pub const DEFAULT_CONFIG: &str = include_str!("../../config.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub amqp: ListenerConfig,
    pub amqps: ListenerConfig,
    pub tls: TlsConfig,
    pub server_properties: ServerPropertiesConfig,
    pub admin: HttpConfig,
    pub metrics: HttpConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub audit: AuditConfig,
    pub definitions: DefinitionsConfig,
    pub event_exchange: EventExchangeConfig,
    pub opentelemetry: crate::telemetry::OpenTelemetryConfig,
}

/// The event exchange (`amq.rabbitmq.event`, RabbitMQ's event exchange
/// plugin, built in).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventExchangeConfig {
    pub enabled: bool,
    /// The vhost whose `amq.rabbitmq.event` receives every vhost's events.
    pub vhost: String,
}

/// Definitions imported at boot (RabbitMQ's `load_definitions`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsConfig {
    /// A definitions file, or a directory of `*.json` files imported in
    /// name order; empty for none.
    pub load_path: PathBuf,
}

impl DefinitionsConfig {
    pub fn is_configured(&self) -> bool {
        !self.load_path.as_os_str().is_empty()
    }
}

/// The plain (`[amqp]`) or TLS (`[amqps]`) AMQP listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub enabled: bool,
    /// The addresses to listen on, all on `port` (`bind = "::"` or a list).
    #[serde(deserialize_with = "one_or_many")]
    pub bind: Vec<String>,
    pub port: u16,
}

/// What `connection.start` says the server is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerPropertiesConfig {
    pub product: String,
    pub version: String,
}

/// Certificates for AMQPS and HTTPS, and client-certificate verification.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of the CAs client certificates are verified against.
    pub ca: PathBuf,
    /// Ask clients for a certificate and verify the ones they present.
    pub verify_peer: bool,
    /// Refuse clients that present none (with `verify_peer`).
    pub fail_if_no_peer_cert: bool,
    /// "tlsv1.2" and/or "tlsv1.3".
    pub versions: Vec<String>,
}

impl TlsConfig {
    /// Whether certificate files are configured at all.
    pub fn is_configured(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "one_or_many")]
    pub bind: Vec<String>,
    pub port: u16,
    /// Serve HTTPS with the `[tls]` certificates.
    pub tls: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub enabled: bool,
    pub path: PathBuf,
}

/// A key that takes one string or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub ephemeral: bool,
    pub group_commit_max_batch: usize,
    pub group_commit_max_delay_us: u64,
    pub queue_memory_messages: usize,
    pub memory_budget_bytes: u64,
    pub cache_bytes: u64,
    pub flush_interval_ms: u64,
    pub flow_unwritten_bytes: usize,
    pub write_stall_ms: u64,
    /// A file holding the key that seals stored records (32 random bytes,
    /// base64); empty: not encrypted.
    pub encryption_key_file: PathBuf,
    /// The key a rotation replaced: records it sealed still open.
    pub encryption_old_key_file: PathBuf,
}

impl StorageConfig {
    /// The keys of an encrypted store (none if no key file is set).
    pub fn keyring(&self) -> Result<Option<crate::store::Keyring>, String> {
        if self.encryption_key_file.as_os_str().is_empty() {
            if !self.encryption_old_key_file.as_os_str().is_empty() {
                return Err("encryption_old_key_file needs encryption_key_file".into());
            }
            return Ok(None);
        }
        let current = crate::store::StoreKey::from_file(&self.encryption_key_file)?;
        let old = match self.encryption_old_key_file.as_os_str().is_empty() {
            true => None,
            false => Some(crate::store::StoreKey::from_file(
                &self.encryption_old_key_file,
            )?),
        };
        Ok(Some(crate::store::Keyring { current, old }))
    }

    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            group_commit_max_batch: self.group_commit_max_batch,
            group_commit_max_delay: std::time::Duration::from_micros(
                self.group_commit_max_delay_us,
            ),
            cache_bytes: self.cache_bytes,
            flush_interval: std::time::Duration::from_millis(self.flush_interval_ms.max(1)),
            flow_unwritten_bytes: self.flow_unwritten_bytes,
            write_stall: std::time::Duration::from_millis(self.write_stall_ms.max(1)),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub default_user: String,
    pub default_pass: String,
    pub default_vhost: String,
    pub loopback_users: Vec<String>,
    /// SASL mechanisms offered (RabbitMQ's `auth_mechanisms`); EXTERNAL is
    /// offered only on TLS connections that presented a certificate.
    pub mechanisms: Vec<String>,
    /// Where EXTERNAL takes the user name from: "common_name" or
    /// "subject_alternative_name" (RabbitMQ's `ssl_cert_login_from`).
    pub ssl_cert_login_from: String,
    /// With "subject_alternative_name": "dns", "ip", "email" or "uri".
    pub ssl_cert_login_san_type: String,
    /// With "subject_alternative_name": which SAN of that type (from 0).
    pub ssl_cert_login_san_index: usize,
    /// A failed login from an address that already failed within the last
    /// minute is answered after this delay times the earlier failures.
    pub failed_login_delay_ms: u64,
    /// Failed logins one address may make per minute; past it, its logins
    /// are refused unchecked until the minute has passed. 0: no cap.
    pub max_failed_logins_per_minute: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
    pub max_message_size: u64,
    pub handshake_timeout_ms: u64,
    pub max_connections: u32,
    pub connection_buffer_bytes: usize,
    pub queue_flow_messages: usize,
    pub max_unacked_per_channel: usize,
    pub write_timeout_ms: u64,
    pub consumer_timeout_ms: u64,
    pub max_transaction_bytes: u64,
    /// A fraction of memory (`0.6`) or a size (`"512MiB"`).
    pub memory_high_watermark: SizeSetting,
    /// A size (`"50MB"`).
    pub disk_free_limit: SizeSetting,
}

/// A setting written as a number or as a size with a unit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SizeSetting {
    Number(f64),
    Text(String),
}

/// The memory high watermark, as RabbitMQ's `vm_memory_high_watermark`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryWatermark {
    /// Of the memory available to the process (cgroup limit or RAM).
    Fraction(f64),
    Bytes(u64),
}

impl SizeSetting {
    /// As a byte count: a bare number is bytes; text may carry a unit
    /// (`50MB`, `512MiB`).
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeSetting::Number(n) if *n >= 0.0 => Ok(*n as u64),
            SizeSetting::Number(n) => Err(format!("{n} is negative")),
            SizeSetting::Text(s) => {
                parse_size::parse_size(s.trim()).map_err(|e| format!("'{s}' is not a size ({e})"))
            }
        }
    }

    /// As a memory watermark: a number up to 1 (or text that reads as one)
    /// is a fraction, anything else a size.
    pub fn watermark(&self) -> Result<MemoryWatermark, String> {
        let fraction = match self {
            SizeSetting::Number(n) => Some(*n),
            SizeSetting::Text(s) => s.trim().parse::<f64>().ok(),
        };
        match fraction {
            Some(f) if (0.0..=1.0).contains(&f) => Ok(MemoryWatermark::Fraction(f)),
            _ => self.bytes().map(MemoryWatermark::Bytes),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    /// `text` (one line per event, for people) or `json` (one JSON object
    /// per line, for log shippers).
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Build the configuration from every layer. `env` is the process
    /// environment (passed in so tests can supply their own).
    pub fn load(
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, StartupError> {
        let file = match &overrides.config_file {
            Some(path) => Some((
                std::fs::read_to_string(path).map_err(|source| StartupError::ConfigFile {
                    path: path.clone(),
                    source,
                })?,
                path.as_path(),
            )),
            None => None,
        };
        Config::from_layers(file.as_ref().map(|(t, p)| (t.as_str(), *p)), overrides, env)
    }

    /// [`Config::load`] with the config file's text already read: `file` is
    /// its text and path (for messages).
    pub(crate) fn from_layers(
        file: Option<(&str, &Path)>,
        overrides: &Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, StartupError> {
        let mut table = parse_table(DEFAULT_CONFIG, Path::new("<embedded config.toml>"))?;
        if let Some((text, path)) = file {
            merge(&mut table, parse_table(text, path)?);
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        merge(&mut table, env_layer(&env)?);
        merge(&mut table, overrides.layer());
        let config: Config = Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| StartupError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded defaults alone.
    pub fn defaults() -> Config {
        match Config::load(&Overrides::default(), std::iter::empty()) {
            Ok(c) => c,
            Err(e) => unreachable!("the embedded config.toml is invalid: {e}"),
        }
    }

    /// A throwaway broker for tests: every port picked by the OS on
    /// 127.0.0.1 (a test that needs `[::1]` too adds it to `bind`: every
    /// address of a listener shares the port the first one got), nothing
    /// written to disk.
    pub fn ephemeral() -> Config {
        let mut c = Config::defaults();
        for (bind, port) in [
            (&mut c.amqp.bind, &mut c.amqp.port),
            (&mut c.amqps.bind, &mut c.amqps.port),
            (&mut c.admin.bind, &mut c.admin.port),
            (&mut c.metrics.bind, &mut c.metrics.port),
        ] {
            *bind = vec!["127.0.0.1".into()];
            *port = 0;
        }
        c.storage.ephemeral = true;
        c
    }

    fn validate(&self) -> Result<(), StartupError> {
        if self.limits.frame_max != 0 && self.limits.frame_max < 4096 {
            return Err(StartupError::Config(format!(
                "limits.frame_max must be at least 4096 (got {})",
                self.limits.frame_max
            )));
        }
        self.limits
            .memory_high_watermark
            .watermark()
            .map_err(|e| StartupError::Config(format!("limits.memory_high_watermark: {e}")))?;
        self.limits
            .disk_free_limit
            .bytes()
            .map_err(|e| StartupError::Config(format!("limits.disk_free_limit: {e}")))?;
        if self.limits.max_message_size > MAX_MESSAGE_SIZE_CEILING {
            return Err(StartupError::Config(format!(
                "limits.max_message_size must be at most {MAX_MESSAGE_SIZE_CEILING} (512 MiB, \
                 RabbitMQ's ceiling; got {})",
                self.limits.max_message_size
            )));
        }
        if !self.amqp.enabled && !self.amqps.enabled {
            return Err(StartupError::Config(
                "no AMQP listener: enable [amqp] or [amqps]".into(),
            ));
        }
        let wants_tls = self.amqps.enabled || self.admin.tls || self.metrics.tls;
        if wants_tls && !self.tls.is_configured() {
            return Err(StartupError::Config(
                "TLS is enabled but tls.cert (--tls-cert) is not set".into(),
            ));
        }
        if wants_tls && self.tls.key.as_os_str().is_empty() {
            return Err(StartupError::Config(
                "TLS is enabled but tls.key (--tls-key) is not set".into(),
            ));
        }
        if self.tls.verify_peer && self.tls.ca.as_os_str().is_empty() {
            return Err(StartupError::Config(
                "tls.verify_peer needs tls.ca (--tls-ca), the CAs client certificates are \
                 checked against"
                    .into(),
            ));
        }
        for v in &self.tls.versions {
            if v != "tlsv1.2" && v != "tlsv1.3" {
                return Err(StartupError::Config(format!(
                    "tls.versions: unknown version '{v}' (expected \"tlsv1.2\" or \"tlsv1.3\")"
                )));
            }
        }
        if !matches!(
            self.auth.ssl_cert_login_from.as_str(),
            "common_name" | "subject_alternative_name"
        ) {
            return Err(StartupError::Config(format!(
                "auth.ssl_cert_login_from must be \"common_name\" or \
                 \"subject_alternative_name\" (got '{}')",
                self.auth.ssl_cert_login_from
            )));
        }
        if !matches!(
            self.auth.ssl_cert_login_san_type.as_str(),
            "dns" | "ip" | "email" | "uri"
        ) {
            return Err(StartupError::Config(format!(
                "auth.ssl_cert_login_san_type must be dns, ip, email or uri (got '{}')",
                self.auth.ssl_cert_login_san_type
            )));
        }
        for m in &self.auth.mechanisms {
            if !matches!(m.as_str(), "PLAIN" | "AMQPLAIN" | "EXTERNAL") {
                return Err(StartupError::Config(format!(
                    "auth.mechanisms: unknown mechanism '{m}' (PLAIN, AMQPLAIN, EXTERNAL)"
                )));
            }
        }
        if self.auth.default_vhost.is_empty() {
            return Err(StartupError::Config(
                "auth.default_vhost must not be empty".into(),
            ));
        }
        for (what, binds, port) in [
            ("amqp", &self.amqp.bind, self.amqp.port),
            ("amqps", &self.amqps.bind, self.amqps.port),
            ("admin", &self.admin.bind, self.admin.port),
            ("metrics", &self.metrics.bind, self.metrics.port),
        ] {
            if binds.is_empty() {
                return Err(StartupError::Config(format!(
                    "{what}.bind: give at least one address"
                )));
            }
            for bind in binds {
                socket_addr(bind, port)
                    .map_err(|e| StartupError::Config(format!("{what}.bind: {e}")))?;
            }
        }
        Ok(())
    }
}

/// The largest `max_message_size` RabbitMQ accepts (512 MiB).
pub const MAX_MESSAGE_SIZE_CEILING: u64 = 536_870_912;

/// Turn `bind` + `port` into a socket address; `bind` may be IPv4 or IPv6.
pub fn socket_addr(bind: &str, port: u16) -> Result<SocketAddr, String> {
    let ip: std::net::IpAddr = bind
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("'{bind}' is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

pub use layers::Overrides;
use layers::{env_layer, merge, parse_table};

#[cfg(test)]
mod tests;
