//! How the gateway reaches one company: its TLS (`[connections.tls]`: the
//! CAs it trusts, the client certificate it shows) and its egress proxy
//! (`proxy`, `no_proxy`). Token requests (reqwest) and action calls
//! (`upstream`) take both from here, so they always agree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Url;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::ConnectionConfig;

/// `[connections.tls]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionTls {
    /// PEM CA certificates trusted for this company *instead of* the
    /// platform's roots: a company with its own CA is trusted for nothing else.
    pub ca_file: Option<PathBuf>,
    /// The client certificate chain shown to the company (PEM, leaf first).
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, SEC1 EC or PKCS#1 RSA).
    pub client_key: Option<PathBuf>,
}

/// The proxy's address, when a connection's calls go through one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
}

/// The TLS client configuration of a connection: the platform's roots (or
/// `ca_file`), its client certificate if any, aws-lc-rs, TLS 1.2 and 1.3,
/// HTTP/1.1 by ALPN. Errors name the file and the problem, never a key.
pub fn client_tls(tls: Option<&ConnectionTls>) -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match tls.and_then(|t| t.ca_file.as_deref()) {
        None => builder.with_platform_verifier().map_err(|e| e.to_string())?,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca, "tls.ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.ca_file: {}: not a usable CA certificate: {e}", ca.display()))?;
            }
            builder.with_root_certificates(roots)
        }
    };
    let mut config = match tls.map(|t| (&t.client_cert, &t.client_key)) {
        Some((Some(cert), Some(key))) => builder
            .with_client_auth_cert(read_certs(cert, "tls.client_cert")?, read_key(key)?)
            .map_err(|e| {
                format!(
                    "tls: {} and {} are not a usable certificate and key: {e}",
                    cert.display(),
                    key.display()
                )
            })?,
        Some((None, None)) | None => builder.with_no_client_auth(),
        Some(_) => return Err("tls: client_cert and client_key go together".into()),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{key}: {}: not valid PEM certificates", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key}: {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The key's error never quotes the file: it may be the key itself.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("tls.client_key: cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        format!(
            "tls.client_key: {}: no PEM private key (PKCS#8, EC or RSA) in it",
            path.display()
        )
    })
}

/// `proxy`, parsed: an `http://host:port` URL (the proxy is spoken to in
/// plain HTTP; HTTPS to the company goes through it by CONNECT).
pub fn parse_proxy(url: &str) -> Result<Proxy, String> {
    let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err("must be an http:// URL (HTTPS to the company is tunnelled by CONNECT)".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("proxy credentials are not supported".into());
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err("must be http://host:port with no path".into());
    }
    let host = parsed.host_str().ok_or("has no host")?;
    Ok(Proxy {
        host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
        port: parsed.port_or_known_default().unwrap_or(80),
    })
}

/// Whether `host` skips the proxy: `no_proxy` lists host names (a name
/// also covers its subdomains; a leading `.` is the same) and IP
/// addresses, or `*` for every host.
pub fn bypasses(no_proxy: &[String], host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    no_proxy.iter().any(|entry| {
        let entry = entry.trim().trim_start_matches('.').to_ascii_lowercase();
        entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
    })
}

/// The proxy the calls to `host` go through, if any.
pub fn proxy_for(config: &ConnectionConfig, host: &str) -> Result<Option<Proxy>, String> {
    match &config.proxy {
        Some(url) if !bypasses(&config.no_proxy, host) => parse_proxy(url).map(Some).map_err(|e| format!("proxy: {e}")),
        _ => Ok(None),
    }
}

/// The client for token requests, JWKS and probes: the gateway's shared
/// one, or, when the connection has its own TLS or proxy, one of its own.
pub fn http_client(config: &ConnectionConfig, shared: &reqwest::Client) -> Result<reqwest::Client, String> {
    if config.tls.is_none() && config.proxy.is_none() {
        return Ok(shared.clone());
    }
    // As the shared client: redirects are never followed (one could carry
    // credentials to another host), and no proxy from the environment.
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .no_proxy()
        .tls_backend_preconfigured(client_tls(config.tls.as_ref())?);
    if let Some(url) = &config.proxy {
        parse_proxy(url).map_err(|e| format!("proxy: {e}"))?;
        let proxy = reqwest::Proxy::all(url.as_str())
            .map_err(|e| format!("proxy: {e}"))?
            .no_proxy(reqwest::NoProxy::from_string(&config.no_proxy.join(",")));
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_covers_names_their_subdomains_and_star() {
        let list = vec!["example.com".to_string(), ".corp".to_string(), "10.0.0.1".to_string()];
        assert!(bypasses(&list, "example.com"));
        assert!(bypasses(&list, "api.example.com"));
        assert!(!bypasses(&list, "badexample.com"));
        assert!(bypasses(&list, "bank.corp"));
        assert!(bypasses(&list, "10.0.0.1"));
        assert!(!bypasses(&list, "10.0.0.12"));
        assert!(bypasses(&["*".to_string()], "anything"));
    }

    #[test]
    fn a_proxy_is_plain_http_without_credentials() {
        assert_eq!(
            parse_proxy("http://proxy.internal:3128"),
            Ok(Proxy {
                host: "proxy.internal".into(),
                port: 3128
            })
        );
        assert!(parse_proxy("https://proxy:3128").is_err());
        assert!(parse_proxy("http://user:pw@proxy:3128").is_err());
        assert!(parse_proxy("http://proxy:3128/path").is_err());
    }
}
