//! Opening a store: versions, first boots, clean shutdowns.

use super::*;

fn options() -> StoreOptions {
    StoreOptions {
        group_commit_max_batch: 16,
        group_commit_max_delay: Duration::ZERO,
        cache_bytes: 1 << 20,
        flush_interval: Duration::from_millis(50),
        flow_unwritten_bytes: 64 << 20,
        write_stall: Duration::from_secs(10),
    }
}

#[test]
fn an_unknown_format_version_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let backend = sled_backend::SledBackend::open(dir.path(), &options()).unwrap();
        backend.insert(Tree::Meta, b"format", b"999").unwrap();
        backend.flush().unwrap();
    }
    let err = Store::open(dir.path(), &options()).unwrap_err();
    assert!(matches!(err, StoreError::Version { .. }), "{err}");
    assert!(err.to_string().contains("format version 999"), "{err}");
}

#[test]
fn a_store_knows_its_first_boot_and_clean_shutdowns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &options()).unwrap();
    assert!(store.is_fresh() && store.was_clean());
    store.close().unwrap();
    drop(store);
    let store = Store::open(dir.path(), &options()).unwrap();
    assert!(!store.is_fresh() && store.was_clean());
    drop(store); // no close: a crash
    let store = Store::open(dir.path(), &options()).unwrap();
    assert!(!store.was_clean());
}

#[test]
fn a_store_behind_its_epoch_file_is_refused_and_one_without_a_file_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &options()).unwrap();
    store.close().unwrap();
    drop(store);
    let file = dir.path().join(epoch::FILE_NAME);
    let recorded: u64 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The file is ahead of sled: sled lost writes.
    std::fs::write(&file, format!("{}\n", recorded + 5)).unwrap();
    let err = Store::open(dir.path(), &options()).unwrap_err();
    assert!(matches!(err, StoreError::Damaged(_)), "{err}");
    assert!(err.to_string().contains("lost the end of its log"), "{err}");
    // Removing the file accepts what sled holds (as a store written before
    // epochs existed), and a new file is written.
    std::fs::remove_file(&file).unwrap();
    let store = Store::open(dir.path(), &options()).unwrap();
    store.close().unwrap();
    drop(store);
    let now: u64 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(now > recorded, "{now} after {recorded}");
}
