//! The audit trail: a JSON-lines file of logins (succeeded and failed) and
//! of every change to definitions and access — who made it, from where,
//! through which interface, what, and when.
//!
//! Records are handed to a writer thread (`warren-audit`) and never block
//! the caller; the thread appends each batch it finds waiting and then
//! `fdatasync`s the file, so a record is on disk within one sync of the
//! event. The file is opened in append mode and never rewritten or
//! truncated. Rotation: rename the file, then send the broker SIGHUP
//! (`Server::reopen_audit_log`): the next batch goes to a new file at the
//! configured path. A failure to write is logged, once per failure
//! streak, and the records of that batch are lost; the broker keeps serving.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// Who made a change, and through which interface.
#[derive(Clone, Debug)]
pub struct Actor {
    pub user: String,
    pub peer: Option<SocketAddr>,
    /// `amqp`, `http`, `cli` or `internal` (the broker's own API).
    pub via: &'static str,
}

impl Actor {
    /// A change made through the Rust API by the embedding program.
    pub fn internal() -> Actor {
        Actor {
            user: "rmq-internal".into(),
            peer: None,
            via: "internal",
        }
    }

    pub fn amqp(user: &str, peer: SocketAddr) -> Actor {
        Actor {
            user: user.to_string(),
            peer: Some(peer),
            via: "amqp",
        }
    }
}

enum Command {
    Record(String),
    Reopen,
}

/// The audit log; a no-op when disabled.
#[derive(Debug)]
pub struct AuditLog {
    sender: Option<Mutex<mpsc::Sender<Command>>>,
}

impl AuditLog {
    pub fn disabled() -> AuditLog {
        AuditLog { sender: None }
    }

    /// Open (create) `path` for appending and start the writer thread.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let (tx, rx) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("warren-audit".into())
            .spawn(move || write_loop(path, file, rx))?;
        Ok(AuditLog {
            sender: Some(Mutex::new(tx)),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Record `event`: `time`, `event`, who (`user`, `peer`, `via`) and
    /// `what` (the event's own fields).
    pub fn record(&self, event: &str, actor: Option<&Actor>, fields: Value) {
        let Some(sender) = &self.sender else {
            return;
        };
        let mut line = Map::new();
        line.insert(
            "time".into(),
            Value::String(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
        );
        line.insert("event".into(), Value::String(event.into()));
        if let Some(a) = actor {
            line.insert("user".into(), Value::String(a.user.clone()));
            line.insert(
                "peer".into(),
                a.peer.map_or(Value::Null, |p| Value::String(p.to_string())),
            );
            line.insert("via".into(), Value::String(a.via.into()));
        }
        // What was done goes under `what`, apart from who did it.
        line.insert("what".into(), fields);
        let text = Value::Object(line).to_string();
        let _ = sender.lock().send(Command::Record(text));
    }

    /// A login attempt, succeeded or not.
    #[allow(clippy::too_many_arguments)]
    pub fn login(
        &self,
        succeeded: bool,
        user: &str,
        peer: SocketAddr,
        mechanism: &str,
        tls: bool,
        vhost: Option<&str>,
        reason: Option<&str>,
    ) {
        if !self.is_enabled() {
            return;
        }
        let event = if succeeded {
            "login.succeeded"
        } else {
            "login.failed"
        };
        self.record(
            event,
            Some(&Actor::amqp(user, peer)),
            json!({"mechanism": mechanism, "tls": tls, "vhost": vhost, "reason": reason}),
        );
    }

    /// Start a new file at the configured path (after rotation).
    pub fn reopen(&self) {
        if let Some(sender) = &self.sender {
            let _ = sender.lock().send(Command::Reopen);
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_loop(path: PathBuf, mut file: File, rx: mpsc::Receiver<Command>) {
    let mut failing = false;
    let mut flush = |file: &mut File, batch: &mut String| {
        if batch.is_empty() {
            return;
        }
        let written = file
            .write_all(batch.as_bytes())
            .and_then(|()| file.sync_data());
        batch.clear();
        match written {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::error!(path = %path.display(), "cannot write the audit log: {e}");
            }
            Err(_) => {}
        }
    };
    let mut batch = String::new();
    while let Ok(first) = rx.recv() {
        for cmd in std::iter::once(first).chain(rx.try_iter()) {
            match cmd {
                Command::Record(line) => {
                    batch.push_str(&line);
                    batch.push('\n');
                }
                Command::Reopen => {
                    // What came before the rotation belongs to the old file.
                    flush(&mut file, &mut batch);
                    match open_append(&path) {
                        Ok(f) => file = f,
                        Err(e) => tracing::error!(
                            path = %path.display(),
                            "cannot reopen the audit log: {e}"
                        ),
                    }
                }
            }
        }
        flush(&mut file, &mut batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_appended_as_json_lines_and_reopen_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        log.record(
            "vhost.created",
            Some(&Actor::internal()),
            json!({"vhost": "v"}),
        );
        let rotated = dir.path().join("audit.log.1");
        let wait_for = |p: &Path, n: usize| {
            for _ in 0..500 {
                if std::fs::read_to_string(p).is_ok_and(|t| t.lines().count() >= n) {
                    return std::fs::read_to_string(p).unwrap();
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("{} never had {n} lines", p.display());
        };
        wait_for(&path, 1);
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.record("vhost.deleted", None, json!({"vhost": "v"}));
        let text = wait_for(&path, 1);
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["event"], "vhost.deleted");
        assert_eq!(line["what"]["vhost"], "v");
        let old: Value =
            serde_json::from_str(wait_for(&rotated, 1).lines().next().unwrap()).unwrap();
        assert_eq!(old["event"], "vhost.created");
        assert_eq!(old["user"], "rmq-internal");
        assert_eq!(old["via"], "internal");
        assert!(old["time"].as_str().unwrap().ends_with('Z'));
    }
}
