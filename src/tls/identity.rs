//! The user name EXTERNAL logs in with, read from a verified client
//! certificate as RabbitMQ's `rabbitmq_auth_mechanism_ssl` does: the
//! subject's common name, or the n-th subject alternative name of one type.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Where to take the name from (`auth.ssl_cert_login_*`).
#[derive(Clone, Debug)]
pub struct LoginFrom {
    /// "common_name" or "subject_alternative_name".
    pub from: String,
    /// "dns", "ip", "email" or "uri".
    pub san_type: String,
    pub san_index: usize,
}

/// The login name in a DER certificate, if it has one of the kind asked.
pub fn login_name(cert_der: &[u8], how: &LoginFrom) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    if how.from == "common_name" {
        return cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value
        .general_names
        .iter()
        .filter_map(|name| match (how.san_type.as_str(), name) {
            ("dns", GeneralName::DNSName(s))
            | ("email", GeneralName::RFC822Name(s))
            | ("uri", GeneralName::URI(s)) => Some((*s).to_string()),
            ("ip", GeneralName::IPAddress(raw)) => ip_text(raw),
            _ => None,
        })
        .nth(how.san_index)
}

fn ip_text(raw: &[u8]) -> Option<String> {
    match raw.len() {
        4 => <[u8; 4]>::try_from(raw)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(raw)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}
