//! The keys of the `definitions` tree, and the rewrite of older stores'
//! keys into this layout.
//!
//! A key is the record's kind letter, then each part that names the record
//! as its length (u32, big-endian) and its bytes. Formats 2 and 3 joined
//! the parts with NUL instead, so two records whose names differed only in
//! where a NUL fell — a binding to queue `x` with routing key `a\0b` and one
//! to queue `x\0a` with key `b` — shared a key, and one silently replaced
//! the other. Names are AMQP short strings, which may hold NUL.
//!
//! [`migrate`] rewrites a format 2 or 3 store's keys when it is opened:
//! each record is read and its key built again from the record, so a
//! rewrite interrupted by a crash is finished by the next open (the format
//! marker moves on only once it is done).

use serde::de::DeserializeOwned;

use super::definitions::{
    BindingRecord, ExchangeRecord, GlobalParameterRecord, ParameterRecord, PermissionRecord,
    PolicyRecord, QueueRecord, TopicPermissionRecord, UserRecord, VhostLimitsRecord, VhostRecord,
};
use super::{Backend, StoreError, StoreResult, Tree};

pub(super) fn key(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| 4 + p.len()).sum::<usize>());
    k.push(kind);
    for p in parts {
        // Parts are names and a binding's arguments, far below 4 GiB.
        k.extend_from_slice(&(p.len() as u32).to_be_bytes());
        k.extend_from_slice(p.as_bytes());
    }
    k
}

pub(super) fn binding_key(b: &BindingRecord) -> Vec<u8> {
    let dest = format!(
        "{}{}",
        if b.destination_is_queue { 'q' } else { 'e' },
        b.destination
    );
    // Arguments take part in a binding's identity; their JSON form is stable
    // because FieldTable is a sorted map.
    let args = serde_json::to_string(&b.arguments).unwrap_or_default();
    key(b'b', &[&b.vhost, &b.source, &dest, &b.routing_key, &args])
}

/// Give every record of `kind` the key `key_of` builds from it; returns
/// how many moved.
fn rekey<T: DeserializeOwned>(
    backend: &dyn Backend,
    kind: u8,
    what: &'static str,
    key_of: impl Fn(&T) -> Vec<u8>,
) -> StoreResult<usize> {
    // Read the whole range before writing, so no moved key is read again.
    let entries = backend.scan(Tree::Definitions, &[kind], &[kind + 1], usize::MAX)?;
    let mut moved = 0;
    for (old, value) in entries {
        let record: T = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
            what,
            detail: e.to_string(),
        })?;
        let new = key_of(&record);
        if new != old {
            backend.insert(Tree::Definitions, &new, &value)?;
            backend.remove(Tree::Definitions, &old)?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// Rewrite a format 2 or 3 store's definition keys (NUL-joined) in this
/// layout. Not flushed: the caller flushes before recording the format.
pub(super) fn migrate(backend: &dyn Backend) -> StoreResult<usize> {
    let b = backend;
    let mut n = 0;
    n += rekey(b, b'v', "vhost", |v: &VhostRecord| key(b'v', &[&v.name]))?;
    n += rekey(b, b'u', "user", |u: &UserRecord| key(b'u', &[&u.name]))?;
    n += rekey(b, b'p', "permission", |p: &PermissionRecord| {
        key(b'p', &[&p.user, &p.vhost])
    })?;
    n += rekey(b, b't', "topic permission", |t: &TopicPermissionRecord| {
        key(b't', &[&t.user, &t.vhost, &t.exchange])
    })?;
    n += rekey(b, b'l', "vhost limits", |l: &VhostLimitsRecord| {
        key(b'l', &[&l.vhost])
    })?;
    for (kind, what) in [(b'P', "policy"), (b'O', "operator policy")] {
        n += rekey(b, kind, what, |p: &PolicyRecord| {
            key(kind, &[&p.vhost, &p.name])
        })?;
    }
    n += rekey(b, b'r', "parameter", |p: &ParameterRecord| {
        key(b'r', &[&p.component, &p.vhost, &p.name])
    })?;
    n += rekey(b, b'g', "global parameter", |g: &GlobalParameterRecord| {
        key(b'g', &[&g.name])
    })?;
    n += rekey(b, b'e', "exchange", |e: &ExchangeRecord| {
        key(b'e', &[&e.vhost, &e.name])
    })?;
    n += rekey(b, b'q', "queue", |q: &QueueRecord| {
        key(b'q', &[&q.vhost, &q.name])
    })?;
    n += rekey(b, b'b', "binding", binding_key)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryBackend, Store};
    use amq_protocol::types::FieldTable;
    use std::sync::Arc;

    fn binding(destination: &str, routing_key: &str) -> BindingRecord {
        BindingRecord {
            vhost: "/".into(),
            source: "amq.direct".into(),
            destination: destination.into(),
            destination_is_queue: true,
            routing_key: routing_key.into(),
            arguments: FieldTable::default(),
        }
    }

    #[test]
    fn names_that_differ_only_where_a_nul_falls_get_different_keys() {
        assert_ne!(
            binding_key(&binding("x", "a\0b")),
            binding_key(&binding("x\0a", "b"))
        );
        assert_ne!(key(b'q', &["/\0a", "b"]), key(b'q', &["/", "a\0b"]));
    }

    /// The NUL-joined key formats 2 and 3 wrote.
    fn old_key(kind: u8, parts: &[&str]) -> Vec<u8> {
        let mut k = vec![kind];
        k.extend_from_slice(parts.join("\0").as_bytes());
        k
    }

    #[test]
    fn a_format_3_store_is_rekeyed_at_open_and_its_records_can_be_deleted() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        backend.insert(Tree::Meta, b"format", b"3").unwrap();
        let put = |k: Vec<u8>, v: String| backend.insert(Tree::Definitions, &k, v.as_bytes());
        put(old_key(b'v', &["/"]), r#""/""#.into()).unwrap();
        let q = r#"{"vhost":"/","name":"q","uid":4,"auto_delete":false,"arguments":{}}"#;
        put(old_key(b'q', &["/", "q"]), q.into()).unwrap();
        let b = binding("q", "k");
        put(
            old_key(b'b', &["/", "amq.direct", "qq", "k", "{}"]),
            serde_json::to_string(&b).unwrap(),
        )
        .unwrap();
        let store = Store::over(backend.clone()).unwrap();
        assert_eq!(
            backend.get(Tree::Meta, b"format").unwrap().unwrap(),
            crate::store::FORMAT_VERSION.to_string().as_bytes()
        );
        let d = store.load_definitions().unwrap();
        assert_eq!((d.vhosts.len(), d.queues.len()), (1, 1));
        assert_eq!(d.bindings, vec![b.clone()]);
        // Deleting goes by the new keys: nothing of the old ones is left.
        store.delete_binding(&b).unwrap();
        store.delete_queue("/", "q").unwrap();
        store.delete_vhost("/").unwrap();
        let all = backend
            .scan(Tree::Definitions, &[0], &[255], usize::MAX)
            .unwrap();
        assert!(all.is_empty(), "{all:?}");
        // Opening again (a current store) moves nothing.
        assert_eq!(migrate(backend.as_ref()).unwrap(), 0);
    }
}
