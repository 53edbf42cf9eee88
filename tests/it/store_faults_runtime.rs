//! Store faults at run time: a store that cannot write (a full disk, an I/O
//! error, a data directory removed). Publishes that are not durable are
//! nacked, never confirmed; the disk alarm blocks publishers; nothing
//! confirmed is lost; when writes work again the alarm clears. Start-up
//! faults are in `store_faults.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use warren::broker::alarms::Resource;
use warren::store::{Store, StoreError};
use warren::{Config, Server};

use crate::common::*;
use crate::store_faults::{Outcome, QUEUE, broker_on, copy_dir, durable, outcome};

/// A disk that fails every write while `broken`.
fn failing_disk(broken: &Arc<AtomicBool>) -> Arc<HookedBackend> {
    let broken = broken.clone();
    Arc::new(HookedBackend::new(move || {
        if broken.load(Ordering::SeqCst) {
            Err(StoreError::Io(
                "No space left on device (os error 28)".into(),
            ))
        } else {
            Ok(())
        }
    }))
}

/// Publish `body` and wait for its confirm: true for an ack.
async fn confirmed(ch: &Channel, q: &str, body: &[u8], persistent: bool) -> bool {
    let props = BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
    let publish = async {
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap()
    };
    let confirm = tokio::time::timeout(Duration::from_secs(5), publish)
        .await
        .expect("a confirm or a nack within 5 s");
    matches!(confirm, Confirmation::Ack(_))
}

/// Every body left in `q`, taken.
async fn bodies(ch: &Channel, q: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

fn disk_alarm(server: &Server) -> bool {
    server.broker().alarms.is_on(Resource::Disk)
}

#[tokio::test]
async fn a_failing_disk_nacks_blocks_publishers_and_clears_when_writes_work_again() {
    let broken = Arc::new(AtomicBool::new(false));
    let disk = failing_disk(&broken);
    let store = Store::over(disk.clone()).unwrap();
    let server = Server::start_with_store(Config::ephemeral(), store)
        .await
        .unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare("kept".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..10 {
        let body = format!("before-{i}");
        assert!(confirmed(&ch, "kept", body.as_bytes(), true).await);
        acked.push(body);
    }

    broken.store(true, Ordering::SeqCst);
    assert!(
        !confirmed(&ch, "kept", b"during", true).await,
        "a publish the disk could not take was confirmed"
    );
    assert!(disk_alarm(&server), "no disk alarm");
    assert!(
        eventually(Duration::from_secs(3), || conn.status().blocked()).await,
        "publishers were not blocked"
    );

    // Nobody publishes now (they are blocked): the store must find out by
    // itself that it writes again.
    broken.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || !disk_alarm(&server)).await,
        "the disk alarm stayed on after the disk recovered"
    );
    assert!(
        eventually(Duration::from_secs(3), || !conn.status().blocked()).await,
        "publishers stayed blocked"
    );
    for i in 0..10 {
        let body = format!("after-{i}");
        assert!(confirmed(&ch, "kept", body.as_bytes(), true).await);
        acked.push(body);
    }
    conn.close(200, "bye".into()).await.unwrap();
    server.shutdown().await;

    // What the disk holds: every confirmed message, in order (the nacked
    // one may be there too).
    let store = Store::over(disk).unwrap();
    let server = Server::start_with_store(Config::ephemeral(), store)
        .await
        .unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    let found: Vec<String> = bodies(&ch, "kept")
        .await
        .into_iter()
        .filter(|b| b != "during")
        .collect();
    assert_eq!(found, acked);
    server.shutdown().await;
}

/// Messages of a long queue live only in the store: a write that fails
/// must not drop them (transient ones were confirmed at once).
#[tokio::test]
async fn messages_paged_out_while_the_disk_fails_are_kept() {
    let broken = Arc::new(AtomicBool::new(false));
    let store = Store::over(failing_disk(&broken)).unwrap();
    let mut config = Config::ephemeral();
    config.storage.queue_memory_messages = 10;
    let server = Server::start_with_store(config, store).await.unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for q in ["transient", "persistent"] {
        ch.queue_declare(q.into(), durable(), FieldTable::default())
            .await
            .unwrap();
    }
    // Publishes go out without waiting for confirms, from a task: once a
    // write fails the alarm blocks the connection (and lapin holds back
    // the rest) until it clears.
    broken.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for i in 0..250 {
        let (q, size) = if i < 200 {
            ("transient", 1000)
        } else {
            ("persistent", 10)
        };
        let mut body = format!("{q}-{i:04}").into_bytes();
        body.resize(size, b'.');
        sent.push((q, String::from_utf8(body).unwrap()));
    }
    let publisher = {
        let ch = ch.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut confirms = Vec::new();
            for (q, body) in sent {
                let mode = if q == "transient" { 1 } else { 2 };
                let props = BasicProperties::default().with_delivery_mode(mode);
                let options = BasicPublishOptions::default();
                let c = ch.basic_publish("".into(), q.into(), options, body.as_bytes(), props);
                confirms.push(c.await.unwrap());
            }
            for c in confirms {
                c.await.unwrap();
            }
        })
    };
    // Let a few commits fail.
    assert!(eventually(Duration::from_secs(5), || disk_alarm(&server)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    broken.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || !disk_alarm(&server)).await,
        "the disk alarm stayed on after the disk recovered"
    );
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("every publish answered once the disk is back")
        .unwrap();
    let sent: Vec<String> = sent.into_iter().map(|(_, b)| b).collect();
    // Nacked or not, every message is still queued: a failed write drops
    // none of them from memory.
    let mut kept = bodies(&ch, "transient").await;
    kept.extend(bodies(&ch, "persistent").await);
    assert_eq!(kept.len(), sent.len(), "missing: {:?}", {
        let kept: std::collections::HashSet<_> = kept.iter().collect();
        sent.iter()
            .filter(|b| !kept.contains(b))
            .map(|b| &b[..b.len().min(16)])
            .collect::<Vec<_>>()
    });
    assert_eq!(kept, sent);
    server.shutdown().await;
}

/// A file system mounted for the length of a test (root only).
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn run(program: &str, args: &[&std::ffi::OsStr]) -> bool {
        std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn tmpfs(path: &std::path::Path, size: &str) -> Option<Mounted> {
        std::fs::create_dir_all(path).unwrap();
        let size = format!("size={size}");
        let args = ["-t", "tmpfs", "-o", &size, "tmpfs"].map(std::ffi::OsStr::new);
        let mounted = Mounted::run("mount", &[&args[..], &[path.as_os_str()]].concat());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs (not root?)");
        }
        mounted.then(|| Mounted(path.to_path_buf()))
    }

    /// A small ext4 file system on a loop device that turns read-only on
    /// its first error, as a real one does (errors=remount-ro).
    fn ext4(image: &std::path::Path, path: &std::path::Path) -> Option<Mounted> {
        std::fs::create_dir_all(path).unwrap();
        std::fs::File::create(image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let os = std::ffi::OsStr::new;
        let mounted = Mounted::run("mkfs.ext4", &[os("-q"), os("-F"), image.as_os_str()])
            && Mounted::run(
                "mount",
                &[
                    os("-o"),
                    os("loop,errors=remount-ro"),
                    image.as_os_str(),
                    path.as_os_str(),
                ],
            );
        if !mounted {
            eprintln!("skipped: cannot mount an ext4 image (not root? no mkfs.ext4?)");
        }
        mounted.then(|| Mounted(path.to_path_buf()))
    }

    /// Make the ext4 file system fail as on an I/O error: it turns
    /// read-only under the files open on it.
    fn fail_ext4(&self) {
        let source = std::process::Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.0)
            .output()
            .unwrap();
        let device = String::from_utf8(source.stdout).unwrap();
        let name = device.trim().rsplit('/').next().unwrap().to_string();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "test").unwrap();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A real full disk: sled's write fails with ENOSPC.
#[tokio::test]
async fn a_full_disk_nacks_raises_the_alarm_and_loses_nothing_confirmed() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    let Some(_tmpfs) = Mounted::tmpfs(&mnt, "8m") else {
        return;
    };
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![1u8; 5 << 20]).unwrap();
    let data = mnt.join("data");
    let mut config = on_disk(&data);
    // The free-space alarm would stop publishers first: this is about the
    // write that fails anyway.
    config.limits.disk_free_limit = warren::config::SizeSetting::Number(0.0);
    config.storage.write_stall_ms = 1000;
    let server = Server::start(config.clone()).await.unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(QUEUE.into(), durable(), FieldTable::default())
        .await
        .unwrap();
    let mut acked = Vec::new();
    let mut nacked = false;
    for i in 0..200 {
        let mut body = format!("{i:04}").into_bytes();
        body.resize(32 * 1024, b'.');
        if confirmed(&ch, QUEUE, &body, true).await {
            acked.push(i);
        } else {
            nacked = true;
            break;
        }
    }
    eprintln!("acked {} before the disk filled", acked.len());
    assert!(nacked, "the disk never filled");
    assert!(disk_alarm(&server));
    assert!(eventually(Duration::from_secs(3), || conn.status().blocked()).await);
    // sled takes no write after a failed one (it keeps the error, or waits
    // for the failed write forever): the alarm stays on until a restart,
    // which must not hang and must find every confirmed message.
    std::fs::remove_file(&filler).unwrap();
    drop(conn);
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not hang on a failed disk");
    // This process's stuck sled threads still hold the lock: a new
    // process starts on a copy of what is on the disk (as after a crash).
    // The publishes stopped at the first nack: the confirmed ones, and
    // perhaps that one, must be there.
    let copy = root.path().join("copy");
    copy_dir(&data, &copy);
    let log = root.path().join("restart.log");
    match outcome(broker_on(&copy), &log).await {
        Outcome::Started { messages, log } => assert!(
            (acked.len()..=acked.len() + 1).contains(&messages),
            "{} confirmed, {messages} found after the restart:\n{log}",
            acked.len()
        ),
        Outcome::Refused { log, .. } => panic!("no restart after a full disk:\n{log}"),
    }
}

/// A write that never returns (sled waits forever for some failed writes):
/// its publishes are nacked after `write_stall`, the alarm goes on, and
/// clears once the write completes.
#[tokio::test]
async fn a_stalled_write_is_nacked_and_raises_the_alarm() {
    let stalled = Arc::new(AtomicBool::new(false));
    let stall = stalled.clone();
    let disk = Arc::new(HookedBackend::new(move || {
        while stall.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }));
    let options = warren::store::StoreOptions {
        group_commit_max_batch: 64,
        group_commit_max_delay: Duration::ZERO,
        cache_bytes: 0,
        flush_interval: Duration::from_millis(50),
        flow_unwritten_bytes: 64 << 20,
        write_stall: Duration::from_millis(300),
    };
    let store = Store::over_with(disk, &options).unwrap();
    let server = Server::start_with_store(Config::ephemeral(), store)
        .await
        .unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare("kept".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    assert!(confirmed(&ch, "kept", b"before", true).await);
    stalled.store(true, Ordering::SeqCst);
    assert!(
        !confirmed(&ch, "kept", b"stuck", true).await,
        "a publish whose write never finished was confirmed"
    );
    assert!(disk_alarm(&server));
    stalled.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(3), || !disk_alarm(&server)).await,
        "the alarm stayed on after the write completed"
    );
    assert!(confirmed(&ch, "kept", b"after", true).await);
    server.shutdown().await;
}

/// The data directory removed under a running broker: sled would go on
/// writing to files nobody will read, so nothing may be confirmed.
#[tokio::test]
async fn a_data_directory_removed_while_running_stops_confirms_and_raises_the_alarm() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let server = Server::start(on_disk(&dir)).await.unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare("kept".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    assert!(confirmed(&ch, "kept", b"before", true).await);
    std::fs::remove_dir_all(&dir).unwrap();
    // Nacked, or held back by the alarm if it came first: never confirmed.
    let publish = {
        let ch = ch.clone();
        tokio::spawn(async move {
            let props = BasicProperties::default().with_delivery_mode(2);
            let options = BasicPublishOptions::default();
            let confirm = ch.basic_publish("".into(), "kept".into(), options, b"after", props);
            confirm.await.unwrap().await.unwrap()
        })
    };
    assert!(
        eventually(Duration::from_secs(3), || disk_alarm(&server)).await,
        "no alarm for a removed data directory"
    );
    match tokio::time::timeout(Duration::from_secs(2), publish).await {
        Ok(confirm) => assert!(
            !matches!(confirm.unwrap(), Confirmation::Ack(_)),
            "a publish into a removed data directory was confirmed"
        ),
        Err(_) => assert!(conn.status().blocked(), "neither answered nor blocked"),
    }
    drop(conn);
    server.shutdown().await;
}

/// The file system under the data directory turns read-only (ext4 does on
/// an I/O error): nothing more is confirmed, the alarm goes on, no panic,
/// the shutdown ends, and what was confirmed is there after a restart.
#[tokio::test]
async fn a_data_directory_turned_read_only_while_running_raises_the_alarm() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    let Some(fs) = Mounted::ext4(&root.path().join("image"), &mnt) else {
        return;
    };
    let data = mnt.join("data");
    let mut config = on_disk(&data);
    config.limits.disk_free_limit = warren::config::SizeSetting::Number(0.0);
    config.storage.write_stall_ms = 1000;
    let server = Server::start(config).await.unwrap();
    let conn = connect(&server).await;
    let ch = channel(&conn).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(QUEUE.into(), durable(), FieldTable::default())
        .await
        .unwrap();
    for i in 0..10 {
        assert!(confirmed(&ch, QUEUE, format!("{i}").as_bytes(), true).await);
    }
    fs.fail_ext4();
    let answer = {
        let ch = ch.clone();
        tokio::spawn(async move {
            let props = BasicProperties::default().with_delivery_mode(2);
            let options = BasicPublishOptions::default();
            let confirm = ch.basic_publish("".into(), QUEUE.into(), options, b"late", props);
            confirm.await.unwrap().await.unwrap()
        })
    };
    match tokio::time::timeout(Duration::from_secs(5), answer).await {
        Ok(confirm) => assert!(
            !matches!(confirm.unwrap(), Confirmation::Ack(_)),
            "confirmed on a read-only file system"
        ),
        Err(_) => assert!(conn.status().blocked(), "neither answered nor blocked"),
    }
    assert!(eventually(Duration::from_secs(3), || disk_alarm(&server)).await);
    drop(conn);
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not hang on a read-only disk");
    let copy = root.path().join("copy");
    copy_dir(&data, &copy);
    match outcome(broker_on(&copy), &root.path().join("restart.log")).await {
        Outcome::Started { messages, log } => {
            assert!((10..=11).contains(&messages), "{messages} found:\n{log}")
        }
        Outcome::Refused { log, .. } => panic!("no restart:\n{log}"),
    }
}
