//! Encryption at rest: a backend that seals every value it stores with an
//! AEAD (XChaCha20-Poly1305 from RustCrypto: a 192-bit random nonce per
//! record, so random nonces never repeat in practice) under the broker's
//! key, and opens them on the way back. The tree and the record's key are
//! the associated data, so a record moved to another key fails to open.
//!
//! A sealed value is `0xE5 | key id (4 bytes) | nonce (24) | ciphertext +
//! tag (16)`. The key id (the first 4 bytes of the key's SHA-256) says
//! which key sealed it: with a new key and the old one kept as the old key,
//! new writes use the new key and old records still open. A canary record
//! in the meta tree, sealed at creation, tells at start-up whether the key
//! given is the data directory's: a wrong or missing key is refused then,
//! before anything is read. Keys of records (queue uids, names in
//! definitions) are not encrypted; message bodies, properties and the
//! definitions' values are.

use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use sha2::Digest;

use super::{Backend, StoreError, StoreResult, Tree};

const MAGIC: u8 = 0xE5;
const ID: usize = 4;
const NONCE: usize = 24;
const HEADER: usize = 1 + ID + NONCE;
/// The meta-tree record that proves the key at start-up.
const CANARY_KEY: &[u8] = b"encryption-canary";
const CANARY: &[u8] = b"warren encrypted store";

/// One 256-bit key and its id.
pub struct StoreKey {
    id: [u8; ID],
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey({})", self.id_hex())
    }
}

impl StoreKey {
    /// 32 bytes, base64 (standard or URL-safe, padding optional).
    pub fn from_base64(text: &str) -> Result<StoreKey, String> {
        use base64::Engine;
        let text = text.trim();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
            })
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('='))
            })
            .map_err(|_| "the key is not base64 (32 random bytes, base64-encoded)".to_string())?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            format!(
                "the key is {} bytes; it must be 32 random bytes, base64-encoded",
                raw.len()
            )
        })?;
        let digest = sha2::Sha256::digest(bytes);
        let mut id = [0u8; ID];
        id.copy_from_slice(&digest[..ID]);
        Ok(StoreKey {
            id,
            cipher: XChaCha20Poly1305::new(&bytes.into()),
        })
    }

    /// Read a key file.
    pub fn from_file(path: &Path) -> Result<StoreKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the encryption key file {}: {e}",
                path.display()
            )
        })?;
        StoreKey::from_base64(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The key new records are sealed with, and an old one still read.
#[derive(Debug)]
pub struct Keyring {
    pub current: StoreKey,
    pub old: Option<StoreKey>,
}

impl Keyring {
    fn by_id(&self, id: &[u8]) -> Option<&StoreKey> {
        std::iter::once(&self.current)
            .chain(self.old.as_ref())
            .find(|k| k.id == id)
    }

    /// Seal `plain` with the current key, `aad` bound to it.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        rand::fill(&mut nonce);
        let k = &self.current;
        // Encryption fails only for inputs beyond 2^38 bytes.
        let sealed = k
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + sealed.len());
        out.push(MAGIC);
        out.extend_from_slice(&k.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open what [`Keyring::seal`] sealed with `aad`; the error says why
    /// it does not open (damaged, altered, another key).
    pub fn open(&self, aad: &[u8], raw: &[u8]) -> Result<Vec<u8>, String> {
        if raw.len() < HEADER + 16 || raw[0] != MAGIC {
            return Err("not a sealed record".into());
        }
        let id = &raw[1..1 + ID];
        let Some(k) = self.by_id(id) else {
            return Err(format!("sealed with an unknown key (id {})", hex(id)));
        };
        let mut nonce = [0u8; NONCE];
        nonce.copy_from_slice(&raw[1 + ID..HEADER]);
        k.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &raw[HEADER..],
                    aad,
                },
            )
            .map_err(|_| "failed authentication: altered or sealed for another place".into())
    }
}

fn tree_byte(tree: Tree) -> u8 {
    match tree {
        Tree::Meta => 0,
        Tree::Definitions => 1,
        Tree::Messages => 2,
    }
}

fn aad(tree: Tree, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(key.len() + 1);
    a.push(tree_byte(tree));
    a.extend_from_slice(key);
    a
}

/// A backend whose values are sealed under a keyring.
#[derive(Debug)]
pub struct SealedBackend {
    inner: Arc<dyn Backend>,
    keys: Arc<Keyring>,
}

impl SealedBackend {
    /// Wrap `inner`: a new store gets the canary; an existing one must have
    /// a canary this keyring opens (else the refusal says why).
    pub fn open(inner: Arc<dyn Backend>, keys: Arc<Keyring>) -> StoreResult<SealedBackend> {
        let sealed = SealedBackend { inner, keys };
        match sealed.inner.get(Tree::Meta, CANARY_KEY)? {
            Some(raw) => {
                let opened = sealed.open_value(Tree::Meta, CANARY_KEY, &raw).map_err(|_| {
                    let id = raw.get(1..1 + ID).map(hex).unwrap_or_default();
                    refused(format!(
                        "the data directory is encrypted with key id {id}; the key given (id {}) \
                         does not open it",
                        sealed.keys.current.id_hex()
                    ))
                })?;
                if opened != CANARY {
                    return Err(refused("the encryption canary is damaged".into()));
                }
            }
            None => {
                if !sealed.inner.scan(Tree::Meta, &[], &[0xff], 1)?.is_empty() {
                    return Err(refused(
                        "the data directory holds unencrypted data; encrypting an existing \
                         store is not supported: start from an empty data directory"
                            .into(),
                    ));
                }
                sealed.insert(Tree::Meta, CANARY_KEY, CANARY)?;
                sealed.inner.flush()?;
            }
        }
        Ok(sealed)
    }

    /// Re-seal every record the old key sealed with the current key (the
    /// canary last), each by compare-and-swap so a record the broker
    /// changed meanwhile is left to its new value. Returns how many were
    /// re-sealed; once done the old key is no longer needed.
    pub fn retire_old_key(&self, with_canary: bool) -> StoreResult<u64> {
        let Some(old) = &self.keys.old else {
            return Ok(0);
        };
        let mut count = 0;
        for tree in [Tree::Definitions, Tree::Messages, Tree::Meta] {
            let mut from: Vec<u8> = Vec::new();
            loop {
                let page = self.inner.scan(tree, &from, &[0xff; 64], 1024)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                from = last.clone();
                from.push(0);
                for (key, raw) in &page {
                    if tree == Tree::Meta && key.as_slice() == CANARY_KEY {
                        continue;
                    }
                    if raw.get(1..1 + ID) != Some(&old.id[..]) {
                        continue;
                    }
                    let value = self.open_value(tree, key, raw)?;
                    if self
                        .inner
                        .replace_if(tree, key, raw, &self.seal(tree, key, &value))?
                    {
                        count += 1;
                    }
                }
            }
        }
        self.inner.flush()?;
        // Only now may the old key go: the canary says which key the
        // directory needs.
        if !with_canary {
            return Ok(count);
        }
        if let Some(raw) = self.inner.get(Tree::Meta, CANARY_KEY)?
            && raw.get(1..1 + ID) == Some(&old.id[..])
        {
            let resealed = self.seal(Tree::Meta, CANARY_KEY, CANARY);
            self.inner
                .replace_if(Tree::Meta, CANARY_KEY, &raw, &resealed)?;
            self.inner.flush()?;
        }
        Ok(count)
    }

    /// Refuse a store that is encrypted when no key was given.
    pub fn check_unencrypted(inner: &dyn Backend) -> StoreResult<()> {
        match inner.get(Tree::Meta, CANARY_KEY)? {
            Some(raw) => Err(refused(format!(
                "the data directory is encrypted (key id {}); give its key with \
                 --encryption-key-file",
                raw.get(1..1 + ID).map(hex).unwrap_or_default()
            ))),
            None => Ok(()),
        }
    }

    fn seal(&self, tree: Tree, key: &[u8], value: &[u8]) -> Vec<u8> {
        self.keys.seal(&aad(tree, key), value)
    }

    fn open_value(&self, tree: Tree, key: &[u8], raw: &[u8]) -> StoreResult<Vec<u8>> {
        self.keys
            .open(&aad(tree, key), raw)
            .map_err(|detail| StoreError::Corrupt {
                what: "encrypted",
                detail: format!("{detail} (tree {tree:?}, key {})", hex(key)),
            })
    }

    fn open_entries(
        &self,
        tree: Tree,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        entries
            .into_iter()
            .map(|(k, v)| {
                let v = self.open_value(tree, &k, &v)?;
                Ok((k, v))
            })
            .collect()
    }
}

/// Retire the old key on a thread of its own, logging the outcome. Stream
/// segments are not rewritten: while any holds records, the old key stays
/// needed (the canary keeps naming it), and the log says so.
pub fn retire_in_background(backend: Arc<SealedBackend>, streams: std::path::PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("warren-rekey".into())
        .spawn(move || {
            let old = backend
                .keys
                .old
                .as_ref()
                .map(StoreKey::id_hex)
                .unwrap_or_default();
            let current = backend.keys.current.id_hex();
            let streams_left = has_stream_records(&streams);
            match backend.retire_old_key(!streams_left) {
                Ok(n) if streams_left => tracing::warn!(
                    "encryption: re-sealed {n} records with key {current}; stream segments may \
                     still hold records sealed with key {old}: keep the old key file until \
                     retention has dropped the segments written before the rotation"
                ),
                Ok(n) => tracing::info!(
                    "encryption: re-sealed {n} records with key {current}; key {old} is retired \
                     (the old key file is no longer needed)"
                ),
                Err(e) => tracing::warn!("encryption: retiring key {old} stopped: {e}"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("encryption: cannot start retiring the old key: {e}");
    }
}

/// Whether any stream segment under `dir` holds a record.
fn has_stream_records(dir: &std::path::Path) -> bool {
    let Ok(streams) = std::fs::read_dir(dir) else {
        return false;
    };
    streams.flatten().any(|stream| {
        std::fs::read_dir(stream.path()).is_ok_and(|files| {
            files.flatten().any(|f| {
                f.path().extension().is_some_and(|e| e == "seg")
                    && f.metadata().is_ok_and(|m| m.len() > 0)
            })
        })
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn refused(reason: String) -> StoreError {
    StoreError::Damaged(format!("encryption: {reason}"))
}

impl Backend for SealedBackend {
    fn get(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.inner.get(tree, key)? {
            Some(raw) => self.open_value(tree, key, &raw).map(Some),
            None => Ok(None),
        }
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.inner.insert(tree, key, &self.seal(tree, key, value))
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> StoreResult<()> {
        self.inner.remove(tree, key)
    }

    fn take(&self, tree: Tree, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        match self.inner.take(tree, key)? {
            Some(raw) => self.open_value(tree, key, &raw).map(Some),
            None => Ok(None),
        }
    }

    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let entries = self.inner.scan(tree, from, to, limit)?;
        self.open_entries(tree, entries)
    }

    fn last_key(&self, tree: Tree, from: &[u8], to: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.inner.last_key(tree, from, to)
    }

    fn flush(&self) -> StoreResult<()> {
        self.inner.flush()
    }

    fn seal(&self) -> StoreResult<()> {
        self.inner.seal()
    }

    fn check(&self) -> StoreResult<()> {
        self.inner.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryBackend;

    fn sealed(
        inner: &Arc<dyn Backend>,
        current: u8,
        old: Option<u8>,
    ) -> StoreResult<SealedBackend> {
        SealedBackend::open(
            inner.clone(),
            Arc::new(Keyring {
                current: key(current),
                old: old.map(key),
            }),
        )
    }

    fn key(byte: u8) -> StoreKey {
        use base64::Engine;
        StoreKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([byte; 32]))
            .unwrap()
    }

    #[test]
    fn values_are_sealed_and_open_again() {
        let inner: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let b = sealed(&inner, 1, None).unwrap();
        b.insert(Tree::Messages, b"k", b"secret marker").unwrap();
        let raw = inner.get(Tree::Messages, b"k").unwrap().unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            b.get(Tree::Messages, b"k").unwrap().unwrap(),
            b"secret marker"
        );
        // Moved to another key, or altered: refused, not garbage.
        inner.insert(Tree::Messages, b"other", &raw).unwrap();
        assert!(b.get(Tree::Messages, b"other").is_err());
        let mut altered = raw.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        inner.insert(Tree::Messages, b"k", &altered).unwrap();
        assert!(matches!(
            b.get(Tree::Messages, b"k"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_canary_refuses_another_key_and_rotation_keeps_old_records() {
        let inner: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let b = sealed(&inner, 1, None).unwrap();
        b.insert(Tree::Definitions, b"d", b"old record").unwrap();
        let e = sealed(&inner, 2, None).unwrap_err();
        assert!(e.to_string().contains("does not open it"), "{e}");
        assert!(SealedBackend::check_unencrypted(inner.as_ref()).is_err());
        let rotated = sealed(&inner, 2, Some(1)).unwrap();
        assert_eq!(
            rotated.get(Tree::Definitions, b"d").unwrap().unwrap(),
            b"old record"
        );
        rotated.insert(Tree::Definitions, b"n", b"new").unwrap();
        let raw = inner.get(Tree::Definitions, b"n").unwrap().unwrap();
        assert_eq!(&raw[1..5], &key(2).id);
        assert!(StoreKey::from_base64("c2hvcnQ=").is_err());
        // Retiring the old key re-seals its records and the canary.
        assert_eq!(rotated.retire_old_key(true).unwrap(), 1);
        let only_new = sealed(&inner, 2, None).unwrap();
        assert_eq!(
            only_new.get(Tree::Definitions, b"d").unwrap().unwrap(),
            b"old record"
        );
    }
}
