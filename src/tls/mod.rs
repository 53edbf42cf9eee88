//! TLS for the AMQPS and HTTPS listeners (rustls, with the ring provider).
//!
//! [`TlsSettings`] turns `[tls]` — a PEM certificate chain and key, and
//! optionally a CA bundle to verify client certificates against — into a
//! rustls server configuration, and can do it again on SIGHUP
//! ([`TlsSettings::reload`]): every new handshake takes the configuration
//! current at that moment, so connections already open are not touched.
//! A file that cannot be read or parsed is a clear error naming it: at
//! start-up it stops the broker, on reload it keeps the old certificates.
//!
//! `identity` reads the login name EXTERNAL uses from a client
//! certificate; `http` adapts TLS streams to axum's listener.

pub mod http;
pub mod identity;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why certificates could not be loaded: the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct TlsError {
    pub what: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

/// What a finished handshake tells about the connection.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// "TLSv1.3" or "TLSv1.2".
    pub protocol: String,
    pub cipher: String,
    /// The client certificate (first of its chain), verified against the
    /// CA bundle, if the client sent one.
    pub peer_certificate: Option<Vec<u8>>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        TlsInfo {
            protocol,
            cipher,
            peer_certificate: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.as_ref().to_vec()),
        }
    }
}

/// The TLS configuration in force, replaceable while the broker runs.
#[derive(Debug)]
pub struct TlsSettings {
    config: TlsConfig,
    amqp: RwLock<Arc<ServerConfig>>,
    http: RwLock<Arc<ServerConfig>>,
}

impl TlsSettings {
    pub fn load(config: &TlsConfig) -> Result<TlsSettings, TlsError> {
        let (amqp, http) = build_pair(config)?;
        Ok(TlsSettings {
            config: config.clone(),
            amqp: RwLock::new(amqp),
            http: RwLock::new(http),
        })
    }

    /// Read the files again; new handshakes use them from now on.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (amqp, http) = build_pair(&self.config)?;
        *self.amqp.write() = amqp;
        *self.http.write() = http;
        Ok(())
    }

    /// An acceptor with the current certificates, for one AMQPS handshake.
    pub fn amqp_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.amqp.read().clone())
    }

    /// The same for HTTPS (it offers HTTP/1.1 by ALPN).
    pub fn http_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.http.read().clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build_pair(config: &TlsConfig) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), TlsError> {
    let amqp = build(config)?;
    let mut http = amqp.clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(amqp), Arc::new(http)))
}

fn build(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let certs = read_certificates("TLS certificate", &config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| TlsError {
        what: "TLS key",
        path: config.key.clone(),
        reason: pem_reason(&config.key, e),
    })?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = config
        .versions
        .iter()
        .filter_map(|v| match v.as_str() {
            "tlsv1.2" => Some(&rustls::version::TLS12),
            "tlsv1.3" => Some(&rustls::version::TLS13),
            _ => None,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError {
            what: "TLS versions for",
            path: config.cert.clone(),
            reason: e.to_string(),
        })?;
    let verifier = if config.verify_peer {
        let mut roots = RootCertStore::empty();
        for ca in read_certificates("CA bundle", &config.ca)? {
            roots.add(ca).map_err(|e| TlsError {
                what: "CA bundle",
                path: config.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let b = if config.fail_if_no_peer_cert {
            b
        } else {
            b.allow_unauthenticated()
        };
        b.build().map_err(|e| TlsError {
            what: "CA bundle",
            path: config.ca.clone(),
            reason: e.to_string(),
        })?
    } else {
        WebPkiClientVerifier::no_client_auth()
    };
    builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError {
            what: "TLS certificate and key",
            path: config.cert.clone(),
            reason: format!("{e} (key {})", config.key.display()),
        })
}

fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_reason(path, e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_reason(path, e)))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn pem_reason(path: &Path, e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => {
            if path.as_os_str().is_empty() {
                "no file configured".into()
            } else {
                io.to_string()
            }
        }
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}
