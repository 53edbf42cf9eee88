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

use serde::Deserialize;
use toml::{Table, Value};

use crate::startup::StartupError;

/// The shipped, annotated configuration file.
pub const DEFAULT_CONFIG: &str = include_str!("../config.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub amqp: ListenerConfig,
    pub admin: HttpConfig,
    pub metrics: HttpConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub bind: String,
    pub port: u16,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    pub bind: String,
    pub port: u16,
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
}

impl StorageConfig {
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            group_commit_max_batch: self.group_commit_max_batch,
            group_commit_max_delay: std::time::Duration::from_micros(
                self.group_commit_max_delay_us,
            ),
            cache_bytes: self.cache_bytes,
            flush_interval: std::time::Duration::from_millis(self.flush_interval_ms.max(1)),
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
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

/// The highest-precedence layer: values from flags and named environment
/// variables. `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub amqp_port: Option<u16>,
    pub admin_port: Option<u16>,
    pub metrics_port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub ephemeral: bool,
    pub log_level: Option<String>,
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
    /// 127.0.0.1, nothing written to disk.
    pub fn ephemeral() -> Config {
        let mut c = Config::defaults();
        for (bind, port) in [
            (&mut c.amqp.bind, &mut c.amqp.port),
            (&mut c.admin.bind, &mut c.admin.port),
            (&mut c.metrics.bind, &mut c.metrics.port),
        ] {
            *bind = "127.0.0.1".into();
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
        if self.auth.default_vhost.is_empty() {
            return Err(StartupError::Config(
                "auth.default_vhost must not be empty".into(),
            ));
        }
        for (what, bind, port) in [
            ("amqp", &self.amqp.bind, self.amqp.port),
            ("admin", &self.admin.bind, self.admin.port),
            ("metrics", &self.metrics.bind, self.metrics.port),
        ] {
            socket_addr(bind, port)
                .map_err(|e| StartupError::Config(format!("{what}.bind: {e}")))?;
        }
        Ok(())
    }
}

/// Turn `bind` + `port` into a socket address; `bind` may be IPv4 or IPv6.
pub fn socket_addr(bind: &str, port: u16) -> Result<SocketAddr, String> {
    let ip: std::net::IpAddr = bind
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("'{bind}' is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

impl Overrides {
    fn layer(&self) -> Table {
        let mut t = Table::new();
        let mut set = |section: &str, key: &str, value: Value| {
            section_mut(&mut t, section).insert(key.into(), value);
        };
        if let Some(p) = self.amqp_port {
            set("amqp", "port", Value::Integer(p.into()));
        }
        if let Some(p) = self.admin_port {
            set("admin", "port", Value::Integer(p.into()));
        }
        if let Some(p) = self.metrics_port {
            set("metrics", "port", Value::Integer(p.into()));
        }
        if let Some(d) = &self.data_dir {
            set(
                "storage",
                "data_dir",
                Value::String(d.display().to_string()),
            );
        }
        if self.ephemeral {
            set("storage", "ephemeral", Value::Boolean(true));
        }
        if let Some(l) = &self.log_level {
            set("log", "level", Value::String(l.clone()));
        }
        t
    }
}

fn parse_table(text: &str, path: &Path) -> Result<Table, StartupError> {
    text.parse::<Table>()
        .map_err(|e| StartupError::Config(format!("{}: {e}", path.display())))
}

fn section_mut<'a>(t: &'a mut Table, section: &str) -> &'a mut Table {
    let entry = t
        .entry(section.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    match entry {
        Value::Table(inner) => inner,
        _ => unreachable!(),
    }
}

/// Deep-merge `over` into `base`.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Environment layer: `WARREN_SECTION__KEY=value`, plus the RabbitMQ image's
/// default-user variables (the `WARREN_` names win over the `RABBITMQ_` ones).
fn env_layer(env: &[(String, String)]) -> Result<Table, StartupError> {
    let mut t = Table::new();
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    for (key, var) in [
        ("default_user", "DEFAULT_USER"),
        ("default_pass", "DEFAULT_PASS"),
        ("default_vhost", "DEFAULT_VHOST"),
    ] {
        if let Some(v) = get(&format!("WARREN_{var}")).or_else(|| get(&format!("RABBITMQ_{var}"))) {
            section_mut(&mut t, "auth").insert(key.into(), Value::String(v));
        }
    }
    for (name, raw) in env {
        let Some(path) = name.strip_prefix("WARREN_") else {
            continue;
        };
        let Some((section, key)) = path.split_once("__") else {
            continue;
        };
        let value = parse_env_value(raw);
        section_mut(&mut t, &section.to_ascii_lowercase()).insert(key.to_ascii_lowercase(), value);
    }
    Ok(t)
}

/// Environment values are TOML values when they parse as one (numbers,
/// booleans, arrays), and plain strings otherwise.
fn parse_env_value(raw: &str) -> Value {
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.into())),
        Err(_) => Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shipped_file_is_the_default() {
        let c = Config::defaults();
        assert_eq!(c.amqp.port, 5672);
        assert_eq!(c.admin.port, 15672);
        assert_eq!(c.metrics.port, 15692);
        assert_eq!(c.auth.default_user, "guest");
        assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(c.limits.channel_max, 2047);
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("warren.toml");
        std::fs::write(&file, "[amqp]\nport = 1111\n[limits]\nheartbeat = 5\n").unwrap();
        let overrides = Overrides {
            config_file: Some(file),
            admin_port: Some(3333),
            ..Default::default()
        };
        let c = Config::load(
            &overrides,
            env(&[
                ("WARREN_LIMITS__HEARTBEAT", "7"),
                ("WARREN_ADMIN__PORT", "2222"),
                ("RABBITMQ_DEFAULT_USER", "rabbit"),
                ("RABBITMQ_DEFAULT_PASS", "secret"),
                ("WARREN_DEFAULT_PASS", "wins"),
            ]),
        )
        .unwrap();
        assert_eq!(c.amqp.port, 1111);
        assert_eq!(c.limits.heartbeat, 7);
        assert_eq!(c.admin.port, 3333);
        assert_eq!(c.auth.default_user, "rabbit");
        assert_eq!(c.auth.default_pass, "wins");
    }

    #[test]
    fn environment_values_may_be_toml_arrays() {
        // The Docker image lets guest in from anywhere this way.
        let c = Config::load(
            &Overrides::default(),
            env(&[("WARREN_AUTH__LOOPBACK_USERS", "[]")]),
        )
        .unwrap();
        assert!(c.auth.loopback_users.is_empty());
        let c = Config::load(
            &Overrides::default(),
            env(&[("WARREN_STORAGE__DATA_DIR", "/var/lib/x")]),
        )
        .unwrap();
        assert_eq!(c.storage.data_dir, PathBuf::from("/var/lib/x"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported() {
        let e =
            Config::load(&Overrides::default(), env(&[("WARREN_AMQP__PROT", "1")])).unwrap_err();
        assert!(e.to_string().contains("prot"), "{e}");
        let e = Config::load(
            &Overrides::default(),
            env(&[("WARREN_AMQP__BIND", "nowhere")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }
}
