//! The layers under the deserialised [`Config`](super::Config): the
//! embedded file, `--config`, `WARREN_<SECTION>__<KEY>` environment
//! variables and the flags of [`Overrides`], merged as TOML tables.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::startup::StartupError;

/// The highest-precedence layer: values from flags and named environment
/// variables. `None` leaves the lower layers' value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub amqp_port: Option<u16>,
    /// Also turns the AMQPS listener on.
    pub amqps_port: Option<u16>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Require and verify a client certificate.
    pub tls_verify_peer: bool,
    pub admin_port: Option<u16>,
    pub metrics_port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub encryption_key_file: Option<PathBuf>,
    pub encryption_old_key_file: Option<PathBuf>,
    pub ephemeral: bool,
    pub log_level: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    pub memory_high_watermark: Option<String>,
    pub disk_free_limit: Option<String>,
}

impl Overrides {
    pub(super) fn layer(&self) -> Table {
        let mut t = Table::new();
        let mut set = |section: &str, key: &str, value: Value| {
            section_mut(&mut t, section).insert(key.into(), value);
        };
        if let Some(p) = self.amqp_port {
            set("amqp", "port", Value::Integer(p.into()));
        }
        if let Some(p) = self.amqps_port {
            set("amqps", "port", Value::Integer(p.into()));
            set("amqps", "enabled", Value::Boolean(true));
        }
        for (key, path) in [
            ("cert", &self.tls_cert),
            ("key", &self.tls_key),
            ("ca", &self.tls_ca),
        ] {
            if let Some(p) = path {
                set("tls", key, Value::String(p.display().to_string()));
            }
        }
        if self.tls_verify_peer {
            set("tls", "verify_peer", Value::Boolean(true));
            set("tls", "fail_if_no_peer_cert", Value::Boolean(true));
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
        for (key, path) in [
            ("encryption_key_file", &self.encryption_key_file),
            ("encryption_old_key_file", &self.encryption_old_key_file),
        ] {
            if let Some(p) = path {
                set("storage", key, Value::String(p.display().to_string()));
            }
        }
        if self.ephemeral {
            set("storage", "ephemeral", Value::Boolean(true));
        }
        if let Some(l) = &self.log_level {
            set("log", "level", Value::String(l.clone()));
        }
        if let Some(f) = &self.log_format {
            set("log", "format", Value::String(f.clone()));
        }
        if let Some(w) = &self.memory_high_watermark {
            set("limits", "memory_high_watermark", Value::String(w.clone()));
        }
        if let Some(d) = &self.disk_free_limit {
            set("limits", "disk_free_limit", Value::String(d.clone()));
        }
        t
    }
}

pub(super) fn parse_table(text: &str, path: &Path) -> Result<Table, StartupError> {
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
pub(super) fn merge(base: &mut Table, over: Table) {
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
pub(super) fn env_layer(env: &[(String, String)]) -> Result<Table, StartupError> {
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
