//! TLS on the listener itself (`[server.tls]` of the gateway, `[tls]` of the
//! backend): the certificate and key from PEM files, optionally client
//! certificates checked against a CA, and the certificate reloaded on
//! `SIGHUP` without dropping a connection.
//!
//! Reload: each handshake asks [`Reloading`] for the current certificate, an
//! `Arc` swapped under a lock. Open connections keep the session they made;
//! new ones get the new certificate. A file that cannot be read or does not
//! match its key leaves the old certificate in place and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

/// `[server.tls]` / `[tls]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, SEC1 EC or PKCS#1 RSA).
    pub key: PathBuf,
    /// PEM CA certificates that sign the client certificates accepted.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `require` (the default) refuses a handshake
    /// without a client certificate; `request` lets one without through
    /// (a certificate shown must still be signed by `client_ca`).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    Require,
    Request,
}

/// The client certificate a connection was made with, as a request
/// extension (absent on plain HTTP and when the client showed none).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<CertificateDer<'static>>);

/// The certificate every new handshake gets; swapped on reload.
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloading {
    /// Reads the certificate and key again; on error the old pair stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = certified_key(&self.files.cert, &self.files.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A listener's TLS: the acceptor and the certificate it reloads.
#[derive(Clone)]
pub struct ServerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub certificate: Arc<Reloading>,
}

impl ServerTls {
    /// Loads the files; every error names the file and what is wrong with
    /// it, never its contents.
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let certificate = Arc::new(Reloading {
            current: RwLock::new(Arc::new(certified_key(&files.cert, &files.key)?)),
            files: files.clone(),
        });
        let provider = Arc::new(aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match files.client_auth {
                    ClientAuth::Require => verifier,
                    ClientAuth::Request => verifier.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("client_ca: {e}"))?)
            }
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }

    /// Reloads the certificate on every `SIGHUP` while the task runs.
    pub fn reload_on_sighup(&self) -> Result<tokio::task::JoinHandle<()>, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
        let certificate = self.certificate.clone();
        Ok(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match certificate.reload() {
                    Ok(()) => tracing::info!(cert = %certificate.files.cert.display(), "TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the old one stays in use"),
                }
            }
        }))
    }
}

/// What is wrong with `files`, if anything: the same reading as a start.
pub fn check(files: &TlsFiles) -> Result<(), String> {
    ServerTls::load(files).map(drop)
}

/// The certificate chain of `path` (PEM, at least one certificate).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{}: not valid PEM certificates", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The private key of `path` (PEM). The error never quotes the file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| format!("{}: no PEM private key (PKCS#8, EC or RSA) in it", path.display()))
}

/// The chain and key as rustls signs with them, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert)?;
    let key_der = read_key(key)?;
    let provider = aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
        format!(
            "{} and {} do not make a usable certificate and key: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(certified)
}
