//! Store faults at start-up: a damaged, missing, read-only or locked
//! store. The real binary runs on a data directory that held confirmed
//! persistent messages; for every fault it either stops with a clear error
//! (exit status 1, naming the data directory and what is wrong, no panic)
//! or starts with every confirmed message. It never starts having silently
//! lost some. Run-time faults are in `store_faults_runtime.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

use crate::common::*;

pub const QUEUE: &str = "faults";
/// Enough messages (of [`SIZE`] bytes) that sled's log spans many writes.
pub const MESSAGES: usize = 300;
const SIZE: usize = 1000;
/// One message this large goes to a file of its own under sled's `blobs/`.
const BLOB_SIZE: usize = 300_000;

pub fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Publish `n` persistent messages to [`QUEUE`] (declared durable) and wait
/// until every one is confirmed.
pub async fn publish_confirmed(url: &str, n: usize) {
    let conn = lapin::Connection::connect(url, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(QUEUE.into(), durable(), FieldTable::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..n {
        let mut body = format!("{i:08}").into_bytes();
        body.resize(if i == n / 2 { BLOB_SIZE } else { SIZE }, b'.');
        let props = BasicProperties::default().with_delivery_mode(2);
        let options = BasicPublishOptions::default();
        let c = ch
            .basic_publish("".into(), QUEUE.into(), options, &body, props)
            .await
            .unwrap();
        confirms.push(c);
    }
    for c in confirms {
        assert!(matches!(c.await.unwrap(), Confirmation::Ack(_)));
    }
    conn.close(200, "done".into()).await.unwrap();
}

/// A data directory holding [`MESSAGES`] confirmed messages, shut down
/// cleanly.
async fn filled() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(on_disk(dir.path())).await;
    publish_confirmed(&server.amqp_url(), MESSAGES).await;
    server.shutdown().await;
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn sled_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("warren.sled").join(name)
}

fn truncate(p: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_len(len).unwrap();
}

/// Flip the bits of `n` bytes at `at`.
fn garble(p: &Path, at: u64, n: usize) {
    let mut bytes = std::fs::read(p).unwrap();
    let end = (at as usize + n).min(bytes.len());
    let at = (at as usize).min(end);
    for b in &mut bytes[at..end] {
        *b ^= 0xA5;
    }
    std::fs::write(p, bytes).unwrap();
}

fn zero(p: &Path) {
    let len = std::fs::metadata(p).unwrap().len();
    std::fs::write(p, vec![0u8; len as usize]).unwrap();
}

/// How a start on a damaged directory ended.
#[derive(Debug)]
pub enum Outcome {
    /// The broker stopped: its exit code and everything it printed.
    Refused { code: Option<i32>, log: String },
    /// The broker started, and this many messages were in [`QUEUE`].
    Started { messages: usize, log: String },
}

/// The broker binary on `dir`, with ephemeral ports.
pub fn warren_args(dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["--amqp-port", "0", "--admin-port", "0"]
        .iter()
        .chain(&["--metrics-port", "0", "--data-dir"])
        .map(|s| s.to_string())
        .collect();
    args.push(dir.display().to_string());
    args
}

/// Run `command` (the broker, possibly behind a wrapper) until it exits or
/// accepts connections; if it starts, count the messages of [`QUEUE`]
/// (taking them), then kill it.
pub async fn outcome(mut command: Command, log_path: &Path) -> Outcome {
    let out = std::fs::File::create(log_path).unwrap();
    let mut child = command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("WARREN_AMQP__BIND", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = read_log();
        if let Some(status) = child.try_wait().unwrap() {
            return Outcome::Refused {
                code: status.code(),
                log,
            };
        }
        if log.contains("Server startup complete") {
            let port: u16 = log
                .split("started TCP listener on ")
                .nth(1)
                .and_then(|rest| rest.lines().next())
                .and_then(|addr| addr.trim().rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("the broker logged its port");
            let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
            let messages = tokio::time::timeout(Duration::from_secs(20), count(&url))
                .await
                .expect("messages counted in time");
            let _ = child.kill();
            let _ = child.wait();
            return Outcome::Started {
                messages,
                log: read_log(),
            };
        }
        assert!(Instant::now() < deadline, "the broker hung:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Take every message of [`QUEUE`]; 0 if the queue does not exist.
async fn count(url: &str) -> usize {
    let conn = lapin::Connection::connect(url, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut n = 0;
    loop {
        match ch
            .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
            .await
        {
            Ok(Some(_)) => n += 1,
            Ok(None) => return n,
            Err(e) => {
                assert_eq!(amqp_error(&e).map(|(c, _)| c), Some(404), "{e}");
                return n;
            }
        }
    }
}

/// The broker binary on `dir`.
pub fn broker_on(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warren"));
    c.args(warren_args(dir));
    c
}

/// A refusal is clear: exit status 1, the data directory named, no panic.
#[track_caller]
pub fn assert_clear_refusal(code: Option<i32>, log: &str, dir: &Path, says: &[&str]) {
    assert_eq!(code, Some(1), "exit status: {log}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!log.contains(bad), "{bad} in the output:\n{log}");
    }
    let error = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("cannot open the store"))
        .unwrap_or_else(|| panic!("no start-up error:\n{log}"));
    assert!(
        error.contains(&dir.display().to_string()),
        "the data directory is not named: {error}"
    );
    for word in says {
        assert!(error.contains(word), "{word:?} not said: {error}");
    }
}

/// Apply each damage to a copy of a filled data directory and start the
/// broker on it: every outcome must be a clear refusal naming the damage,
/// or a start with every confirmed message.
/// A damage: its name, and what it does to a data directory.
type Damage<'a> = (&'a str, &'a dyn Fn(&Path));

async fn check_damage(cases: &[Damage<'_>], refusal_says: &[&str]) {
    let pristine = filled().await;
    let root = tempfile::tempdir().unwrap();
    for (i, (name, damage)) in cases.iter().enumerate() {
        let dir = root.path().join(format!("case{i}"));
        copy_dir(pristine.path(), &dir);
        damage(&dir);
        let log_path = root.path().join(format!("case{i}.log"));
        match outcome(broker_on(&dir), &log_path).await {
            Outcome::Started { messages, log } => {
                eprintln!("{name}: started");
                assert_eq!(
                    messages, MESSAGES,
                    "{name}: the broker started with {messages} of {MESSAGES} confirmed \
                     messages:\n{log}"
                )
            }
            Outcome::Refused { code, log } => {
                let error = log.lines().find(|l| l.contains("ERROR warren"));
                eprintln!("{name}: refused: {}", error.unwrap_or_default());
                assert_clear_refusal(code, &log, &dir, refusal_says)
            }
        }
    }
}

fn db_len(dir: &Path) -> u64 {
    std::fs::metadata(sled_file(dir, "db")).unwrap().len()
}

#[tokio::test]
async fn a_truncated_store_file_is_refused_or_complete() {
    let cut = |fraction: f64| {
        move |d: &Path| {
            let len = db_len(d);
            truncate(&sled_file(d, "db"), (len as f64 * fraction) as u64)
        }
    };
    let (empty, tenth, half, most) = (cut(0.0), cut(0.1), cut(0.5), cut(0.9));
    let torn_tail = |d: &Path| truncate(&sled_file(d, "db"), db_len(d) - 100);
    check_damage(
        &[
            ("db emptied", &empty),
            ("db cut to 10%", &tenth),
            ("db cut to 50%", &half),
            ("db cut to 90%", &most),
            ("db without its last 100 bytes", &torn_tail),
        ],
        &["damaged"],
    )
    .await;
}

#[tokio::test]
async fn a_garbled_store_file_is_refused_or_complete() {
    let flip = |fraction: f64| {
        move |d: &Path| {
            let at = (db_len(d) as f64 * fraction) as u64;
            garble(&sled_file(d, "db"), at, 16)
        }
    };
    let (head, tenth, half, most) = (flip(0.0), flip(0.1), flip(0.5), flip(0.9));
    let header = |d: &Path| garble(&sled_file(d, "db"), 30, 4);
    check_damage(
        &[
            ("db garbled at its start", &head),
            ("db garbled in its header", &header),
            ("db garbled at 10%", &tenth),
            ("db garbled at 50%", &half),
            ("db garbled at 90%", &most),
        ],
        &["damaged"],
    )
    .await;
}

#[tokio::test]
async fn a_damaged_or_missing_sled_config_is_refused_or_complete() {
    let zeroed = |d: &Path| zero(&sled_file(d, "conf"));
    let emptied = |d: &Path| truncate(&sled_file(d, "conf"), 0);
    let removed = |d: &Path| std::fs::remove_file(sled_file(d, "conf")).unwrap();
    let garbled = |d: &Path| garble(&sled_file(d, "conf"), 3, 4);
    check_damage(
        &[
            ("conf zeroed", &zeroed),
            ("conf emptied", &emptied),
            ("conf removed", &removed),
            ("conf garbled", &garbled),
        ],
        &["damaged"],
    )
    .await;
}

#[tokio::test]
async fn removed_or_damaged_sled_files_are_refused() {
    let db = |d: &Path| std::fs::remove_file(sled_file(d, "db")).unwrap();
    let all = |d: &Path| std::fs::remove_dir_all(d.join("warren.sled")).unwrap();
    let blobs = |d: &Path| {
        let blobs = d.join("warren.sled").join("blobs");
        let _ = std::fs::remove_dir_all(&blobs);
        std::fs::create_dir(blobs).unwrap();
    };
    let zeroed = |d: &Path| {
        for e in std::fs::read_dir(d.join("warren.sled").join("blobs")).unwrap() {
            zero(&e.unwrap().path());
        }
    };
    check_damage(
        &[
            ("blobs zeroed", &zeroed),
            ("db removed", &db),
            ("warren.sled removed", &all),
            ("blobs emptied", &blobs),
        ],
        &["damaged"],
    )
    .await;
}

/// After a crash (no clean shutdown) a cut store is refused too: what the
/// group commit made durable before the kill is known.
#[tokio::test]
async fn a_store_cut_after_a_crash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = warren_args(dir.path());
    let broker = spawn_warren(&args[6..], &[], None);
    publish_confirmed(&broker.url, MESSAGES).await;
    drop(broker); // SIGKILL
    let len = db_len(dir.path());
    truncate(&sled_file(dir.path(), "db"), len / 2);
    let log_path = dir.path().with_extension("log");
    match outcome(broker_on(dir.path()), &log_path).await {
        Outcome::Refused { code, log } => {
            assert_clear_refusal(code, &log, dir.path(), &["damaged"])
        }
        Outcome::Started { messages, log } => {
            assert_eq!(messages, MESSAGES, "started with {messages}:\n{log}")
        }
    }
}

/// A second broker on a data directory in use stops at once, saying so.
#[tokio::test]
async fn a_second_broker_on_a_locked_data_directory_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let args = warren_args(dir.path());
    let _first = spawn_warren(&args[6..], &[], None);
    let log_path = dir.path().with_extension("log");
    match outcome(broker_on(dir.path()), &log_path).await {
        Outcome::Refused { code, log } => {
            assert_clear_refusal(code, &log, dir.path(), &["in use", "lock"])
        }
        Outcome::Started { log, .. } => panic!("a second broker started:\n{log}"),
    }
}

/// Run `broker` with `dir` mounted read-only, in a mount namespace of its
/// own (root only: returns `None` when that is not possible).
fn read_only(dir: &Path, broker: Command) -> Option<Command> {
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot make a mount namespace (not root?)");
        return None;
    }
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@""#)
        .arg(dir)
        .arg(broker.get_program())
        .args(broker.get_args());
    Some(c)
}

#[tokio::test]
async fn a_read_only_data_directory_stops_with_a_clear_error() {
    let pristine = filled().await;
    let empty = tempfile::tempdir().unwrap();
    for dir in [pristine.path(), empty.path()] {
        let Some(command) = read_only(dir, broker_on(dir)) else {
            return;
        };
        let log_path = dir.with_extension("log");
        match outcome(command, &log_path).await {
            Outcome::Refused { code, log } => assert_clear_refusal(code, &log, dir, &["read-only"]),
            Outcome::Started { log, .. } => {
                panic!("started on a read-only directory:\n{log}")
            }
        }
    }
}
