//! Certificates made at test time with rcgen: a CA, a server certificate
//! for 127.0.0.1 and client certificates, written as PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, cn: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> Leaf {
        self.leaf(
            "warren-test-server",
            vec![
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::DnsName("localhost".try_into().unwrap()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `cn` and DNS names `dns`.
    pub fn client(&self, cn: &str, dns: &[&str]) -> Leaf {
        let sans = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().unwrap()))
            .collect();
        self.leaf(cn, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The files a broker's `[tls]` points at.
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    pub fn write(server: &Leaf, client_ca: &Ca) -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            ca: dir.path().join("ca.pem"),
            dir,
        };
        files.replace(server, client_ca);
        files
    }

    /// Overwrite the files (for a reload).
    pub fn replace(&self, server: &Leaf, client_ca: &Ca) {
        std::fs::write(&self.cert, &server.cert).unwrap();
        std::fs::write(&self.key, &server.key).unwrap();
        std::fs::write(&self.ca, &client_ca.pem).unwrap();
    }

    /// A broker configuration with AMQPS on an ephemeral port.
    pub fn config(&self, verify_peer: bool) -> warren::Config {
        let mut c = warren::Config::ephemeral();
        c.amqps.enabled = true;
        c.tls.cert = self.cert.clone();
        c.tls.key = self.key.clone();
        c.tls.ca = self.ca.clone();
        c.tls.verify_peer = verify_peer;
        c.tls.fail_if_no_peer_cert = verify_peer;
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A rustls client that trusts `ca`, optionally presenting `identity`,
/// limited to `versions`.
pub fn client_config(
    ca: &Ca,
    identity: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// lapin's TLS settings: trust `ca`, present `identity`.
pub fn lapin_tls(ca: &Ca, identity: Option<&Leaf>) -> lapin::tcp::OwnedTLSConfig {
    lapin::tcp::OwnedTLSConfig {
        identity: identity.map(|l| lapin::tcp::OwnedIdentity::PKCS8 {
            pem: l.cert.clone().into_bytes(),
            key: l.key.clone().into_bytes(),
        }),
        cert_chain: Some(ca.pem.clone()),
    }
}

/// Connect lapin over TLS.
pub async fn lapin_connect(
    url: &str,
    tls: lapin::tcp::OwnedTLSConfig,
) -> Result<lapin::Connection, lapin::Error> {
    let runtime = lapin::runtime::default_runtime().unwrap();
    lapin::Connection::connect_with_config(
        url,
        lapin::ConnectionProperties::default(),
        tls,
        runtime,
    )
    .await
}
