//! Password hashes in RabbitMQ's format, so users exported from RabbitMQ's
//! definitions log in to Warren with their old passwords and back.
//!
//! A hash is base64 of a 4-byte random salt followed by
//! `digest(salt ‖ password)`, where the digest is named by the user's
//! `hashing_algorithm`: `rabbit_password_hashing_sha256` (RabbitMQ's
//! default since 3.6), `rabbit_password_hashing_sha512`, or the legacy
//! `rabbit_password_hashing_md5` (definitions exported before 3.6 carry no
//! algorithm and mean MD5). An empty hash matches no password: such a user
//! can only log in with EXTERNAL (a client certificate).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// Which digest a password hash was made with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashingAlgorithm {
    #[default]
    #[serde(rename = "rabbit_password_hashing_sha256")]
    Sha256,
    #[serde(rename = "rabbit_password_hashing_sha512")]
    Sha512,
    #[serde(rename = "rabbit_password_hashing_md5")]
    Md5,
}

impl HashingAlgorithm {
    /// RabbitMQ's module name for the algorithm, as definitions carry it.
    pub fn name(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
            HashingAlgorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    pub fn parse(name: &str) -> Option<HashingAlgorithm> {
        [
            HashingAlgorithm::Sha256,
            HashingAlgorithm::Sha512,
            HashingAlgorithm::Md5,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            HashingAlgorithm::Sha256 => Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
            HashingAlgorithm::Sha512 => Sha512::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
            HashingAlgorithm::Md5 => {
                let mut input = salt.to_vec();
                input.extend_from_slice(password);
                md5::compute(&input).0.to_vec()
            }
        }
    }
}

/// A fresh salted hash of `password`.
pub fn hash_password(algorithm: HashingAlgorithm, password: &str) -> String {
    let mut salt = [0u8; 4];
    rand::fill(&mut salt);
    let mut raw = salt.to_vec();
    raw.extend_from_slice(&algorithm.digest(&salt, password.as_bytes()));
    BASE64.encode(raw)
}

/// Whether `password` matches `hash`. Blank passwords never match, as in
/// RabbitMQ's internal backend.
pub fn verify(algorithm: HashingAlgorithm, hash: &str, password: &str) -> bool {
    let Ok(raw) = BASE64.decode(hash) else {
        return false;
    };
    if raw.len() <= 4 || password.is_empty() {
        return false;
    }
    let (salt, expected) = raw.split_at(4);
    let actual = algorithm.digest(salt, password.as_bytes());
    // Compare without an early exit, so timing says nothing about how much
    // of a guess was right.
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether `hash` is something a login could ever match (base64 of a salt
/// and a digest of the algorithm's size), checked when a hash is imported.
pub fn is_well_formed(algorithm: HashingAlgorithm, hash: &str) -> bool {
    if hash.is_empty() {
        return true;
    }
    let size = match algorithm {
        HashingAlgorithm::Sha256 => 32,
        HashingAlgorithm::Sha512 => 64,
        HashingAlgorithm::Md5 => 16,
    };
    BASE64.decode(hash).is_ok_and(|raw| raw.len() == 4 + size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips() {
        for alg in [
            HashingAlgorithm::Sha256,
            HashingAlgorithm::Sha512,
            HashingAlgorithm::Md5,
        ] {
            let h = hash_password(alg, "s3cret");
            assert!(is_well_formed(alg, &h));
            assert!(verify(alg, &h, "s3cret"));
            assert!(!verify(alg, &h, "s3cres"));
            assert!(!verify(alg, &h, ""));
            assert_eq!(HashingAlgorithm::parse(alg.name()), Some(alg));
        }
    }

    #[test]
    fn verifies_a_hash_made_by_rabbitmq() {
        // Exported by RabbitMQ 3.10.8 (`rabbitmqctl export_definitions`) for
        // a user whose password is "guest".
        let h = "lRiuDqShe5RykxH8C/l0FX4iZRvEWZ6+R0llOTKg5OiGYL4M";
        assert!(verify(HashingAlgorithm::Sha256, h, "guest"));
        assert!(!verify(HashingAlgorithm::Sha512, h, "guest"));
    }

    #[test]
    fn malformed_hashes_match_nothing() {
        assert!(!verify(HashingAlgorithm::Sha256, "not base64!", "x"));
        assert!(!verify(HashingAlgorithm::Sha256, "", "x"));
        assert!(!is_well_formed(HashingAlgorithm::Sha512, "AAAA"));
    }
}
