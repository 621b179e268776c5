//! How the sync client trusts the clinic server ([`TlsPolicy`]), and which server addresses it
//! accepts at all ([`check_server_url`]).
//!
//! By default HTTPS is checked against the platform's trust store (rustls-platform-verifier:
//! the OS roots). A pinned certificate replaces them: the client then trusts only that
//! certificate (the server's own self-signed certificate, or the private CA that issued it),
//! and the server's certificate must still name the host in the URL. See
//! `docs/adr/0006-tls.md`.

use crate::SyncError;
use reqwest::{Certificate, ClientBuilder};
use std::fmt;
use std::path::Path;

/// Which certificates the sync client accepts from the server.
#[derive(Clone, Default)]
pub struct TlsPolicy {
    /// Trust anchors replacing the platform's roots; `None` keeps the platform's.
    pinned: Option<Vec<Certificate>>,
}

impl fmt::Debug for TlsPolicy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pinned {
            None => formatter.write_str("TlsPolicy(platform roots)"),
            Some(certificates) => {
                write!(
                    formatter,
                    "TlsPolicy(pinned: {} certificate(s))",
                    certificates.len()
                )
            }
        }
    }
}

impl TlsPolicy {
    /// The platform's trust store (the default).
    pub fn platform_roots() -> Self {
        Self::default()
    }

    /// Trust only the PEM certificate(s) in `pem` (a self-signed server certificate, or the CA
    /// that issued the server's). `source` names where they came from, for errors.
    pub fn pinned_pem(pem: &[u8], source: &str) -> Result<Self, SyncError> {
        let certificates = Certificate::from_pem_bundle(pem).map_err(|error| {
            SyncError::Client(format!(
                "the pinned certificate {source} is not valid PEM: {}",
                error_chain(&error)
            ))
        })?;
        if certificates.is_empty() {
            return Err(SyncError::Client(format!(
                "no certificate found in the pinned certificate {source}"
            )));
        }
        // Building a client parses the certificates: a bad one is reported here, naming the
        // file, rather than at the first sync.
        reqwest::Client::builder()
            .tls_certs_only(certificates.clone())
            .build()
            .map_err(|error| {
                SyncError::Client(format!(
                    "the pinned certificate {source} cannot be used: {}",
                    error_chain(&error)
                ))
            })?;
        Ok(Self {
            pinned: Some(certificates),
        })
    }

    /// As [`TlsPolicy::pinned_pem`], reading the PEM file at `path`.
    pub fn pinned_file(path: &Path) -> Result<Self, SyncError> {
        let pem = std::fs::read(path).map_err(|error| {
            SyncError::Client(format!(
                "could not read the pinned certificate {}: {error}",
                path.display()
            ))
        })?;
        Self::pinned_pem(&pem, &path.display().to_string())
    }

    /// Whether a certificate is pinned.
    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    /// `builder` with this policy's trust anchors.
    pub(crate) fn apply(&self, builder: ClientBuilder) -> ClientBuilder {
        match &self.pinned {
            None => builder,
            Some(certificates) => builder.tls_certs_only(certificates.iter().cloned()),
        }
    }
}

/// Refuses a server address that is not `https://`, except plain `http://` to this computer
/// (`localhost`, 127.0.0.0/8, `::1`): everything that crosses a network is encrypted.
pub fn check_server_url(url: &str) -> Result<(), SyncError> {
    let refuse = |reason: &'static str| SyncError::ServerUrl {
        url: url.to_string(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| refuse("it is not a valid URL"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(refuse(
            "plain http:// is allowed only to this computer (localhost, 127.0.0.0/8, ::1); \
             use https://",
        )),
        _ => Err(refuse(
            "only https:// (or http:// to this computer) is supported",
        )),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // The URL parser has lower-cased domains and bracketed IPv6 addresses.
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// `error` and its sources, joined with `: ` (reqwest's own message omits the cause, such as
/// which certificate check failed).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

    use super::*;

    #[test]
    fn https_anywhere_and_http_only_on_loopback() {
        for url in [
            "https://clinic.example",
            "https://clinic.example:8443/",
            "https://203.0.113.7",
            "http://127.0.0.1:8443",
            "http://127.8.9.10",
            "http://localhost:3000/",
            "http://LOCALHOST",
            "http://[::1]:8443",
        ] {
            assert!(check_server_url(url).is_ok(), "{url} should be allowed");
        }
        for url in [
            "http://clinic.example",
            "http://203.0.113.7:8443",
            "http://10.0.0.2",
            "http://[2001:db8::1]",
            "http://localhost.clinic.example",
            "http://0.0.0.0:8443",
        ] {
            let error = check_server_url(url).unwrap_err();
            assert!(
                matches!(error, SyncError::ServerUrl { .. }),
                "{url}: {error:?}"
            );
            assert!(error.to_string().contains("use https://"), "{error}");
            assert!(!error.is_transient());
        }
        for url in ["ftp://clinic.example", "clinic.example", ""] {
            assert!(
                matches!(check_server_url(url), Err(SyncError::ServerUrl { .. })),
                "{url} should be refused"
            );
        }
    }

    #[test]
    fn clients_refuse_plain_http_off_loopback() {
        let timeout = std::time::Duration::from_secs(1);
        let error = crate::DeviceClient::new("http://clinic.example", None, timeout).unwrap_err();
        assert!(matches!(error, SyncError::ServerUrl { .. }), "{error:?}");
        let error = crate::CoordinatorClient::new("http://192.0.2.1:8443", "token".into(), timeout)
            .unwrap_err();
        assert!(matches!(error, SyncError::ServerUrl { .. }), "{error:?}");
        assert!(crate::DeviceClient::new("http://127.0.0.1:1", None, timeout).is_ok());
        assert!(crate::DeviceClient::new("https://clinic.example", None, timeout).is_ok());
    }

    #[test]
    fn a_pin_without_a_certificate_is_refused() {
        let error = TlsPolicy::pinned_pem(b"", "pin.pem").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no certificate found in the pinned certificate pin.pem"),
            "{error}"
        );
        let error = TlsPolicy::pinned_pem(b"garbage\x01\x02", "pin.pem").unwrap_err();
        assert!(error.to_string().contains("pin.pem"), "{error}");
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("missing.pem");
        let error = TlsPolicy::pinned_file(&missing).unwrap_err();
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn a_self_signed_certificate_can_be_pinned() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let policy = TlsPolicy::pinned_pem(certified.cert.pem().as_bytes(), "pin.pem").unwrap();
        assert!(policy.is_pinned());
        assert!(!TlsPolicy::platform_roots().is_pinned());
        assert_eq!(format!("{policy:?}"), "TlsPolicy(pinned: 1 certificate(s))");
    }
}
