//! Definitions imported at boot (`[definitions] load_path`, RabbitMQ's
//! `load_definitions`): one file, or every `*.json` file of a directory in
//! name order, each imported whole or not at all, after the store is
//! restored and before the listeners accept connections.
//!
//! A file that cannot be read, is not JSON, or is refused stops start-up
//! with a [`StartupError`] naming the file and the first fault's location;
//! files before it in name order stay imported (they are kept by the store
//! like any change).

use std::path::{Path, PathBuf};

use crate::broker::Broker;
use crate::broker::audit::Actor;
use crate::startup::StartupError;

/// The files `path` names: itself, or a directory's `*.json` files sorted
/// by name.
fn files(path: &Path) -> Result<Vec<PathBuf>, StartupError> {
    let read_error = |source| StartupError::DefinitionsFile {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let p = entry.map_err(read_error)?.path();
        if p.extension().is_some_and(|e| e == "json") && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

impl Broker {
    /// Import the configured boot-time definitions, if any.
    pub fn import_boot_definitions(&self) -> Result<(), StartupError> {
        if !self.config.definitions.is_configured() {
            return Ok(());
        }
        let path = self.config.definitions.load_path.clone();
        let files = files(&path)?;
        if files.is_empty() {
            tracing::warn!(path = %path.display(), "no *.json definitions files to import");
        }
        for file in files {
            let text = std::fs::read(&file).map_err(|source| StartupError::DefinitionsFile {
                path: file.clone(),
                source,
            })?;
            let doc: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| StartupError::Definitions {
                    path: file.clone(),
                    location: format!("line {}, column {}", e.line(), e.column()),
                    reason: format!("not JSON: {e}"),
                })?;
            let summary = self
                .import_definitions(&doc, None, &Actor::internal())
                .map_err(|e| StartupError::Definitions {
                    path: file.clone(),
                    location: e.location,
                    reason: e.reason,
                })?;
            tracing::info!(
                file = %file.display(),
                users = summary.users,
                vhosts = summary.vhosts,
                queues = summary.queues,
                exchanges = summary.exchanges,
                bindings = summary.bindings,
                "imported definitions at boot"
            );
            for note in &summary.skipped {
                tracing::warn!(file = %file.display(), "{note}");
            }
        }
        Ok(())
    }
}
