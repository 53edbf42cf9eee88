//! Why the broker could not start: every failure before `Server startup
//! complete`, with enough context (path, address, key) to act on.

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot read config file {path}: {source}")]
    ConfigFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load TLS certificates: {0}")]
    Tls(String),
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store in {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        source: crate::store::StoreError,
    },
    #[error("cannot read definitions from {path}: {source}")]
    DefinitionsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A definitions file to import at boot was refused; nothing of it
    /// was imported.
    #[error("cannot import definitions from {path}: {location}: {reason}")]
    Definitions {
        path: std::path::PathBuf,
        location: String,
        reason: String,
    },
}
